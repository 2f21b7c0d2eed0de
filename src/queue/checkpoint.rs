//! Background WAL checkpoints.
//!
//! SQLite's automatic checkpoint runs inside whichever commit crosses the
//! threshold — here the group-commit writer, so every session waiting for
//! its 250 would wait for the copy too. This thread checkpoints instead,
//! PASSIVE (it never blocks the writer or readers), once the WAL holds
//! 1,000 pages as SQLite's own threshold says: looking every 250 ms, sooner
//! while it is behind. The writer's `journal_size_limit` shrinks the WAL
//! file back once a checkpoint has caught up.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::schema;

/// WAL pages left over that count as "behind" (SQLite's own threshold).
const PAGES: i64 = 1000;
const TICK: Duration = Duration::from_millis(250);
const BEHIND_TICK: Duration = Duration::from_millis(20);

/// Starts the checkpoint thread for the queue at `path`.
pub fn start(path: &Path) -> Result<()> {
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
