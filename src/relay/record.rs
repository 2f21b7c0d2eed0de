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
//!
//! A result is applied only to a row still leased as it was handed out
//! (`store::delete_rcpt` / `defer_rcpt` check status and `lease_until`): a
//! recipient the admin deleted, a hold parked, or another lease took over
//! gets no DSN, no delay warning and no attempt count; such results are
//! counted in one log line per message.
//!
//! One DSN per message per delivery pass: a message leased in one round
//! may go out as several jobs (one per destination, one for unroutable
//! recipients). A result that may cause a report waits (`Waiting`, at most
//! `PASS_WAIT`, rows still leased) until the other jobs of its pass are
//! recorded too, and every failed recipient of the pass goes into one
//! report, as Postfix's bounce daemon does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use rusqlite::Connection;
use tokio::sync::mpsc;

use super::bounce::{self, Action, Report, ReportRcpt};
use super::job::{Job, Msg, Rcpt};
use super::outcome::{Attempt, Class, RcptResult};
use super::retry::{notify_allows, AfterTempFail, Notify, Policy};
use super::store;
use super::Relay;
use crate::queue;

/// Most attempts folded into one write.
const MAX_BATCH: usize = 512;

/// What workers hand the recorder.
#[derive(Debug)]
pub enum Input {
    /// A finished delivery attempt.
    Attempt(Attempt),
    /// A leased job whose message the admin held before it was sent: its
    /// rows go back to the queue, parked, with no attempt counted.
    Park(Job),
}

/// Longest a result with a report to send waits for the other jobs of its
/// message's delivery pass (one DSN per message per pass, not per job).
const PASS_WAIT: Duration = Duration::from_secs(300);

/// Runs for the daemon's lifetime.
pub async fn run(relay: Arc<Relay>, mut rx: mpsc::UnboundedReceiver<Input>) {
    let mut waiting = Waiting::default();
    let mut stop = relay.stop.clone();
    loop {
        let mut inputs = Vec::new();
        tokio::select! {
            got = rx.recv() => match got {
                Some(i) => inputs.push(i),
                None if waiting.is_empty() => break,
                None => {}
            },
            _ = tokio::time::sleep(Duration::from_secs(1)), if !waiting.is_empty() => {}
            _ = stop.changed(), if !*stop.borrow() => {}
        }
        while inputs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(i) => inputs.push(i),
                Err(_) => break,
            }
        }
        let mut batch = Vec::new();
        let mut parked = Vec::new();
        for i in inputs {
            match i {
                Input::Attempt(a) => batch.push(a),
                Input::Park(job) => parked.push(job),
            }
        }
        let stopping = *relay.stop.borrow();
        let batch = waiting.sort(batch, stopping);
        let n = batch.len() + parked.len();
        if !parked.is_empty() {
            park(&relay, parked).await;
        }
        if !batch.is_empty() {
            record_batch(&relay, batch).await;
        }
        relay.recorded(n);
    }
}

/// Applies a batch of attempts, one by one if the batch as a whole fails.
async fn record_batch(relay: &Arc<Relay>, batch: Vec<Attempt>) {
    let keys: Vec<(String, i64)> = batch.iter().flat_map(|a| a.job.keys()).collect();
    let batch = Arc::new(batch);
    match write(relay, batch.clone(), 0..batch.len()).await {
        Ok(summary) => report(relay, &summary),
        Err(e) if batch.len() > 1 => {
            // One bad attempt must not hold back the others: one by one.
            tracing::warn!(
                "relay: recording a batch of results failed ({e:#}); recording them one by one"
            );
            for i in 0..batch.len() {
                match write(relay, batch.clone(), i..i + 1).await {
                    Ok(summary) => report(relay, &summary),
                    Err(e) => retry(relay, batch.clone(), i..i + 1, e).await,
                }
            }
        }
        Err(e) => retry(relay, batch.clone(), 0..batch.len(), e).await,
    }
    relay.forget_keys(&keys);
}

/// Returns held messages' leased rows to the queue (see `Input::Park`).
async fn park(relay: &Arc<Relay>, jobs: Vec<Job>) {
    let keys: Vec<(String, i64)> = jobs.iter().flat_map(|j| j.keys()).collect();
    let rows: Vec<(String, Vec<(i64, i64)>)> = jobs
        .iter()
        .map(|j| {
            let r = j.rcpts.iter().map(|r| (r.idx, r.lease_until)).collect();
            (j.msg.id.clone(), r)
        })
        .collect();
    let res = relay
        .queue
        .write(move |c| {
            let now = queue::now();
            let mut lines = Vec::new();
            for (id, r) in &rows {
                let n = store::unlease(c, id, r, now)?;
                lines.push(format!(
                    "{id}: held by admin before delivery; {n} leased recipients parked"
                ));
            }
            Ok(lines)
        })
        .await;
    match res {
        Ok(lines) => lines.iter().for_each(|l| tracing::info!("{l}")),
        // The rows stay leased: they return to the queue (still held) when
        // the lease is reclaimed or at the next start.
        Err(e) => tracing::error!("relay: cannot park held recipients: {e:#}"),
    }
    relay.forget_keys(&keys);
}

/// Attempts that have a report (DSN) to send, waiting for the other jobs
/// of their message's delivery pass so that one DSN covers them all.
///
/// The jobs of one message leased in one round share one `Arc<Msg>`: when
/// every live copy of it is an attempt here, no sibling is under way.
#[derive(Default)]
struct Waiting {
    by_msg: HashMap<usize, (Instant, Vec<Attempt>)>,
}

impl Waiting {
    fn is_empty(&self) -> bool {
        self.by_msg.is_empty()
    }

    /// Takes new attempts; returns what is ready to be recorded now.
    fn sort(&mut self, batch: Vec<Attempt>, stopping: bool) -> Vec<Attempt> {
        let mut ready = Vec::new();
        for a in batch {
            let key = Arc::as_ptr(&a.job.msg) as usize;
            if self.by_msg.contains_key(&key) || may_report(&a) {
                self.by_msg
                    .entry(key)
                    .or_insert_with(|| (Instant::now(), Vec::new()))
                    .1
                    .push(a);
            } else {
                ready.push(a);
            }
        }
        let done: Vec<usize> = self
            .by_msg
            .iter()
            .filter(|(_, (since, attempts))| {
                let alive = Arc::strong_count(&attempts[0].job.msg);
                stopping || since.elapsed() >= PASS_WAIT || alive <= attempts.len()
            })
            .map(|(k, _)| *k)
            .collect();
        for k in done {
            if let Some((_, attempts)) = self.by_msg.remove(&k) {
                ready.extend(attempts);
            }
        }
        ready
    }
}

/// Whether an attempt may lead to a DSN (anything but a plain delivery).
fn may_report(a: &Attempt) -> bool {
    a.peer_without_dsn || a.results.iter().any(|r| r.class != Class::Sent)
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

/// Reports to send, one per message and kind, across a batch.
#[derive(Default)]
struct Reports<'a> {
    list: Vec<(&'a Msg, Action, Vec<ReportRcpt>)>,
}

impl<'a> Reports<'a> {
    fn add(&mut self, msg: &'a Msg, action: Action, r: ReportRcpt) {
        match self
            .list
            .iter_mut()
            .find(|(m, a, _)| m.id == msg.id && *a == action)
        {
            Some((_, _, rcpts)) => rcpts.push(r),
            None => self.list.push((msg, action, vec![r])),
        }
    }
}

fn apply(c: &Connection, ctx: &Ctx, batch: &[Attempt]) -> Result<Summary> {
    let mut sum = Summary::default();
    let mut reports = Reports::default();
    // Each message once, in batch order (a batch holds up to 512 attempts:
    // a linear `contains` here was quadratic on the drain's hot path).
    let mut seen: HashSet<&str> = HashSet::with_capacity(batch.len());
    let mut touched: Vec<&str> = Vec::with_capacity(batch.len());
    for a in batch {
        apply_one(c, ctx, a, &mut sum, &mut reports)?;
        if seen.insert(&a.job.msg.id) {
            touched.push(&a.job.msg.id);
        }
    }
    for (msg, action, rcpts) in reports.list {
        queue_report(c, ctx, msg, action, rcpts, &mut sum)?;
    }
    for id in touched {
        if store::delete_message_if_done(c, id)? {
            sum.lines.push(format!("{id}: removed"));
        }
    }
    Ok(sum)
}

fn apply_one<'a>(
    c: &Connection,
    ctx: &Ctx,
    a: &'a Attempt,
    sum: &mut Summary,
    reports: &mut Reports<'a>,
) -> Result<()> {
    let msg = &*a.job.msg;
    let now = ctx.now;
    let delay = delay_secs(msg, a);
    let may_report = !msg.sender.is_empty();
    let mut gone = 0;
    for (rcpt, res) in a.job.rcpts.iter().zip(&a.results) {
        let head = format!(
            "{}: to=<{}> relay={} delay={delay:.1} dsn={}",
            msg.id, rcpt.address, a.relay, res.dsn
        );
        let lease = rcpt.lease_until;
        match res.class {
            Class::Sent => {
                // Sent is a fact whatever the row says now; only the row's
                // bookkeeping depends on it still being ours.
                sum.lines.push(format!("{head} status=sent ({})", res.text));
                sum.sent += 1;
                if !store::delete_rcpt(c, &msg.id, rcpt.idx, lease)? {
                    gone += 1;
                    continue;
                }
                sum.residence
                    .push(std::time::Duration::from_secs_f64(delay.max(0.0)));
                if may_report
                    && a.peer_without_dsn
                    && notify_allows(rcpt.notify.as_deref(), Notify::Success)
                {
                    let mut r = report_rcpt(rcpt, res);
                    r.status = "2.0.0".into();
                    r.text = format!("relayed to non-DSN-aware mailer ({})", res.text);
                    reports.add(msg, Action::Relayed, r);
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
                    let ours = store::defer_rcpt(
                        c,
                        &msg.id,
                        rcpt.idx,
                        lease,
                        next_attempt,
                        &res.text,
                        warn,
                    )?;
                    if !ours {
                        gone += 1;
                        continue;
                    }
                    sum.lines
                        .push(format!("{head} status=deferred ({})", res.text));
                    sum.deferred += 1;
                    if warn {
                        reports.add(msg, Action::Delayed, report_rcpt(rcpt, res));
                    }
                }
                AfterTempFail::Expire => {
                    if !store::delete_rcpt(c, &msg.id, rcpt.idx, lease)? {
                        gone += 1;
                        continue;
                    }
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
                        reports.add(msg, Action::Failed, r);
                    }
                }
            },
            Class::Perm => {
                if !store::delete_rcpt(c, &msg.id, rcpt.idx, lease)? {
                    gone += 1;
                    continue;
                }
                sum.lines
                    .push(format!("{head} status=bounced ({})", res.text));
                sum.bounced += 1;
                if may_report && notify_allows(rcpt.notify.as_deref(), Notify::Failure) {
                    reports.add(msg, Action::Failed, report_rcpt(rcpt, res));
                }
            }
        }
    }
    if gone > 0 {
        sum.lines.push(format!(
            "{}: {gone} delivery results not applied: recipients deleted, held or leased again meanwhile (no DSN, no retry counted)",
            msg.id
        ));
    }
    Ok(())
}

/// Queues one DSN of kind `action` for `msg` listing `rcpts`.
fn queue_report(
    c: &Connection,
    ctx: &Ctx,
    msg: &Msg,
    action: Action,
    rcpts: Vec<ReportRcpt>,
    sum: &mut Summary,
) -> Result<()> {
    let what = match action {
        Action::Failed => "non-delivery",
        Action::Delayed => "delay",
        Action::Relayed => "delivery status",
    };
    let Some(original) = store::message_data(c, &msg.id)? else {
        return Ok(());
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
        now: ctx.now,
        retry_until: Some(
            msg.arrival
                .saturating_add(ctx.policy.max_lifetime.as_secs() as i64),
        ),
        delayed_for: Some(ctx.now - msg.arrival),
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
