//! The unit of delivery work: one message's leased recipients for one
//! destination.
//!
//! One SMTP transaction per message per destination (SPEC §6), so the
//! scheduler groups leased recipient rows by (message, destination) into a
//! `Job`. The message bytes are not part of it: they are read from the
//! queue only when a connection is ready to send them, so thousands of
//! leased jobs cost little memory.

use std::sync::Arc;

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
}

/// A message's recipients bound for one destination.
#[derive(Debug, Clone)]
pub struct Job {
    pub msg: Arc<Msg>,
    pub rcpts: Vec<Rcpt>,
}

impl Job {
    /// `(message id, recipient index)` of every recipient, the lease keys.
    pub fn keys(&self) -> impl Iterator<Item = (String, i64)> + '_ {
        self.rcpts.iter().map(|r| (self.msg.id.clone(), r.idx))
    }
}
