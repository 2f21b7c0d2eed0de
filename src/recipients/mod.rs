//! Recipient validation: no backscatter from the backup MX.
//!
//! A backup MX that accepts any address in its domains is what spammers
//! aim at: it takes mail for non-existent users, and its later bounces go
//! to forged senders. mx2 decides at RCPT time, in this order:
//!
//! 1. the static list (`[relay] relay_recipients`, `list`): a domain with
//!    entries accepts only those (`550 5.1.1` for the rest);
//! 2. with `recipient_verify = "callout"`, a remembered answer from the
//!    primary (`cache`, in the queue database, so it survives restarts and
//!    serves while the primary is down), else a live callout (`callout`),
//!    coalesced per address and rate-limited to protect the primary;
//! 3. otherwise accept — and when the primary cannot answer, accept too
//!    (the point of a backup MX) unless `on_unverifiable = "tempfail"`.
//!    A callout not even tried because the rate budget is spent always
//!    tempfails (`450 4.1.1 … Address verification in progress`, Postfix's
//!    answer while its probe is under way): the sender retries and gets a
//!    real answer, and flooding RCPTs never buys an accept.

pub mod cache;
pub mod callout;
pub mod list;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use tokio::sync::watch;

use crate::config::{Config, RecipientVerify};
use crate::queue::Queue;
use crate::relay::connect::Connector;
use crate::tables::Tables;
use callout::Answer;
use list::{ListVerdict, RecipientList};

/// Why a callout was not tried (logged with the refusal).
const BUSY: &str = "callout rate limit reached (verify_rate)";

/// The decision for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept,
    /// `550 5.1.1`.
    Reject,
    /// `450 4.1.1`.
    TempFail,
    /// `450 4.1.1 … Address verification in progress`: not asked yet.
    InProgress,
}

/// A decision and where it came from (for logs and `mx2 recipients check`).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub decision: Decision,
    pub source: String,
}

impl Outcome {
    fn new(decision: Decision, source: impl Into<String>) -> Outcome {
        Outcome {
            decision,
            source: source.into(),
        }
    }

    /// The RCPT reply for a refusal, Postfix-worded.
    pub fn reply(&self, address: &str) -> Option<String> {
        match self.decision {
            Decision::Accept => None,
            Decision::Reject => Some(format!(
                "550 5.1.1 <{address}>: Recipient address rejected: User unknown in relay recipient table"
            )),
            Decision::TempFail => Some(format!(
                "450 4.1.1 <{address}>: Recipient address rejected: unverified address: {}",
                self.source
            )),
            Decision::InProgress => Some(format!(
                "450 4.1.1 <{address}>: Recipient address rejected: Address verification in progress"
            )),
        }
    }
}

/// Loads the static list (an unset path means no list).
pub fn load_list(path: Option<&PathBuf>) -> Result<Option<RecipientList>> {
    let Some(p) = path else { return Ok(None) };
    let text =
        std::fs::read_to_string(p).map_err(|e| anyhow!("{}: cannot read: {e}", p.display()))?;
    RecipientList::parse(&text, &p.display().to_string())
        .map(Some)
        .map_err(|e| anyhow!("{}", e.join("\n")))
}

/// Where cache writes go: the daemon's group-committing writer, or (for
/// the CLI) a connection of its own.
pub enum CacheWriter {
    Queue(Queue),
    Direct(PathBuf),
}

/// A token bucket: at most `rate` callouts a second, bursts of `2 × rate`.
struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate)
            .min(self.rate * 2.0);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Decides recipients; shared by all sessions.
pub struct Verifier {
    cfg: Arc<Config>,
    tables: Arc<Tables>,
    list: RwLock<Option<Arc<RecipientList>>>,
    list_stamp: Mutex<Option<std::time::SystemTime>>,
    connector: Option<Connector>,
    db_path: PathBuf,
    /// One read connection for the cache, opened on first use and dropped
    /// after an error (opening one per RCPT cost more than the read).
    reader: Mutex<Option<rusqlite::Connection>>,
    writer: CacheWriter,
    inflight: Mutex<HashMap<String, watch::Receiver<Option<Answer>>>>,
    bucket: Mutex<Bucket>,
}

impl Verifier {
    pub fn new(cfg: Arc<Config>, tables: Arc<Tables>, writer: CacheWriter) -> Result<Verifier> {
        let list = load_list(cfg.relay.relay_recipients.as_ref())?;
        let connector = match cfg.relay.recipient_verify {
            RecipientVerify::Callout => Some(crate::relay::connector(&cfg)?),
            RecipientVerify::Off => None,
        };
        let stamp = cfg
            .relay
            .relay_recipients
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .and_then(|m| m.modified().ok());
        let rate = cfg.relay.verify_rate as f64;
        Ok(Verifier {
            db_path: cfg.queue.path.clone(),
            reader: Mutex::new(None),
            list: RwLock::new(list.map(Arc::new)),
            list_stamp: Mutex::new(stamp),
            connector,
            writer,
            inflight: Mutex::new(HashMap::new()),
            bucket: Mutex::new(Bucket {
                tokens: rate * 2.0,
                last: Instant::now(),
                rate,
            }),
            cfg,
            tables,
        })
    }

    /// Re-reads the static list if its file changed (or `force`); a broken
    /// file keeps the previous list.
    pub fn reload(&self, force: bool) {
        let Some(path) = self.cfg.relay.relay_recipients.as_ref() else {
            return;
        };
        let stamp = std::fs::metadata(path).ok().and_then(|m| m.modified().ok());
        {
            let Ok(mut last) = self.list_stamp.lock() else {
                return;
            };
            if !force && *last == stamp {
                return;
            }
            *last = stamp;
        }
        match load_list(Some(path)) {
            Ok(l) => {
                tracing::info!("reloaded relay_recipients {}", path.display());
                if let Ok(mut g) = self.list.write() {
                    *g = l.map(Arc::new);
                }
            }
            Err(e) => tracing::error!("relay_recipients not reloaded, previous list kept: {e}"),
        }
    }

    /// True when RCPT needs to ask (a list or callouts are configured).
    pub fn active(&self) -> bool {
        self.connector.is_some() || self.cfg.relay.relay_recipients.is_some()
    }

    /// Polls the list file once a second.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.reload(false)).await;
        }
    }

    /// Decides a recipient: `local` is the unquoted local part, `domain`
    /// lower-case, `address` the form relayed (and asked about).
    pub async fn check(&self, local: &str, domain: &str, address: &str) -> Outcome {
        let address = address.to_string();
        let list = self.list.read().ok().and_then(|g| g.clone());
        if let Some(list) = list {
            match list.check(local, domain) {
                ListVerdict::Listed(line) => {
                    return Outcome::new(
                        Decision::Accept,
                        format!("static list {}:{line}", list.file),
                    )
                }
                ListVerdict::Unknown => {
                    return Outcome::new(
                        Decision::Reject,
                        format!("not in static list {}", list.file),
                    )
                }
                ListVerdict::NoEntries => {}
            }
        }
        let Some(connector) = &self.connector else {
            return Outcome::new(Decision::Accept, "no recipient list for this domain");
        };
        let now = crate::queue::now();
        let cached = self.cached(&address);
        if let Some(c) = &cached {
            let age = now - c.checked_at;
            let ttl = if c.valid {
                &self.cfg.relay.verify_positive_ttl
            } else {
                &self.cfg.relay.verify_negative_ttl
            };
            if age >= 0 && (age as u64) < ttl.as_secs() {
                let d = if c.valid {
                    Decision::Accept
                } else {
                    Decision::Reject
                };
                return Outcome::new(
                    d,
                    format!(
                        "cache ({}, {age}s old): {}",
                        if c.valid { "valid" } else { "unknown" },
                        c.reply
                    ),
                );
            }
        }
        let answer = self.coalesced(connector, domain, &address).await;
        let (why, busy) = match answer {
            Answer::Valid(r) => return Outcome::new(Decision::Accept, format!("callout: {r}")),
            Answer::Invalid(r) => return Outcome::new(Decision::Reject, format!("callout: {r}")),
            Answer::Unverifiable(why) => (why, false),
            Answer::Busy => (BUSY.to_string(), true),
        };
        // A stale answer is better than none while the primary is down
        // (or the budget is spent).
        if let Some(c) = cached {
            let d = if c.valid {
                Decision::Accept
            } else {
                Decision::Reject
            };
            return Outcome::new(
                d,
                format!("stale cache ({}s old) while {why}", now - c.checked_at),
            );
        }
        if busy {
            return Outcome::new(Decision::InProgress, why);
        }
        match self.cfg.relay.on_unverifiable {
            crate::config::OnUnverifiable::Accept => {
                tracing::info!("recipient <{address}> unverifiable, accepted: {why}");
                Outcome::new(Decision::Accept, format!("unverifiable, accepted: {why}"))
            }
            crate::config::OnUnverifiable::Tempfail => Outcome::new(Decision::TempFail, why),
        }
    }

    fn cached(&self, address: &str) -> Option<cache::Cached> {
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        if reader.is_none() {
            // A missing database simply has no answers yet.
            *reader = crate::queue::schema::open_existing(&self.db_path).ok()?;
        }
        let conn = reader.as_ref()?;
        match cache::get(conn, address) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("recipient cache unreadable for {address}: {e:#}");
                *reader = None;
                None
            }
        }
    }

    /// One callout per address at a time; late askers wait for its answer.
    async fn coalesced(&self, connector: &Connector, domain: &str, address: &str) -> Answer {
        let key = cache::key(address);
        // Either join a callout under way, or register ours (lock not held across awaits).
        let joined = match self.inflight.lock() {
            Ok(mut map) => match map.get(&key) {
                Some(rx) => Ok(rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    map.insert(key.clone(), rx);
                    Err(tx)
                }
            },
            Err(_) => return Answer::Unverifiable("internal lock poisoned".into()),
        };
        let mut rx = match joined {
            Ok(rx) => rx,
            Err(tx) => {
                let answer = self.run_callout(connector, domain, address).await;
                let _ = tx.send(Some(answer.clone()));
                if let Ok(mut map) = self.inflight.lock() {
                    map.remove(&key);
                }
                return answer;
            }
        };
        loop {
            if let Some(a) = rx.borrow().clone() {
                return a;
            }
            if rx.changed().await.is_err() {
                return rx
                    .borrow()
                    .clone()
                    .unwrap_or_else(|| Answer::Unverifiable("callout abandoned".into()));
            }
        }
    }

    async fn run_callout(&self, connector: &Connector, domain: &str, address: &str) -> Answer {
        let allowed = self.bucket.lock().map(|mut b| b.take()).unwrap_or(false);
        if !allowed {
            return Answer::Busy;
        }
        let map = self.tables.transport();
        let dest = match crate::relay::route::destination(&map, domain, "smtp") {
            Ok(d) => d,
            Err(e) => return Answer::Unverifiable(e),
        };
        let answer = callout::ask(connector, &dest, address, self.cfg.relay.verify_timeout).await;
        let entry = match &answer {
            Answer::Valid(r) => Some(cache::Cached {
                valid: true,
                reply: r.clone(),
                checked_at: crate::queue::now(),
            }),
            Answer::Invalid(r) => Some(cache::Cached {
                valid: false,
                reply: r.clone(),
                checked_at: crate::queue::now(),
            }),
            Answer::Unverifiable(_) | Answer::Busy => None,
        };
        if let Some(c) = entry {
            let a = address.to_string();
            let res = match &self.writer {
                CacheWriter::Queue(q) => q.write(move |conn| cache::put(conn, &a, &c)).await,
                CacheWriter::Direct(p) => {
                    match crate::queue::schema::open_existing(p) {
                        Ok(Some(conn)) => cache::put(&conn, &a, &c),
                        Ok(None) => Ok(()), // no queue yet: nothing to remember in
                        Err(e) => Err(e),
                    }
                }
            };
            if let Err(e) = res {
                tracing::warn!("recipient cache not updated for {address}: {e:#}");
            }
        }
        answer
    }
}
