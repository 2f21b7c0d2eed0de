//! The recorder: turns finished attempts into queue changes, DSNs and log
//! lines, many attempts per group commit.
//!
//! Workers hand attempts over and go on with the next message at once; the
//! recorder folds whatever has piled up into one `Queue::write`. The
//! recipient row update and any DSN it causes are committed together (a
//! bounce is never lost nor sent twice for one failure), and log lines are
//! written only after the commit, so the log never claims what the disk
//! does not hold. Until then the rows stay leased (`active`), so nothing
//! can pick them up twice.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use rusqlite::Connection;
use tokio::sync::mpsc;

use super::bounce::{self, Action, Report, ReportRcpt};
use super::job::{Msg, Rcpt};
use super::outcome::{Attempt, Class, RcptResult};
use super::retry::{notify_allows, AfterTempFail, Notify, Policy};
use super::store;
use super::Relay;
use crate::queue;

/// Most attempts folded into one write.
const MAX_BATCH: usize = 512;

/// Runs for the daemon's lifetime.
pub async fn run(relay: Arc<Relay>, mut rx: mpsc::UnboundedReceiver<Attempt>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(a) => batch.push(a),
                Err(_) => break,
            }
        }
        let keys: Vec<(String, i64)> = batch.iter().flat_map(|a| a.job.keys()).collect();
        let batch = Arc::new(batch);
        match write(&relay, batch.clone(), 0..batch.len()).await {
            Ok(summary) => report(&relay, &summary),
            Err(e) if batch.len() > 1 => {
                // One bad attempt must not hold back the others: one by one.
                tracing::warn!(
                    "relay: recording a batch of results failed ({e:#}); recording them one by one"
                );
                for i in 0..batch.len() {
                    match write(&relay, batch.clone(), i..i + 1).await {
                        Ok(summary) => report(&relay, &summary),
                        Err(e) => retry(&relay, batch.clone(), i..i + 1, e).await,
                    }
                }
            }
            Err(e) => retry(&relay, batch.clone(), 0..batch.len(), e).await,
        }
        relay.forget_keys(&keys);
    }
}

/// Longest a result is retried while the disk is full or failing.
const RETRY_FOR: Duration = Duration::from_secs(600);

/// Keeps trying to record results the database would not take. A result
/// that is dropped would leave its recipients leased (no retry for the
/// lease time) and a delivered message due again: on a full disk or an I/O
/// error, wait for space (1 s, doubling to 30 s) rather than lose it.
async fn retry(
    relay: &Relay,
    batch: Arc<Vec<Attempt>>,
    range: std::ops::Range<usize>,
    first: anyhow::Error,
) {
    let mut e = first;
    let mut wait = Duration::from_secs(1);
    let start = std::time::Instant::now();
    loop {
        let text = format!("{e:#}").to_ascii_lowercase();
        let transient = ["full", "disk", "i/o", "readonly", "locked", "busy"]
            .iter()
            .any(|w| text.contains(w));
        if !transient || start.elapsed() >= RETRY_FOR || *relay.stop.borrow() {
            return not_recorded(&e);
        }
        tracing::warn!(
            "relay: cannot record delivery results yet ({e:#}); retrying in {}s",
            wait.as_secs()
        );
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
        match write(relay, batch.clone(), range.clone()).await {
            Ok(summary) => return report(relay, &summary),
            Err(next) => e = next,
        }
    }
}

/// Applies `batch[range]` in one group commit.
async fn write(
    relay: &Relay,
    batch: Arc<Vec<Attempt>>,
    range: std::ops::Range<usize>,
) -> Result<Summary> {
    let ctx = Ctx {
        policy: relay.policy,
        hostname: relay.cfg.hostname.clone(),
        now: queue::now(),
    };
    relay
        .queue
        .write(move |c| apply(c, &ctx, &batch[range]))
        .await
}

/// Logs and counts what a commit did.
fn report(relay: &Relay, summary: &Summary) {
    for line in &summary.lines {
        tracing::info!("{line}");
    }
    let m = crate::metrics::get();
    m.delivered.add(summary.sent);
    m.deferred.add(summary.deferred);
    m.bounced.add(summary.bounced);
    for r in &summary.residence {
        m.residence_seconds.observe(*r);
    }
    if summary.reports > 0 {
        relay.queue.wakeup.notify_one();
    }
}

fn not_recorded(e: &anyhow::Error) {
    tracing::error!(
        "relay: recording delivery results failed ({e:#}); those recipients stay leased and return to the queue within {} s",
        store::LEASE_SECS
    );
}

struct Ctx {
    policy: Policy,
    hostname: String,
    now: i64,
}

#[derive(Default)]
struct Summary {
    lines: Vec<String>,
    sent: u64,
    deferred: u64,
    bounced: u64,
    reports: usize,
    residence: Vec<std::time::Duration>,
}

fn apply(c: &Connection, ctx: &Ctx, batch: &[Attempt]) -> Result<Summary> {
    let mut sum = Summary::default();
    for a in batch {
        apply_one(c, ctx, a, &mut sum)?;
    }
    Ok(sum)
}

fn apply_one(c: &Connection, ctx: &Ctx, a: &Attempt, sum: &mut Summary) -> Result<()> {
    let msg = &a.job.msg;
    let now = ctx.now;
    let delay = delay_secs(msg, a);
    let may_report = !msg.sender.is_empty();
    let mut failed = Vec::new();
    let mut delayed = Vec::new();
    let mut relayed = Vec::new();
    for (rcpt, res) in a.job.rcpts.iter().zip(&a.results) {
        let head = format!(
            "{}: to=<{}> relay={} delay={delay:.1} dsn={}",
            msg.id, rcpt.address, a.relay, res.dsn
        );
        match res.class {
            Class::Sent => {
                store::delete_rcpt(c, &msg.id, rcpt.idx)?;
                sum.lines.push(format!("{head} status=sent ({})", res.text));
                sum.sent += 1;
                sum.residence
                    .push(std::time::Duration::from_secs_f64(delay.max(0.0)));
                if may_report
                    && a.peer_without_dsn
                    && notify_allows(rcpt.notify.as_deref(), Notify::Success)
                {
                    let mut r = report_rcpt(rcpt, res);
                    r.status = "2.0.0".into();
                    r.text = format!("relayed to non-DSN-aware mailer ({})", res.text);
                    relayed.push(r);
                }
            }
            Class::Temp => match ctx
                .policy
                .after_temp_fail(now, msg.arrival, rcpt.attempts + 1)
            {
                AfterTempFail::Retry { next_attempt } => {
                    let warn = may_report
                        && ctx.policy.delay_warning_due(
                            now,
                            msg.arrival,
                            rcpt.warned,
                            rcpt.notify.as_deref(),
                        );
                    store::defer_rcpt(c, &msg.id, rcpt.idx, next_attempt, &res.text, warn)?;
                    sum.lines
                        .push(format!("{head} status=deferred ({})", res.text));
                    sum.deferred += 1;
                    if warn {
                        delayed.push(report_rcpt(rcpt, res));
                    }
                }
                AfterTempFail::Expire => {
                    store::delete_rcpt(c, &msg.id, rcpt.idx)?;
                    let returned =
                        may_report && notify_allows(rcpt.notify.as_deref(), Notify::Failure);
                    sum.lines.push(format!(
                        "{head} status=expired{} (message older than {}; last error: {})",
                        if returned { ", returned to sender" } else { "" },
                        human(ctx.policy.max_lifetime.as_secs()),
                        res.text
                    ));
                    sum.bounced += 1;
                    if returned {
                        let mut r = report_rcpt(rcpt, res);
                        r.text = format!(
                            "delivery gave up after {} in the queue; last error: {}",
                            human(ctx.policy.max_lifetime.as_secs()),
                            res.text
                        );
                        failed.push(r);
                    }
                }
            },
            Class::Perm => {
                store::delete_rcpt(c, &msg.id, rcpt.idx)?;
                sum.lines
                    .push(format!("{head} status=bounced ({})", res.text));
                sum.bounced += 1;
                if may_report && notify_allows(rcpt.notify.as_deref(), Notify::Failure) {
                    failed.push(report_rcpt(rcpt, res));
                }
            }
        }
    }
    for (action, rcpts, what) in [
        (Action::Failed, failed, "non-delivery"),
        (Action::Delayed, delayed, "delay"),
        (Action::Relayed, relayed, "delivery status"),
    ] {
        if rcpts.is_empty() {
            continue;
        }
        let Some(original) = store::message_data(c, &msg.id)? else {
            continue;
        };
        let report = Report {
            action,
            hostname: &ctx.hostname,
            queue_id: &msg.id,
            sender: &msg.sender,
            envid: msg.envid.as_deref(),
            ret_full: msg
                .ret
                .as_deref()
                .is_some_and(|r| r.eq_ignore_ascii_case("FULL")),
            arrival: msg.arrival,
            now,
            retry_until: Some(
                msg.arrival
                    .saturating_add(ctx.policy.max_lifetime.as_secs() as i64),
            ),
            delayed_for: Some(now - msg.arrival),
            rcpts,
            original: &original,
        };
        let dsn = bounce::new_message(&report);
        queue::insert::insert_message(c, &dsn)?;
        sum.lines.push(format!(
            "{}: sender {what} notification: {}",
            msg.id, dsn.id
        ));
        sum.lines.push(format!(
            "{}: from=<> size={} nrcpt=1 client=local (DSN for {})",
            dsn.id,
            dsn.data.len(),
            msg.id
        ));
        sum.reports += 1;
    }
    if store::delete_message_if_done(c, &msg.id)? {
        sum.lines.push(format!("{}: removed", msg.id));
    }
    Ok(())
}

fn report_rcpt(rcpt: &Rcpt, res: &RcptResult) -> ReportRcpt {
    ReportRcpt {
        address: rcpt.address.clone(),
        orcpt: rcpt.orcpt.clone(),
        status: res.dsn.clone(),
        remote_mta: res.remote_mta.clone(),
        diagnostic: res.diagnostic.clone(),
        text: res.text.clone(),
    }
}

/// Seconds from arrival to the end of the attempt.
fn delay_secs(msg: &Msg, a: &Attempt) -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let ago = a.finished.elapsed().as_secs_f64();
    (now - ago - msg.arrival as f64).max(0.0)
}

fn human(secs: u64) -> String {
    match secs {
        s if s >= 86400 && s % 86400 == 0 => format!("{}d", s / 86400),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
