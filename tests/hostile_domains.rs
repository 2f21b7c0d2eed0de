//! One spelling of every domain (issue 16 item 3): relay control, the
//! static `relay_recipients` list and the callout cache all judge the same
//! canonical domain (lower-case A-labels, UTS 46 mapping), so a look-alike
//! spelling of a listed domain can't slip past the list, and invisible
//! characters (zero-width space, soft hyphen) are refused outright.

mod common;

use common::sink::Sink;
use common::{wait_for, Client, Daemon};

/// A session with SMTPUTF8 declared, so the IDN forms are judged on their
/// domain and not refused for want of SMTPUTF8.
fn utf8_session(d: &Daemon) -> Client {
    let mut c = d.client();
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    let r = c.cmd("MAIL FROM:<sender@sender.example> SMTPUTF8");
    assert!(r.starts_with("250"), "{r}");
    c
}

fn rcpt(d: &Daemon, addr: &str) -> String {
    utf8_session(d).cmd(&format!("RCPT TO:<{addr}>"))
}

fn listed(list: &str, transport: &str, relay: &str) -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay_recipients");
    std::fs::write(&path, list).unwrap();
    let d = Daemon::start_with(
        transport,
        "",
        "",
        &format!("relay_recipients = \"{}\"\n{relay}", path.display()),
    );
    (dir, d)
}

/// With only `valid@example.jp` listed, no other spelling of example.jp
/// gets an unknown user accepted (the backscatter of issue 16).
#[test]
fn only_the_listed_user_is_accepted_in_any_spelling_of_the_domain() {
    let sink = Sink::start();
    let map = format!("example.jp smtp:[127.0.0.1]:{}\n", sink.port);
    let (_dir, d) = listed("valid@example.jp\n", &map, "");

    // Fullwidth forms: UTS 46 maps them to example.jp, so the list judges
    // them as example.jp: the unknown user is unknown, the listed one valid.
    let r = rcpt(&d, "nosuch@ｅｘａｍｐｌｅ．ｊｐ");
    assert!(r.starts_with("550 5.1.1"), "fullwidth domain: {r}");
    let r = rcpt(&d, "nosuch@example.jp");
    assert!(r.starts_with("550 5.1.1"), "{r}");
    let r = rcpt(&d, "valid@ｅｘａｍｐｌｅ．ｊｐ");
    assert!(r.starts_with("250"), "fullwidth domain, listed user: {r}");
    let r = rcpt(&d, "valid@EXAMPLE.JP.");
    assert!(r.starts_with("250"), "{r}");

    // Invisible characters: refused as malformed, whoever the user is.
    for a in [
        "nosuch@example.jp\u{200B}",
        "nosuch@exa\u{00AD}mple.jp",
        "valid@exa\u{00AD}mple.jp",
        "valid@exam\u{200B}ple.jp",
        "nosuch@exa\u{2060}mple.jp",
        "nosuch@exa\u{FEFF}mple.jp",
        "nosuch@exa\u{200D}mple.jp",
    ] {
        let r = rcpt(&d, a);
        assert!(r.starts_with("553 5.1.3"), "{a:?}: {r}");
    }
    assert_eq!(sink.count(), 0);

    // The mapped spelling is accepted for the listed user and relayed as
    // the client wrote it; the primary decides what it makes of it.
    let mut c = d.client();
    let r = c.send_mail_args(
        "<s@sender.example> SMTPUTF8",
        &["<valid@ｅｘａｍｐｌｅ．ｊｐ>"],
        b"Subject: fullwidth\r\n\r\nhi\r\n",
    );
    assert!(r.starts_with("250"), "{r}");
    assert!(wait_for(10, || sink.count() == 1), "{}", d.log());
    assert_eq!(sink.txns()[0].rcpts, vec!["valid@ｅｘａｍｐｌｅ．ｊｐ"]);
}

/// A list written with U-labels matches the A-label spelling and the
/// other way round.
#[test]
fn the_list_matches_a_labels_and_u_labels_alike() {
    let map = "例え.jp smtp:[127.0.0.1]:9\nxn--eckwd4c7c.com smtp:[127.0.0.1]:9\n";
    let (_dir, d) = listed("valid@例え.jp\nother@xn--eckwd4c7c.com\n", map, "");
    assert!(rcpt(&d, "valid@xn--r8jz45g.jp").starts_with("250"));
    assert!(rcpt(&d, "valid@XN--R8JZ45G.JP").starts_with("250"));
    assert!(rcpt(&d, "valid@例え.jp").starts_with("250"));
    let r = rcpt(&d, "nosuch@xn--r8jz45g.jp");
    assert!(r.starts_with("550 5.1.1"), "{r}");
    assert!(rcpt(&d, "other@ドメイン.com").starts_with("250"));
    let r = rcpt(&d, "nosuch@ドメイン.com");
    assert!(r.starts_with("550 5.1.1"), "{r}");
}

/// Non-ASCII in MAIL or RCPT needs SMTPUTF8.
#[test]
fn non_ascii_without_smtputf8_is_refused_5_6_7() {
    let map = "example.jp smtp:[127.0.0.1]:9\n例え.jp smtp:[127.0.0.1]:9\n";
    let (_dir, d) = listed("valid@example.jp\n", map, "");
    let mut c = d.client();
    c.cmd("EHLO client.test");
    let r = c.cmd("MAIL FROM:<s@送信.example>");
    assert!(r.starts_with("553 5.6.7"), "{r}");
    let r = c.cmd("MAIL FROM:<s@sender.example>");
    assert!(r.starts_with("250"), "{r}");
    for a in [
        "nosuch@ｅｘａｍｐｌｅ．ｊｐ",
        "nosuch@example.jp\u{200B}",
        "user@例え.jp",
    ] {
        let r = c.cmd(&format!("RCPT TO:<{a}>"));
        assert!(r.starts_with("553 5.6.7"), "{a:?}: {r}");
    }
}

/// The callout cache is keyed by the canonical domain: an answer learnt
/// for the U-label spelling serves the A-label one (and is used while the
/// primary is down instead of accepting blindly).
#[test]
fn the_callout_cache_serves_every_spelling() {
    let sink = Sink::start();
    sink.set_rcpt_reply("mallory@例え.jp", Some("550 5.1.1 User unknown"));
    let map = format!("例え.jp smtp:[127.0.0.1]:{}\n", sink.port);
    let d = Daemon::start_with(&map, "", "", "recipient_verify = \"callout\"\n");
    let r = rcpt(&d, "mallory@例え.jp");
    assert!(r.starts_with("550 5.1.1"), "{r}");
    sink.down();
    let r = rcpt(&d, "mallory@xn--r8jz45g.jp");
    assert!(
        r.starts_with("550 5.1.1"),
        "A-label spelling: {r}\n{}",
        d.log()
    );
    let r = rcpt(&d, "Mallory@XN--R8JZ45G.JP.");
    assert!(r.starts_with("550 5.1.1"), "{r}");
    let (code, out, _) = d.cli(&["recipients", "check", "mallory@xn--r8jz45g.jp"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cache (unknown"), "{out}");
}
