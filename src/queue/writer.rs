//! The single writer thread and its group commit.
//!
//! SQLite allows one writer at a time, and `synchronous=FULL` makes every
//! commit an fsync. So one thread owns the write connection; sessions and
//! the relay send it jobs; it runs every job waiting at that moment inside
//! one transaction (each in its own savepoint, so one failing job does not
//! undo the others), commits once, and only then answers them all. One fsync
//! per batch instead of one per message, with full durability kept: nobody
//! hears "done" before the commit returned.

use std::sync::mpsc;
use std::thread;

use anyhow::{anyhow, Context, Result};
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::checkpoint::{self, Restart};

/// A job: runs inside the batch transaction, returns how to answer once the
/// batch's commit outcome is known.
type Job = Box<dyn FnOnce(&mut rusqlite::Transaction<'_>) -> Finisher + Send>;
type Finisher = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Most jobs folded into one transaction; bounds the latency of a batch.
const MAX_BATCH: usize = 512;

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread on `conn` (already migrated); it finishes
    /// checkpoints when `restart` asks (see `checkpoint`).
    pub fn start(conn: Connection, restart: Restart) -> Result<Writer> {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || {
                let _critical = crate::supervise::critical("queue writer");
                run(conn, rx, restart)
            })
            .context("starting the queue writer thread")?;
        Ok(Writer { tx })
    }

    /// Runs `f` in the next group commit and returns its result once the
    /// commit is durable. Errors from `f` roll back only `f`'s changes.
    pub async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel::<Result<R>>();
        let job: Job = Box::new(move |txn| {
            let outcome = match txn.savepoint() {
                Ok(mut sp) => match f(&sp) {
                    Ok(v) => match sp.commit() {
                        Ok(()) => Ok(v),
                        Err(e) => Err(anyhow!(e).context("releasing savepoint")),
                    },
                    Err(e) => {
                        let _ = sp.rollback();
                        Err(e)
                    }
                },
                Err(e) => Err(anyhow!(e).context("opening savepoint")),
            };
            Box::new(move |commit: Result<(), String>| {
                let res = match (outcome, commit) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(e)) => Err(anyhow!("queue commit failed: {e}")),
                };
                let _ = done_tx.send(res);
            })
        });
        self.tx
            .send(job)
            .map_err(|_| anyhow!("queue writer has stopped"))?;
        done_rx
            .await
            .map_err(|_| anyhow!("queue writer dropped the job"))?
    }
}

fn run(mut conn: Connection, rx: mpsc::Receiver<Job>, restart: Restart) {
    while let Ok(first) = rx.recv() {
        if restart.take() {
            checkpoint::finish_on_writer(&conn);
        }
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let txn = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate);
        let mut txn = match txn {
            Ok(t) => t,
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(error = %msg, "queue: cannot begin transaction");
                // Answer every job with the failure; none of them ran.
                for job in jobs {
                    fail_unrun(job, &msg);
                }
                continue;
            }
        };
        let mut finishers: Vec<Finisher> = Vec::with_capacity(jobs.len());
        let mut jobs = jobs.into_iter();
        let mut rolled_back = None;
        for job in jobs.by_ref() {
            finishers.push(job(&mut txn));
            // SQLITE_FULL, SQLITE_IOERR and friends may roll back the whole
            // transaction, not just the job's savepoint. Going on would run
            // the next jobs in autocommit mode (each committed on its own)
            // and then fail the final COMMIT: every answer would be wrong.
            if txn.is_autocommit() {
                rolled_back = Some(
                    "the database rolled back the whole batch (disk full or I/O error)".to_string(),
                );
                break;
            }
        }
        let commit = match rolled_back {
            Some(why) => {
                let _ = txn.rollback();
                Err(why)
            }
            None => txn.commit().map_err(|e| e.to_string()),
        };
        if let Err(e) = &commit {
            tracing::error!(error = %e, "queue: commit failed; batch rolled back");
        }
        for f in finishers {
            f(commit.clone());
        }
        // Jobs after the rollback never ran: they fail without touching the disk.
        for job in jobs {
            fail_unrun(
                job,
                commit
                    .as_ref()
                    .err()
                    .map_or("batch rolled back", String::as_str),
            );
        }
    }
}

/// A job that could not run because no transaction could be opened: run it
/// against a throw-away in-memory transaction just to reach its finisher.
fn fail_unrun(job: Job, msg: &str) {
    if let Ok(mut mem) = Connection::open_in_memory() {
        if let Ok(mut t) = mem.transaction() {
            let fin = job(&mut t);
            let _ = t.rollback();
            fin(Err(msg.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::process::Command;

    use crate::queue::{lock, NewMessage, Queue};

    /// Concurrent writers on a small full filesystem: when SQLite rolls a
    /// whole batch back (SQLITE_FULL while spilling pages), no job may be
    /// told "failed" while its message is on disk, nor "stored" while it
    /// is not. (Before the writer checked `is_autocommit`, later jobs of a
    /// rolled-back batch committed on their own and were still answered
    /// with the failed COMMIT's error.) Needs root for the tmpfs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_answer_matches_the_disk_when_it_fills_up() {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount");
        assert!(
            st.status.success(),
            "this test mounts a tmpfs and must run as root: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        struct Unmount<'a>(&'a std::path::Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = Command::new("umount").arg("-l").arg(self.0).status();
            }
        }
        let _unmount = Unmount(dir.path());
        let path = dir.path().join("queue.db");
        let q = Queue::open(&path, lock::acquire(&path).unwrap()).unwrap();
        let mut ok = HashSet::new();
        let mut failed = 0;
        // Rounds of 24 concurrent inserts of 60-260 KB (a batch spills
        // pages before its commit) until the disk has refused many. 8 MB
        // holds a few rounds even when one batch takes a whole round.
        for round in 0..80u32 {
            let mut tasks = Vec::new();
            for i in 0..24u32 {
                let q = q.clone();
                let id = format!("M{round:03}{i:03}");
                let size = 60_000 + ((round * 24 + i) as usize * 7919) % 200_000;
                let m = NewMessage::for_test(&id, &["r@example.jp"], vec![b'x'; size]);
                tasks.push(tokio::spawn(async move { (id, q.insert(m).await) }));
            }
            for t in tasks {
                let (id, res) = t.await.unwrap();
                match res {
                    Ok(()) => {
                        ok.insert(id);
                    }
                    Err(_) => failed += 1,
                }
            }
            if failed > 200 {
                break;
            }
        }
        assert!(failed > 0, "the disk never filled up");
        assert!(!ok.is_empty(), "nothing was stored at all");
        let reader = q.reader().unwrap();
        let on_disk: HashSet<String> = reader
            .prepare("SELECT id FROM messages")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let told_failed_but_stored: Vec<_> = on_disk.difference(&ok).collect();
        let told_stored_but_missing: Vec<_> = ok.difference(&on_disk).collect();
        assert!(
            told_failed_but_stored.is_empty() && told_stored_but_missing.is_empty(),
            "answers disagree with the disk: failed but stored {told_failed_but_stored:?}, \
             stored but missing {told_stored_but_missing:?} ({} ok, {failed} failed)",
            ok.len()
        );
        // Every recipient row belongs to a stored message, and vice versa.
        let orphans: i64 = reader
            .query_row(
                "SELECT count(*) FROM recipients r WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = r.msg_id)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(orphans, 0);
    }
}
