//! A full disk under the queue, then space again: the mail accepted before
//! the disk filled is relayed to the primary once space returns, exactly
//! once, and the daemon never stopped answering. (The 452 itself is
//! tests/disk_full.rs.) Mounts a tmpfs: runs as root, as CI does.
//!
//! Two variants keep the relay working while the disk is full: results it
//! cannot commit are retried until space returns (src/relay/record.rs).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::sink::Sink;
use common::{wait_for, Daemon};

fn body(token: &str) -> Vec<u8> {
    let mut b = format!("Subject: {token}\r\nMessage-ID: <{token}@disk.test>\r\n\r\n").into_bytes();
    for _ in 0..400 {
        b.extend_from_slice(
            b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
        );
    }
    b
}

/// What the relay does while the disk is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhileFull {
    /// Nothing: the mail is held (a HOLD rule) and released afterwards.
    Held,
    /// The primary is down: delivery attempts are deferred.
    PrimaryDown,
    /// The primary is up: deliveries succeed, recording them cannot.
    PrimaryUp,
}

/// Fills the disk with queued mail while the primary is down, then gives
/// space back and lets the primary answer; every accepted message must
/// arrive once and the queue must drain.
fn fill_then_recover(mode: WhileFull) {
    let started = Instant::now();
    let fs = common::SmallFs::mount("3m");
    let qpath = fs.dir.path().join("queue.db");
    let sink = Sink::start_down();
    let rules = if mode == WhileFull::Held {
        "/^Subject: disk/ HOLD disk test\n"
    } else {
        ""
    };
    let d = Daemon::start_with_queue(
        &format!("example.jp smtp:[127.0.0.1]:{}\n", sink.port),
        rules,
        qpath.to_str().unwrap(),
        "",
    );
    let filler = fs.dir.path().join("filler");
    std::fs::write(&filler, vec![0u8; 2_000_000]).unwrap();

    // Fill the disk with queued mail while the primary is down.
    let mut c = d.client();
    let mut accepted = Vec::new();
    let mut ids = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        c.cmd("RSET");
        let token = format!("disk{i}");
        let r = c.send_mail("a@sender.example", &["bob@example.jp"], &body(&token));
        if r.starts_with("250") {
            ids.push(r.rsplit(' ').next().unwrap_or("").to_string());
            accepted.push(token);
        } else {
            refused = Some((token, r));
            break;
        }
    }
    let (refused_token, reply) = refused.expect("the disk never filled up");
    assert!(reply.starts_with("452 4.3.1"), "{reply}");
    assert!(!accepted.is_empty());

    if mode == WhileFull::PrimaryUp {
        // Deliveries can happen, but their results cannot be committed.
        sink.up();
    }
    std::thread::sleep(Duration::from_secs(3));
    assert!(c.cmd("NOOP").starts_with("250"), "daemon still answers");
    let while_full = sink.count();

    // Space returns: the backlog drains to the primary.
    std::fs::remove_file(&filler).unwrap();
    if mode != WhileFull::PrimaryUp {
        sink.up();
    }
    if mode == WhileFull::Held {
        let mut args = vec!["queue", "release"];
        args.extend(ids.iter().map(String::as_str));
        let (code, _, err) = d.cli(&args);
        assert_eq!(code, 0, "{err}");
    }
    let queue_empty = || {
        d.db()
            .query_row("SELECT count(*) FROM messages", [], |r| r.get::<_, i64>(0))
            .unwrap_or(-1)
            == 0
    };
    let drained = wait_for(30, || sink.count() >= accepted.len() && queue_empty());
    std::thread::sleep(Duration::from_millis(1500));
    let mut copies: HashMap<String, usize> = HashMap::new();
    for t in sink.txns() {
        *copies.entry(common::token_of(&t.data)).or_default() += 1;
    }
    eprintln!(
        "disk full ({mode:?}): {} accepted before 452, {while_full} delivered while still full, {} transactions after space returned, max copies {:?}, took {:?}",
        accepted.len(),
        sink.count(),
        copies.values().max(),
        started.elapsed()
    );
    assert!(
        drained,
        "queue did not drain: {}\n{}",
        sink.count(),
        d.log()
    );
    for t in &accepted {
        assert_eq!(copies.get(t), Some(&1), "{t} delivered once");
    }
    assert_eq!(
        copies.get(&refused_token),
        None,
        "the message refused with 452 must not be relayed"
    );
    assert_eq!(copies.len(), accepted.len(), "nothing else was relayed");
    let integrity: String = d
        .db()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    // And new mail flows again.
    c.cmd("RSET");
    let r = c.send_mail("a@sender.example", &["bob@example.jp"], &body("after"));
    assert!(r.starts_with("250"), "{r}");
    assert!(wait_for(10, || sink
        .txns()
        .iter()
        .any(|t| common::token_of(&t.data) == "after")));
    drop(d);
}

#[test]
fn queued_mail_is_delivered_when_space_returns() {
    fill_then_recover(WhileFull::Held);
}

/// Deferrals while full: their results are recorded once space returns,
/// and the queue then drains (no recipient left `active`).
#[test]
fn deferred_while_full_is_delivered_when_space_returns() {
    fill_then_recover(WhileFull::PrimaryDown);
}

/// Mail delivered while the disk was full is recorded once space returns:
/// never delivered a second time.
#[test]
fn delivered_while_full_is_recorded_once_space_returns() {
    fill_then_recover(WhileFull::PrimaryUp);
}
