//! A full disk under the queue: clients hear 452 4.3.1, the daemon stays
//! up, nothing half-written stays, and mail flows again once space returns.

mod common;

use common::Daemon;

#[test]
fn disk_full_answers_452_and_recovers() {
    let fs = common::SmallFs::mount("3m");
    let qpath = fs.dir.path().join("queue.db");
    let d = Daemon::start_with_queue(
        "example.jp smtp:[127.0.0.1]:9\n",
        "",
        qpath.to_str().unwrap(),
        "",
    );
    // Take most of the space with a filler file, then send until refused.
    let filler = fs.dir.path().join("filler");
    std::fs::write(&filler, vec![0u8; 2_200_000]).unwrap();
    let body: Vec<u8> = {
        let mut b = b"Subject: fill\r\n\r\n".to_vec();
        for _ in 0..1000 {
            b.extend_from_slice(
                b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
            );
        }
        b
    };
    let mut c = d.client();
    let mut accepted = Vec::new();
    let mut refused = None;
    for _ in 0..40 {
        c.cmd("RSET");
        let r = c.send_mail("a@sender.example", &["bob@example.jp"], &body);
        if r.starts_with("250") {
            accepted.push(r.rsplit(' ').next().unwrap().to_string());
        } else {
            refused = Some(r);
            break;
        }
    }
    let refused = refused.expect("the disk never filled up");
    assert!(refused.starts_with("452 4.3.1"), "{refused}");
    // The daemon is still up and the session still works.
    assert!(c.cmd("NOOP").starts_with("250"));

    // Space returns: the next message is taken, nothing accepted was lost.
    std::fs::remove_file(&filler).unwrap();
    c.cmd("RSET");
    let r = c.send_mail(
        "a@sender.example",
        &["bob@example.jp"],
        b"Subject: after\r\n\r\nok\r\n",
    );
    assert!(r.starts_with("250"), "{r}");
    let db = d.db();
    for id in &accepted {
        let n: i64 = db
            .query_row("SELECT count(*) FROM messages WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 1, "{id} lost");
    }
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    // No message row without its recipients (nothing half-written).
    let orphans: i64 = db
        .query_row("SELECT count(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM recipients r WHERE r.msg_id = m.id)", [], |r| r.get(0))
        .unwrap();
    assert_eq!(orphans, 0);
    drop(db);
    drop(d);
}
