//! From the final dot to the 250: what happens to a received message.
//!
//! 1. (scanners, when configured — they only add or change headers)
//! 2. hop count check on the final header block
//! 3. header_checks on the final header block (DISCARD / REJECT / HOLD / edits)
//! 4. durable commit to the queue; only then the 250.
//!
//! One direction, no back and forth: the rules see exactly the bytes that
//! will be stored and relayed, which is what makes stripping reliable.

use std::sync::Arc;

use anyhow::Result;
use header_checks::Verdict;

use crate::queue::{self, MailParams, NewMessage, NewRecipient, Queue};
use crate::scan::{self, Scanners};
use crate::tables::Tables;

/// Most `Received:` headers a message may carry (ours included) before it is
/// refused as looping (SPEC §5; Postfix's hopcount_limit).
pub const MAX_HOPS: usize = 50;

/// The envelope of a message that finished DATA.
pub struct Envelope {
    pub id: String,
    pub sender: String,
    pub params: MailParams,
    pub recipients: Vec<NewRecipient>,
    pub client: String,
    pub helo: String,
}

/// What became of it; the session turns this into its reply.
pub enum Disposition {
    /// Committed; `held` messages wait for `mx2 queue release`.
    Queued,
    Discarded,
    /// A complete reply line (5xx).
    Rejected(String),
    /// A complete reply line (4xx).
    TempFail(String),
}

/// Everything the post-DATA stages need.
pub struct Pipeline {
    pub tables: Arc<Tables>,
    pub queue: Queue,
    /// spamd / clamd / milters from `[scan]` (may be none).
    pub scanners: Scanners,
}

impl Pipeline {
    /// Makes a domain's queued recipients due now (ETRN, `queue flush`).
    pub async fn queue_flush_domain(&self, domain: &str) -> Result<usize> {
        let d = domain.to_string();
        let n = self
            .queue
            .write(move |c| queue::admin::flush(c, Some(&d), &[]))
            .await?;
        self.queue.wakeup.notify_one();
        Ok(n)
    }
}

/// Runs the stages for one message.
pub async fn accept(p: &Pipeline, mut env: Envelope, data: Vec<u8>) -> Disposition {
    let id = env.id.clone();
    let (mut data, scanned) = p.scanners.scan(&mut env, data).await;
    let mut scan_hold = None;
    match scanned {
        scan::Verdict::Continue => {}
        scan::Verdict::Hold(reason) => scan_hold = Some(reason),
        scan::Verdict::Discard(why) => {
            tracing::info!(
                "{id}: discard: from={} nrcpt={} client={}: {why}",
                fmt_addr(&env.sender),
                env.recipients.len(),
                env.client
            );
            return Disposition::Discarded;
        }
        scan::Verdict::Reject(reply) => {
            tracing::info!(
                "{id}: reject: from={} client={}: {reply}",
                fmt_addr(&env.sender),
                env.client
            );
            return Disposition::Rejected(reply);
        }
        scan::Verdict::TempFail(reply) => {
            tracing::info!(
                "{id}: tempfail: from={} client={}: {reply}",
                fmt_addr(&env.sender),
                env.client
            );
            return Disposition::TempFail(reply);
        }
    }
    let hops = count_received(&data);
    if hops > MAX_HOPS {
        tracing::info!(
            "{id}: reject: too many hops ({hops}) from={} client={}",
            fmt_addr(&env.sender),
            env.client
        );
        crate::metrics::get().rejected.inc();
        return Disposition::Rejected("554 5.4.6 Error: too many hops".into());
    }

    let rules = p.tables.rules();
    let outcome = rules.apply(&data);
    for hit in &outcome.hits {
        tracing::info!(
            "{id}: {}: header {} from {}; from={} line {}: {}",
            hit.action.to_ascii_lowercase(),
            hit.header.lines().next().unwrap_or(""),
            env.client,
            fmt_addr(&env.sender),
            hit.line,
            if hit.text.is_empty() {
                &hit.rule
            } else {
                &hit.text
            },
        );
    }
    for e in &outcome.errors {
        tracing::warn!("{id}: header_checks: {e}");
    }
    let mut hold_reason = scan_hold;
    match &outcome.verdict {
        Verdict::Accept => {}
        Verdict::Discard { text } => {
            tracing::info!(
                "{id}: discard: from={} nrcpt={} client={}: {text}",
                fmt_addr(&env.sender),
                env.recipients.len(),
                env.client
            );
            crate::metrics::get().discarded.inc();
            return Disposition::Discarded;
        }
        Verdict::Reject { .. } => {
            let reply = outcome
                .verdict
                .reject_reply()
                .unwrap_or_else(|| "550 5.7.1 message content rejected".into());
            tracing::info!(
                "{id}: reject: from={} client={}: {reply}",
                fmt_addr(&env.sender),
                env.client
            );
            crate::metrics::get().rejected.inc();
            return Disposition::Rejected(reply);
        }
        Verdict::Hold { text } => {
            hold_reason = Some(if text.is_empty() {
                "header_checks HOLD".to_string()
            } else {
                text.clone()
            });
        }
    }
    if let Some(edit) = outcome.edit {
        // Swap the header block in place: the body is never copied.
        data.splice(..edit.body_start, edit.new_header);
    }

    let size = data.len();
    let nrcpt = env.recipients.len();
    let held = hold_reason.is_some();
    let hold_log = hold_reason.clone();
    let msg = NewMessage {
        id: id.clone(),
        arrival: queue::now(),
        sender: env.sender.clone(),
        params: env.params,
        recipients: env.recipients,
        client: env.client.clone(),
        helo: env.helo,
        hold_reason,
        origin: "smtp",
        data,
    };
    match p.queue.insert(msg).await {
        Ok(()) => {
            tracing::info!(
                "{id}: from={} size={size} nrcpt={nrcpt} client={}",
                fmt_addr(&env.sender),
                env.client,
            );
            if let Some(reason) = &hold_log {
                tracing::info!("{id}: hold: {reason}");
            }
            let m = crate::metrics::get();
            m.accepted.inc();
            if held {
                m.held.inc();
            }
            Disposition::Queued
        }
        Err(e) => {
            tracing::error!("{id}: queue write failed, client told to retry: {e:#}");
            Disposition::TempFail("452 4.3.1 Error: insufficient system storage".into())
        }
    }
}

/// `<addr>` as Postfix logs it.
pub fn fmt_addr(a: &str) -> String {
    format!("<{a}>")
}

/// `Received:` headers in the top-level header block.
fn count_received(data: &[u8]) -> usize {
    let mut n = 0;
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:") {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_header_block() {
        let m = b"Received: a\r\n\tfolded\r\nreceived: b\r\nSubject: x\r\n\r\nReceived: not a header\r\n";
        assert_eq!(count_received(m), 2);
    }
}
