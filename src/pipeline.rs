//! From the final dot to the 250: what happens to a received message.
//!
//! 1. (scanners, when configured — they only add or change headers)
//! 2. hop count check on the final header block
//! 3. header_checks on the final header block (DISCARD / REJECT / HOLD / edits)
//! 4. durable commit to the queue; only then the 250.
//!
//! One direction, no back and forth: the rules see exactly the bytes that
//! will be stored and relayed, which is what makes stripping reliable.
//!
//! Steps 2 and 3 are CPU work proportional to the header block (with PCRE
//! patterns that may run to their match limit on every header), so they
//! must never hold up the async threads that greet and serve every other
//! client. A typical message costs the rules a few microseconds, a trip to
//! tokio's blocking pool ten times that, so a small message first gets a
//! bounded attempt right here (`Rules::apply_bounded`: a small PCRE match
//! limit and a deadline of half a millisecond); a large message, or one
//! the attempt gives up on, goes to the blocking pool for the full run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use header_checks::{Outcome, Rules, Verdict, TEMPFAIL_REPLY};

use crate::queue::{self, MailParams, NewMessage, NewRecipient, Queue};
use crate::scan::{self, Scanners};
use crate::tables::Tables;

/// Most `Received:` headers a message may carry (ours included) before it is
/// refused as looping (SPEC §5; Postfix's hopcount_limit).
pub const MAX_HOPS: usize = 50;

/// Largest message whose rules may run on an async thread (the header
/// edit moves the body: a few microseconds for this size).
const INLINE_MAX_MESSAGE: usize = 256 * 1024;

/// How long the bounded attempt may run before it hands the message over
/// (checked after each header; one header's patterns may add ~50 µs each).
const INLINE_BUDGET: Duration = Duration::from_micros(500);

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
    /// Most bytes of one header the rules see (`[smtp] header_size_limit`).
    pub header_size_limit: usize,
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
    let (data, scanned) = p.scanners.scan(&mut env, data).await;
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
    let rules = p.tables.rules();
    let limit = p.header_size_limit;
    let checked = match check_inline(&rules, data, limit) {
        Ok(c) => Ok(c),
        Err(data) => tokio::task::spawn_blocking(move || check(&rules, data, limit)).await,
    };
    let (data, outcome) = match checked {
        Ok(Checked::Ruled { data, outcome }) => (data, outcome),
        Ok(Checked::TooManyHops(hops)) => {
            tracing::info!(
                "{id}: reject: too many hops ({hops}) from={} client={}",
                fmt_addr(&env.sender),
                env.client
            );
            crate::metrics::get().rejected.inc();
            return Disposition::Rejected("554 5.4.6 Error: too many hops".into());
        }
        Err(e) => {
            tracing::error!(
                "{id}: header rules stopped ({e}) -- message not accepted, try again later"
            );
            return Disposition::TempFail(TEMPFAIL_REPLY.into());
        }
    };
    log_rules(&id, &env, &outcome);
    let mut hold_reason = scan_hold;
    match &outcome.verdict {
        Verdict::Accept => {}
        Verdict::TempFail { reason } => {
            tracing::warn!("{id}: {reason}");
            tracing::info!(
                "{id}: tempfail: from={} client={}: {TEMPFAIL_REPLY}",
                fmt_addr(&env.sender),
                env.client
            );
            return Disposition::TempFail(TEMPFAIL_REPLY.into());
        }
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

/// What the blocking part of the pipeline made of a message.
enum Checked {
    /// Refused before the rules ran.
    TooManyHops(usize),
    /// The rules' outcome; `data` already carries the header edits (its
    /// `edit` has been applied and taken).
    Ruled { data: Vec<u8>, outcome: Outcome },
}

/// Hop count, header rules and header edits: the CPU-bound steps, run on
/// the blocking pool.
fn check(rules: &Rules, data: Vec<u8>, header_size_limit: usize) -> Checked {
    let hops = count_received(&data);
    if hops > MAX_HOPS {
        return Checked::TooManyHops(hops);
    }
    let outcome = rules.apply_with_limit(&data, header_size_limit);
    edited(data, outcome)
}

/// [`check`] within a small, bounded cost, for an async thread: the message
/// back when it is too large or the rules need more (then run [`check`] on
/// the blocking pool). Same result as [`check`] whenever it gives one.
fn check_inline(
    rules: &Rules,
    data: Vec<u8>,
    header_size_limit: usize,
) -> Result<Checked, Vec<u8>> {
    if data.len() > INLINE_MAX_MESSAGE {
        return Err(data);
    }
    let hops = count_received(&data);
    if hops > MAX_HOPS {
        return Ok(Checked::TooManyHops(hops));
    }
    let deadline = Instant::now() + INLINE_BUDGET;
    match rules.apply_bounded(&data, header_size_limit, deadline) {
        Some(outcome) => Ok(edited(data, outcome)),
        None => Err(data),
    }
}

/// Applies the outcome's header edit to the message.
fn edited(mut data: Vec<u8>, mut outcome: Outcome) -> Checked {
    if let Some(edit) = outcome.edit.take() {
        // Swap the header block in place: the body is never copied.
        data.splice(..edit.body_start, edit.new_header);
    }
    Checked::Ruled { data, outcome }
}

/// Longest header text a log line shows (Postfix's cleanup logs `%.200s`).
const LOG_HEADER_MAX: usize = 200;

/// `text` cut to at most `max` bytes, on a character boundary.
fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One log line per rule that fired (however many headers it fired on,
/// with a count), in Postfix's cleanup wording, then each matching error
/// (already one per rule).
fn log_rules(id: &str, env: &Envelope, outcome: &Outcome) {
    for s in outcome.hit_summary() {
        let hit = s.first;
        let more = if s.count > 1 {
            format!(" (and {} more)", s.count - 1)
        } else {
            String::new()
        };
        let text = if hit.text.is_empty() {
            &hit.rule
        } else {
            &hit.text
        };
        tracing::info!(
            "{id}: {}: header {} from {}; from={} line {}: {}{more}",
            hit.action.to_ascii_lowercase(),
            clip(hit.header.lines().next().unwrap_or(""), LOG_HEADER_MAX),
            env.client,
            fmt_addr(&env.sender),
            hit.line,
            clip(text, LOG_HEADER_MAX),
        );
    }
    for e in &outcome.errors {
        tracing::warn!("{id}: header_checks: {e}");
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

    fn rules(table: &str) -> Rules {
        Rules::parse(table.as_bytes(), "t").expect("rules").rules
    }

    fn ruled(c: Checked) -> (Vec<u8>, Outcome) {
        match c {
            Checked::Ruled { data, outcome } => (data, outcome),
            Checked::TooManyHops(n) => panic!("{n} hops"),
        }
    }

    #[test]
    fn the_inline_check_gives_the_full_result_or_hands_over() {
        let r = rules("/^X-Spam-Level:/ IGNORE\n/^X-Evil: (a+)+$/ WARN evil\n");
        let msg = b"X-Spam-Level: 1\r\nSubject: s\r\n\r\nbody\r\n".to_vec();
        let Ok(inline) = check_inline(&r, msg.clone(), 102_400) else {
            panic!("a small message is done inline");
        };
        let (a, oa) = ruled(inline);
        let (b, ob) = ruled(check(&r, msg, 102_400));
        assert_eq!((a, oa), (b.clone(), ob));
        assert_eq!(b, b"Subject: s\r\n\r\nbody\r\n");
        // Too large, or a pattern that needs more: handed over untouched.
        let mut big = b"Subject: s\r\n\r\n".to_vec();
        big.resize(INLINE_MAX_MESSAGE + 1, b'x');
        assert_eq!(check_inline(&r, big.clone(), 102_400).err(), Some(big));
        let mut evil = b"X-Evil: ".to_vec();
        evil.extend(std::iter::repeat_n(b'a', 30));
        evil.extend_from_slice(b"!\r\n\r\n");
        assert_eq!(check_inline(&r, evil.clone(), 102_400).err(), Some(evil));
    }

    #[test]
    fn clip_keeps_char_boundaries() {
        assert_eq!(clip("abc", 200), "abc");
        assert_eq!(clip("aé", 2), "a");
        assert_eq!(clip(&"x".repeat(300), 200).len(), 200);
    }

    #[test]
    fn counts_only_header_block() {
        let m = b"Received: a\r\n\tfolded\r\nreceived: b\r\nSubject: x\r\n\r\nReceived: not a header\r\n";
        assert_eq!(count_received(m), 2);
    }
}
