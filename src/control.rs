//! The control socket: how the CLI reaches the running daemon.
//!
//! A unix socket (mode 0600: only the daemon's user and root may steer
//! it) taking one line per connection: `flush` (look at the queue now),
//! `reload` (tables and certificates, like SIGHUP), `withdraw ID… ID/IDX…`
//! (the admin deleted these messages or recipients: do not send them),
//! `hold ID…` / `release ID…` (park leased mail, `queue::withdrawn`) or
//! `status`.

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
        let _critical = crate::supervise::critical("control socket");
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
                if let Some(answer) = withdrawal(&queue, line) {
                    let _ = w.write_all(format!("{answer}\n").as_bytes()).await;
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

/// `withdraw ID… ID/IDX…` (deleted messages or recipients), `hold ID…`
/// and `release ID…`: the answer names the messages whose delivery was
/// already on the wire (`ok on-wire=ID,ID`), which may still complete.
fn withdrawal(queue: &Queue, line: &str) -> Option<String> {
    use crate::queue::id::is_valid;
    use crate::queue::withdrawn::Why;
    let (verb, args) = line.split_once(' ')?;
    let args = args.split_whitespace();
    let busy = match verb {
        "withdraw" => {
            let (mut ids, mut keys) = (Vec::new(), Vec::new());
            for a in args {
                match a.split_once('/') {
                    Some((id, idx)) if is_valid(id) => {
                        if let Ok(i) = idx.parse::<i64>() {
                            keys.push((id.to_string(), i));
                        }
                    }
                    None if is_valid(a) => ids.push(a.to_string()),
                    _ => {}
                }
            }
            let mut busy = queue.withdrawn.messages(ids, Why::Deleted);
            busy.extend(queue.withdrawn.recipients(keys));
            busy
        }
        "hold" => {
            let ids = args.filter(|a| is_valid(a)).map(str::to_string);
            queue.withdrawn.messages(ids, Why::Held)
        }
        "release" => {
            let ids: Vec<String> = args.filter(|a| is_valid(a)).map(str::to_string).collect();
            queue.withdrawn.release(&ids);
            queue.wakeup.notify_one();
            Vec::new()
        }
        _ => return None,
    };
    Some(if busy.is_empty() {
        "ok".to_string()
    } else {
        format!("ok on-wire={}", busy.join(","))
    })
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
