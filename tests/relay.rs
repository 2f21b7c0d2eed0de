//! The relay engine end to end: the real `mx2 serve` process, a raw SMTP
//! client in front, the test sink (`common::sink`) playing the primary
//! behind, and for MX tests a tiny DNS server on loopback.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::sink::Sink;
use common::{wait_for, Daemon};
use mail_parser::MimeHeaders;

/// `(address, status, attempts, last_reply)` of every queued recipient.
fn rows(d: &Daemon) -> Vec<(String, String, i64, Option<String>)> {
    let db = d.db();
    let mut st = db
        .prepare(
            "SELECT address, status, attempts, last_reply FROM recipients ORDER BY msg_id, idx",
        )
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn messages(d: &Daemon) -> i64 {
    d.db()
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap()
}

fn row(d: &Daemon, addr: &str) -> Option<(String, String, i64, Option<String>)> {
    rows(d).into_iter().find(|r| r.0 == addr)
}

fn deferred(d: &Daemon, addr: &str) -> bool {
    matches!(row(d, addr), Some((_, s, _, _)) if s == "deferred")
}

fn route(domain: &str, sink: &Sink) -> String {
    format!("{domain} smtp:[127.0.0.1]:{}\n", sink.port)
}

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: Sender <s@sender.test>\r\nTo: u@example.jp\r\nSubject: {subject}\r\nMessage-ID: <{subject}@client.test>\r\n\r\nHello.\r\n"
    )
    .into_bytes()
}

const SLOW_RETRY: &str = "min_backoff = \"1h\"\nmax_backoff = \"1h\"\n";

#[test]
fn relays_byte_exact_after_the_primary_comes_back_and_a_flush() {
    let sink = Sink::start_down();
    let d = Daemon::start_with(&route("example.jp", &sink), "", SLOW_RETRY, "");
    let mut body = b"From: Sender <s@sender.test>\r\nTo: u@example.jp\r\nSubject: exact\r\nMessage-ID: <exact@client.test>\r\nX-Folded: one\r\n\ttwo\r\n\r\n".to_vec();
    body.extend_from_slice(
        b".leading dot\r\n..two dots\r\n.\r\n \r\n\r\nmiddle\r\n\xe2\x82\xac eight-bit\r\n",
    );
    body.extend_from_slice(&[b'x'; 900]);
    body.extend_from_slice(b"\r\n.\r\n");
    let r = d
        .client()
        .send_mail("s@sender.test", &["u@example.jp"], &body);
    assert!(r.starts_with("250"), "{r}");

    assert!(
        wait_for(10, || deferred(&d, "u@example.jp")),
        "not deferred: {:?}\n{}",
        rows(&d),
        d.log()
    );
    let (_, _, attempts, reply) = row(&d, "u@example.jp").unwrap();
    assert!(attempts >= 1);
    let reply = reply.unwrap_or_default();
    assert!(
        reply.contains(&format!("127.0.0.1]:{}", sink.port))
            && reply.contains("Connection refused"),
        "{reply}"
    );
    let stored = d.stored().remove(0);
    assert!(
        stored.starts_with(b"Received: "),
        "{}",
        String::from_utf8_lossy(&stored)
    );
    assert!(
        stored.ends_with(&body),
        "stored data is not Received + original"
    );

    // Back up: with a 1 h backoff nothing moves until the flush.
    sink.up();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(sink.count(), 0);
    let (code, out, err) = d.cli(&["queue", "flush"]);
    assert_eq!(code, 0, "{out}{err}");
    let flushed = Instant::now();
    assert!(
        wait_for(10, || sink.count() == 1),
        "not delivered after flush\n{}",
        d.log()
    );
    assert!(
        flushed.elapsed() < Duration::from_secs(5),
        "flush took {:?}",
        flushed.elapsed()
    );

    let t = &sink.txns()[0];
    assert_eq!(
        t.data, stored,
        "relayed bytes differ from the queued message"
    );
    assert_eq!(t.sender(), "s@sender.test");
    assert_eq!(t.rcpts, vec!["u@example.jp".to_string()]);
    assert!(wait_for(5, || messages(&d) == 0), "{:?}", rows(&d));
    let log = d.log();
    assert!(
        log.contains("to=<u@example.jp>") && log.contains("status=deferred"),
        "{log}"
    );
    assert!(
        log.contains("status=sent (250 2.0.0 Ok: queued as SINK1)"),
        "{log}"
    );
    assert!(log.contains(": removed"), "{log}");
}

/// A message over 1 MB takes the streamed paths (stored through SQLite's
/// blob I/O, read back the same way, sent in dot-stuffed pieces); small ones
/// around it ride the pipelined path on the same session. All arrive byte
/// for byte.
#[test]
fn a_big_message_between_small_ones_is_relayed_byte_exact() {
    let sink = Sink::start_down();
    let d = Daemon::start_with(&route("example.jp", &sink), "", SLOW_RETRY, "");
    let mut big =
        b"From: <s@sender.test>\r\nSubject: big\r\nMessage-ID: <big@client.test>\r\n\r\n".to_vec();
    let mut n = 0;
    while big.len() < 3 * 1024 * 1024 {
        // Dot lines everywhere, some of them across the 256 KB piece edges.
        let line = match n % 7 {
            0 => ".".to_string(),
            1 => "..two".to_string(),
            _ => format!("line {n} {}", "y".repeat(n % 300)),
        };
        big.extend_from_slice(line.as_bytes());
        big.extend_from_slice(b"\r\n");
        n += 1;
    }
    let mut c = d.client();
    for (i, body) in [message("small-1"), big.clone(), message("small-2")]
        .iter()
        .enumerate()
    {
        let r = c.send_mail("s@sender.test", &["u@example.jp"], body);
        assert!(r.starts_with("250"), "message {i}: {r}");
    }
    let stored = d.stored();
    assert_eq!(stored.len(), 3);
    assert!(
        stored.iter().any(|m| m.ends_with(&big)),
        "big message stored whole"
    );
    sink.up();
    d.cli(&["queue", "flush"]);
    assert!(wait_for(20, || sink.count() == 3), "{}", d.log());
    let mut sent: Vec<Vec<u8>> = sink.txns().into_iter().map(|t| t.data).collect();
    let mut want = stored;
    sent.sort();
    want.sort();
    assert!(
        sent == want,
        "relayed bytes differ from the queued messages"
    );
    assert!(wait_for(5, || messages(&d) == 0), "{:?}", rows(&d));
}

#[test]
fn etrn_sends_a_domains_backlog_now() {
    let sink = Sink::start_down();
    let d = Daemon::start_with(&route("example.jp", &sink), "", SLOW_RETRY, "");
    let r = d
        .client()
        .send_mail("s@sender.test", &["u@example.jp"], &message("etrn"));
    assert!(r.starts_with("250"), "{r}");
    assert!(
        wait_for(10, || deferred(&d, "u@example.jp")),
        "{:?}",
        rows(&d)
    );
    sink.up();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sink.count(), 0);
    let mut c = d.client();
    assert!(c.cmd("EHLO primary.test").starts_with("250"));
    let r = c.cmd("ETRN example.jp");
    assert!(r.starts_with("250"), "{r}");
    assert!(
        wait_for(5, || sink.count() == 1),
        "ETRN did not flush\n{}",
        d.log()
    );
}

#[test]
fn next_attempt_delivers_when_the_primary_is_back() {
    let sink = Sink::start_down();
    let d = Daemon::start(&route("example.jp", &sink), "", "");
    let r = d
        .client()
        .send_mail("s@sender.test", &["u@example.jp"], &message("retry"));
    assert!(r.starts_with("250"), "{r}");
    assert!(
        wait_for(10, || deferred(&d, "u@example.jp")),
        "{:?}",
        rows(&d)
    );
    sink.up();
    assert!(
        wait_for(10, || sink.count() == 1),
        "not retried\n{}",
        d.log()
    );
    assert!(wait_for(5, || messages(&d) == 0));
}

#[test]
fn per_recipient_results_and_a_bounce_for_the_5xx() {
    let sink = Sink::start();
    sink.set_rcpt_reply("later@example.jp", Some("451 4.3.0 Try again later"));
    sink.set_rcpt_reply(
        "bad@example.jp",
        Some("550 5.1.1 <bad@example.jp>: Recipient address rejected: User unknown"),
    );
    let map = format!(
        "{}{}",
        route("example.jp", &sink),
        route("sender.test", &sink)
    );
    let d = Daemon::start_with(&map, "", SLOW_RETRY, "");
    let r = d.client().send_mail(
        "s@sender.test",
        &["ok@example.jp", "later@example.jp", "bad@example.jp"],
        &message("mixed"),
    );
    assert!(r.starts_with("250"), "{r}");

    assert!(
        wait_for(10, || sink.to("s@sender.test").len() == 1),
        "no DSN\n{}",
        d.log()
    );
    // One transaction carried all three recipients.
    let main = sink.to("ok@example.jp");
    assert_eq!(main.len(), 1);
    assert_eq!(main[0].rcpt_lines.len(), 3, "{:?}", main[0]);
    assert_eq!(main[0].rcpts, vec!["ok@example.jp".to_string()]);

    let dsn = &sink.to("s@sender.test")[0];
    assert_eq!(
        dsn.mail_from.split_whitespace().next(),
        Some("<>"),
        "{}",
        dsn.mail_from
    );
    check_dsn(
        &dsn.data,
        "bad@example.jp",
        "failed",
        "5.1.1",
        Some("Subject: mixed"),
    );
    let text = dsn.text();
    assert!(
        text.contains("Diagnostic-Code: smtp; 550 5.1.1 <bad@example.jp>"),
        "{text}"
    );
    assert!(text.contains("Remote-MTA: dns; 127.0.0.1"), "{text}");
    assert!(
        !text.contains("later@example.jp"),
        "the deferred recipient is not in the DSN: {text}"
    );
    assert!(
        !text.contains("Hello."),
        "RET default returns headers only: {text}"
    );

    let (_, status, attempts, reply) = row(&d, "later@example.jp").expect("later@ still queued");
    assert_eq!(status, "deferred");
    assert_eq!(attempts, 1);
    let reply = reply.unwrap_or_default();
    assert!(
        reply.contains("said: 451 4.3.0 Try again later (in reply to RCPT TO command)"),
        "{reply}"
    );
    assert!(row(&d, "ok@example.jp").is_none() && row(&d, "bad@example.jp").is_none());

    // The 451 clears: only that recipient is sent again.
    sink.set_rcpt_reply("later@example.jp", None);
    d.cli(&["queue", "flush"]);
    assert!(
        wait_for(10, || sink.to("later@example.jp").len() == 1),
        "{}",
        d.log()
    );
    assert!(wait_for(5, || messages(&d) == 0), "{:?}", rows(&d));
    assert_eq!(sink.to("ok@example.jp").len(), 1);
    assert_eq!(sink.to("s@sender.test").len(), 1);
    let log = d.log();
    assert!(
        log.contains("to=<bad@example.jp>") && log.contains("status=bounced"),
        "{log}"
    );
    assert!(log.contains("sender non-delivery notification"), "{log}");
}

/// Checks the RFC 3464 shape of a DSN with mail-parser.
fn check_dsn(data: &[u8], rcpt: &str, action: &str, status: &str, original: Option<&str>) {
    let text = String::from_utf8_lossy(data);
    let m = mail_parser::MessageParser::default()
        .parse(data)
        .expect("DSN parses");
    let ct = m.content_type().expect("content type");
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("report"));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    assert!(text.starts_with("From: MAILER-DAEMON@mx2.test"), "{text}");
    let subparts: Vec<String> = m
        .parts
        .iter()
        .skip(1)
        .filter_map(|p| p.content_type())
        .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
        .collect();
    assert!(subparts.len() >= 3, "{subparts:?}\n{text}");
    assert_eq!(subparts[0], "text/plain", "{text}");
    assert_eq!(subparts[1], "message/delivery-status", "{text}");
    assert!(
        subparts[2] == "text/rfc822-headers" || subparts[2] == "message/rfc822",
        "{subparts:?}"
    );
    for f in [
        "Reporting-MTA: dns; mx2.test".to_string(),
        format!("Final-Recipient: rfc822; {rcpt}"),
        format!("Action: {action}"),
        format!("Status: {status}"),
    ] {
        assert!(text.contains(&f), "missing {f:?}:\n{text}");
    }
    if let Some(o) = original {
        assert!(text.contains(o), "original headers missing:\n{text}");
    }
}

#[test]
fn expired_mail_bounces_to_the_sender() {
    let primary = Sink::start_down();
    let senders = Sink::start();
    let map = format!(
        "{}{}",
        route("example.jp", &primary),
        route("sender.test", &senders)
    );
    let d = Daemon::start_with(
        &map,
        "",
        "min_backoff = \"1s\"\nmax_backoff = \"1s\"\nmax_lifetime = \"3s\"\n",
        "",
    );
    let r = d
        .client()
        .send_mail("s@sender.test", &["u@example.jp"], &message("expiry"));
    assert!(r.starts_with("250"), "{r}");
    assert!(
        wait_for(20, || senders.count() == 1),
        "no expiry DSN\n{}",
        d.log()
    );
    let dsn = &senders.txns()[0];
    check_dsn(
        &dsn.data,
        "u@example.jp",
        "failed",
        "4.4.1",
        Some("Subject: expiry"),
    );
    assert!(dsn.text().contains("Connection refused"), "{}", dsn.text());
    assert!(wait_for(5, || messages(&d) == 0), "{:?}", rows(&d));
    assert!(
        d.log().contains("status=expired, returned to sender"),
        "{}",
        d.log()
    );
    assert_eq!(primary.count(), 0);
}

#[test]
fn one_delay_warning_when_delay_warning_is_set() {
    let primary = Sink::start_down();
    let senders = Sink::start();
    let map = format!(
        "{}{}",
        route("example.jp", &primary),
        route("sender.test", &senders)
    );
    let d = Daemon::start_with(
        &map,
        "",
        "min_backoff = \"1s\"\nmax_backoff = \"1s\"\ndelay_warning = \"2s\"\n",
        "",
    );
    let r = d
        .client()
        .send_mail("s@sender.test", &["u@example.jp"], &message("slow"));
    assert!(r.starts_with("250"), "{r}");
    assert!(
        wait_for(15, || senders.count() == 1),
        "no delay DSN\n{}",
        d.log()
    );
    let dsn = &senders.txns()[0];
    check_dsn(
        &dsn.data,
        "u@example.jp",
        "delayed",
        "4.4.1",
        Some("Subject: slow"),
    );
    assert!(dsn.text().contains("Will-Retry-Until: "), "{}", dsn.text());
    assert!(dsn
        .text()
        .contains("Subject: Delayed Mail (still being retried)"));
    // Still queued, warned once only.
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(senders.count(), 1);
    assert!(deferred(&d, "u@example.jp"));
    let warned: i64 = d
        .db()
        .query_row("SELECT warned FROM recipients", [], |r| r.get(0))
        .unwrap();
    assert_eq!(warned, 1);
}

#[test]
fn no_dsn_for_null_sender_or_notify_never() {
    let sink = Sink::start();
    sink.set_rcpt_reply("bad@example.jp", Some("550 5.1.1 no such user"));
    let map = format!(
        "{}{}",
        route("example.jp", &sink),
        route("sender.test", &sink)
    );
    let d = Daemon::start(&map, "", "");
    let mut c = d.client();
    assert!(c
        .send_mail("", &["bad@example.jp"], &message("nullsender"))
        .starts_with("250"));
    let mut c = d.client();
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<s@sender.test>").starts_with("250"));
    let r = c.cmd("RCPT TO:<bad@example.jp> NOTIFY=NEVER");
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("DATA").starts_with("354"));
    c.send_raw(b"Subject: never\r\n\r\nx\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    assert!(wait_for(10, || messages(&d) == 0), "{:?}", rows(&d));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sink.count(), 0, "no DSN may be sent: {:?}", sink.txns());
    assert_eq!(d.log().matches("status=bounced").count(), 2, "{}", d.log());
}

#[test]
fn dsn_parameters_are_passed_on() {
    let sink = Sink::start();
    let d = Daemon::start(&route("example.jp", &sink), "", "");
    let mut c = d.client();
    let ehlo = c.cmd("EHLO client.test");
    assert!(ehlo.contains("DSN"), "{ehlo}");
    let r = c.cmd("MAIL FROM:<s@sender.test> RET=HDRS ENVID=env+2B42");
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd("RCPT TO:<u@example.jp> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Orig+2Bx@example.jp");
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("DATA").starts_with("354"));
    c.send_raw(b"Subject: dsn params\r\n\r\nbody\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    assert!(wait_for(10, || sink.count() == 1), "{}", d.log());
    let t = &sink.txns()[0];
    assert!(t.mail_from.contains("RET=HDRS"), "{}", t.mail_from);
    assert!(t.mail_from.contains("ENVID=env+2B42"), "{}", t.mail_from);
    assert_eq!(
        t.rcpt_lines[0],
        "<u@example.jp> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Orig+2Bx@example.jp"
    );
}

#[test]
fn success_notify_to_a_primary_without_dsn_sends_relayed() {
    let sink = Sink::start();
    sink.set_dsn(false);
    let map = format!(
        "{}{}",
        route("example.jp", &sink),
        route("sender.test", &sink)
    );
    let d = Daemon::start(&map, "", "");
    let mut c = d.client();
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<s@sender.test>").starts_with("250"));
    assert!(c
        .cmd("RCPT TO:<u@example.jp> NOTIFY=SUCCESS")
        .starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send_raw(b"Subject: relayed\r\n\r\nbody\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    assert!(
        wait_for(10, || sink.to("s@sender.test").len() == 1),
        "{}",
        d.log()
    );
    let t = &sink.to("u@example.jp")[0];
    assert_eq!(
        t.rcpt_lines[0], "<u@example.jp>",
        "no DSN parameters to a non-DSN peer"
    );
    check_dsn(
        &sink.to("s@sender.test")[0].data,
        "u@example.jp",
        "relayed",
        "2.0.0",
        None,
    );
}

#[test]
fn kill_during_delivery_delivers_after_restart_at_most_once_more() {
    let sink = Sink::start();
    sink.set_stall(true);
    let mut d = Daemon::start(&route("example.jp", &sink), "", "");
    let r = d
        .client()
        .send_mail("s@sender.test", &["u@example.jp"], &message("crash"));
    assert!(r.starts_with("250"), "{r}");
    // The sink has the message but never answers the final dot.
    assert!(wait_for(10, || sink.count() == 1), "{}", d.log());
    assert_eq!(
        row(&d, "u@example.jp").map(|r| r.1),
        Some("active".to_string())
    );
    d.kill9();
    sink.set_stall(false);
    d.spawn();
    assert!(
        wait_for(15, || sink.count() >= 2 && messages(&d) == 0),
        "{}\n{:?}",
        d.log(),
        rows(&d)
    );
    std::thread::sleep(Duration::from_millis(2500));
    let txns = sink.txns();
    assert_eq!(txns.len(), 2, "one original and at most one duplicate");
    assert_eq!(txns[0].data, txns[1].data);
}

/// A message deleted while its delivery waits for a connection (leased,
/// its bytes already read) is not sent.
#[test]
fn a_message_deleted_while_leased_is_not_sent() {
    let sink = Sink::start();
    sink.set_hold(true);
    let d = Daemon::start_with(
        &route("example.jp", &sink),
        "",
        "",
        "destination_concurrency = 1\n",
    );
    let mut c = d.client();
    for who in ["a", "b", "c"] {
        let r = c.send_mail(
            "s@sender.test",
            &[&format!("{who}@example.jp")],
            &message(who),
        );
        assert!(r.starts_with("250"), "{r}");
    }
    // a waits for its reply at the primary; b and c wait, leased, for the
    // one connection.
    assert!(wait_for(10, || sink.count() == 1), "{}", d.log());
    assert!(
        wait_for(10, || rows(&d).iter().all(|r| r.1 == "active")),
        "{:?}",
        rows(&d)
    );
    let c_id: String = d
        .db()
        .query_row(
            "SELECT msg_id FROM recipients WHERE address = 'c@example.jp'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let (code, out, err) = d.cli(&["queue", "delete", &c_id]);
    assert_eq!(code, 0, "{out}{err}");
    // a gets its reply, b goes out on the same session, c never does.
    sink.set_hold(false);
    assert!(
        wait_for(15, || messages(&d) == 0),
        "{:?}\n{}",
        rows(&d),
        d.log()
    );
    let got: Vec<String> = sink.txns().iter().flat_map(|t| t.rcpts.clone()).collect();
    assert!(got.contains(&"a@example.jp".to_string()), "{got:?}");
    assert!(got.contains(&"b@example.jp".to_string()), "{got:?}");
    assert!(
        !got.contains(&"c@example.jp".to_string()),
        "deleted c was sent: {got:?}"
    );
}

#[test]
fn opportunistic_tls_falls_back_to_plain_and_required_defers() {
    let sink = Sink::start();
    sink.set_broken_starttls(true);
    let d = Daemon::start(&route("example.jp", &sink), "", "");
    assert!(d
        .client()
        .send_mail("s@sender.test", &["u@example.jp"], &message("tls"))
        .starts_with("250"));
    assert!(
        wait_for(10, || sink.count() == 1),
        "no plain-text fallback\n{}",
        d.log()
    );

    let strict = Sink::start();
    strict.set_broken_starttls(true);
    let d = Daemon::start_with(
        &route("example.jp", &strict),
        "",
        SLOW_RETRY,
        "tls = \"required\"\n",
    );
    assert!(d
        .client()
        .send_mail("s@sender.test", &["u@example.jp"], &message("tls2"))
        .starts_with("250"));
    assert!(
        wait_for(10, || deferred(&d, "u@example.jp")),
        "{:?}\n{}",
        rows(&d),
        d.log()
    );
    let reply = row(&d, "u@example.jp").unwrap().3.unwrap_or_default();
    assert!(reply.contains("TLS"), "{reply}");
    assert_eq!(strict.count(), 0);
}

#[test]
fn a_domain_removed_from_the_table_is_deferred_with_a_clear_reason() {
    let sink = Sink::start_down();
    let d = Daemon::start_with(&route("example.jp", &sink), "", SLOW_RETRY, "");
    assert!(d
        .client()
        .send_mail("s@sender.test", &["u@example.jp"], &message("noroute"))
        .starts_with("250"));
    assert!(wait_for(10, || deferred(&d, "u@example.jp")));
    std::fs::write(d.path("transport.map"), "other.jp smtp:[127.0.0.1]:9\n").unwrap();
    d.signal("HUP");
    std::thread::sleep(Duration::from_millis(1500));
    d.cli(&["queue", "flush"]);
    assert!(
        wait_for(10, || row(&d, "u@example.jp")
            .and_then(|r| r.3)
            .is_some_and(
                |t| t.contains("no transport map entry for domain example.jp")
            )),
        "{:?}\n{}",
        rows(&d),
        d.log()
    );
}

#[test]
fn a_thousand_messages_queued_while_down_all_arrive() {
    let sink = Sink::start_down();
    let d = Daemon::start(&route("example.jp", &sink), "", "");
    let port = d.port;
    let started = Instant::now();
    let senders: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = common::Client::connect(port);
                assert!(c.cmd("EHLO client.test").starts_with("250"));
                for i in 0..250 {
                    assert!(c.cmd("MAIL FROM:<s@sender.test>").starts_with("250"));
                    assert!(c.cmd("RCPT TO:<u@example.jp>").starts_with("250"));
                    assert!(c.cmd("DATA").starts_with("354"));
                    c.send_raw(format!("Subject: n{t}-{i}\r\nMessage-ID: <n{t}-{i}@client.test>\r\n\r\nbody\r\n.\r\n").as_bytes());
                    let r = c.reply();
                    assert!(r.starts_with("250"), "{r}");
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let accepted = started.elapsed();
    assert_eq!(messages(&d), 1000);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sink.count(), 0);
    sink.up();
    let back = Instant::now();
    assert!(
        wait_for(90, || sink.count() >= 1000),
        "only {} delivered\n{}",
        sink.count(),
        d.log()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let drained = back.elapsed();
    assert!(wait_for(20, || messages(&d) == 0), "{} left", messages(&d));
    let ids: HashSet<String> = sink
        .txns()
        .iter()
        .filter_map(|t| {
            t.text()
                .lines()
                .find(|l| l.starts_with("Message-ID:"))
                .map(str::to_string)
        })
        .collect();
    assert_eq!(ids.len(), 1000, "every message arrived");
    assert!(
        sink.max_concurrent() <= 20,
        "concurrency limit: {}",
        sink.max_concurrent()
    );
    eprintln!(
        "1000 messages: accepted in {accepted:?}; drained in {drained:?} after the primary came back; {} transactions over {} connections",
        sink.count(),
        sink.connections()
    );
}

/// Throughput with a fast sink: run with `--ignored --nocapture`.
#[test]
#[ignore]
fn throughput_end_to_end() {
    let n_clients = 20;
    let per_client = 250;
    let sink = Sink::start();
    let d = Daemon::start(&route("example.jp", &sink), "", "");
    let port = d.port;
    let started = Instant::now();
    let senders: Vec<_> = (0..n_clients)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = common::Client::connect(port);
                assert!(c.cmd("EHLO client.test").starts_with("250"));
                for i in 0..per_client {
                    assert!(c.cmd("MAIL FROM:<s@sender.test>").starts_with("250"));
                    assert!(c.cmd("RCPT TO:<u@example.jp>").starts_with("250"));
                    assert!(c.cmd("DATA").starts_with("354"));
                    c.send_raw(format!("Subject: t{t}-{i}\r\n\r\nbody\r\n.\r\n").as_bytes());
                    assert!(c.reply().starts_with("250"));
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let accepted = started.elapsed();
    let total = n_clients * per_client;
    assert!(wait_for(120, || sink.count() >= total));
    let all = started.elapsed();
    eprintln!(
        "{total} messages: accepted in {accepted:?} ({:.0} msg/s), relayed by {all:?} ({:.0} msg/s end to end), {} connections",
        total as f64 / accepted.as_secs_f64(),
        total as f64 / all.as_secs_f64(),
        sink.connections()
    );
}

#[test]
fn mx_lookup_skips_this_host_and_worse_and_bounces_a_loop() {
    let sink = Sink::start_down();
    let senders = Sink::start();
    let dns = dns::Dns::start(vec![
        ("example.test", dns::Rec::Mx(5, "primary.test")),
        ("example.test", dns::Rec::Mx(10, "mx2.test")),
        ("example.test", dns::Rec::Mx(20, "other.test")),
        ("primary.test", dns::Rec::A([127, 0, 0, 1])),
        ("other.test", dns::Rec::A([127, 0, 0, 2])),
        ("loop.test", dns::Rec::Mx(10, "mx2.test")),
        ("loop.test", dns::Rec::Mx(20, "other.test")),
        ("nomx.test", dns::Rec::A([127, 0, 0, 1])),
    ]);
    let p = sink.port;
    let map = format!(
        "example.test smtp:example.test:{p}\nloop.test smtp:loop.test:{p}\nnomx.test smtp:nomx.test:{p}\n{}",
        route("sender.test", &senders)
    );
    let d = Daemon::start_with(
        &map,
        "",
        SLOW_RETRY,
        &format!("resolver = \"{}\"\n", dns.addr),
    );
    assert!(d
        .client()
        .send_mail("s@sender.test", &["u@example.test"], &message("mx"))
        .starts_with("250"));
    assert!(
        wait_for(10, || deferred(&d, "u@example.test")),
        "{:?}\n{}",
        rows(&d),
        d.log()
    );
    let reply = row(&d, "u@example.test").unwrap().3.unwrap_or_default();
    assert!(
        reply.contains(&format!("primary.test[127.0.0.1]:{p}")),
        "{reply}"
    );
    assert!(
        !reply.contains("other.test"),
        "worse MX than this host must not be tried: {reply}"
    );

    sink.up();
    d.cli(&["queue", "flush"]);
    assert!(
        wait_for(10, || sink.to("u@example.test").len() == 1),
        "{}",
        d.log()
    );

    // No MX: the domain's own address.
    assert!(d
        .client()
        .send_mail("s@sender.test", &["u@nomx.test"], &message("nomx"))
        .starts_with("250"));
    assert!(
        wait_for(10, || sink.to("u@nomx.test").len() == 1),
        "{}",
        d.log()
    );

    // Only this host and worse: loops back to myself, bounced.
    assert!(d
        .client()
        .send_mail("s@sender.test", &["u@loop.test"], &message("loop"))
        .starts_with("250"));
    assert!(wait_for(10, || senders.count() == 1), "{}", d.log());
    check_dsn(
        &senders.txns()[0].data,
        "u@loop.test",
        "failed",
        "5.4.6",
        Some("Subject: loop"),
    );
    assert!(senders.txns()[0].text().contains("loops back to myself"));
}

#[test]
fn an_mx_whose_address_is_this_host_loops_back_to_myself() {
    // alias.test's only MX has another name than mx2's hostname, but its
    // address (and port) is where this mx2 listens.
    let senders = Sink::start();
    let dns = dns::Dns::start(vec![
        ("alias.test", dns::Rec::Mx(10, "another-name.test")),
        ("another-name.test", dns::Rec::A([127, 0, 0, 1])),
    ]);
    let d = Daemon::start_with(
        &route("sender.test", &senders),
        "",
        SLOW_RETRY,
        &format!("resolver = \"{}\"\n", dns.addr),
    );
    let (code, out, err) = d.cli(&[
        "transport",
        "add",
        "alias.test",
        &format!("smtp:alias.test:{}", d.port),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    d.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert!(d
        .client()
        .send_mail("s@sender.test", &["u@alias.test"], &message("alias"))
        .starts_with("250"));
    assert!(wait_for(10, || senders.count() == 1), "{}", d.log());
    check_dsn(
        &senders.txns()[0].data,
        "u@alias.test",
        "failed",
        "5.4.6",
        Some("Subject: alias"),
    );
    assert!(senders.txns()[0]
        .text()
        .contains("mail for alias.test loops back to myself"));
    // mx2 never received its own message back.
    assert!(
        !d.log().contains("client=localhost")
            && d.log().matches("from=<s@sender.test>").count() == 1,
        "{}",
        d.log()
    );
}

#[test]
fn tls_verify_checks_the_next_hop_not_a_name_from_dns() {
    // One CA the daemon trusts (SSL_CERT_FILE); two primaries with valid
    // certificates from it: one for example.test's MX inside its domain,
    // one for the forger's own name that a forged MX answer points to.
    let certs = tempfile::tempdir().unwrap();
    let (ca, good_cert, good_key) = common::make_ca_cert(certs.path(), &["mx1.example.test"]);
    let (_, evil_cert, evil_key) = common::make_ca_cert(certs.path(), &["mail.attacker.test"]);
    let good = Sink::start();
    good.set_tls(&good_cert, &good_key);
    let evil = Sink::start();
    evil.set_tls(&evil_cert, &evil_key);
    let dns = dns::Dns::start(vec![
        ("example.test", dns::Rec::Mx(10, "mx1.example.test")),
        ("mx1.example.test", dns::Rec::A([127, 0, 0, 1])),
        ("forged.test", dns::Rec::Mx(10, "mail.attacker.test")),
        ("mail.attacker.test", dns::Rec::A([127, 0, 0, 1])),
    ]);
    let map = format!(
        "example.test smtp:example.test:{}\nforged.test smtp:forged.test:{}\n",
        good.port, evil.port
    );
    let mut d = Daemon::start_with(
        &map,
        "",
        SLOW_RETRY,
        &format!("tls = \"verify\"\nresolver = \"{}\"\n", dns.addr),
    );
    d.kill9();
    d.env.push(("SSL_CERT_FILE".into(), ca));
    d.spawn();
    let mut c = d.client();
    for rcpt in ["u@example.test", "u@forged.test"] {
        let r = c.send_mail("s@sender.test", &[rcpt], &message(rcpt));
        assert!(r.starts_with("250"), "{r}");
    }
    // mx1.example.test is inside example.test: verified and delivered.
    assert!(
        wait_for(10, || good.count() == 1),
        "{:?}\n{}",
        rows(&d),
        d.log()
    );
    assert!(good.txns()[0].tls, "delivered without TLS");
    // The forged MX's certificate is valid, but not for forged.test.
    assert!(
        wait_for(10, || deferred(&d, "u@forged.test")),
        "{:?}\n{}",
        rows(&d),
        d.log()
    );
    let reply = row(&d, "u@forged.test").unwrap().3.unwrap_or_default();
    assert!(reply.contains("certificate"), "{reply}");
    assert_eq!(evil.count(), 0, "mail went to the forged MX");
}

/// A tiny authoritative DNS server on loopback UDP for MX tests.
#[path = "common/dns.rs"]
mod dns;

#[test]
fn starttls_to_a_tls_primary_and_verify_refuses_a_self_signed_one() {
    let sink = Sink::start();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = common::make_cert(certs.path(), "primary.test");
    // The "primary": another mx2 offering STARTTLS, passing mail on to the sink.
    let primary = Daemon::start(
        &route("example.jp", &sink),
        "",
        &format!("[smtp]\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n"),
    );
    let map = format!("example.jp smtp:[127.0.0.1]:{}\n", primary.port);
    let d = Daemon::start_with(&map, "", SLOW_RETRY, "tls = \"required\"\n");
    assert!(d
        .client()
        .send_mail("s@sender.test", &["u@example.jp"], &message("tls"))
        .starts_with("250"));
    assert!(
        wait_for(15, || sink.count() == 1),
        "{}\n{}",
        d.log(),
        primary.log()
    );
    let text = sink.txns()[0].text();
    let first_received = text.lines().next().unwrap_or("").to_string();
    assert!(
        text.contains("with ESMTPS"),
        "the primary saw a TLS session: {first_received}\n{text}"
    );

    let strict = Daemon::start_with(&map, "", SLOW_RETRY, "tls = \"verify\"\n");
    assert!(strict
        .client()
        .send_mail("s@sender.test", &["u@example.jp"], &message("verify"))
        .starts_with("250"));
    assert!(
        wait_for(10, || deferred(&strict, "u@example.jp")),
        "{:?}\n{}",
        rows(&strict),
        strict.log()
    );
    let reply = row(&strict, "u@example.jp").unwrap().3.unwrap_or_default();
    assert!(reply.contains("TLS"), "{reply}");
    assert_eq!(sink.count(), 1);
}
