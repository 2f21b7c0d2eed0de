//! Hostile senders (issue 16), the parser and printer side: what a client
//! or a remote server sends must not reach the next hop, a terminal or the
//! log in a form that changes its meaning.

mod common;

use common::Daemon;

const MAP: &str = "example.jp smtp:[127.0.0.1]:9\n";

/// Regression: `ORCPT=rfc822\rRSET\r;u@x` (and the xtext `+0D` forms)
/// were stored and passed on to the primary and to milters.
#[test]
fn orcpt_with_control_characters_is_refused() {
    let d = Daemon::start(MAP, "", "");
    let mut c = d.client();
    c.cmd("EHLO client.test");
    assert!(c.cmd("MAIL FROM:<a@b.example>").starts_with("250"));
    for bad in [
        "rfc822\rRSET\r;u@x",
        "rfc822;u@x+0D+0ARSET",
        "rfc822;u+0D@x",
        "rfc822;u+1B[2J@x",
        "rfc 822;u@x",
        ";u@x",
    ] {
        let r = c.cmd(&format!("RCPT TO:<bob@example.jp> ORCPT={bad}"));
        assert!(r.starts_with("501 5.5.4"), "{bad:?}: {r}");
    }
    let r = c.cmd("RCPT TO:<bob@example.jp> ORCPT=rfc822;Bob+2Bx@example.jp");
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd("MAIL FROM:<a@b.example> ENVID=a+0D+0Ab");
    assert!(r.starts_with("503") || r.starts_with("501"), "{r}");
    c.cmd("RSET");
    let r = c.cmd("MAIL FROM:<a@b.example> ENVID=a+0D+0Ab");
    assert!(r.starts_with("501 5.5.4"), "{r}");
}

/// Regression: ETRN had no rate limit; a client looping on it made the
/// relay rescan and retry a domain's queue without pause. Now one per
/// client every 10 s, whichever connection it comes on.
#[test]
fn etrn_at_most_once_per_client_per_10s() {
    let d = Daemon::start(MAP, "", "");
    let mut c = d.client();
    c.cmd("EHLO client.test");
    let r = c.cmd("ETRN example.jp");
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd("ETRN example.jp");
    assert!(r.starts_with("458 4.7.1"), "{r}");
    let mut c2 = d.client();
    c2.cmd("EHLO client.test");
    let r = c2.cmd("ETRN example.jp");
    assert!(
        r.starts_with("458 4.7.1"),
        "a new connection is the same client: {r}"
    );
    assert!(d.log().contains("too many ETRN requests"), "{}", d.log());
}
