//! The durable queue: SQLite in WAL mode behind one group-committing writer.
//!
//! - `schema`: tables, pragmas, migrations.
//! - `writer`: the writer thread; `Queue::write` is the only way the daemon changes the database.
//! - `insert`: storing a received message.
//! - `admin`: what the CLI reads and edits (list, show, hold, delete, stats).
//! - `id`: queue ids.
//! - `lock`: one daemon per queue.
//! - `checkpoint`: background WAL checkpoints.
//! - `withdrawn`: ids the admin deleted while the relay may hold their bytes.

pub mod admin;
pub mod checkpoint;
pub mod id;
pub mod insert;
pub mod lock;
pub mod message;
pub mod schema;
pub mod withdrawn;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rusqlite::Connection;
use tokio::sync::Notify;

pub use message::{MailParams, NewMessage, NewRecipient};
pub use writer::Writer;

/// The daemon's handle on the queue.
#[derive(Clone)]
pub struct Queue {
    path: PathBuf,
    writer: Writer,
    /// Poked whenever something becomes due now (new mail, flush, release).
    pub wakeup: Arc<Notify>,
    /// Messages deleted by the admin that must not be sent (see `withdrawn`).
    pub withdrawn: withdrawn::Withdrawn,
    /// Kept while any handle lives: the queue is this process's.
    _lock: Arc<lock::QueueLock>,
}

impl Queue {
    /// Opens and migrates the database, returns recipients left `active` by
    /// a crash to the queue (due now), and starts the writer. The caller
    /// holds the queue's `lock` (only one daemon may do this).
    pub fn open(path: &Path, lock: lock::QueueLock) -> Result<Queue> {
        let mut conn = schema::open(path)?;
        schema::migrate(&mut conn)?;
        let n = conn
            .execute(
                "UPDATE recipients SET status = 'queued', lease_until = NULL,
                        next_attempt = MIN(next_attempt, strftime('%s','now'))
                 WHERE status = 'active'",
                [],
            )
            .context("returning interrupted deliveries to the queue")?;
        if n > 0 {
            tracing::info!(
                recipients = n,
                "queue: deliveries interrupted by a stop are due again now"
            );
        }
        let highest: Option<String> = conn
            .query_row("SELECT max(id) FROM messages", [], |r| r.get(0))
            .context("reading the highest queue id")?;
        if let Some(h) = highest {
            id::raise_floor(&h);
        }
        // The writer does not checkpoint automatically: copying WAL pages
        // into the main file (and its fsync) would stall every session
        // waiting on a commit. A helper thread copies in the background and
        // the writer only finishes the last frames (`checkpoint`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "journal_size_limit", 32 * 1024 * 1024)?;
        let restart = checkpoint::Restart::default();
        let writer = Writer::start(conn, restart.clone())?;
        checkpoint::start(path, restart)?;
        Ok(Queue {
            path: path.to_path_buf(),
            writer,
            wakeup: Arc::new(Notify::new()),
            withdrawn: withdrawn::Withdrawn::default(),
            _lock: Arc::new(lock),
        })
    }

    /// Runs `f` in the next group commit (see `writer`).
    pub async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        self.writer.write(f).await
    }

    /// Durably stores a received message; returns once it is on disk.
    pub async fn insert(&self, m: NewMessage) -> Result<()> {
        let held = m.hold_reason.is_some();
        self.write(move |c| insert::insert_message(c, &m)).await?;
        if !held {
            self.wakeup.notify_one();
        }
        Ok(())
    }

    /// A new read connection (WAL readers run beside the writer).
    pub fn reader(&self) -> Result<Connection> {
        schema::open(&self.path)
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// Mail is private whatever the umask: directory 0700, database, WAL
    /// and lock file 0600.
    #[tokio::test]
    async fn queue_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool").join("queue.db");
        let q = Queue::open(&path, lock::acquire(&path).unwrap()).unwrap();
        q.insert(NewMessage::for_test(
            "A0000000000A",
            &["r@example.jp"],
            b"x".to_vec(),
        ))
        .await
        .unwrap();
        assert_eq!(mode(&dir.path().join("spool")), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("spool/queue.db-wal")), 0o600);
        assert_eq!(mode(&lock::lock_path(&path)), 0o600);
    }

    /// Ids handed out after a start sort after every id in the queue, even
    /// one "from the future" (a clock stepped back across a restart).
    #[tokio::test]
    async fn ids_continue_after_the_highest_queued_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        {
            let mut c = schema::open(&path).unwrap();
            schema::migrate(&mut c).unwrap();
            let m = NewMessage::for_test("X00000000000", &["r@example.jp"], b"x".to_vec());
            insert::insert_message(&c, &m).unwrap();
        }
        let _q = Queue::open(&path, lock::acquire(&path).unwrap()).unwrap();
        let next = id::new_id();
        assert!(next.as_str() > "X00000000000", "{next}");
    }
}
