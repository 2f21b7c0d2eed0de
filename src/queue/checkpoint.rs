//! Background WAL checkpoints.
//!
//! SQLite's automatic checkpoint runs inside whichever commit crosses the
//! threshold — here the group-commit writer, so every session waiting for
//! its 250 would wait for the copy too. This thread checkpoints instead,
//! PASSIVE (it never blocks the writer or readers), once the WAL holds
//! 1,000 pages as SQLite's own threshold says: looking every 250 ms, sooner
//! while it is behind.
//!
//! Under sustained load that alone lets the WAL grow without bound: SQLite
//! starts the WAL over only when a write begins with every frame already
//! copied, and with commits arriving all the time a background copy never
//! quite catches up (200 MB after 20,000 messages was measured). So once
//! the WAL holds `RESTART_PAGES` and this thread is nearly caught up, it
//! asks the writer (`Restart`) to copy the last few frames itself between
//! two batches; the writer's next commit then starts the WAL from the top,
//! and `journal_size_limit` trims the file.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::schema;

/// WAL pages left over that count as "behind" (SQLite's own threshold).
const PAGES: i64 = 1000;
/// WAL pages after which the writer is asked to let the WAL start over.
const RESTART_PAGES: i64 = 4000;
const TICK: Duration = Duration::from_millis(250);
const BEHIND_TICK: Duration = Duration::from_millis(20);

/// Set by the checkpoint thread, taken by the writer: "copy the rest of
/// the WAL now, so your next commit can start it over".
#[derive(Clone, Default)]
pub struct Restart(Arc<AtomicBool>);

impl Restart {
    fn ask(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether a restart was asked for (and clears the request).
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

/// Finishes the checkpoint on the writer's own connection, between batches
/// (nothing else writes then, so it copies every frame no reader still
/// needs). A failure only means the WAL grows a while longer.
pub fn finish_on_writer(conn: &rusqlite::Connection) {
    let r: rusqlite::Result<(i64, i64, i64)> =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        });
    if let Err(e) = r {
        tracing::warn!("queue: checkpoint before a WAL restart failed: {e}");
    }
}

/// Starts the checkpoint thread for the queue at `path`.
pub fn start(path: &Path, restart: Restart) -> Result<()> {
    let conn = schema::open(path)?;
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    // Like SQLite's automatic checkpoint, wait until the WAL holds PAGES
    // pages: checkpointing a small WAL only grows the main file.
    let threshold = (PAGES * page_size) as u64;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = std::path::PathBuf::from(wal);
    std::thread::Builder::new()
        .name("queue-checkpoint".into())
        .spawn(move || {
            let _critical = crate::supervise::critical("queue checkpointer");
            let mut pause = TICK;
            loop {
                std::thread::sleep(pause);
                let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                if size < threshold && pause == TICK {
                    continue;
                }
                // (busy, pages in the WAL, pages checkpointed)
                let r: rusqlite::Result<(i64, i64, i64)> =
                    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    });
                pause = match r {
                    Ok((_, wal, done)) if wal - done >= PAGES => BEHIND_TICK,
                    Ok((_, wal, _)) if wal >= RESTART_PAGES => {
                        restart.ask();
                        TICK
                    }
                    Ok(_) => TICK,
                    Err(e) => {
                        tracing::warn!("queue: checkpoint failed: {e}");
                        TICK
                    }
                };
            }
        })
        .context("starting the checkpoint thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::queue::{NewMessage, Queue};

    /// Sustained commits (one writer, always more to write, a reader
    /// reading meanwhile) must not grow the WAL without bound: 240 MB of
    /// messages go through while the WAL stays within a few restarts'
    /// worth (journal_size_limit is 32 MB; without the writer's help the
    /// WAL held every byte written: 285 MB measured).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wal_starts_over_under_sustained_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        let q = Queue::open(&path, super::super::lock::acquire(&path).unwrap()).unwrap();
        let reader = q.reader().unwrap();
        let body = vec![b'x'; 16 * 1024];
        let mut wal_peak = 0u64;
        let wal = dir.path().join("queue.db-wal");
        for round in 0..300 {
            let mut tasks = Vec::new();
            for i in 0..50 {
                let q = q.clone();
                let id = format!("M{round:04}{i:03}");
                let m = NewMessage::for_test(&id, &["r@example.jp"], body.clone());
                tasks.push(tokio::spawn(async move { q.insert(m).await }));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            // Delete what was stored, as deliveries do.
            let r = round;
            q.write(move |c| {
                c.execute(
                    "DELETE FROM messages WHERE id LIKE ?1",
                    [format!("M{r:04}%")],
                )?;
                Ok(())
            })
            .await
            .unwrap();
            let n: i64 = reader
                .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
                .unwrap();
            assert!(n <= 50);
            wal_peak = wal_peak.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        assert!(
            wal_peak < 96 * 1024 * 1024,
            "WAL reached {wal_peak} bytes for 240 MB written"
        );
    }
}
