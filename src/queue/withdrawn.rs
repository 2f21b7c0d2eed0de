//! Mail the admin deleted or held while the relay may already have leased
//! it, and which deliveries are on the wire right now.
//!
//! A leased recipient sits in a destination's queue in memory (small
//! messages with their bytes, `relay::job::Body`), so an edit of the
//! database alone comes too late for it. `mx2 queue delete` and `hold`
//! therefore also tell the daemon over the control socket; a worker asks
//! this gate, right before it sends a message, whether it may (`begin`).
//! The same lock decides both sides, so for every message either the
//! worker sees the withdrawal and drops (deleted) or parks (held) the job,
//! or the admin hears that the delivery was already on the wire and may
//! complete. `release` lifts a hold.
//!
//! Ids are unique for ever, so a stale entry harms nothing; entries are
//! forgotten after an hour and the sets are bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a withdrawal is remembered (a leased job waits far less).
const KEEP: Duration = Duration::from_secs(3600);
/// Most entries remembered per set; past this the oldest are forgotten first.
const MAX: usize = 100_000;

/// Why a message must not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Deleted: drop the job, record nothing (its rows are gone).
    Deleted,
    /// Held: give the leased rows back to the queue, parked.
    Held,
}

/// What `begin` decides for a job about to be sent.
#[derive(Debug)]
pub enum Begin {
    /// Send it, without the recipients listed (deleted one by one); the
    /// guard marks the message as on the wire until dropped.
    Go { removed: Vec<i64>, guard: OnWire },
    /// Do not send the message at all.
    Stop(Why),
}

#[derive(Default)]
struct State {
    messages: HashMap<String, (Instant, Why)>,
    rcpts: HashMap<(String, i64), Instant>,
    /// Messages being sent, with how many jobs of each.
    on_wire: HashMap<String, usize>,
}

/// Shared by the control socket (writes) and the relay workers (reads).
#[derive(Clone, Default)]
pub struct Withdrawn(Arc<Mutex<State>>);

/// Marks one job's message as on the wire; dropped when its result is
/// recorded (or the job is dropped).
#[derive(Debug)]
pub struct OnWire {
    gate: Withdrawn,
    id: String,
}

impl Drop for OnWire {
    fn drop(&mut self) {
        let mut st = self.gate.lock();
        if let Some(n) = st.on_wire.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                st.on_wire.remove(&self.id);
            }
        }
    }
}

impl std::fmt::Debug for Withdrawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Withdrawn")
    }
}

impl Withdrawn {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Withdraws whole messages (deleted or held). Returns those among them
    /// that are on the wire now: their delivery may still complete.
    pub fn messages(&self, ids: impl IntoIterator<Item = String>, why: Why) -> Vec<String> {
        let now = Instant::now();
        let mut st = self.lock();
        let mut busy = Vec::new();
        for id in ids {
            if st.on_wire.contains_key(&id) {
                busy.push(id.clone());
            }
            // A delete wins over a hold; a hold never downgrades a delete.
            let keep = matches!(st.messages.get(&id), Some((_, Why::Deleted)));
            if !keep {
                st.messages.insert(id, (now, why));
            }
        }
        prune(&mut st.messages, now);
        busy
    }

    /// Withdraws single recipients `(id, index)` (deleted by domain).
    /// Returns the messages among them on the wire now.
    pub fn recipients(&self, keys: impl IntoIterator<Item = (String, i64)>) -> Vec<String> {
        let now = Instant::now();
        let mut st = self.lock();
        let mut busy = Vec::new();
        for key in keys {
            if st.on_wire.contains_key(&key.0) && !busy.contains(&key.0) {
                busy.push(key.0.clone());
            }
            st.rcpts.insert(key, now);
        }
        prune(&mut st.rcpts, now);
        busy
    }

    /// Lifts holds (the admin released the messages).
    pub fn release(&self, ids: &[String]) {
        let mut st = self.lock();
        for id in ids {
            if matches!(st.messages.get(id), Some((_, Why::Held))) {
                st.messages.remove(id);
            }
        }
    }

    /// Asked by a worker right before it sends message `id` to the leased
    /// recipients `idx`: whether it may, and which recipients to leave out.
    pub fn begin(&self, id: &str, idx: &[i64]) -> Begin {
        let mut st = self.lock();
        if let Some((_, why)) = st.messages.get(id) {
            return Begin::Stop(*why);
        }
        let removed: Vec<i64> = if st.rcpts.is_empty() {
            Vec::new()
        } else {
            idx.iter()
                .copied()
                .filter(|i| st.rcpts.contains_key(&(id.to_string(), *i)))
                .collect()
        };
        *st.on_wire.entry(id.to_string()).or_insert(0) += 1;
        Begin::Go {
            removed,
            guard: OnWire {
                gate: self.clone(),
                id: id.to_string(),
            },
        }
    }

    /// Whether message `id` was withdrawn, and why.
    pub fn why(&self, id: &str) -> Option<Why> {
        let st = self.lock();
        if st.messages.is_empty() {
            return None;
        }
        st.messages.get(id).map(|(_, w)| *w)
    }

    /// Jobs on the wire now (a stop waits for these).
    pub fn on_wire(&self) -> usize {
        self.lock().on_wire.values().sum()
    }
}

/// Forgets entries older than `KEEP`, then the oldest past `MAX`.
fn prune<K: Clone + Eq + std::hash::Hash + Ord, V>(map: &mut HashMap<K, V>, now: Instant)
where
    V: AsInstant,
{
    map.retain(|_, v| now.duration_since(v.at()) < KEEP);
    if map.len() > MAX {
        let mut by_age: Vec<(Instant, K)> = map.iter().map(|(k, v)| (v.at(), k.clone())).collect();
        by_age.sort();
        let excess = map.len() - MAX;
        for (_, k) in by_age.into_iter().take(excess) {
            map.remove(&k);
        }
    }
}

/// When an entry was made.
trait AsInstant {
    fn at(&self) -> Instant;
}

impl AsInstant for Instant {
    fn at(&self) -> Instant {
        *self
    }
}

impl AsInstant for (Instant, Why) {
    fn at(&self) -> Instant {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_ids_and_stays_bounded() {
        let w = Withdrawn::default();
        assert_eq!(w.why("A"), None);
        w.messages(["A".to_string(), "B".to_string()], Why::Deleted);
        assert_eq!(w.why("A"), Some(Why::Deleted));
        assert_eq!(w.why("C"), None);
        w.messages((0..MAX + 10).map(|i| format!("X{i}")), Why::Held);
        assert_eq!(w.lock().messages.len(), MAX);
    }

    #[test]
    fn a_withdrawal_either_stops_the_job_or_is_told_it_is_on_the_wire() {
        let w = Withdrawn::default();
        // On the wire first: the hold reports it, the job goes on.
        let Begin::Go { guard, removed } = w.begin("A", &[0, 1]) else {
            panic!("nothing withdrawn yet");
        };
        assert!(removed.is_empty());
        assert_eq!(w.on_wire(), 1);
        assert_eq!(w.messages(["A".to_string()], Why::Held), vec!["A"]);
        drop(guard);
        assert_eq!(w.on_wire(), 0);
        // Held before the next try: the job is stopped.
        assert!(matches!(w.begin("A", &[0]), Begin::Stop(Why::Held)));
        // Released: it may go again. A delete is never lifted by release.
        w.release(&["A".to_string()]);
        assert!(matches!(w.begin("A", &[0]), Begin::Go { .. }));
        w.messages(["B".to_string()], Why::Deleted);
        w.messages(["B".to_string()], Why::Held);
        w.release(&["B".to_string()]);
        assert!(matches!(w.begin("B", &[0]), Begin::Stop(Why::Deleted)));
    }

    #[test]
    fn deleted_recipients_are_left_out() {
        let w = Withdrawn::default();
        assert!(w.recipients([("A".to_string(), 1)]).is_empty());
        let Begin::Go { removed, .. } = w.begin("A", &[0, 1, 2]) else {
            panic!("the message itself is not withdrawn");
        };
        assert_eq!(removed, vec![1]);
    }
}
