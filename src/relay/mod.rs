//! The relay engine: outbound delivery to the primaries (SPEC §6).
//!
//! How a queued recipient leaves:
//!
//! 1. `scheduler` leases due recipients (`store`), groups them into jobs —
//!    one per message per destination (`route::destination`) — and queues
//!    each job on its destination (`dest`).
//! 2. `dest` starts `worker`s up to the destination's window (slow start,
//!    dead-host probing). A worker opens a session (`connect`: DNS via
//!    `route`, EHLO, STARTTLS per `tls`) with the SMTP client (`client`) and
//!    runs one transaction per job (`deliver`), reusing the session.
//! 3. Each attempt goes to the recorder (`record`), which applies the
//!    results in one group commit: delete delivered recipients, defer with
//!    backoff or expire (`retry`), queue DSNs (`bounce`), log.
//!
//! A recipient is leased (status `active`) from step 1 until step 3 has
//! committed, so it is never delivered twice at once; after a crash the
//! queue returns leased rows at the next start.

mod bounce;
pub mod client;
pub(crate) mod connect;
mod deliver;
#[cfg(test)]
mod deliver_tests;
mod dest;
pub(crate) mod internal;
mod job;
pub(crate) mod myself;
pub(crate) mod outcome;
mod record;
mod retry;
pub(crate) mod route;
mod scheduler;
mod store;
mod stuffing;
pub(crate) mod tls;
mod worker;
mod xtext;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::Connection;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::queue::{self, Queue};
use crate::tables::Tables;

use connect::Connector;
use dest::Dest;
use job::Job;
use outcome::Attempt;
use route::{Destination, Resolver};
use tls::TlsClient;

/// How mx2 opens SMTP sessions to primaries (deliveries and callouts).
pub fn connector(cfg: &Config) -> Result<Connector> {
    Ok(Connector {
        myname: cfg.hostname.clone(),
        tls: TlsClient::new(cfg.relay.tls)?,
        resolver: Resolver::new(
            cfg.relay.resolver.as_deref(),
            &cfg.hostname,
            myself::Myself::from_listen(&cfg.smtp.listen),
        )?,
        connect_timeout: cfg.relay.connect_timeout,
        command_timeout: cfg.relay.command_timeout,
    })
}

/// What the daemon keeps of the relay: enough to stop it cleanly.
pub struct Handle(Arc<Relay>);

impl Handle {
    /// Deliveries on the wire plus results not yet committed: a stop waits
    /// for these to reach zero before it hands the other leases back.
    pub fn busy(&self) -> usize {
        self.0.queue.withdrawn.on_wire() + self.0.unrecorded.load(Ordering::Acquire)
    }
}

/// Starts the scheduler and the recorder (they run until `stop`; deliveries
/// under way then finish and are recorded). A relay that cannot be set up
/// (outbound TLS) is a start-up error: a backup MX that accepts mail and
/// never forwards it is the worst way to fail.
pub fn start(
    cfg: Arc<Config>,
    tables: Arc<Tables>,
    queue: Queue,
    stop: watch::Receiver<bool>,
) -> Result<Handle> {
    let connector = connector(&cfg).context("relay: setting up outbound delivery")?;
    let (results, rx) = mpsc::unbounded_channel();
    let relay = Arc::new(Relay {
        policy: retry::Policy::from_config(&cfg.queue),
        readers: Readers::new(queue.clone()),
        cfg,
        tables,
        queue,
        connector,
        dests: Mutex::new(HashMap::new()),
        held: Mutex::new(HashSet::new()),
        results,
        unrecorded: AtomicUsize::new(0),
        stop,
    });
    let r = relay.clone();
    tokio::spawn(async move {
        let _critical = crate::supervise::critical("relay recorder");
        record::run(r, rx).await
    });
    let r = relay.clone();
    tokio::spawn(async move {
        let _critical = crate::supervise::critical("relay scheduler");
        scheduler::run(r).await
    });
    Ok(Handle(relay))
}

/// What every part of the relay shares.
pub struct Relay {
    cfg: Arc<Config>,
    tables: Arc<Tables>,
    queue: Queue,
    policy: retry::Policy,
    connector: Connector,
    readers: Readers,
    dests: Mutex<HashMap<String, Arc<Dest>>>,
    /// Recipients leased by this process and not yet recorded.
    held: Mutex<HashSet<(String, i64)>>,
    results: mpsc::UnboundedSender<record::Input>,
    /// Inputs handed to the recorder and not yet committed.
    unrecorded: AtomicUsize,
    stop: watch::Receiver<bool>,
}

impl Relay {
    /// The destination object for `d`, created on first use.
    fn dest(&self, d: Destination) -> Arc<Dest> {
        let mut map = self.dests.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(d.key.clone())
            .or_insert_with(|| Arc::new(Dest::new(d)))
            .clone()
    }

    fn all_dests(&self) -> Vec<Arc<Dest>> {
        let map = self.dests.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }

    fn drop_idle_dests(&self, after: Duration) {
        let mut map = self.dests.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, d| !d.idle_for(after));
    }

    fn hold(&self, id: &str, idx: impl Iterator<Item = i64>) {
        let mut h = self.held.lock().unwrap_or_else(|p| p.into_inner());
        h.extend(idx.map(|i| (id.to_string(), i)));
    }

    fn forget_keys(&self, keys: &[(String, i64)]) {
        let mut h = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            h.remove(k);
        }
    }

    /// A job that needs no record (its message was deleted meanwhile).
    fn forget(&self, job: &Job) {
        let keys: Vec<_> = job.keys().collect();
        self.forget_keys(&keys);
    }

    fn held_keys(&self) -> HashSet<(String, i64)> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn in_flight(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or(0)
    }

    /// Hands an attempt to the recorder.
    fn record(&self, a: Attempt) {
        self.send(record::Input::Attempt(a));
    }

    /// Hands a job whose message was held before it was sent to the
    /// recorder, which parks its rows.
    fn park(&self, job: Job) {
        self.send(record::Input::Park(job));
    }

    fn send(&self, input: record::Input) {
        self.unrecorded.fetch_add(1, Ordering::AcqRel);
        if self.results.send(input).is_err() {
            // Only when the recorder is gone (shutdown): the lease returns at next start.
            self.unrecorded.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!("relay: a result was not recorded (stopping)");
        }
    }

    /// The recorder committed (or gave up on) `n` inputs.
    fn recorded(&self, n: usize) {
        self.unrecorded.fetch_sub(n, Ordering::AcqRel);
    }

    /// How long to wait for the reply to the end of DATA.
    fn data_timeout(&self) -> Duration {
        self.cfg.relay.command_timeout.saturating_mul(2)
    }

    fn observe_latency(&self, d: Duration) {
        crate::metrics::get().delivery_seconds.observe(d);
    }

    /// Makes every waiting recipient routed to `dest` due now.
    fn release_backlog(self: &Arc<Self>, dest: &Dest) {
        let me = self.clone();
        let key = dest.dest.key.clone();
        tokio::spawn(async move {
            let map = me.tables.transport();
            let k = key.clone();
            let res = me
                .queue
                .write(move |c| {
                    let now = queue::now();
                    let domains: Vec<String> = store::waiting_domains(c, now)?
                        .into_iter()
                        .filter(|d| {
                            route::destination(&map, d, "smtp")
                                .or_else(|_| route::destination(&map, d, "bounce"))
                                .is_ok_and(|x| x.key == k)
                        })
                        .collect();
                    store::release(c, &domains, now)
                })
                .await;
            match res {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!("relay: destination {key} accepts mail again: {n} waiting recipients due now");
                    me.queue.wakeup.notify_one();
                }
                Err(e) => tracing::error!("relay: cannot release the backlog of {key}: {e:#}"),
            }
        });
    }
}

/// A few read connections for loading message bytes off the writer thread
/// (for messages that did not come with their lease), and the count of
/// bytes that did (`job::Body`).
pub struct Readers {
    queue: Queue,
    pool: Mutex<Vec<Connection>>,
    /// Bytes of message data held by leased jobs.
    preloaded: Arc<AtomicUsize>,
}

/// Read connections kept open for reuse.
const MAX_IDLE_READERS: usize = 8;

impl Readers {
    fn new(queue: Queue) -> Readers {
        Readers {
            queue,
            pool: Mutex::new(Vec::new()),
            preloaded: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The bytes of message `id`, or `None` if it was deleted.
    async fn data(self: &Readers, id: &str) -> Result<Option<Vec<u8>>> {
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        let queue = self.queue.clone();
        let id = id.to_string();
        let (conn, res) = tokio::task::spawn_blocking(move || {
            let conn = match pooled {
                Some(c) => c,
                None => match queue.reader() {
                    Ok(c) => c,
                    Err(e) => return (None, Err(e)),
                },
            };
            let r = store::message_data(&conn, &id);
            (Some(conn), r)
        })
        .await?;
        if let (Some(conn), Ok(mut p)) = (conn, self.pool.lock()) {
            if p.len() < MAX_IDLE_READERS {
                p.push(conn);
            }
        }
        res
    }
}
