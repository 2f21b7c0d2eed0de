//! Supervision: a daemon that has lost a part it needs exits non-zero.
//!
//! mx2's work is split over long-lived tasks and threads (listeners, the
//! relay's scheduler and recorder, the queue writer and checkpointer, the
//! table watchers, the control socket). If one of them panics or returns,
//! the rest would go on: a backup MX that still says `250` and never
//! relays is the worst failure there is. So each of them holds a
//! `Critical` guard; when it is dropped (the task ended or unwound), the
//! daemon's main loop hears of it, logs it, stops, and exits 1 so the
//! service manager (systemd `Restart=on-failure`) starts a fresh process.
//!
//! The guard is dropped when the task's future is, so a panic in a tokio
//! task is reported when tokio drops the failed task, and a clean return
//! at once; either way the part is gone. Outside `mx2 serve` (CLI, tests)
//! nothing listens and the guards are inert.

use std::sync::Mutex;

use tokio::sync::mpsc;

static LISTENER: Mutex<Option<mpsc::UnboundedSender<String>>> = Mutex::new(None);

/// Starts listening for lost parts; the daemon's main loop owns the receiver.
pub fn install() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    *LISTENER.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    rx
}

/// Held by a long-lived task or thread for as long as it runs.
pub struct Critical {
    name: &'static str,
}

/// A guard for the part `name` (e.g. "relay scheduler").
pub fn critical(name: &'static str) -> Critical {
    Critical { name }
}

impl Drop for Critical {
    fn drop(&mut self) {
        let how = if std::thread::panicking() {
            "panicked"
        } else {
            "stopped"
        };
        let listener = LISTENER.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = listener.as_ref() {
            let _ = tx.send(format!("{} {how}", self.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next report about a part whose name starts with `test ` (other
    /// unit tests in this process may end parts of their own meanwhile).
    async fn next(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
        loop {
            let got = rx.recv().await.expect("listener closed");
            if got.starts_with("test ") {
                return got;
            }
        }
    }

    #[tokio::test]
    async fn a_lost_part_is_reported_by_name() {
        let mut rx = install();
        std::thread::spawn(|| {
            let _g = critical("test thread");
            panic!("boom");
        })
        .join()
        .unwrap_err();
        assert_eq!(next(&mut rx).await, "test thread panicked");
        let task = tokio::spawn(async {
            let _g = critical("test task");
            panic!("boom");
        });
        assert!(task.await.is_err());
        assert!(next(&mut rx).await.starts_with("test task "));
        tokio::spawn(async {
            let _g = critical("test quiet task");
        })
        .await
        .unwrap();
        assert_eq!(next(&mut rx).await, "test quiet task stopped");
    }
}
