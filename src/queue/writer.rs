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
            .spawn(move || run(conn, rx, restart))
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
        let finishers: Vec<Finisher> = jobs.into_iter().map(|j| j(&mut txn)).collect();
        let commit = txn.commit().map_err(|e| e.to_string());
        if let Err(e) = &commit {
            tracing::error!(error = %e, "queue: commit failed; batch rolled back");
        }
        for f in finishers {
            f(commit.clone());
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
