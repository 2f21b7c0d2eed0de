//! The durable queue: SQLite in WAL mode behind one group-committing writer.
//!
//! - `schema`: tables, pragmas, migrations.
//! - `writer`: the writer thread; `Queue::write` is the only way the daemon changes the database.
//! - `insert`: storing a received message.
//! - `admin`: what the CLI reads and edits (list, show, hold, delete, stats).
//! - `id`: queue ids.
//! - `checkpoint`: background WAL checkpoints.
//! - `withdrawn`: ids the admin deleted while the relay may hold their bytes.

pub mod admin;
pub mod checkpoint;
pub mod id;
pub mod insert;
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
}

impl Queue {
    /// Opens and migrates the database, returns recipients left `active` by
    /// a crash to the queue (due now), and starts the writer.
    pub fn open(path: &Path) -> Result<Queue> {
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
