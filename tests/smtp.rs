//! Inbound SMTP against the real `mx2 serve`: relay control, limits, DATA
//! edge cases, header rules on the stored message, durability.

mod common;

use common::{wait_for, Daemon, OPERATOR_RULES};

const MAP: &str = "example.jp smtp:[127.0.0.1]:9\nexample.net smtp:[127.0.0.1]:9\n.sub.example.org smtp:[127.0.0.1]:9\n";

fn ham() -> Vec<u8> {
    b"From: Alice <alice@sender.example>\r\n\
To: bob@example.jp\r\n\
Subject: hello\r\n\
X-Spam-Checker-Version: SpamAssassin 4.0.0 (2022-12-13) on mx2.example.net\r\n\
X-Spam-Level: \r\n\
X-Spam-Status: No, score=-1.0 required=5.0 tests=ALL_TRUSTED,\r\n\
\tDKIM_SIGNED autolearn=ham autolearn_force=no\r\n\
\tversion=4.0.0\r\n\
X-Virus-Scanned: clamav-milter 1.0.7 at mx2\r\n\
X-Virus-Status: Clean\r\n\
X-Keep-Me: yes\r\n\
\r\n\
Body line one\r\n\
X-Spam-Level: in the body stays\r\n\
.leading dot\r\n"
        .to_vec()
}

/// The stored message minus mx2's own Received header (its first 3 lines).
fn without_received(m: &[u8]) -> &[u8] {
    assert!(
        m.starts_with(b"Received: from "),
        "{}",
        String::from_utf8_lossy(m)
    );
    let mut pos = 0;
    for _ in 0..3 {
        pos += m[pos..].iter().position(|&b| b == b'\n').unwrap() + 1;
    }
    &m[pos..]
}

#[test]
fn accepts_relay_domains_and_strips_spam_headers() {
    let d = Daemon::start(MAP, OPERATOR_RULES, "");
    let mut c = d.client();
    assert!(
        c.greeting.starts_with("220 mx2.test ESMTP"),
        "{}",
        c.greeting
    );
    let r = c.send_mail("alice@sender.example", &["bob@example.jp"], &ham());
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    let id = r.rsplit(' ').next().unwrap().to_string();
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye");

    let stored = d.stored();
    assert_eq!(stored.len(), 1);
    let m = &stored[0];
    let text = String::from_utf8_lossy(m);
    assert!(text.contains(&format!("with ESMTP id {id}")), "{text}");
    assert!(text.contains("for <bob@example.jp>"), "{text}");
    let expected = b"From: Alice <alice@sender.example>\r\n\
To: bob@example.jp\r\n\
Subject: hello\r\n\
X-Keep-Me: yes\r\n\
\r\n\
Body line one\r\n\
X-Spam-Level: in the body stays\r\n\
.leading dot\r\n";
    assert_eq!(
        String::from_utf8_lossy(without_received(m)),
        String::from_utf8_lossy(expected)
    );
    let log = d.log();
    assert!(
        log.contains(&format!("{id}: from=<alice@sender.example> size=")),
        "{log}"
    );
    assert!(log.contains("nrcpt=1 client=unknown[127.0.0.1]"), "{log}");
}

#[test]
fn relay_denied_and_address_tricks() {
    let d = Daemon::start(MAP, "", "");
    let mut c = d.client();
    c.cmd("EHLO client.test");
    assert!(c.cmd("MAIL FROM:<a@sender.example>").starts_with("250"));
    for (rcpt, code) in [
        ("<x@other.example>", "554 5.7.1"),
        ("<x@example.jp.evil.example>", "554 5.7.1"),
        ("<x@[127.0.0.1]>", "554 5.7.1"),
        ("<x@sub.example.org>", "554 5.7.1"), // only strict subdomains match .sub.example.org
        ("<user%other.example@example.jp>", "550 5.7.1"),
        ("<other.example!user@example.jp>", "550 5.7.1"),
        ("<\"user@other.example\"@example.jp>", "550 5.7.1"),
        ("<@example.jp:user@other.example>", "554 5.7.1"),
        ("<>", "501 5.1.3"),
        ("<no-domain>", "501 5.1.3"),
    ] {
        let r = c.cmd(&format!("RCPT TO:{rcpt}"));
        assert!(r.starts_with(code), "{rcpt}: {r}");
    }
    for ok in [
        "<bob@example.jp>",
        "<Bob@EXAMPLE.JP>",
        "<bob@example.jp.>",
        "<@relay.example:carol@example.net>",
        "<dave@deep.sub.example.org>",
    ] {
        let r = c.cmd(&format!("RCPT TO:{ok}"));
        assert!(r.starts_with("250 2.1.5"), "{ok}: {r}");
    }
    // No valid recipient in a fresh transaction: DATA is refused.
    c.cmd("RSET");
    c.cmd("MAIL FROM:<>");
    c.cmd("RCPT TO:<x@other.example>");
    assert!(c.cmd("DATA").starts_with("554 5.5.1"));
}

#[test]
fn ehlo_advertises_extensions_and_protocol_errors() {
    let d = Daemon::start(MAP, "", "");
    let mut c = d.client();
    let ehlo = c.cmd("EHLO client.test");
    for ext in [
        "PIPELINING",
        "SIZE 50000000",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "DSN",
        "ETRN",
    ] {
        assert!(ehlo.contains(ext), "{ext} missing: {ehlo}");
    }
    assert!(!ehlo.contains("STARTTLS"), "no cert configured: {ehlo}");
    assert!(c.cmd("RCPT TO:<bob@example.jp>").starts_with("503 5.5.1"));
    assert!(c.cmd("DATA").starts_with("503 5.5.1"));
    assert!(c.cmd("VRFY bob").starts_with("252"));
    assert!(c.cmd("NOOP").starts_with("250"));
    assert!(c.cmd("FOO").starts_with("502 5.5.2"));
    assert!(c
        .cmd("MAIL FROM:<a@b.example> SIZE=60000000")
        .starts_with("552 5.3.4"));
    assert!(c
        .cmd("MAIL FROM:<a@b.example> FROB=1")
        .starts_with("555 5.5.4"));
    assert!(c
        .cmd("MAIL FROM:<a@b.example> BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc+2B1")
        .starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@b.example>").starts_with("503 5.5.1"));
    assert!(c
        .cmd("RCPT TO:<bob@example.jp> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+40example.jp")
        .starts_with("250"));
    assert!(c
        .cmd("RCPT TO:<carol@example.jp> NOTIFY=NEVER,SUCCESS")
        .starts_with("501"));
    let r = c.cmd("DATA");
    assert!(r.starts_with("354"), "{r}");
    c.send_raw(b"Subject: dsn\r\n\r\nx\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    let db = d.db();
    let (ret, envid, body, utf8): (String, String, String, bool) = db
        .query_row("SELECT ret, envid, body, smtputf8 FROM messages", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    assert_eq!(
        (ret.as_str(), envid.as_str(), body.as_str(), utf8),
        ("HDRS", "abc+1", "8BITMIME", true)
    );
    let (notify, orcpt): (String, String) = db
        .query_row("SELECT notify, orcpt FROM recipients", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(notify, "SUCCESS,FAILURE");
    assert_eq!(orcpt, "rfc822;bob@example.jp");
}

#[test]
fn discard_reject_hold() {
    let rules = format!(
        "{OPERATOR_RULES}/^Subject: reject me/ REJECT go away\n/^Subject: hold me/ HOLD inspect\n"
    );
    let d = Daemon::start(MAP, &rules, "");
    let mut c = d.client();
    let spam = b"Subject: buy\r\nX-Spam-Flag: YES\r\n\r\nspam\r\n";
    assert!(c
        .send_mail("s@sender.example", &["bob@example.jp"], spam)
        .starts_with("250"));
    c.cmd("RSET");
    let bounce = b"From: <>\r\nSubject: bounce\r\n\r\nx\r\n";
    assert!(c
        .send_mail("", &["bob@example.jp"], bounce)
        .starts_with("250"));
    c.cmd("RSET");
    let r = c.send_mail(
        "s@sender.example",
        &["bob@example.jp"],
        b"Subject: reject me\r\n\r\nx\r\n",
    );
    assert_eq!(r, "550 5.7.1 go away");
    c.cmd("RSET");
    assert!(c
        .send_mail(
            "s@sender.example",
            &["bob@example.jp"],
            b"Subject: hold me\r\n\r\nx\r\n"
        )
        .starts_with("250"));
    let db = d.db();
    let rows: Vec<(i64, String)> = db
        .prepare("SELECT held, hold_reason FROM messages")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        rows,
        vec![(1, "inspect".to_string())],
        "only the held message is queued"
    );
    assert!(d.log().contains("discard"), "{}", d.log());
}

#[test]
fn pipelining_group_is_answered_in_order() {
    let d = Daemon::start(MAP, "", "");
    let mut c = d.client();
    c.cmd("EHLO client.test");
    c.send_raw(b"MAIL FROM:<a@sender.example>\r\nRCPT TO:<bob@example.jp>\r\nRCPT TO:<x@nowhere.example>\r\nRCPT TO:<carol@example.net>\r\nDATA\r\n");
    assert!(c.reply().starts_with("250 2.1.0"));
    assert!(c.reply().starts_with("250 2.1.5"));
    assert!(c.reply().starts_with("554 5.7.1"));
    assert!(c.reply().starts_with("250 2.1.5"));
    assert!(c.reply().starts_with("354"));
    c.send_raw(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    assert!(c.reply().starts_with("250 2.0.0"));
    assert!(c.reply().starts_with("221"));
    let n: i64 = d
        .db()
        .query_row("SELECT count(*) FROM recipients", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}

#[test]
fn smuggling_never_creates_a_second_message() {
    let d = Daemon::start(MAP, "", "");
    for variant in [
        &b"\n.\n"[..],
        b"\n.\r\n",
        b"\r.\r",
        b"\r\n.\r",
        b"\r\n.\n",
        b"\r.\r\n",
    ] {
        let mut c = d.client();
        c.cmd("EHLO client.test");
        c.cmd("MAIL FROM:<a@sender.example>");
        c.cmd("RCPT TO:<bob@example.jp>");
        assert!(c.cmd("DATA").starts_with("354"));
        let mut payload = b"Subject: first\r\n\r\nfirst body".to_vec();
        payload.extend_from_slice(variant);
        payload.extend_from_slice(b"MAIL FROM:<evil@sender.example>\r\nRCPT TO:<victim@example.jp>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n");
        c.send_raw(&payload);
        let r = c.reply();
        assert!(r.starts_with("250"), "{variant:?}: {r}");
        c.cmd("QUIT");
    }
    // Each session stored exactly one message; the smuggled text is only body.
    let stored = d.stored();
    assert_eq!(stored.len(), 6);
    let victims: i64 = d
        .db()
        .query_row(
            "SELECT count(*) FROM recipients WHERE address LIKE 'victim%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(victims, 0);
    for m in &stored {
        for (i, &b) in m.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(m[i - 1], b'\r', "bare LF stored");
            }
        }
    }
    // NUL next to a line-start dot is refused, not smuggled.
    let mut c = d.client();
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<a@sender.example>");
    c.cmd("RCPT TO:<bob@example.jp>");
    c.cmd("DATA");
    c.send_raw(b"Subject: nul\r\n\r\nx\r\n\x00.\r\nMAIL FROM:<e@x.example>\r\n.\r\n");
    assert!(c.reply().starts_with("554 5.6.0"));
    assert_eq!(d.stored().len(), 6);
}

#[test]
fn size_limit_recipient_limit_and_hops() {
    let d = Daemon::start(
        MAP,
        "",
        "[smtp]\nmax_message_size = \"5kB\"\nmax_recipients = 3\n",
    );
    let mut c = d.client();
    let ehlo = c.cmd("EHLO client.test");
    assert!(ehlo.contains("SIZE 5000"), "{ehlo}");
    c.cmd("MAIL FROM:<a@sender.example>");
    for i in 0..3 {
        assert!(c
            .cmd(&format!("RCPT TO:<u{i}@example.jp>"))
            .starts_with("250"));
    }
    assert!(c.cmd("RCPT TO:<u4@example.jp>").starts_with("452 4.5.3"));
    c.cmd("DATA");
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..200 {
        big.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    big.extend_from_slice(b".\r\n");
    c.send_raw(&big);
    assert!(c.reply().starts_with("552 5.3.4"));
    // The session goes on after a refused message.
    let mut hops = String::new();
    for i in 0..50 {
        hops.push_str(&format!(
            "Received: from h{i}.example by h{}.example; Fri, 27 Nov 2026 00:00:00 +0000\r\n",
            i + 1
        ));
    }
    hops.push_str("Subject: loop\r\n\r\nx\r\n");
    c.cmd("RSET");
    let r = c.send_mail("a@sender.example", &["bob@example.jp"], hops.as_bytes());
    assert!(r.starts_with("554 5.4.6"), "{r}");
    assert!(d.stored().is_empty());
}

#[test]
fn line_too_long_and_early_talker() {
    let d = Daemon::start(MAP, "", "");
    let mut c = d.client();
    let long = "NOOP ".to_string() + &"x".repeat(10_000);
    assert!(c.cmd(&long).starts_with("500 5.5.2"));
    assert!(
        c.cmd("NOOP").starts_with("250"),
        "session continues after an overlong line"
    );

    let mut raw = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    use std::io::{Read, Write};
    raw.write_all(b"EHLO early.example\r\n").unwrap();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut s = String::new();
    let _ = raw.read_to_string(&mut s);
    assert!(s.starts_with("554 5.5.1"), "{s}");
}

#[test]
fn per_ip_connection_limit() {
    let d = Daemon::start(MAP, "", "[smtp]\nmax_connections_per_ip = 2\n");
    let _a = d.client();
    let _b = d.client();
    let c = common::Client::connect(d.port);
    assert!(c.greeting.starts_with("421 4.7.0"), "{}", c.greeting);
    drop(_a);
    assert!(wait_for(5, || common::Client::connect(d.port)
        .greeting
        .starts_with("220")));
}

#[test]
fn kill9_after_250_loses_nothing() {
    let mut d = Daemon::start(MAP, OPERATOR_RULES, "");
    let mut ids = Vec::new();
    let mut c = d.client();
    for i in 0..20 {
        c.cmd("RSET");
        let r = c.send_mail(
            "a@sender.example",
            &["bob@example.jp"],
            format!("Subject: n{i}\r\n\r\nbody {i}\r\n").as_bytes(),
        );
        assert!(r.starts_with("250"), "{r}");
        ids.push(r.rsplit(' ').next().unwrap().to_string());
    }
    d.kill9();
    d.spawn();
    let db = d.db();
    for id in &ids {
        let n: i64 = db
            .query_row("SELECT count(*) FROM messages WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 1, "message {id} lost");
    }
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}

#[test]
fn sigterm_exits_zero() {
    let mut d = Daemon::start(MAP, "", "");
    let _idle = d.client();
    assert_eq!(d.terminate(), Some(0), "{}", d.log());
}

#[test]
fn transport_map_change_is_picked_up_without_restart() {
    let d = Daemon::start(MAP, "", "");
    let mut c = d.client();
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<a@sender.example>");
    assert!(c.cmd("RCPT TO:<x@new.example>").starts_with("554"));
    std::fs::write(
        d.path("transport.map"),
        format!("{MAP}new.example smtp:[127.0.0.1]:9\n"),
    )
    .unwrap();
    assert!(wait_for(5, || c
        .cmd("RCPT TO:<x@new.example>")
        .starts_with("250")));
    // A broken file keeps the previous table.
    std::fs::write(d.path("transport.map"), "broken.example local:\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(c.cmd("RCPT TO:<y@new.example>").starts_with("250"));
    assert!(d.log().contains("transport.map:1"), "{}", d.log());
}

#[test]
fn shutdown_says_421_to_idle_and_new_sessions_and_finishes_data() {
    let mut d = Daemon::start(MAP, "", "");
    let mut idle = d.client();
    idle.cmd("EHLO idle.test");
    let mut busy = d.client();
    busy.cmd("EHLO busy.test");
    busy.cmd("MAIL FROM:<a@sender.example>");
    busy.cmd("RCPT TO:<bob@example.jp>");
    assert!(busy.cmd("DATA").starts_with("354"));
    busy.send_raw(b"Subject: in flight\r\n\r\nfirst half\r\n");
    d.signal("TERM");
    // The idle session is told at once.
    assert!(idle.reply().starts_with("421 4.3.2"));
    // New connections get a 421 greeting while the old sessions drain.
    let late = common::Client::connect(d.port);
    assert!(late.greeting.starts_with("421 4.3.2"), "{}", late.greeting);
    // The session in DATA may finish its message, and it is kept.
    busy.send_raw(b"second half\r\n.\r\n");
    let r = busy.reply();
    assert!(r.starts_with("250"), "{r}");
    let id = r.rsplit(' ').next().unwrap().to_string();
    busy.send_raw(b"QUIT\r\n");
    drop(busy);
    let code = d.terminate();
    assert_eq!(code, Some(0), "{}", d.log());
    let n: i64 = d
        .db()
        .query_row("SELECT count(*) FROM messages WHERE id = ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n, 1);
}
