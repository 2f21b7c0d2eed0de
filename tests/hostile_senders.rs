//! No bounces to internal hosts (issue 16 item 5). A forged sender is
//! where a backup MX's bounces go: `"victim@outside"@[127.0.0.77]` made mx2
//! deliver a DSN carrying the whole original message to 127.0.0.77:25.
//! Now MAIL refuses address literals (unless the transport map names the
//! address) and routing in the local part, and mail mx2 generates is never
//! sent to a loopback, private, link-local, multicast or unspecified
//! address found in DNS. A trap listens on 127.0.0.7x:25 (the tests run as
//! root) to see whether anything arrives.

mod common;
#[path = "common/dns.rs"]
mod dns;

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::sink::Sink;
use common::{wait_for, Daemon};

/// Counts connections to `ip:25`; answers each with a 554 greeting.
struct Trap {
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Trap {
    fn start(ip: &str) -> Trap {
        let l = TcpListener::bind((ip, 25)).expect("bind the trap on port 25 (needs root)");
        l.set_nonblocking(true).unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        h.fetch_add(1, Ordering::SeqCst);
                        let _ = c.write_all(b"554 5.7.0 trap: nothing may arrive here\r\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Trap {
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn messages(d: &Daemon) -> i64 {
    d.db()
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap()
}

const BODY: &str = "Subject: secret\r\nMessage-ID: <secret@client.test>\r\n\r\nthe whole original message\r\n.\r\n";

/// The attack of the issue, and the other sender forms that route.
#[test]
fn mail_from_with_an_address_literal_or_routing_is_refused_5_1_7() {
    let trap = Trap::start("127.0.0.77");
    let sink = Sink::start();
    sink.set_rcpt_reply("bad@example.jp", Some("550 5.1.1 User unknown"));
    let map = format!("example.jp smtp:[127.0.0.1]:{}\n", sink.port);
    let d = Daemon::start(&map, "", "");

    let mut c = d.client();
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    let mail = c.cmd("MAIL FROM:<\"victim@outside\"@[127.0.0.77]> RET=FULL");
    if mail.starts_with("250") {
        // What used to happen: show where the bounce goes.
        assert!(c.cmd("RCPT TO:<bad@example.jp>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        c.send_raw(BODY.as_bytes());
        assert!(c.reply().starts_with("250"));
        wait_for(10, || trap.hits() > 0);
    }
    assert!(
        mail.starts_with("553 5.1.7"),
        "MAIL answered {mail:?}; DSN connections to 127.0.0.77:25: {}",
        trap.hits()
    );
    for from in [
        "<victim@[127.0.0.77]>",
        "<victim@[IPv6:::1]>",
        "<victim@[192.0.2.1]>",
        "<victim%outside@sender.test>",
        "<outside!victim@sender.test>",
        "<\"victim@outside\"@sender.test>",
        "<@relay.test:victim%outside@sender.test>",
        // A domain that has no canonical form can't be bounced to either.
        "<victim@sen\u{00AD}der.test> SMTPUTF8",
    ] {
        c.cmd("RSET");
        let r = c.cmd(&format!("MAIL FROM:{from}"));
        assert!(r.starts_with("553 5.1.7"), "MAIL FROM:{from}: {r}");
    }
    // A literal the transport map routes to is the admin's own host.
    c.cmd("RSET");
    let r = c.cmd("MAIL FROM:<s@[127.0.0.1]>");
    assert!(r.starts_with("250"), "{r}");
    c.cmd("RSET");
    let r = c.cmd("MAIL FROM:<s@sender.test>");
    assert!(r.starts_with("250"), "{r}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(trap.hits(), 0);
}

/// A forged sender whose domain's MX (or A record) is an internal address:
/// the bounce is not delivered there; it fails ("no route") with a log
/// line, and nothing stays queued.
#[test]
fn a_bounce_is_never_sent_to_an_internal_address_found_in_dns() {
    let trap = Trap::start("127.0.0.78");
    let sink = Sink::start();
    sink.set_rcpt_reply("bad@example.jp", Some("550 5.1.1 User unknown"));
    let dns = dns::Dns::start(vec![
        ("evil.test", dns::Rec::Mx(10, "mx.evil.test")),
        ("mx.evil.test", dns::Rec::A([127, 0, 0, 78])),
        ("nomx.evil.test", dns::Rec::A([127, 0, 0, 78])),
    ]);
    let map = format!("example.jp smtp:[127.0.0.1]:{}\n", sink.port);
    let d = Daemon::start_with(&map, "", "", &format!("resolver = \"{}\"\n", dns.addr));
    for from in ["victim@evil.test", "victim@nomx.evil.test"] {
        let r = d.client().send_mail_args(
            &format!("<{from}> RET=FULL"),
            &["<bad@example.jp>"],
            BODY.trim_end_matches(".\r\n").as_bytes(),
        );
        assert!(r.starts_with("250"), "{r}");
    }
    assert!(
        wait_for(20, || messages(&d) == 0 || trap.hits() > 0),
        "bounces still queued: {}\n{}",
        messages(&d),
        d.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        trap.hits(),
        0,
        "a bounce went to 127.0.0.78:25\n{}",
        d.log()
    );
    let log = d.log();
    assert!(
        log.contains("mx.evil.test[127.0.0.78]") && log.contains("internal address"),
        "{log}"
    );
    assert!(
        log.contains("to=<victim@evil.test>") && log.contains("status=bounced"),
        "{log}"
    );
}
