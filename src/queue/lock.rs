//! One daemon per queue: an exclusive lock on a file beside the database.
//!
//! Two `mx2 serve` on one queue would both lease and deliver the same
//! recipients, and the second one's start-up (returning rows left `active`
//! by a crash) would take back the first one's leases: every recipient
//! delivered twice, every bounce sent twice. Postfix guards its queue the
//! same way (`master.lock`). `flock` is released by the kernel when the
//! process dies, so a crashed daemon never leaves a stale lock, and the
//! file keeps the holder's pid for the message the second daemon prints.
//!
//! The CLI does not take the lock: its edits go through SQLite's own
//! locking beside the running daemon.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Held for the daemon's lifetime; the lock goes with the process.
pub struct QueueLock {
    _file: File,
    pub path: PathBuf,
}

/// The lock file of the queue database at `db`: `DB.lock`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Takes the queue's lock or says who holds it. Creates the queue
/// directory (0700) if needed, since this is the first thing `serve` does.
pub fn acquire(db: &Path) -> Result<QueueLock> {
    super::schema::create_dir(db)?;
    let path = lock_path(db);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening queue lock {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            bail!(
                "queue {} is in use by pid {} (another mx2 serve is running on it)",
                db.display(),
                if pid.is_empty() { "?" } else { pid }
            );
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking queue lock {}", path.display()));
        }
    }
    file.set_len(0)
        .and_then(|_| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}", std::process::id()))
        .and_then(|_| file.flush())
        .with_context(|| format!("writing pid to {}", path.display()))?;
    Ok(QueueLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_pid_and_lock_ends_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("q").join("queue.db");
        let first = acquire(&db).unwrap();
        // flock locks belong to the open file description: a second open
        // in the same process conflicts just like another process would.
        let err = acquire(&db).err().expect("second lock must fail");
        let text = format!("{err:#}");
        assert!(
            text.contains(&format!("in use by pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        let _again = acquire(&db).unwrap();
    }
}
