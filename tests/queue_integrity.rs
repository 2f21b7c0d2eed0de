//! The queue's promises under attack: one daemon per queue, holds and
//! deletes that reach mail already leased, a stop that waits for the
//! deliveries on the wire, one DSN per message per delivery pass.
//!
//! The primary is the test sink (`common::sink`): it can hold its answer
//! to the final dot, refuse recipients, and records every transaction,
//! including the DSNs mx2 sends back to the sender's domain.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::sink::{Sink, Txn};
use common::{mx2_bin, wait_for, Daemon};

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: s@sender.test\r\nTo: u@example.jp\r\nSubject: {subject}\r\nMessage-ID: <{subject}@client.test>\r\n\r\nHello.\r\n"
    )
    .into_bytes()
}

/// Routes the recipient domains and the sender's domain (for DSNs) to `sink`.
fn routes(sink: &Sink, domains: &[&str]) -> String {
    domains
        .iter()
        .chain(["sender.test"].iter())
        .map(|d| format!("{d} smtp:[127.0.0.1]:{}\n", sink.port))
        .collect()
}

/// `(address, status)` of every queued recipient.
fn rows(d: &Daemon) -> Vec<(String, String)> {
    let db = d.db();
    let mut st = db
        .prepare("SELECT address, status FROM recipients ORDER BY msg_id, idx")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn messages(d: &Daemon) -> i64 {
    d.db()
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap()
}

fn id_of(d: &Daemon, rcpt: &str) -> String {
    d.db()
        .query_row(
            "SELECT msg_id FROM recipients WHERE address = ?1",
            [rcpt],
            |r| r.get(0),
        )
        .unwrap()
}

/// How often `addr` was accepted by the primary.
fn deliveries(sink: &Sink, addr: &str) -> usize {
    sink.txns()
        .iter()
        .filter(|t| t.sender() != "" && t.rcpts.iter().any(|r| r == addr))
        .count()
}

/// DSNs (null sender) that reached the primary.
fn dsns(sink: &Sink) -> Vec<Txn> {
    sink.txns()
        .into_iter()
        .filter(|t| t.sender().is_empty())
        .collect()
}

/// A daemon relaying `domains` (and sender.test) to `sink` over one
/// connection at a time, with the sink holding its answer to the final dot.
fn one_connection(sink: &Sink, domains: &[&str]) -> Daemon {
    sink.set_hold(true);
    Daemon::start_with(
        &routes(sink, domains),
        "",
        "",
        "destination_concurrency = 1\n",
    )
}

/// Sends one message to `NAME@example.jp` per name, in one session.
fn send_each(d: &Daemon, names: &[&str]) {
    let mut c = d.client();
    for who in names {
        let r = c.send_mail(
            "s@sender.test",
            &[&format!("{who}@example.jp")],
            &message(who),
        );
        assert!(r.starts_with("250"), "{r}");
    }
}

/// Waits until the first message is at the primary (its answer held) and
/// every queued recipient is leased.
fn wait_leased(d: &Daemon, sink: &Sink) {
    assert!(wait_for(10, || sink.count() == 1), "{}", d.log());
    assert!(
        wait_for(10, || rows(d).iter().all(|r| r.1 == "active")),
        "{:?}",
        rows(d)
    );
}

#[test]
fn a_second_daemon_on_a_live_queue_changes_nothing() {
    let sink = Sink::start();
    sink.set_rcpt_reply("bad@example.jp", Some("550 5.1.1 No such user"));
    sink.set_hold(true);
    let d = Daemon::start_with(&routes(&sink, &["example.jp"]), "", "", "");
    let rcpts = ["good1@example.jp", "good2@example.jp", "bad@example.jp"];
    let r = d
        .client()
        .send_mail("s@sender.test", &rcpts, &message("twice"));
    assert!(r.starts_with("250"), "{r}");
    // The message is at the primary, waiting for its reply: leased.
    assert!(wait_for(10, || sink.count() == 1), "{}", d.log());
    assert!(rows(&d).iter().all(|r| r.1 == "active"), "{:?}", rows(&d));

    // An admin types `mx2 serve` while the service runs.
    let mut second = Command::new(mx2_bin())
        .arg("serve")
        .arg("--config")
        .arg(&d.config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = second.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "second daemon did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    let pid = d.pid().unwrap();
    assert!(
        err.contains(&format!("is in use by pid {pid}")),
        "stderr: {err}"
    );
    assert!(
        !err.contains("due again"),
        "second daemon touched the queue: {err}"
    );
    assert!(
        rows(&d).iter().all(|r| r.1 == "active"),
        "the second daemon changed rows: {:?}",
        rows(&d)
    );

    // The primary answers: each good recipient once, one DSN for the bad one.
    sink.set_hold(false);
    assert!(
        wait_for(20, || messages(&d) == 0 && !dsns(&sink).is_empty()),
        "{:?}\n{}",
        rows(&d),
        d.log()
    );
    // Give a wrongly repeated delivery time to show up.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(deliveries(&sink, "good1@example.jp"), 1);
    assert_eq!(deliveries(&sink, "good2@example.jp"), 1);
    let dsns = dsns(&sink);
    assert_eq!(dsns.len(), 1, "{dsns:#?}");
    assert!(dsns[0].text().contains("bad@example.jp"));
    // The CLI keeps working beside the lock.
    let (code, out, err) = d.cli(&["queue", "list"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn hold_of_a_leased_message_keeps_it_until_release() {
    let sink = Sink::start();
    let d = one_connection(&sink, &["example.jp"]);
    // a waits for its reply at the primary; b rides on the same session
    // (pipelined); c waits, leased with its bytes, for the connection.
    send_each(&d, &["a", "b", "c"]);
    wait_leased(&d, &sink);
    let (a, c_id) = (id_of(&d, "a@example.jp"), id_of(&d, "c@example.jp"));
    let (code, out, err) = d.cli(&["queue", "hold", &c_id, &a]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("{c_id}: held")), "{out}");
    // a is on the wire: hold says it may still complete.
    assert!(
        out.contains(&format!(
            "{a}: a delivery already in progress may still complete"
        )),
        "{out}"
    );
    assert!(
        !out.contains(&format!("{c_id}: a delivery already")),
        "{out}"
    );

    sink.set_hold(false);
    assert!(
        wait_for(15, || deliveries(&sink, "b@example.jp") == 1),
        "{}",
        d.log()
    );
    // c is parked: back to queued, message held, not sent.
    assert!(
        wait_for(10, || rows(&d)
            .iter()
            .any(|r| r.0 == "c@example.jp" && r.1 == "queued")),
        "{:?}\n{}",
        rows(&d),
        d.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(deliveries(&sink, "c@example.jp"), 0, "held c was sent");
    let (_, out, _) = d.cli(&["queue", "list", "--held"]);
    assert!(out.contains(&c_id), "{out}");

    let (code, out, err) = d.cli(&["queue", "release", &c_id]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        wait_for(15, || deliveries(&sink, "c@example.jp") == 1),
        "{:?}\n{}",
        rows(&d),
        d.log()
    );
}

#[test]
fn delete_domain_of_a_leased_recipient_is_never_delivered_nor_bounced() {
    let sink = Sink::start();
    sink.set_rcpt_reply("v@victim.example", Some("550 5.1.1 No such user"));
    let d = one_connection(&sink, &["example.jp", "victim.example", "keep.example"]);
    // first waits for its reply at the primary; second rides on the same
    // session (PIPELINING: its commands follow first's content); the third
    // waits, leased with its bytes, for the connection.
    send_each(&d, &["first", "second"]);
    let r = d.client().send_mail(
        "s@sender.test",
        &["v@victim.example", "k@keep.example"],
        &message("third"),
    );
    assert!(r.starts_with("250"), "{r}");
    wait_leased(&d, &sink);
    let (code, out, err) = d.cli(&["queue", "delete", "--domain", "victim.example"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("1 recipients of victim.example deleted, 0 messages removed"),
        "{out}"
    );

    sink.set_hold(false);
    assert!(
        wait_for(15, || messages(&d) == 0),
        "{:?}\n{}",
        rows(&d),
        d.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(deliveries(&sink, "k@keep.example"), 1, "{}", d.log());
    let offered: Vec<String> = sink
        .txns()
        .iter()
        .flat_map(|t| t.rcpt_lines.clone())
        .collect();
    assert!(
        !offered.iter().any(|l| l.contains("v@victim.example")),
        "deleted recipient was offered: {offered:?}"
    );
    assert!(
        dsns(&sink).is_empty(),
        "a DSN for a deleted recipient: {:#?}",
        dsns(&sink)
    );
}

#[test]
fn a_stop_waits_for_a_slow_delivery_and_nothing_is_sent_twice() {
    let sink = Sink::start();
    let mut d = one_connection(&sink, &["example.jp"]);
    send_each(&d, &["slow", "next1", "next2"]);
    wait_leased(&d, &sink);
    // The primary takes 12 s to answer: longer than the old fixed 10 s
    // wait, well within the default stop_timeout (30 s).
    let code = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_secs(12));
            sink.set_hold(false);
        });
        d.terminate()
    });
    assert_eq!(code, Some(0), "{}", d.log());
    let log = d.log();
    assert!(
        log.contains("slow@example.jp") && log.contains("status=sent"),
        "the slow delivery was not recorded before the stop:\n{log}"
    );
    // What the primary took is no longer queued; what had not started
    // (next2 at least: next1 may have gone out pipelined behind slow) was
    // handed back, not sent.
    let left: Vec<_> = rows(&d);
    for who in ["slow", "next1", "next2"] {
        let addr = format!("{who}@example.jp");
        let sent = deliveries(&sink, &addr) == 1;
        let queued = left.iter().any(|r| r.0 == addr && r.1 == "queued");
        assert!(
            sent != queued,
            "{who}: sent={sent} queued={queued} {left:?}"
        );
    }
    assert!(left.iter().any(|r| r.0 == "next2@example.jp"), "{left:?}");

    // After a restart the rest go out; the slow one is not repeated.
    d.spawn();
    assert!(
        wait_for(15, || messages(&d) == 0),
        "{:?}\n{}",
        rows(&d),
        d.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    for who in ["slow", "next1", "next2"] {
        assert_eq!(
            deliveries(&sink, &format!("{who}@example.jp")),
            1,
            "{who}\n{}",
            d.log()
        );
    }
}

#[test]
fn one_dsn_for_a_message_whose_recipients_fail_in_one_pass() {
    // Two primaries, each refusing its recipient after the end of data,
    // so the two jobs of one message end separately.
    let one = Sink::start();
    let two = Sink::start();
    let senders = Sink::start();
    one.set_data_reply(Some("554 5.7.1 Refused by one"));
    two.set_data_reply(Some("554 5.7.1 Refused by two"));
    let transport = format!(
        "example.jp smtp:[127.0.0.1]:{}\nother.example smtp:[127.0.0.1]:{}\nsender.test smtp:[127.0.0.1]:{}\n",
        one.port, two.port, senders.port
    );
    let d = Daemon::start_with(&transport, "", "", "");
    let r = d.client().send_mail(
        "s@sender.test",
        &["x@example.jp", "y@other.example"],
        &message("split"),
    );
    assert!(r.starts_with("250"), "{r}");
    assert!(
        wait_for(20, || !dsns(&senders).is_empty()),
        "{:?}\n{}",
        rows(&d),
        d.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    let got = dsns(&senders);
    assert_eq!(got.len(), 1, "one DSN per message per pass: {got:#?}");
    let text = got[0].text();
    assert!(
        text.contains("Final-Recipient: rfc822; x@example.jp")
            && text.contains("Final-Recipient: rfc822; y@other.example"),
        "{text}"
    );
}
