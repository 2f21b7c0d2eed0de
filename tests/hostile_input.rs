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

/// Control characters a person must not see raw: anything but LF, TAB
/// (folded headers) and the CR of a CRLF.
fn raw_controls(s: &str) -> Vec<char> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let crlf = c == '\r' && chars.peek() == Some(&'\n');
        if c.is_control() && c != '\n' && c != '\t' && !crlf {
            out.push(c);
        }
    }
    out
}

/// Regression: an EHLO name with ESC/BEL bytes and a remote reply with a
/// bare CR and terminal escapes were printed raw by `mx2 queue show
/// --envelope` and `mx2 queue list`, and the CR reached the text log.
/// Now every human-readable view escapes them (`\x1b`, `\x0d`, …) and
/// `--raw` stays byte-exact.
#[test]
fn control_characters_are_escaped_in_queue_output_and_log() {
    let sink = common::sink::Sink::start();
    let evil_reply = "451 4.3.0 wait\rID: status=sent\x1b]0;pwned\x07 \u{9b}2J";
    sink.set_rcpt_reply("bob@example.jp", Some(evil_reply));
    let map = format!("example.jp smtp:[127.0.0.1]:{}\n", sink.port);
    let d = Daemon::start(&map, "", "");
    let mut c = d.client();
    c.send_raw(b"EHLO evil\x1b[2J\x07.example\r\n");
    assert!(c.reply().starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@b.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@example.jp>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let body = b"Subject: \x1b[31mred\x07\r\n\r\nbody\x1b[0m\r\n";
    c.send_raw(body);
    c.send_raw(b".\r\n");
    let r = c.reply();
    assert!(r.starts_with("250"), "{r}");
    let id = r.rsplit(' ').next().unwrap().to_string();
    // The primary's 4xx is recorded as the recipient's last reply.
    assert!(
        common::wait_for(20, || {
            d.db()
                .query_row(
                    "SELECT count(*) FROM recipients WHERE last_reply IS NOT NULL",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap_or(0)
                == 1
        }),
        "no delivery attempt recorded\n{}",
        d.log()
    );

    let (code, env, err) = d.cli(&["queue", "show", &id, "--envelope"]);
    assert_eq!(code, 0, "{err}");
    assert!(raw_controls(&env).is_empty(), "{env:?}");
    assert!(env.contains("helo evil\\x1b[2J\\x07.example"), "{env}");
    assert!(
        env.contains("wait\\x0dID: status=sent\\x1b]0;pwned\\x07 \\u{009b}2J"),
        "{env}"
    );
    for view in [
        vec!["queue", "list"],
        vec!["queue", "show", &id],
        vec!["queue", "show", &id, "--headers"],
    ] {
        let (code, out, err) = d.cli(&view);
        assert_eq!(code, 0, "{view:?}: {err}");
        assert!(raw_controls(&out).is_empty(), "{view:?}: {out:?}");
    }
    let (_, list, _) = d.cli(&["queue", "list"]);
    assert!(list.contains("wait\\x0dID: status=sent"), "{list}");
    // --raw is the stored message, byte for byte.
    let (code, raw, _) = d.cli(&["queue", "show", &id, "--raw"]);
    assert_eq!(code, 0);
    assert_eq!(raw.as_bytes(), &d.stored()[0][..]);
    assert!(raw.as_bytes().ends_with(body));

    let log = d.log();
    assert!(log.contains("status=deferred"), "{log}");
    assert!(raw_controls(&log).is_empty(), "{log:?}");
    assert!(!log.contains('\r'), "{log:?}");
}
