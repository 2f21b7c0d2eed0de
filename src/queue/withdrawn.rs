//! Messages the admin deleted while the daemon may still hold their bytes.
//!
//! A leased message's bytes travel with its job (`relay::job::Body`), so a
//! job waiting for a connection no longer re-reads the queue before it is
//! sent. `mx2 queue delete` therefore also tells the daemon, over the
//! control socket, which ids it removed; a worker drops such a job instead
//! of sending it. Ids are unique for ever, so a stale entry harms nothing;
//! entries are forgotten after an hour and the set is bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a withdrawn id is remembered (a leased job waits far less).
const KEEP: Duration = Duration::from_secs(3600);
/// Most ids remembered; past this the oldest are forgotten first.
const MAX: usize = 100_000;

/// Shared by the control socket (writes) and the relay workers (reads).
#[derive(Clone, Default)]
pub struct Withdrawn(Arc<Mutex<HashMap<String, Instant>>>);

impl Withdrawn {
    /// Remembers `ids` as deleted.
    pub fn add(&self, ids: impl IntoIterator<Item = String>) {
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, t| now.duration_since(*t) < KEEP);
        for id in ids {
            map.insert(id, now);
        }
        if map.len() > MAX {
            let mut by_age: Vec<(Instant, String)> =
                map.iter().map(|(k, t)| (*t, k.clone())).collect();
            by_age.sort();
            for (_, k) in by_age.into_iter().take(map.len() - MAX) {
                map.remove(&k);
            }
        }
    }

    /// Whether message `id` was deleted by the admin.
    pub fn contains(&self, id: &str) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        !map.is_empty() && map.contains_key(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_ids_and_stays_bounded() {
        let w = Withdrawn::default();
        assert!(!w.contains("A"));
        w.add(["A".to_string(), "B".to_string()]);
        assert!(w.contains("A") && w.contains("B") && !w.contains("C"));
        w.add((0..MAX + 10).map(|i| format!("X{i}")));
        let n = w.0.lock().unwrap().len();
        assert_eq!(n, MAX);
    }
}
