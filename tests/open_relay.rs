//! Open-relay test, table driven: the classic relay-test address forms
//! (as the old relay testers tried them: `%` hack, bang paths, quoted
//! local parts, source routes, IP literals, trailing dots, case, IDN in
//! both forms, look-alike domains, empty local parts, ...) are all refused
//! for domains mx2 does not relay, whatever the form; the relay domains are
//! still accepted in every legitimate form, and those recipients really
//! reach the primary. The reply each form got is printed as a table
//! (`cargo test --test open_relay -- --nocapture`).

mod common;

use common::sink::Sink;
use common::{wait_for, Client, Daemon};

/// Relayed: example.jp, 例え.jp (as a U-label in the map), strict
/// subdomains of sub.example.org. mx2's own name is mx2.test.
fn map(sink: &Sink) -> String {
    let p = sink.port;
    format!(
        "example.jp smtp:[127.0.0.1]:{p}\n例え.jp smtp:[127.0.0.1]:{p}\n.sub.example.org smtp:[127.0.0.1]:{p}\n* smtp:[127.0.0.1]:{p}\n"
    )
}

/// RCPT arguments (everything after `RCPT TO:`) that must be refused.
const REFUSED: &[&str] = &[
    // Plain third-party domains, in every spelling.
    "<user@other.example>",
    "<USER@OTHER.EXAMPLE>",
    "<user@other.example.>",
    "<user@other.example..>",
    " <user@other.example>",
    "user@other.example",
    "<user@localhost>",
    "<user@mx2.test>",
    "<postmaster@other.example>",
    // The % hack.
    "<user%other.example@example.jp>",
    "<USER%OTHER.EXAMPLE@EXAMPLE.JP>",
    "<user%other.example@[127.0.0.1]>",
    "<user%other.example%example.jp@example.jp>",
    "<\"user%other.example\"@example.jp>",
    // Quoted local parts hiding an address.
    "<\"user@other.example\"@example.jp>",
    "<\"user@other.example\"@[127.0.0.1]>",
    "<\"user@other.example\">",
    "<\"user\\\"@other.example\"@example.jp>",
    "<\"user@example.jp\"@other.example>",
    // Several @.
    "<user@other.example@example.jp>",
    "<user@other.example@[127.0.0.1]>",
    "<user@example.jp@other.example>",
    "<user@[127.0.0.1]@example.jp>",
    "<user\\@other.example@example.jp>",
    // Bang paths (UUCP).
    "<other.example!user@example.jp>",
    "<other.example!user>",
    "<other.example!user@[127.0.0.1]>",
    "<example.jp!other.example!user@example.jp>",
    // Source routes: judged by the final address.
    "<@example.jp:user@other.example>",
    "<@[127.0.0.1]:user@other.example>",
    "<@example.jp,@example.jp:user@other.example>",
    "<@other.example:user%example.jp@example.jp>",
    // IP literals, ours and others.
    "<user@[127.0.0.1]>",
    "<\"user\"@[127.0.0.1]>",
    "<user@[IPv6:::1]>",
    "<user@[192.0.2.1]>",
    "<user@127.0.0.1>",
    // Look-alike domains.
    "<user@example.jp.other.example>",
    "<user@other.example.jp>",
    "<user@example.jpx>",
    "<user@xexample.jp>",
    "<user@example.jp%other.example>",
    "<user@example.jp:other.example>",
    "<user@example.jp,other.example>",
    "<user@.example.jp>",
    "<user@example..jp>",
    "<user@sub.example.org>",
    "<user@x.sub.example.org.other.example>",
    "<user@*.example.jp>",
    // IDN: a foreign domain in U-label and A-label form.
    "<user@ドメイン.com>",
    "<user@xn--eckwd4c7c.com>",
    "<user@例え.jp.other.example>",
    // Empty or missing local parts, empty paths.
    "<@other.example>",
    "<\"\"@other.example>",
    "<@example.jp>",
    "<>",
    "<postmaster>",
];

/// RCPT arguments that must be accepted, and the recipient the primary
/// must then see.
const ACCEPTED: &[(&str, &str)] = &[
    ("<bob@example.jp>", "bob@example.jp"),
    ("<Bob@EXAMPLE.JP>", "Bob@example.jp"),
    ("<bob@example.jp.>", "bob@example.jp"),
    ("bob2@example.jp", "bob2@example.jp"),
    ("<@relay.example:carol@example.jp>", "carol@example.jp"),
    ("<@a.example,@b.example:dave@example.jp>", "dave@example.jp"),
    ("<\"john smith\"@example.jp>", "\"john smith\"@example.jp"),
    ("<bob+tag@example.jp>", "bob+tag@example.jp"),
    ("<o'hara@example.jp>", "o'hara@example.jp"),
    ("<user@x.sub.example.org>", "user@x.sub.example.org"),
    ("<user@例え.jp>", "user@例え.jp"),
    ("<user2@xn--r8jz45g.jp>", "user2@xn--r8jz45g.jp"),
    ("<ユーザー@example.jp>", "ユーザー@example.jp"),
];

/// Opens a session with SMTPUTF8 declared (so IDN forms are judged on
/// relaying, not refused for want of SMTPUTF8).
fn session(d: &Daemon) -> Client {
    let mut c = d.client();
    assert!(c.cmd("EHLO tester.example").starts_with("250"));
    let r = c.cmd("MAIL FROM:<tester@other.example> SMTPUTF8");
    assert!(r.starts_with("250"), "{r}");
    c
}

#[test]
fn classic_relay_test_forms_are_refused_and_relay_domains_accepted() {
    let sink = Sink::start();
    let d = Daemon::start(&map(&sink), "", "");
    let mut table = Vec::new();
    // Refused RCPTs count as errors (20 end a session): a fresh one every 10.
    for batch in REFUSED.chunks(10) {
        let mut c = session(&d);
        for rcpt in batch {
            let r = c.cmd(&format!("RCPT TO:{rcpt}"));
            table.push((*rcpt, r.clone()));
            assert!(
                r.starts_with('5'),
                "relay hole: RCPT TO:{rcpt} answered {r:?}"
            );
        }
        // Nothing was accepted: DATA has no recipient.
        let r = c.cmd("DATA");
        assert!(r.starts_with("554 5.5.1"), "{r}");
    }
    // Without SMTPUTF8 a foreign U-label is still refused (5.6.7 or relay).
    let mut c = d.client();
    c.cmd("EHLO tester.example");
    c.cmd("MAIL FROM:<tester@other.example>");
    let r = c.cmd("RCPT TO:<user@ドメイン.com>");
    assert!(r.starts_with('5'), "{r}");
    table.push(("<user@ドメイン.com> (no SMTPUTF8)", r));

    // The legitimate forms, in one transaction that reaches the primary.
    let mut c = session(&d);
    for (rcpt, _) in ACCEPTED {
        let r = c.cmd(&format!("RCPT TO:{rcpt}"));
        table.push((*rcpt, r.clone()));
        assert!(r.starts_with("250 2.1.5"), "RCPT TO:{rcpt} refused: {r}");
    }
    let r = c.cmd("DATA");
    assert!(r.starts_with("354"), "{r}");
    c.send_raw(b"Subject: relay test\r\nMessage-ID: <relaytest@tester.example>\r\n\r\nok\r\n.\r\n");
    let r = c.reply();
    assert!(r.starts_with("250"), "{r}");

    let width = table
        .iter()
        .map(|(a, _)| a.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::from("open-relay table (RCPT TO: argument -> reply):\n");
    for (a, r) in &table {
        let pad = width - a.chars().count();
        out.push_str(&format!("  {a}{}  {r}\n", " ".repeat(pad)));
    }
    eprint!("{out}");

    // Each legitimate recipient reached the primary, exactly as accepted
    // (a repeated recipient once); nothing else did.
    let mut want: Vec<String> = ACCEPTED.iter().map(|(_, w)| w.to_string()).collect();
    want.sort();
    want.dedup();
    assert!(
        wait_for(15, || {
            let got: usize = sink.txns().iter().map(|t| t.rcpts.len()).sum();
            got >= want.len()
        }),
        "{:?}\n{}",
        sink.txns(),
        d.log()
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut got: Vec<String> = sink.txns().iter().flat_map(|t| t.rcpts.clone()).collect();
    got.sort();
    assert_eq!(got, want);
    for t in sink.txns() {
        assert!(t.text().contains("Message-ID: <relaytest@tester.example>"));
    }
}
