//! The scheduler: picks due recipients, leases them, groups them into jobs
//! (one per message per destination) and hands the jobs to destinations.
//!
//! It wakes when mail arrives or a flush/ETRN pokes `Queue::wakeup`, and at
//! least once a second (so `mx2 queue flush`, which edits the database
//! directly, acts within a second). When a lease round fills its batch it
//! goes again at once; the room it leases into is bounded overall and per
//! destination, so a dead primary's backlog cannot crowd out the others.
//! Every minute it takes back leases nobody holds and forgets idle
//! destinations.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::dest::backlog_cap;
use super::job::{Body, Job, Msg};
use super::outcome::{Attempt, Class, RcptResult};
use super::route::{self, Destination};
use super::store;
use super::Relay;
use crate::queue;

/// Messages leased per round.
const LEASE_BATCH: usize = 500;
/// Most bytes of message data held in memory by leased jobs (`job::Body`).
/// 16 MB carries 4,000 typical 4 KB messages, more than a destination's
/// backlog cap, so a drain never waits on reader threads.
const PRELOAD_BUDGET: usize = 16 * 1024 * 1024;
/// Most recipients leased and not yet recorded, across all destinations.
const MAX_IN_FLIGHT: usize = 20_000;
/// Longest sleep between looks at the queue.
const TICK: Duration = Duration::from_secs(1);
/// How often leases are checked and idle destinations dropped.
const MAINTENANCE: Duration = Duration::from_secs(60);

/// Runs until the daemon stops.
pub async fn run(relay: Arc<Relay>) {
    let mut stop = relay.stop.clone();
    let mut last_maintenance = Instant::now();
    loop {
        if *stop.borrow() {
            break;
        }
        let again = match lease_round(&relay).await {
            Ok(full) => full,
            Err(e) => {
                tracing::error!("relay: cannot lease due mail: {e:#}");
                false
            }
        };
        if last_maintenance.elapsed() >= MAINTENANCE {
            last_maintenance = Instant::now();
            maintenance(&relay).await;
        }
        if again {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = relay.queue.wakeup.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => {}
        }
    }
    tracing::info!("relay: scheduler stopped");
}

/// Leases one batch and dispatches it. Returns whether the batch was full
/// (more may be due right now).
async fn lease_round(relay: &Arc<Relay>) -> Result<bool> {
    let room = MAX_IN_FLIGHT.saturating_sub(relay.in_flight());
    if room == 0 {
        return Ok(false);
    }
    let limit = LEASE_BATCH.min(room);
    let exclude = excluded_domains(relay);
    let budget = relay.readers.preloaded.clone();
    let preload = PRELOAD_BUDGET.saturating_sub(budget.load(Ordering::Relaxed));
    let leased = relay
        .queue
        .write(move |c| store::lease_due(c, queue::now(), limit, &exclude, preload))
        .await?;
    let full = leased.len() == limit;
    if leased.is_empty() {
        return Ok(false);
    }
    let map = relay.tables.transport();
    for l in leased {
        relay.hold(l.msg.id.as_str(), l.rcpts.iter().map(|r| r.idx));
        let msg = Arc::new(l.msg);
        let body = l.data.map(|d| Arc::new(Body::new(d, budget.clone())));
        let mut groups: HashMap<String, (Destination, Vec<_>)> = HashMap::new();
        let mut unroutable = Vec::new();
        for r in l.rcpts {
            match route::destination(&map, &r.domain, &msg.origin) {
                Ok(d) => groups
                    .entry(d.key.clone())
                    .or_insert_with(|| (d, Vec::new()))
                    .1
                    .push(r),
                Err(why) => unroutable.push((r, why)),
            }
        }
        for (_, (d, rcpts)) in groups {
            let dest = relay.dest(d);
            dest.push(
                relay,
                Job {
                    msg: msg.clone(),
                    rcpts,
                    body: body.clone(),
                    wire: None,
                },
            );
        }
        for (r, why) in unroutable {
            no_route(relay, &msg, r, why);
        }
    }
    Ok(full)
}

/// A recipient whose domain the table no longer routes: defer it with the reason.
fn no_route(relay: &Relay, msg: &Arc<Msg>, r: super::job::Rcpt, why: String) {
    let job = Job {
        msg: msg.clone(),
        rcpts: vec![r],
        body: None,
        wire: None,
    };
    relay.record(Attempt::all(
        job,
        "none",
        RcptResult::local(Class::Temp, "4.3.5", why),
    ));
}

/// Domains of destinations whose leased backlog is at its cap.
fn excluded_domains(relay: &Relay) -> Vec<String> {
    let cap = backlog_cap(relay.cfg.relay.destination_concurrency);
    let mut out = Vec::new();
    for d in relay.all_dests() {
        out.extend(d.full_domains(cap));
    }
    out
}

async fn maintenance(relay: &Arc<Relay>) {
    let held = relay.held_keys();
    match relay
        .queue
        .write(move |c| store::reclaim(c, queue::now(), &held))
        .await
    {
        Ok(0) => {}
        Ok(n) => {
            tracing::warn!("relay: {n} recipients had an expired lease and are due again");
            relay.queue.wakeup.notify_one();
        }
        Err(e) => tracing::error!("relay: cannot reclaim expired leases: {e:#}"),
    }
    relay.drop_idle_dests(Duration::from_secs(600));
}
