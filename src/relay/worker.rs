//! One connection's life: take jobs for a destination, one after another,
//! over one session.
//!
//! Reusing the session for every message queued for the destination (no
//! new TCP, EHLO and TLS per message) is what makes a backlog drain fast.
//! An idle session is kept for `IDLE_KEEP` in case more mail comes, then
//! closed with QUIT. A reused session found dead before the server said
//! anything about the message is replaced once, without counting as an
//! attempt.
//!
//! With PIPELINING a sent message stays `Pending` (its end-of-data reply
//! unread) while the next job at hand goes out in the same write; with no
//! job at hand the reply is read at once, so nothing waits on the pairing.
//! Every pending message is finished and recorded before the worker ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::sleep_until;

use super::client::Session;
use super::deliver::{self, End, Progress, TxOutcome, Unfinished};
use super::dest::{ConnectFailure, Dest};
use super::job::{Body, Job};
use super::outcome::{Attempt, Class, RcptResult};
use super::Relay;
use crate::queue::withdrawn::{Begin, Why};

/// How long an open session waits for another job before QUIT.
const IDLE_KEEP: Duration = Duration::from_secs(2);

/// A message sent on the session whose end-of-data reply is still to be
/// read (PIPELINING: it is read after the next message's commands went out).
struct Pending {
    job: Job,
    unfinished: Unfinished,
    started: Instant,
}

/// Runs until there is no more work (or the daemon stops).
pub async fn run(relay: Arc<Relay>, dest: Arc<Dest>) {
    let mut session: Option<Session> = None;
    let mut pending: Option<Pending> = None;
    loop {
        // With a message awaiting its reply, only a job at hand rides along;
        // otherwise the reply is read now rather than after a wait.
        let job = if pending.is_some() {
            dest.take()
        } else {
            next_job(&relay, &dest, session.is_some()).await
        };
        let Some(job) = job else {
            match pending.take() {
                Some(p) => {
                    finish_pending(&relay, &dest, &mut session, p).await;
                    continue;
                }
                None => break,
            }
        };
        if session.is_none() {
            if let Some(at) = dest.probe_wait() {
                let mut stop = relay.stop.clone();
                tokio::select! {
                    _ = sleep_until(at.into()) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            }
        }
        if *relay.stop.borrow() {
            // Leave the job leased: the next start returns it to the queue.
            if dest.done(&job) {
                relay.queue.wakeup.notify_one();
            }
            if let Some(p) = pending.take() {
                finish_pending(&relay, &dest, &mut session, p).await;
            }
            break;
        }
        match deliver_job(&relay, &dest, &mut session, &mut pending, job).await {
            Flow::Continue => {}
            Flow::Exit => break,
        }
    }
    if let Some(p) = pending.take() {
        finish_pending(&relay, &dest, &mut session, p).await;
    }
    // Account for the exit before the (slow) QUIT, so a job queued meanwhile
    // gets a new worker at once.
    let session = session.take();
    if session.is_some() {
        dest.disconnected();
    }
    dest.worker_exit(&relay);
    if let Some(s) = session {
        s.quit().await;
    }
}

/// Sends what waits on the session and records the pending message's result.
async fn finish_pending(
    relay: &Arc<Relay>,
    dest: &Arc<Dest>,
    session: &mut Option<Session>,
    p: Pending,
) {
    let Some(s) = session.as_mut() else {
        // Cannot happen (a pending message implies a session); never drop a result.
        let r = RcptResult::local(Class::Temp, "4.4.2", "session lost before end of data");
        finish(relay, dest, Attempt::all(p.job, "none", r));
        return;
    };
    let out = deliver::finish(s, p.unfinished, relay.data_timeout()).await;
    complete(relay, dest, session, p.job, p.started, out).await;
}

enum Flow {
    Continue,
    Exit,
}

/// The bytes being sent: read with the lease, or just now.
enum Data {
    Preloaded(Arc<Body>),
    Read(Vec<u8>),
}

impl Data {
    fn bytes(&self) -> &[u8] {
        match self {
            Data::Preloaded(b) => b.bytes(),
            Data::Read(v) => v,
        }
    }
}

/// Waits for a job. Without a session, only takes what is there now.
async fn next_job(relay: &Relay, dest: &Dest, connected: bool) -> Option<Job> {
    let deadline = Instant::now() + IDLE_KEEP;
    let mut stop = relay.stop.clone();
    loop {
        let notified = dest.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if *stop.borrow() {
            return None;
        }
        if let Some(j) = dest.take() {
            return Some(j);
        }
        if !connected {
            return None;
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = sleep_until(deadline.into()) => return None,
            _ = stop.changed() => return None,
        }
    }
}

async fn deliver_job(
    relay: &Arc<Relay>,
    dest: &Arc<Dest>,
    session: &mut Option<Session>,
    pending: &mut Option<Pending>,
    mut job: Job,
) -> Flow {
    if let Some(why) = relay.queue.withdrawn.why(&job.msg.id) {
        // Deleted or held by the admin after it was leased.
        withdrawn(relay, dest, job, why);
        return Flow::Continue;
    }
    let read = match &job.body {
        Some(b) => Ok(Some(Data::Preloaded(b.clone()))),
        None => relay
            .readers
            .data(&job.msg.id)
            .await
            .map(|d| d.map(Data::Read)),
    };
    let data = match read {
        Ok(Some(d)) => d,
        Ok(None) => {
            // Deleted while waiting (queue delete): nothing to do or record.
            if dest.done(&job) {
                relay.queue.wakeup.notify_one();
            }
            relay.forget(&job);
            return Flow::Continue;
        }
        Err(e) => {
            let r = RcptResult::local(
                Class::Temp,
                "4.3.0",
                format!("cannot read the queued message: {e:#}"),
            );
            finish(relay, dest, Attempt::all(job, "none", r));
            return Flow::Continue;
        }
    };
    let started = Instant::now();
    let mut fresh_tries = 0;
    loop {
        // Not on the wire while (re)connecting.
        job.wire = None;
        if session.is_none() {
            match relay.connector.open(&dest.dest).await {
                Ok(s) => {
                    *session = Some(s);
                    dest.connected(relay);
                }
                Err(r) if r.class == Class::Perm => {
                    // DNS says this can never work (no such domain, loops to myself).
                    finish(relay, dest, Attempt::all(job, "none", r));
                    return Flow::Continue;
                }
                Err(r) => {
                    match dest.connect_failed(job) {
                        ConnectFailure::Requeued => {}
                        ConnectFailure::Dead { jobs, newly } => {
                            if newly {
                                tracing::info!(
                                    "relay: destination {} not answering ({}); probing it every {} s",
                                    dest.dest.key,
                                    r.text,
                                    super::dest::PROBE_INTERVAL.as_secs()
                                );
                            }
                            for (i, j) in jobs.into_iter().enumerate() {
                                let res = if i == 0 { r.clone() } else { r.suspended() };
                                relay.record(Attempt::all(j, "none", res));
                            }
                        }
                    }
                    return Flow::Exit;
                }
            }
        }
        let Some(s) = session.as_mut() else {
            return Flow::Exit;
        };
        // The last moment an admin's delete or hold can stop this message;
        // from here on it is on the wire (`queue::withdrawn`).
        let idx: Vec<i64> = job.rcpts.iter().map(|r| r.idx).collect();
        match relay.queue.withdrawn.begin(&job.msg.id, &idx) {
            Begin::Stop(why) => {
                withdrawn(relay, dest, job, why);
                return Flow::Continue;
            }
            Begin::Go { removed, guard } => {
                if !removed.is_empty() {
                    let (gone, kept): (Vec<_>, Vec<_>) = job
                        .rcpts
                        .into_iter()
                        .partition(|r| removed.contains(&r.idx));
                    job.rcpts = kept;
                    let keys: Vec<_> = gone.iter().map(|r| (job.msg.id.clone(), r.idx)).collect();
                    dest.forget_rcpts(&gone);
                    relay.forget_keys(&keys);
                    if job.rcpts.is_empty() {
                        if dest.done(&job) {
                            relay.queue.wakeup.notify_one();
                        }
                        return Flow::Continue;
                    }
                }
                job.wire = Some(guard);
            }
        }
        let (prev, unfinished) = match pending.take() {
            Some(p) => (Some((p.job, p.started)), Some(p.unfinished)),
            None => (None, None),
        };
        let (prev_out, progress) =
            deliver::transaction(s, &job, data.bytes(), relay.data_timeout(), unfinished).await;
        if let Some((prev_job, prev_started)) = prev {
            let out = prev_out.unwrap_or_else(|| deliver::unanswered(prev_job.rcpts.len()));
            complete(relay, dest, session, prev_job, prev_started, out).await;
        }
        let out = match progress {
            Progress::AwaitingEnd(unfinished) => {
                *pending = Some(Pending {
                    job,
                    unfinished,
                    started,
                });
                return Flow::Continue;
            }
            Progress::Done(out) => out,
        };
        if out.end == End::Stale && fresh_tries == 0 {
            close(dest, session, out.end).await;
            fresh_tries += 1;
            continue;
        }
        complete(relay, dest, session, job, started, out).await;
        return Flow::Continue;
    }
}

/// A job the admin deleted (dropped: its rows are gone) or held (its rows
/// go back to the queue, parked, through the recorder) before it was sent.
fn withdrawn(relay: &Relay, dest: &Dest, job: Job, why: Why) {
    if dest.done(&job) {
        relay.queue.wakeup.notify_one();
    }
    match why {
        Why::Deleted => relay.forget(&job),
        Why::Held => relay.park(job),
    }
}

/// Closes the session after a transaction that left it unusable.
async fn close(dest: &Dest, session: &mut Option<Session>, end: End) {
    if end == End::Open {
        return;
    }
    if let Some(s) = session.take() {
        dest.disconnected();
        if end == End::Broken {
            drop(s);
        } else {
            s.quit().await;
        }
    }
}

/// Everything after a transaction: the session's fate, the destination's
/// bookkeeping (slow start, backlog release) and the recorder.
async fn complete(
    relay: &Arc<Relay>,
    dest: &Arc<Dest>,
    session: &mut Option<Session>,
    job: Job,
    started: Instant,
    out: TxOutcome,
) {
    let (relay_name, no_dsn) = match session.as_ref() {
        Some(s) => (s.relay.clone(), !s.caps.dsn),
        None => ("none".to_string(), false),
    };
    close(dest, session, out.end).await;
    let sent = out.results.iter().any(|r| r.class == Class::Sent);
    if sent {
        let retried = job.rcpts.iter().any(|r| r.attempts > 0);
        let limit = relay.cfg.relay.destination_concurrency;
        if dest.delivered(limit, retried, relay.cfg.queue.min_backoff) {
            relay.release_backlog(dest);
        }
        dest.kick(relay);
    }
    let attempt = Attempt {
        job,
        relay: relay_name,
        results: out.results,
        peer_without_dsn: no_dsn,
        finished: Instant::now(),
    };
    relay.observe_latency(started.elapsed());
    finish(relay, dest, attempt);
}

/// Hands a finished attempt to the recorder.
fn finish(relay: &Relay, dest: &Dest, a: Attempt) {
    if dest.done(&a.job) {
        relay.queue.wakeup.notify_one();
    }
    relay.record(a);
}
