//! Per-destination state: the jobs waiting for it, how many connections it
//! may have, and whether it is answering at all.
//!
//! - Concurrency window with slow start: a destination starts at
//!   `INITIAL_WINDOW` connections and the window doubles with every
//!   successful transaction up to `destination_concurrency`. The window
//!   never exceeds the jobs waiting, so one message opens one connection.
//! - Dead destinations: when a connection cannot be opened and no other
//!   connection to it is up, the destination is marked dead; the jobs
//!   waiting for it are deferred at once with the same reason ("delivery
//!   temporarily suspended"), instead of each trying and timing out in turn.
//!   Later jobs are held back until `PROBE_INTERVAL` has passed and then one
//!   connection probes it (window 1). Nothing is deferred merely for being
//!   queued behind a dead host: a flushed backlog gets a real probe.
//! - Recovery: the first successful delivery after a failure (or of a
//!   recipient that had been deferred) releases the destination's whole
//!   backlog (next attempt = now), and the slow start bounds how fast it
//!   is sent.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::job::{Job, Rcpt};
use super::route::Destination;
use super::Relay;

/// Connections a fresh or recovering destination starts with.
pub const INITIAL_WINDOW: usize = 2;
/// How long a dead destination rests before the next probe.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Most recipients leased for one destination at a time; past this its
/// domains are left in the queue until it catches up, so one slow primary
/// cannot take all the scheduler's room.
pub fn backlog_cap(concurrency: usize) -> usize {
    (concurrency * 100).max(200)
}

/// One destination (a transport-map next-hop list, or a domain's MX).
pub struct Dest {
    pub dest: Destination,
    state: Mutex<State>,
    /// Poked when a job is queued, for workers waiting on an open session.
    pub notify: Notify,
}

struct State {
    queue: VecDeque<Job>,
    /// Worker tasks alive.
    workers: usize,
    /// Jobs taken by workers and not done yet (a worker may hold two: one
    /// awaiting its end-of-data reply while the next one's commands go out).
    busy: usize,
    /// Workers with an open session.
    connected: usize,
    window: usize,
    dead: bool,
    probe_at: Instant,
    /// A connection failed since the last successful delivery.
    failed: bool,
    last_release: Option<Instant>,
    /// Recipients queued or in progress, in total and per domain.
    pending: usize,
    domains: HashMap<String, usize>,
    /// The scheduler was told to stop leasing for this destination.
    throttled: bool,
    /// The cap in force when it was.
    throttle_cap: usize,
    last_active: Instant,
}

/// What became of a job whose connection could not be opened.
pub enum ConnectFailure {
    /// Other sessions to the destination are up: the job waits for them.
    Requeued,
    /// The destination is dead: these jobs (the failed one first) are to
    /// be deferred; `newly` when it was alive until now.
    Dead { jobs: Vec<Job>, newly: bool },
}

impl Dest {
    pub fn new(dest: Destination) -> Dest {
        let now = Instant::now();
        Dest {
            dest,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                workers: 0,
                busy: 0,
                connected: 0,
                window: INITIAL_WINDOW,
                dead: false,
                probe_at: now,
                failed: false,
                last_release: None,
                pending: 0,
                domains: HashMap::new(),
                throttled: false,
                throttle_cap: 0,
                last_active: now,
            }),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a job and starts or wakes workers as the window allows.
    pub fn push(self: &Arc<Self>, relay: &Arc<Relay>, job: Job) {
        {
            let mut st = self.lock();
            st.pending += job.rcpts.len();
            for r in &job.rcpts {
                *st.domains.entry(r.domain.clone()).or_insert(0) += 1;
            }
            st.queue.push_back(job);
            st.last_active = Instant::now();
        }
        self.kick(relay);
    }

    /// Starts workers up to the window (never more than there are jobs
    /// for) and wakes idle ones.
    pub fn kick(self: &Arc<Self>, relay: &Arc<Relay>) {
        let limit = relay.cfg.relay.destination_concurrency.max(1);
        let spawn = {
            let mut st = self.lock();
            let want = if st.dead { 1 } else { st.window.min(limit) };
            let mut n = 0;
            while st.workers < want && st.workers.saturating_sub(st.busy) < st.queue.len() {
                st.workers += 1;
                n += 1;
            }
            n
        };
        self.notify.notify_waiters();
        for _ in 0..spawn {
            tokio::spawn(super::worker::run(relay.clone(), self.clone()));
        }
    }

    /// The next job for a worker, if any.
    pub fn take(&self) -> Option<Job> {
        let mut st = self.lock();
        let job = st.queue.pop_front()?;
        st.busy += 1;
        st.last_active = Instant::now();
        Some(job)
    }

    /// A worker is done with a job (whatever became of it). Returns true
    /// when a throttled backlog has drained to half: the scheduler should
    /// lease more now rather than at its next tick (this is what keeps a
    /// 10,000-message drain from stalling a second per batch).
    pub fn done(&self, job: &Job) -> bool {
        let mut st = self.lock();
        st.busy = st.busy.saturating_sub(1);
        forget(&mut st, job);
        if st.throttled && st.pending * 2 <= st.throttle_cap {
            st.throttled = false;
            return true;
        }
        false
    }

    /// Recipients taken out of a job the worker holds (the admin deleted
    /// them): they no longer count against the backlog.
    pub fn forget_rcpts(&self, rcpts: &[Rcpt]) {
        forget_rcpts(&mut self.lock(), rcpts);
    }

    /// A worker ends; restarts one if jobs are left without a taker.
    pub fn worker_exit(self: &Arc<Self>, relay: &Arc<Relay>) {
        let left = {
            let mut st = self.lock();
            st.workers = st.workers.saturating_sub(1);
            !st.queue.is_empty()
        };
        if left && !*relay.stop.borrow() {
            self.kick(relay);
        }
    }

    /// When a dead destination may be probed next (`None`: go ahead now).
    pub fn probe_wait(&self) -> Option<Instant> {
        let st = self.lock();
        (st.dead && st.probe_at > Instant::now()).then_some(st.probe_at)
    }

    /// A worker opened a session. Revives a dead destination.
    pub fn connected(self: &Arc<Self>, relay: &Arc<Relay>) {
        let revived = {
            let mut st = self.lock();
            st.connected += 1;
            let was = st.dead;
            if st.dead {
                st.dead = false;
                st.window = INITIAL_WINDOW;
            }
            was
        };
        if revived {
            tracing::info!("relay: destination {} is answering again", self.dest.key);
            self.kick(relay);
        }
    }

    /// A worker closed its session.
    pub fn disconnected(&self) {
        let mut st = self.lock();
        st.connected = st.connected.saturating_sub(1);
    }

    /// No session could be opened for `job` (temporary trouble).
    pub fn connect_failed(&self, job: Job) -> ConnectFailure {
        let mut st = self.lock();
        st.failed = true;
        if st.connected > 0 {
            // Others are talking to it: likely a connection limit. Shrink.
            st.window = st.connected.max(1);
            st.busy = st.busy.saturating_sub(1);
            st.queue.push_front(job);
            return ConnectFailure::Requeued;
        }
        let newly = !st.dead;
        st.dead = true;
        st.window = 1;
        st.probe_at = Instant::now() + PROBE_INTERVAL;
        let mut jobs = vec![job];
        jobs.extend(st.queue.drain(..));
        // The failed job was counted busy; the drained ones were queued.
        st.busy = st.busy.saturating_sub(1);
        for j in &jobs {
            forget(&mut st, j);
        }
        ConnectFailure::Dead { jobs, newly }
    }

    /// A transaction had at least one recipient accepted. Grows the window
    /// and says whether the destination's backlog should be released now.
    pub fn delivered(&self, limit: usize, retried: bool, min_interval: Duration) -> bool {
        let mut st = self.lock();
        st.window = (st.window * 2).min(limit.max(1));
        let now = Instant::now();
        let quiet = st
            .last_release
            .map(|t| now.duration_since(t) >= min_interval)
            .unwrap_or(true);
        let release = st.failed || (retried && quiet);
        st.failed = false;
        if release {
            st.last_release = Some(now);
        }
        release
    }

    /// The domains to leave unleased while this destination's backlog is full.
    pub fn full_domains(&self, cap: usize) -> Vec<String> {
        let mut st = self.lock();
        if st.pending >= cap {
            st.throttled = true;
            st.throttle_cap = cap;
            st.domains.keys().cloned().collect()
        } else {
            Vec::new()
        }
    }

    /// Nothing queued or running for a while. (A dead destination forgotten
    /// this way is simply probed again by its next job.)
    pub fn idle_for(&self, d: Duration) -> bool {
        let st = self.lock();
        st.queue.is_empty() && st.workers == 0 && st.pending == 0 && st.last_active.elapsed() >= d
    }
}

fn forget(st: &mut State, job: &Job) {
    forget_rcpts(st, &job.rcpts);
}

fn forget_rcpts(st: &mut State, rcpts: &[Rcpt]) {
    st.pending = st.pending.saturating_sub(rcpts.len());
    for r in rcpts {
        if let Some(n) = st.domains.get_mut(&r.domain) {
            *n -= 1;
            if *n == 0 {
                st.domains.remove(&r.domain);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::job::{Msg, Rcpt};

    fn job(n: usize) -> Job {
        Job {
            msg: Arc::new(Msg {
                id: "M".into(),
                arrival: 0,
                sender: String::new(),
                body: None,
                smtputf8: false,
                ret: None,
                envid: None,
                origin: "smtp".into(),
            }),
            rcpts: (0..n)
                .map(|i| Rcpt {
                    idx: i as i64,
                    address: format!("u{i}@d.example"),
                    domain: "d.example".into(),
                    attempts: 0,
                    notify: None,
                    orcpt: None,
                    warned: false,
                    lease_until: 0,
                })
                .collect(),
            body: None,
            wire: None,
        }
    }

    fn dest() -> Dest {
        Dest::new(Destination {
            key: "d.example".into(),
            hops: Vec::new(),
        })
    }

    fn enqueue(d: &Dest, j: Job) {
        let mut st = d.lock();
        st.pending += j.rcpts.len();
        for r in &j.rcpts {
            *st.domains.entry(r.domain.clone()).or_insert(0) += 1;
        }
        st.queue.push_back(j);
    }

    #[test]
    fn slow_start_doubles_to_the_limit() {
        let d = dest();
        assert_eq!(d.lock().window, INITIAL_WINDOW);
        d.delivered(20, false, Duration::ZERO);
        assert_eq!(d.lock().window, 4);
        for _ in 0..5 {
            d.delivered(20, false, Duration::ZERO);
        }
        assert_eq!(d.lock().window, 20);
    }

    #[test]
    fn dead_destination_defers_its_queue_and_recovers_with_a_release() {
        let d = dest();
        enqueue(&d, job(1));
        enqueue(&d, job(2));
        let first = d.take().unwrap();
        match d.connect_failed(first) {
            ConnectFailure::Dead { jobs, newly } => assert!(jobs.len() == 2 && newly),
            ConnectFailure::Requeued => panic!("nobody else was connected"),
        }
        assert!(d.probe_wait().is_some());
        {
            let st = d.lock();
            assert!(st.dead && st.window == 1 && st.pending == 0 && st.busy == 0);
            assert!(st.domains.is_empty());
        }
        // The next success releases the backlog once.
        assert!(d.delivered(20, false, Duration::from_secs(3600)));
        assert!(!d.delivered(20, true, Duration::from_secs(3600)));
        assert!(d.delivered(20, true, Duration::ZERO));
    }

    #[test]
    fn failure_beside_a_live_session_requeues() {
        let d = dest();
        d.lock().connected = 1;
        enqueue(&d, job(1));
        let j = d.take().unwrap();
        assert!(matches!(d.connect_failed(j), ConnectFailure::Requeued));
        let st = d.lock();
        assert_eq!(st.queue.len(), 1);
        assert!(!st.dead);
        assert_eq!(st.busy, 0);
    }

    #[test]
    fn full_backlog_names_its_domains() {
        let d = dest();
        enqueue(&d, job(3));
        assert!(d.full_domains(4).is_empty());
        assert_eq!(d.full_domains(3), vec!["d.example".to_string()]);
        let j = d.take().unwrap();
        let _ = d.done(&j);
        assert!(d.full_domains(1).is_empty());
    }
}
