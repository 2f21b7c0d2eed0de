//! The relay's SQL. Every function takes a connection: those that change
//! rows are called only inside `Queue::write` (the single writer, group
//! commit), reads of message bytes use a reader connection.
//!
//! Leasing: due rows (`queued`/`deferred`, `next_attempt <= now`, message
//! not held) become `active` with a `lease_until`. Only the writer changes
//! status, and the lease query picks only non-active rows, so a recipient
//! is never handed out twice. `Queue::open` returns rows left active by a
//! dead process; `reclaim` returns rows whose lease ran out while this
//! process no longer holds them.

use std::collections::HashSet;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};

use super::job::{Msg, Rcpt};

/// How long a lease is meant to last. A lease is only taken back from a
/// process that no longer holds it, so this bounds how long a lost job
/// (a bug, a failed commit) stays stuck, not how long a delivery may take.
pub const LEASE_SECS: i64 = 600;

/// A message and the recipients just leased from it.
#[derive(Debug)]
pub struct Leased {
    pub msg: Msg,
    pub rcpts: Vec<Rcpt>,
    /// The message bytes, when they fitted the preload allowance.
    pub data: Option<Vec<u8>>,
}

/// Largest message whose bytes are read with its lease.
pub const PRELOAD_MAX_MESSAGE: i64 = 256 * 1024;

/// Leases the due recipients of up to `limit` messages, skipping recipients
/// whose domain is in `exclude` (destinations whose backlog is full).
/// Messages up to `PRELOAD_MAX_MESSAGE` bytes come with their bytes while
/// the total stays within `preload` bytes.
pub fn lease_due(
    conn: &Connection,
    now: i64,
    limit: usize,
    exclude: &[String],
    preload: usize,
) -> Result<Vec<Leased>> {
    let mut allowance = i64::try_from(preload).unwrap_or(i64::MAX);
    // The excluded domains as one "\nd1\nd2\n" string, tested with instr():
    // a domain never contains a line break. (A `NOT IN (SELECT … json_each)`
    // costs SQLite a temporary table per statement run, once per message.)
    let exclude = if exclude.is_empty() {
        String::new()
    } else {
        format!("\n{}\n", exclude.join("\n"))
    };
    let ids = if exclude.is_empty() {
        due_messages(conn, now, limit)?
    } else {
        due_messages_by_domain(conn, now, limit, &exclude)?
    };
    let mut out = Vec::with_capacity(ids.len());
    // SELECT then UPDATE by key: `UPDATE … RETURNING` would also buffer
    // its rows in a temporary table.
    let mut due_rcpts = conn.prepare_cached(
        "SELECT idx, address, domain, attempts, notify, orcpt, warned FROM recipients
         WHERE msg_id = ?1 AND status IN ('queued','deferred') AND next_attempt <= ?2
           AND (?3 = '' OR instr(?3, char(10) || domain || char(10)) = 0)",
    )?;
    let mut lease = conn.prepare_cached(
        "UPDATE recipients SET status = 'active', lease_until = ?3 WHERE msg_id = ?1 AND idx = ?2",
    )?;
    let mut meta = conn.prepare_cached(
        "SELECT arrival, sender, body, smtputf8, ret, envid, origin,
                CASE WHEN size <= ?2 THEN data END
         FROM messages WHERE id = ?1",
    )?;
    for id in ids {
        let fits = allowance.min(PRELOAD_MAX_MESSAGE);
        let row = meta
            .query_row(params![id, fits], |r| {
                let msg = Msg {
                    id: id.clone(),
                    arrival: r.get(0)?,
                    sender: r.get(1)?,
                    body: r.get(2)?,
                    smtputf8: r.get(3)?,
                    ret: r.get(4)?,
                    envid: r.get(5)?,
                    origin: r.get(6)?,
                };
                Ok((msg, r.get::<_, Option<Vec<u8>>>(7)?))
            })
            .optional()?;
        let Some((msg, data)) = row else { continue };
        let mut rcpts: Vec<Rcpt> = due_rcpts
            .query_map(params![id, now, exclude], |r| {
                Ok(Rcpt {
                    idx: r.get(0)?,
                    address: r.get(1)?,
                    domain: r.get(2)?,
                    attempts: r.get(3)?,
                    notify: r.get(4)?,
                    orcpt: r.get(5)?,
                    warned: r.get(6)?,
                    lease_until: now + LEASE_SECS,
                })
            })?
            .collect::<rusqlite::Result<_>>()
            .with_context(|| format!("reading due recipients of {id}"))?;
        for r in &rcpts {
            lease
                .execute(params![id, r.idx, now + LEASE_SECS])
                .with_context(|| format!("leasing recipient {} of {id}", r.idx))?;
        }
        rcpts.sort_by_key(|r| r.idx);
        if !rcpts.is_empty() {
            if let Some(d) = &data {
                allowance -= d.len() as i64;
            }
            out.push(Leased { msg, rcpts, data });
        }
    }
    Ok(out)
}

/// Ids of up to `limit` messages with due recipients, oldest due first.
/// Rows come in index order; duplicates are dropped here rather than by
/// DISTINCT (a temporary table), and reading stops at `limit`.
fn due_messages(conn: &Connection, now: i64, limit: usize) -> Result<Vec<String>> {
    let mut due = conn.prepare_cached(
        "SELECT r.msg_id FROM recipients r JOIN messages m ON m.id = r.msg_id
         WHERE r.status IN ('queued','deferred') AND r.next_attempt <= ?1 AND m.held = 0",
    )?;
    let (mut ids, mut seen) = (Vec::new(), HashSet::new());
    collect_ids(due.query(params![now])?, limit, &mut ids, &mut seen)?;
    Ok(ids)
}

/// Like `due_messages`, for the domains not in `exclude` ("\nd1\nd2\n").
/// Walks the domains through their index (one seek each) and asks each
/// for its due rows, so a slow primary's backlog of any size is never
/// read just to be skipped.
fn due_messages_by_domain(
    conn: &Connection,
    now: i64,
    limit: usize,
    exclude: &str,
) -> Result<Vec<String>> {
    let mut first = conn.prepare_cached("SELECT domain FROM recipients ORDER BY domain LIMIT 1")?;
    let mut next = conn.prepare_cached(
        "SELECT domain FROM recipients WHERE domain > ?1 ORDER BY domain LIMIT 1",
    )?;
    let mut due = conn.prepare_cached(
        "SELECT r.msg_id FROM recipients r JOIN messages m ON m.id = r.msg_id
         WHERE r.domain = ?1 AND r.status IN ('queued','deferred') AND r.next_attempt <= ?2
           AND m.held = 0",
    )?;
    let (mut ids, mut seen) = (Vec::new(), HashSet::new());
    let mut domain: Option<String> = first.query_row([], |r| r.get(0)).optional()?;
    while let Some(d) = domain {
        if ids.len() >= limit {
            break;
        }
        if !exclude.contains(&format!("\n{d}\n")) {
            collect_ids(due.query(params![d, now])?, limit, &mut ids, &mut seen)?;
        }
        domain = next.query_row([&d], |r| r.get(0)).optional()?;
    }
    Ok(ids)
}

/// Appends the distinct ids of `rows` to `ids` until it holds `limit`.
fn collect_ids(
    mut rows: rusqlite::Rows<'_>,
    limit: usize,
    ids: &mut Vec<String>,
    seen: &mut HashSet<String>,
) -> Result<()> {
    while ids.len() < limit {
        let Some(row) = rows.next().context("finding due recipients")? else {
            break;
        };
        let id: String = row.get(0)?;
        if seen.insert(id.clone()) {
            ids.push(id);
        }
    }
    Ok(())
}

/// The bytes of a message, or `None` if it is gone (deleted meanwhile).
/// Read through incremental blob I/O into one buffer of the right size:
/// a plain SELECT would hold the bytes twice (SQLite's copy and ours).
pub fn message_data(conn: &Connection, id: &str) -> Result<Option<Vec<u8>>> {
    let rowid: Option<i64> = conn
        .prepare_cached("SELECT rowid FROM messages WHERE id = ?1")?
        .query_row(params![id], |r| r.get(0))
        .optional()?;
    let Some(rowid) = rowid else {
        return Ok(None);
    };
    let mut blob = conn
        .blob_open(rusqlite::MAIN_DB, "messages", "data", rowid, true)
        .with_context(|| format!("opening the data of message {id}"))?;
    let mut data = Vec::with_capacity(blob.len());
    std::io::Read::read_to_end(&mut blob, &mut data)
        .with_context(|| format!("reading the data of message {id}"))?;
    Ok(Some(data))
}

/// A recipient is done (delivered or bounced). Only a row still leased as
/// `lease` (its `lease_until`) is removed: one the admin deleted, a hold
/// parked or another lease took over is not ours to finish. Returns
/// whether the row was ours.
pub fn delete_rcpt(conn: &Connection, id: &str, idx: i64, lease: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM recipients
             WHERE msg_id = ?1 AND idx = ?2 AND status = 'active' AND lease_until = ?3",
        )?
        .execute(params![id, idx, lease])?
        > 0)
}

/// A recipient waits for another attempt (only a row still leased as
/// `lease`, see `delete_rcpt`). Returns whether the row was ours.
pub fn defer_rcpt(
    conn: &Connection,
    id: &str,
    idx: i64,
    lease: i64,
    next_attempt: i64,
    reply: &str,
    warned: bool,
) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE recipients SET status = 'deferred', lease_until = NULL, attempts = attempts + 1,
                    next_attempt = ?4, last_reply = ?5, warned = MAX(warned, ?6)
             WHERE msg_id = ?1 AND idx = ?2 AND status = 'active' AND lease_until = ?3",
        )?
        .execute(params![id, idx, lease, next_attempt, reply, warned])?
        > 0)
}

/// Gives leased recipients back to the queue without an attempt (their
/// message was held while they waited to be sent): queued, due at once,
/// so a release sends them. Returns how many rows were still ours.
pub fn unlease(conn: &Connection, id: &str, rcpts: &[(i64, i64)], now: i64) -> Result<usize> {
    let mut st = conn.prepare_cached(
        "UPDATE recipients SET status = 'queued', lease_until = NULL,
                next_attempt = MIN(next_attempt, ?4)
         WHERE msg_id = ?1 AND idx = ?2 AND status = 'active' AND lease_until = ?3",
    )?;
    let mut n = 0;
    for (idx, lease) in rcpts {
        n += st.execute(params![id, idx, lease, now])?;
    }
    Ok(n)
}

/// Deletes the message if it has no recipients left; returns whether it did.
pub fn delete_message_if_done(conn: &Connection, id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM messages WHERE id = ?1
               AND NOT EXISTS (SELECT 1 FROM recipients WHERE msg_id = ?1)",
        )?
        .execute(params![id])?
        > 0)
}

/// Domains with recipients waiting for a later attempt.
pub fn waiting_domains(conn: &Connection, now: i64) -> Result<Vec<String>> {
    let v = conn
        .prepare_cached(
            "SELECT DISTINCT domain FROM recipients
             WHERE status IN ('queued','deferred') AND next_attempt > ?1",
        )?
        .query_map(params![now], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(v)
}

/// Makes every waiting recipient of `domains` due now (backlog release).
pub fn release(conn: &Connection, domains: &[String], now: i64) -> Result<usize> {
    let list = serde_json::to_string(domains)?;
    Ok(conn
        .prepare_cached(
            "UPDATE recipients SET next_attempt = ?1
             WHERE status IN ('queued','deferred') AND next_attempt > ?1
               AND domain IN (SELECT value FROM json_each(?2))",
        )?
        .execute(params![now, list])?)
}

/// Returns expired leases that this process does not hold (`held`) to the
/// queue, due now. Returns how many.
pub fn reclaim(conn: &Connection, now: i64, held: &HashSet<(String, i64)>) -> Result<usize> {
    let expired: Vec<(String, i64)> = conn
        .prepare_cached(
            "SELECT msg_id, idx FROM recipients WHERE status = 'active' AND lease_until < ?1",
        )?
        .query_map(params![now], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut n = 0;
    let mut upd = conn.prepare_cached(
        "UPDATE recipients SET status = 'queued', lease_until = NULL,
                next_attempt = MIN(next_attempt, ?3)
         WHERE msg_id = ?1 AND idx = ?2 AND status = 'active'",
    )?;
    for key in expired.into_iter().filter(|k| !held.contains(k)) {
        n += upd.execute(params![key.0, key.1, now])?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{insert, schema, NewMessage};

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        schema::migrate(&mut c).unwrap();
        c
    }

    fn put(c: &Connection, id: &str, rcpts: &[&str], held: bool) {
        let mut m = NewMessage::for_test(id, rcpts, b"Subject: x\r\n\r\nbody\r\n".to_vec());
        m.hold_reason = held.then(|| "held".into());
        insert::insert_message(c, &m).unwrap();
    }

    #[test]
    fn lease_skips_held_excluded_and_active() {
        let c = db();
        put(&c, "A", &["a@one.example", "b@two.example"], false);
        put(&c, "B", &["c@one.example"], true);
        let got = lease_due(&c, 200, 10, &["two.example".into()], 0).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].msg.id, "A");
        assert_eq!(got[0].rcpts.len(), 1);
        assert_eq!(got[0].rcpts[0].address, "a@one.example");
        // Leased rows are not handed out again.
        let again = lease_due(&c, 200, 10, &[], 0).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].rcpts[0].address, "b@two.example");
        assert!(lease_due(&c, 200, 10, &[], 0).unwrap().is_empty());
        // Not yet due.
        put(&c, "C", &["d@one.example"], false);
        assert!(lease_due(&c, 50, 10, &[], 0).unwrap().is_empty());
    }

    #[test]
    fn small_messages_come_with_their_bytes_within_the_allowance() {
        let c = db();
        // Each stored message is 21 bytes.
        put(&c, "A", &["a@one.example"], false);
        put(&c, "B", &["b@one.example"], false);
        put(&c, "C", &["c@one.example"], false);
        let got = lease_due(&c, 200, 10, &[], 50).unwrap();
        let loaded: Vec<bool> = got.iter().map(|l| l.data.is_some()).collect();
        assert_eq!(
            loaded,
            vec![true, true, false],
            "the third would pass 50 bytes"
        );
        assert_eq!(
            got[0].data.as_deref(),
            Some(&b"Subject: x\r\n\r\nbody\r\n"[..])
        );
    }

    #[test]
    fn defer_delete_release_and_reclaim() {
        let c = db();
        put(&c, "A", &["a@one.example", "b@one.example"], false);
        let got = lease_due(&c, 200, 10, &[], 0).unwrap();
        assert_eq!(got[0].rcpts.len(), 2);
        let lease = got[0].rcpts[0].lease_until;
        assert_eq!(lease, 200 + LEASE_SECS);
        // A result for another lease (or a row no longer leased) is not applied.
        assert!(!defer_rcpt(&c, "A", 0, lease + 1, 900, "stale", false).unwrap());
        assert!(defer_rcpt(&c, "A", 0, lease, 900, "try later", false).unwrap());
        assert!(!defer_rcpt(&c, "A", 0, lease, 900, "twice", false).unwrap());
        assert!(delete_rcpt(&c, "A", 1, lease).unwrap());
        assert!(!delete_rcpt(&c, "A", 1, lease).unwrap());
        assert!(!delete_message_if_done(&c, "A").unwrap());
        assert_eq!(
            waiting_domains(&c, 200).unwrap(),
            vec!["one.example".to_string()]
        );
        assert_eq!(release(&c, &["one.example".into()], 200).unwrap(), 1);
        let got = lease_due(&c, 200, 10, &[], 0).unwrap();
        assert_eq!(got[0].rcpts[0].attempts, 1);
        // An expired lease we still hold stays; one we don't comes back.
        let held: HashSet<(String, i64)> = [("A".to_string(), 0)].into();
        assert_eq!(reclaim(&c, 200 + LEASE_SECS + 1, &held).unwrap(), 0);
        assert_eq!(
            reclaim(&c, 200 + LEASE_SECS + 1, &HashSet::new()).unwrap(),
            1
        );
        // Reclaimed: the old lease's result no longer applies; a new one does.
        assert!(!delete_rcpt(&c, "A", 0, 200 + LEASE_SECS).unwrap());
        let again = lease_due(&c, 300 + LEASE_SECS, 10, &[], 0).unwrap();
        let lease = again[0].rcpts[0].lease_until;
        assert_eq!(unlease(&c, "A", &[(0, lease)], 5).unwrap(), 1);
        let again = lease_due(&c, 300 + LEASE_SECS, 10, &[], 0).unwrap();
        assert!(delete_rcpt(&c, "A", 0, again[0].rcpts[0].lease_until).unwrap());
        assert!(delete_message_if_done(&c, "A").unwrap());
        assert_eq!(message_data(&c, "A").unwrap(), None);
    }

    /// The scheduler's queries against a queue of 1,000,000 recipients (a
    /// benchmark, not a check; run it by hand):
    /// `cargo test --release --lib million -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn million_recipient_queue_timings() {
        use std::time::Instant;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        let mut c = schema::open(&path).unwrap();
        schema::migrate(&mut c).unwrap();
        let t = Instant::now();
        let tx = c.transaction().unwrap();
        for i in 0..1_000_000u32 {
            // The slow primary's backlog, then ten for another domain.
            let domain = if i >= 999_990 {
                "other.example"
            } else {
                "example.jp"
            };
            let rcpt = format!("u{i}@{domain}");
            let m = NewMessage::for_test(&format!("M{i:08}"), &[&rcpt], vec![b'x'; 200]);
            insert::insert_message(&tx, &m).unwrap();
        }
        tx.commit().unwrap();
        eprintln!("filled 1,000,000 in {:?}", t.elapsed());
        let time = |what: &str, f: &mut dyn FnMut() -> usize| {
            let t = Instant::now();
            let n = f();
            eprintln!("{what}: {n} in {:?}", t.elapsed());
        };
        let tx = c.transaction().unwrap();
        time("lease 500 messages (nothing excluded)", &mut || {
            lease_due(&tx, 200, 500, &[], 16 << 20).unwrap().len()
        });
        time("lease 500 more", &mut || {
            lease_due(&tx, 200, 500, &[], 16 << 20).unwrap().len()
        });
        time(
            "lease with example.jp excluded (the ten others)",
            &mut || {
                lease_due(&tx, 200, 500, &["example.jp".into()], 16 << 20)
                    .unwrap()
                    .len()
            },
        );
        time(
            "lease with example.jp excluded, nothing else due",
            &mut || {
                lease_due(&tx, 200, 500, &["example.jp".into()], 16 << 20)
                    .unwrap()
                    .len()
            },
        );
        time("defer 1,000 leased", &mut || {
            for i in 0..1000u32 {
                defer_rcpt(
                    &tx,
                    &format!("M{i:08}"),
                    0,
                    200 + LEASE_SECS,
                    900,
                    "451 later",
                    false,
                )
                .unwrap();
            }
            1000
        });
        time("waiting domains", &mut || {
            waiting_domains(&tx, 200).unwrap().len()
        });
        time("release", &mut || {
            release(&tx, &["example.jp".to_string()], 200).unwrap()
        });
        time("reclaim (nothing expired)", &mut || {
            reclaim(&tx, 200, &HashSet::new()).unwrap()
        });
        time("deliver 1,000 (delete rows and messages)", &mut || {
            for i in 1000..2000u32 {
                let id = format!("M{i:08}");
                delete_rcpt(&tx, &id, 0, 200 + LEASE_SECS).unwrap();
                delete_message_if_done(&tx, &id).unwrap();
            }
            1000
        });
        tx.commit().unwrap();
    }
}
