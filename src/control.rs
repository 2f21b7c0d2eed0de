//! The control socket: how the CLI reaches the running daemon.
//!
//! A unix socket (mode 0600: only the daemon's user and root may steer
//! it) taking one line per connection: `flush` (look at the queue now),
//! `reload` (tables and certificates, like SIGHUP), `withdraw ID…` (the
//! admin deleted these: do not send them, `queue::withdrawn`) or `status`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use crate::queue::Queue;
use crate::tables::Tables;

/// Serves the socket until the process ends.
pub fn start(path: &Path, queue: Queue, tables: Arc<Tables>) -> Result<()> {
    if path.exists() {
        // A socket left by a killed daemon; a live daemon would still answer.
        if request(path, "status").is_ok() {
            anyhow::bail!("{}: another mx2 is already running", path.display());
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot create control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", path.display()))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let queue = queue.clone();
            let tables = tables.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = tokio::io::BufReader::new(r).lines();
                let Ok(Ok(Some(line))) =
                    tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await
                else {
                    return;
                };
                let line = line.trim();
                if let Some(ids) = line.strip_prefix("withdraw ") {
                    let ids = ids
                        .split_whitespace()
                        .filter(|id| crate::queue::id::is_valid(id));
                    queue.withdrawn.add(ids.map(str::to_string));
                    let _ = w.write_all(b"ok\n").await;
                    return;
                }
                let answer = match line {
                    "flush" => {
                        queue.wakeup.notify_one();
                        "ok".to_string()
                    }
                    "reload" => {
                        let t = tables.clone();
                        let _ = tokio::task::spawn_blocking(move || t.reload(true)).await;
                        "ok".to_string()
                    }
                    "status" => format!("ok pid={}", std::process::id()),
                    other => format!("error unknown command {other:?}"),
                };
                let _ = w.write_all(format!("{answer}\n").as_bytes()).await;
            });
        }
    });
    Ok(())
}

/// Sends one command to the daemon and returns its answer.
pub fn request(path: &Path, cmd: &str) -> Result<String> {
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .with_context(|| format!("daemon not reachable at {}", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("{cmd}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    let line = line.trim().to_string();
    if line.starts_with("ok") {
        Ok(line)
    } else {
        anyhow::bail!("daemon answered: {line}")
    }
}
