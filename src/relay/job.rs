//! The unit of delivery work: one message's leased recipients for one
//! destination.
//!
//! One SMTP transaction per message per destination (SPEC §6), so the
//! scheduler groups leased recipient rows by (message, destination) into a
//! `Job`. Small messages bring their bytes along (`Body`, read in the same
//! lease query, within a memory budget); the rest are read from the queue
//! only when a connection is ready to send them, so thousands of leased
//! jobs cost little memory either way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::queue::withdrawn::OnWire;

/// Envelope facts about a queued message (everything but its bytes).
#[derive(Debug, Clone)]
pub struct Msg {
    pub id: String,
    /// Unix seconds.
    pub arrival: i64,
    /// Envelope sender; empty for the null sender.
    pub sender: String,
    /// `BODY=` as received (`7BIT` / `8BITMIME`).
    pub body: Option<String>,
    pub smtputf8: bool,
    /// DSN `RET=` (`FULL` / `HDRS`).
    pub ret: Option<String>,
    /// DSN `ENVID`, decoded.
    pub envid: Option<String>,
    /// `smtp` (received) or `bounce` (a DSN mx2 made).
    pub origin: String,
}

/// One leased recipient row.
#[derive(Debug, Clone)]
pub struct Rcpt {
    pub idx: i64,
    pub address: String,
    /// Lower-case domain, as stored for routing.
    pub domain: String,
    /// Attempts before this one.
    pub attempts: i64,
    /// DSN `NOTIFY=` as received (upper-case), or none.
    pub notify: Option<String>,
    /// DSN `ORCPT=` as `addr-type;address` (decoded), or none.
    pub orcpt: Option<String>,
    /// A delay DSN was already sent for it.
    pub warned: bool,
    /// The row's `lease_until` as leased: results are applied only to a row
    /// still leased with this value (not one deleted, parked or leased
    /// again meanwhile).
    pub lease_until: i64,
}

/// A message's recipients bound for one destination.
///
/// All jobs of one message leased in one round share the `Arc<Msg>`: while
/// more than the recorder's copies of it are alive, a sibling job of the
/// same delivery pass is still under way (`record` waits for it to send
/// one DSN per message per pass).
#[derive(Debug)]
pub struct Job {
    pub msg: Arc<Msg>,
    pub rcpts: Vec<Rcpt>,
    /// The message bytes, if they were read with the lease.
    pub body: Option<Arc<Body>>,
    /// Set while the message is on the wire (`queue::withdrawn`); dropped
    /// with the job once its result is recorded.
    pub wire: Option<OnWire>,
}

/// Message bytes read together with the lease. Reading them there saves
/// each delivery a round trip to a reader thread (a measurable share of
/// the drain's CPU); the bytes held this way are counted in `budget` so
/// the scheduler can keep the total bounded however many jobs wait.
pub struct Body {
    bytes: Vec<u8>,
    budget: Arc<AtomicUsize>,
}

impl Body {
    /// Wraps `bytes`, adding their size to `budget` until dropped.
    pub fn new(bytes: Vec<u8>, budget: Arc<AtomicUsize>) -> Body {
        budget.fetch_add(bytes.len(), Ordering::Relaxed);
        Body { bytes, budget }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.bytes.len(), Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Body({} bytes)", self.bytes.len())
    }
}

impl Job {
    /// `(message id, recipient index)` of every recipient, the lease keys.
    pub fn keys(&self) -> impl Iterator<Item = (String, i64)> + '_ {
        self.rcpts.iter().map(|r| (self.msg.id.clone(), r.idx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_count_against_the_budget_while_alive() {
        let budget = Arc::new(AtomicUsize::new(0));
        let a = Arc::new(Body::new(vec![0; 100], budget.clone()));
        let b = Body::new(vec![0; 20], budget.clone());
        assert_eq!(budget.load(Ordering::Relaxed), 120);
        let a2 = a.clone();
        drop(a);
        assert_eq!(
            budget.load(Ordering::Relaxed),
            120,
            "a clone still holds it"
        );
        drop(a2);
        drop(b);
        assert_eq!(budget.load(Ordering::Relaxed), 0);
    }
}
