//! Crash safety under load: `kill -9` of `mx2 serve` at chosen moments
//! while 20 clients send and the relay delivers to a primary that is
//! sometimes slow, then a restart, again and again. At the end every
//! message that got `250` reached the primary at least once, and at most
//! twice (a copy more only when a crash fell between the primary's 250 and
//! mx2's commit); none lost, none corrupted, no lease stuck.
//!
//! CI default: 2,000 messages, 20 kills. The long run (docs/reliability.md):
//! `MX2_CRASH_MESSAGES=5000 MX2_CRASH_KILLS=40 cargo test --test reliability_crash -- --nocapture`.
//! `MX2_CRASH_SEED=N` replays one schedule of kill moments.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{wait_for, Daemon};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The message a client sends for `token` (CRLF, not dot-stuffed); the
/// primary must receive exactly these bytes after mx2's Received: header.
fn message(token: &str) -> Vec<u8> {
    let mut m = format!(
        "From: load <load@sender.test>\r\nTo: u@example.jp\r\nSubject: load {token}\r\nMessage-ID: <{token}@load.test>\r\n\r\n"
    )
    .into_bytes();
    for i in 0..12 {
        m.extend_from_slice(
            format!("{token} line {i} 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n")
                .as_bytes(),
        );
        if i % 5 == 0 {
            m.extend_from_slice(b".a line starting with a dot\r\n");
        }
    }
    m
}

fn dot_stuff(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len() + 16);
    for line in m.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out
}

// ---------------------------------------------------------------------------
// The primary: acknowledges every transaction, sometimes slowly, and counts
// per (token, recipient) the transactions it answered 250.

/// One copy the primary answered 250: when it had the whole message, and
/// in which life of mx2 that was (`generation` goes up each time the test
/// has killed or stopped it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Copy {
    got_data: Instant,
    generation: usize,
}

#[derive(Default)]
struct PrimaryState {
    /// Per (token, recipient): every transaction the primary answered 250.
    acked: Mutex<HashMap<(String, String), Vec<Copy>>>,
    /// mx2's current life; raised by the test after each kill or stop.
    generation: AtomicUsize,
    /// Transactions whose bytes were not exactly what the client sent.
    corrupt: Mutex<Vec<String>>,
    received: AtomicU64,
    inflight: AtomicUsize,
    stop: AtomicBool,
}

struct Primary {
    port: u16,
    st: Arc<PrimaryState>,
}

impl Primary {
    fn start(slow_percent: u32) -> Primary {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let st = Arc::new(PrimaryState::default());
        let s = st.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = primary_session(&s, conn, slow_percent);
                });
            }
        });
        Primary { port, st }
    }
}

impl Drop for Primary {
    fn drop(&mut self) {
        self.st.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn primary_session(st: &PrimaryState, conn: TcpStream, slow_percent: u32) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    let mut rng = StdRng::from_entropy();
    out.write_all(b"220 primary.test ESMTP\r\n")?;
    let mut rcpts: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line)
            .trim_end()
            .to_ascii_uppercase();
        if text.starts_with("EHLO") {
            out.write_all(b"250-primary.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES\r\n")?;
        } else if text.starts_with("MAIL FROM:") {
            rcpts.clear();
            out.write_all(b"250 2.1.0 Ok\r\n")?;
        } else if let Some(a) = text.strip_prefix("RCPT TO:<") {
            rcpts.push(a.split('>').next().unwrap_or("").to_ascii_lowercase());
            out.write_all(b"250 2.1.5 Ok\r\n")?;
        } else if text == "DATA" {
            out.write_all(b"354 go ahead\r\n")?;
            let Some(data) = common::sink::read_data(&mut r)? else {
                return Ok(());
            };
            st.received.fetch_add(1, Ordering::SeqCst);
            let token = common::token_of(&data);
            if token.is_empty() || !data.ends_with(&message(&token)) {
                let text = String::from_utf8_lossy(&data).into_owned();
                st.corrupt.lock().unwrap().push(text);
            }
            let got_data = Instant::now();
            let generation = st.generation.load(Ordering::SeqCst);
            st.inflight.fetch_add(1, Ordering::SeqCst);
            if rng.gen_range(0..100) < slow_percent {
                std::thread::sleep(Duration::from_millis(rng.gen_range(100..900)));
            }
            let ok = out.write_all(b"250 2.0.0 Ok: queued\r\n").is_ok();
            if ok {
                let copy = Copy {
                    got_data,
                    generation,
                };
                let mut acked = st.acked.lock().unwrap();
                for rc in rcpts.drain(..) {
                    acked.entry((token.clone(), rc)).or_default().push(copy);
                }
            }
            st.inflight.fetch_sub(1, Ordering::SeqCst);
            if !ok {
                return Ok(());
            }
        } else if text == "QUIT" {
            out.write_all(b"221 2.0.0 Bye\r\n")?;
            return Ok(());
        } else {
            // RSET, NOOP and anything else.
            rcpts.clear();
            out.write_all(b"250 2.0.0 Ok\r\n")?;
        }
    }
}

// ---------------------------------------------------------------------------
// The load: clients that survive the daemon's deaths.

#[derive(Default)]
struct LoadState {
    /// Clients between the two halves of a message body.
    in_data: AtomicUsize,
    /// Clients that sent the final dot and wait for the reply.
    awaiting_final: AtomicUsize,
    /// 250s received so far.
    acks: AtomicU64,
    /// (token, recipients, final reply or why there was none)
    outcomes: Mutex<Vec<(String, Vec<String>, String)>>,
}

struct SmtpConn {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl SmtpConn {
    fn open(port: u16) -> Option<SmtpConn> {
        let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        let mut c = SmtpConn {
            w: s.try_clone().ok()?,
            r: BufReader::new(s),
        };
        if !c.reply()?.starts_with("220") {
            return None;
        }
        c.cmd("EHLO load.test")
            .filter(|r| r.starts_with("250"))
            .map(|_| c)
    }

    fn reply(&mut self) -> Option<String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).ok()? == 0 {
                return None;
            }
            all.push_str(line.trim_end());
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Some(all);
            }
            all.push('\n');
        }
    }

    fn cmd(&mut self, line: &str) -> Option<String> {
        self.w.write_all(format!("{line}\r\n").as_bytes()).ok()?;
        self.reply()
    }
}

/// One transaction; `Err(why)` when the connection failed (no reply).
fn transaction(
    c: &mut SmtpConn,
    load: &LoadState,
    token: &str,
    rcpts: &[String],
    split: bool,
) -> Result<String, String> {
    let r = c
        .cmd("MAIL FROM:<load@sender.test>")
        .ok_or("MAIL: no reply")?;
    if !r.starts_with("250") {
        return Ok(r);
    }
    for rc in rcpts {
        let r = c.cmd(&format!("RCPT TO:<{rc}>")).ok_or("RCPT: no reply")?;
        if !r.starts_with("250") {
            c.cmd("RSET");
            return Ok(r);
        }
    }
    let r = c.cmd("DATA").ok_or("DATA: no reply")?;
    if !r.starts_with("354") {
        return Ok(r);
    }
    let mut data = dot_stuff(&message(token));
    data.extend_from_slice(b".\r\n");
    if split {
        // Half the body, a pause (the killer may strike now), the rest.
        let (a, b) = data.split_at(data.len() / 2);
        load.in_data.fetch_add(1, Ordering::SeqCst);
        let sent = c.w.write_all(a).is_ok();
        std::thread::sleep(Duration::from_millis(30));
        load.in_data.fetch_sub(1, Ordering::SeqCst);
        if !sent {
            return Err("lost during DATA".into());
        }
        c.w.write_all(b).map_err(|_| "lost during DATA")?;
    } else {
        c.w.write_all(&data).map_err(|_| "lost during DATA")?;
    }
    load.awaiting_final.fetch_add(1, Ordering::SeqCst);
    let r = c.reply();
    load.awaiting_final.fetch_sub(1, Ordering::SeqCst);
    let r = r.ok_or("no reply to the final dot")?;
    if r.starts_with("250") {
        load.acks.fetch_add(1, Ordering::SeqCst);
    }
    Ok(r)
}

/// Sends `count` messages, message `i` not before `start + i * interval`.
fn client(
    port: u16,
    load: Arc<LoadState>,
    id: usize,
    count: usize,
    (start, interval): (Instant, Duration),
    deadline: Instant,
) {
    let mut conn: Option<SmtpConn> = None;
    for i in 0..count {
        // Clients are spread over the interval, not in lockstep.
        let due = start + interval * i as u32 + interval * id as u32 / 20;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let rcpts: Vec<String> = if i % 4 == 0 {
            vec!["u@example.jp".into(), "v@example.net".into()]
        } else {
            vec!["u@example.jp".into()]
        };
        let mut attempt = 0;
        loop {
            assert!(
                Instant::now() < deadline,
                "client {id} could not send message {i} in time"
            );
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match SmtpConn::open(port) {
                    Some(c) => conn.insert(c),
                    None => {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                },
            };
            let token = format!("c{id}m{i}a{attempt}");
            attempt += 1;
            let res = transaction(c, &load, &token, &rcpts, (i + id) % 10 == 5);
            let (reply, done) = match res {
                Ok(r) => {
                    let done = r.starts_with("250");
                    (r, done)
                }
                Err(why) => {
                    conn = None;
                    (format!("<{why}>"), false)
                }
            };
            load.outcomes
                .lock()
                .unwrap()
                .push((token, rcpts.clone(), reply));
            if done {
                break;
            }
        }
    }
    if let Some(mut c) = conn {
        c.cmd("QUIT");
    }
}

// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Moment {
    /// Any moment.
    Random,
    /// Between the two halves of a message body.
    DuringData,
    /// Right after a client read its 250.
    AfterAck,
    /// While the primary holds a delivered message without answering.
    DuringDelivery,
    /// While two or more clients wait for the reply to their final dot (a
    /// group commit in progress).
    DuringCommit,
}

const MOMENTS: [Moment; 5] = [
    Moment::DuringData,
    Moment::AfterAck,
    Moment::DuringDelivery,
    Moment::DuringCommit,
    Moment::Random,
];

/// The primary, and mx2 relaying example.jp and example.net to it.
fn setup(slow_percent: u32) -> (Primary, Daemon) {
    let primary = Primary::start(slow_percent);
    let map = format!(
        "example.jp smtp:[127.0.0.1]:{p}\nexample.net smtp:[127.0.0.1]:{p}\n",
        p = primary.port
    );
    // `start` puts `extra` right after its [relay] keys; the clients and
    // the start-up probes all come from 127.0.0.1.
    let d = Daemon::start(
        &map,
        "",
        "command_timeout = \"10s\"\n[smtp]\nmax_connections_per_ip = 200\n",
    );
    (primary, d)
}

/// Starts `clients` senders of `total` messages paced over `seconds`;
/// returns the pacing start.
fn start_load(
    port: u16,
    load: &Arc<LoadState>,
    clients: usize,
    total: usize,
    seconds: u64,
) -> (Instant, Vec<std::thread::JoinHandle<()>>) {
    let deadline = Instant::now() + Duration::from_secs(600);
    let per_client = total.div_ceil(clients);
    let pace = (
        Instant::now(),
        Duration::from_millis(seconds * 1000 / per_client as u64),
    );
    let threads = (0..clients)
        .map(|id| {
            let load = load.clone();
            std::thread::spawn(move || client(port, load, id, per_client, pace, deadline))
        })
        .collect();
    (pace.0, threads)
}

/// What reached the primary, for the messages that got 250.
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    accepted: usize,
    /// Transactions without a 250, by what the client saw instead.
    refused: HashMap<String, usize>,
    /// ... and of those, delivered all the same (committed, 250 not seen).
    refused_delivered: usize,
    once: usize,
    twice: usize,
    more: usize,
    lost: Vec<String>,
    /// Copies not explained by a stop during their delivery.
    unexplained: Vec<String>,
    /// Recipients whose delivery mx2 recorded (logged `status=sent`) twice.
    recorded_twice: Vec<String>,
    /// Recipients of accepted messages, and how many of them were logged sent.
    recipients: usize,
    logged_sent: usize,
    /// Longest time from a repeated copy's data to the stop that cut it off.
    max_gap: Duration,
}

/// Waits for the queue to drain and every accepted message to arrive, then
/// counts copies. `stops` are the moments mx2 was killed or told to stop.
///
/// A copy more than one is explained when mx2 died between the primary's
/// 250 and its own commit of that result: then (1) mx2 never recorded that
/// recipient as sent twice (one `status=sent` log line at most, written
/// after the commit), and (2) the repeated copy reached the primary in an
/// earlier life of mx2 than the next copy (a kill or stop came between
/// them; never two copies in one life).
fn drain_and_tally(
    d: &Daemon,
    primary: &Primary,
    load: &LoadState,
    stops: &[Instant],
) -> (bool, Tally) {
    let outcomes = load.outcomes.lock().unwrap().clone();
    let accepted: Vec<&(String, Vec<String>, String)> =
        outcomes.iter().filter(|o| o.2.starts_with("250")).collect();
    let all_acked = || {
        let acked = primary.st.acked.lock().unwrap();
        accepted.iter().all(|(t, rcpts, _)| {
            rcpts
                .iter()
                .all(|r| acked.contains_key(&(t.clone(), r.clone())))
        })
    };
    let queue_empty = || {
        d.db()
            .query_row("SELECT count(*) FROM messages", [], |r| r.get::<_, i64>(0))
            .unwrap_or(-1)
            == 0
    };
    let drained = wait_for(120, || all_acked() && queue_empty());
    // Late duplicates, if any, would show up now.
    std::thread::sleep(Duration::from_millis(1500));

    let acked = primary.st.acked.lock().unwrap().clone();
    // (queue id, recipient) -> `status=sent` lines in the log of all lives.
    let mut sent_lines: HashMap<(String, String), usize> = HashMap::new();
    for line in d.log().lines().filter(|l| l.contains(" status=sent ")) {
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            if let Some(id) = w.strip_suffix(':') {
                if let Some(rc) = words
                    .next()
                    .and_then(|n| n.strip_prefix("to=<"))
                    .and_then(|n| n.strip_suffix('>'))
                {
                    *sent_lines
                        .entry((id.to_string(), rc.to_string()))
                        .or_default() += 1;
                }
                break;
            }
        }
    }
    let mut t = Tally {
        sent: outcomes.len(),
        accepted: accepted.len(),
        ..Tally::default()
    };
    for (token, rcpts, reply) in &accepted {
        let id = reply.rsplit(' ').next().unwrap_or("").to_string();
        let mut copies = Vec::new();
        for r in rcpts {
            let mut got = acked
                .get(&(token.clone(), r.clone()))
                .cloned()
                .unwrap_or_default();
            got.sort();
            let logged = sent_lines
                .get(&(id.clone(), r.clone()))
                .copied()
                .unwrap_or(0);
            t.recipients += 1;
            t.logged_sent += usize::from(logged > 0);
            if logged > 1 {
                t.recorded_twice.push(format!("{id} ({token}) to {r}"));
            }
            for pair in got.windows(2) {
                if pair[0].generation >= pair[1].generation {
                    t.unexplained.push(format!(
                        "{token} to {r}: {} copies, two in life {}",
                        got.len(),
                        pair[0].generation
                    ));
                }
                if let Some(k) = stops.iter().find(|&&k| k >= pair[0].got_data) {
                    t.max_gap = t.max_gap.max(*k - pair[0].got_data);
                }
            }
            copies.push(got.len());
        }
        match (copies.iter().min(), copies.iter().max()) {
            (Some(0), _) | (None, _) => t.lost.push(token.clone()),
            (_, Some(1)) => t.once += 1,
            (_, Some(2)) => t.twice += 1,
            _ => t.more += 1,
        }
    }
    for (token, rcpts, reply) in outcomes.iter().filter(|o| !o.2.starts_with("250")) {
        let key = if reply.starts_with('<') {
            reply.clone()
        } else {
            reply.chars().take(9).collect()
        };
        *t.refused.entry(key).or_default() += 1;
        if rcpts
            .iter()
            .any(|r| acked.contains_key(&(token.clone(), r.clone())))
        {
            t.refused_delivered += 1;
        }
    }
    (drained, t)
}

/// The end state every run must reach.
fn assert_sound(d: &Daemon, primary: &Primary, drained: bool, t: &Tally, expected: usize) {
    assert!(
        drained,
        "the queue did not drain or mail is missing at the primary; lost so far: {:?}\n{}",
        &t.lost[..t.lost.len().min(20)],
        tail(&d.log())
    );
    assert_eq!(t.accepted, expected, "every message got its 250 in the end");
    assert!(t.lost.is_empty(), "lost after 250: {:?}", t.lost);
    // The log check below means something only if the lines are there
    // (a kill between a commit and its log line may drop a few).
    assert!(
        t.logged_sent * 10 >= t.recipients * 9,
        "only {} of {} deliveries logged `status=sent`",
        t.logged_sent,
        t.recipients
    );
    assert!(
        t.recorded_twice.is_empty(),
        "mx2 recorded a delivery twice: {:?}",
        t.recorded_twice
    );
    assert!(
        t.unexplained.is_empty(),
        "copies not explained by a stop during their delivery: {:?}",
        t.unexplained
    );
    let corrupt = primary.st.corrupt.lock().unwrap();
    assert!(
        corrupt.is_empty(),
        "corrupted at the primary: {:?}",
        &corrupt[..1]
    );
    let db = d.db();
    let active: i64 = db
        .query_row(
            "SELECT count(*) FROM recipients WHERE status = 'active'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(active, 0, "a lease is stuck");
    let integrity: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}

#[test]
fn kill9_under_load_loses_nothing() {
    let total = env_usize("MX2_CRASH_MESSAGES", 2000);
    let kills = env_usize("MX2_CRASH_KILLS", 20);
    let clients = env_usize("MX2_CRASH_CLIENTS", 20);
    // The load is paced to last this long, so the kills fall within it.
    let seconds = env_usize("MX2_CRASH_SECONDS", 20) as u64;
    let seed = std::env::var("MX2_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen::<u64>());
    let started = Instant::now();
    let (primary, mut d) = setup(10);
    let load = Arc::new(LoadState::default());
    let (t0, threads) = start_load(d.port, &load, clients, total, seconds);

    // The killer.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut peak_hwm = 0u64;
    let mut hits: HashMap<String, (usize, usize)> = HashMap::new();
    let mut downtime = Duration::ZERO;
    let mut stops: Vec<Instant> = Vec::new();
    let slot = Duration::from_millis(seconds * 1000 / kills.max(1) as u64);
    for k in 0..kills {
        // One kill in each slot of the load's duration, at a random point.
        let at = t0 + slot * k as u32 + slot.mul_f64(rng.gen_range(0.1..0.7));
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let moment = MOMENTS[k % MOMENTS.len()];
        let acks = load.acks.load(Ordering::SeqCst);
        let wait_until = Instant::now() + slot.mul_f64(0.3);
        let mut met = false;
        while Instant::now() < wait_until {
            met = match moment {
                Moment::Random => true,
                Moment::DuringData => load.in_data.load(Ordering::SeqCst) > 0,
                Moment::AfterAck => load.acks.load(Ordering::SeqCst) > acks,
                Moment::DuringDelivery => primary.st.inflight.load(Ordering::SeqCst) > 0,
                Moment::DuringCommit => load.awaiting_final.load(Ordering::SeqCst) >= 2,
            };
            if met {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        if let Some((_, hwm)) = d.memory_kb() {
            peak_hwm = peak_hwm.max(hwm);
        }
        stops.push(Instant::now());
        d.kill9();
        primary.st.generation.fetch_add(1, Ordering::SeqCst);
        let e = hits.entry(format!("{moment:?}")).or_default();
        e.0 += 1;
        e.1 += usize::from(met);
        let down = Instant::now();
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..200)));
        d.spawn();
        downtime += down.elapsed();
    }
    for t in threads {
        t.join().expect("client thread");
    }
    let sent_done = started.elapsed();
    let (drained, t) = drain_and_tally(&d, &primary, &load, &stops);
    if let Some((_, hwm)) = d.memory_kb() {
        peak_hwm = peak_hwm.max(hwm);
    }
    eprintln!(
        "kill -9 test (seed {seed}): {clients} clients, {} transactions sent, {} got 250, {} without 250 ({:?}), of which {} delivered anyway; \
         {kills} kills (moment: [tries, condition met] {hits:?}), downtime {downtime:?}; \
         delivered once {}, twice {}, more {}, lost {}; {} of {} deliveries logged sent; longest from a repeated copy's data to its kill {:?}; \
         primary transactions {}; sending took {sent_done:?}, total {:?}; peak VmHWM {peak_hwm} kB",
        t.sent,
        t.accepted,
        t.sent - t.accepted,
        t.refused,
        t.refused_delivered,
        t.once,
        t.twice,
        t.more,
        t.lost.len(),
        t.logged_sent,
        t.recipients,
        t.max_gap,
        primary.st.received.load(Ordering::SeqCst),
        started.elapsed(),
    );
    assert_sound(&d, &primary, drained, &t, total.div_ceil(clients) * clients);
    assert!(
        hits.values().map(|h| h.1).sum::<usize>() * 2 >= kills,
        "most kills should hit their intended moment: {hits:?}"
    );
}

#[test]
fn sigterm_under_load_loses_nothing_and_leaves_no_lease() {
    let clients = 20;
    let total = 600;
    let started = Instant::now();
    // A slower primary: deliveries are in flight when SIGTERM comes.
    let (primary, mut d) = setup(30);
    let load = Arc::new(LoadState::default());
    let (_, threads) = start_load(d.port, &load, clients, total, 6);
    std::thread::sleep(Duration::from_secs(2));
    let sent_before = load.acks.load(Ordering::SeqCst);
    let inflight = primary.st.inflight.load(Ordering::SeqCst);
    let term = Instant::now();
    let code = d.terminate();
    let exited = Instant::now();
    primary.st.generation.fetch_add(1, Ordering::SeqCst);
    assert_eq!(code, Some(0), "graceful stop exits 0\n{}", tail(&d.log()));
    // Stopped: leases of deliveries cut short are still marked; the next
    // start must hand them out again.
    let active_at_exit: i64 = d
        .db()
        .query_row(
            "SELECT count(*) FROM recipients WHERE status = 'active'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let queued_at_exit: i64 = d
        .db()
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    d.spawn();
    for t in threads {
        t.join().expect("client thread");
    }
    let (drained, t) = drain_and_tally(&d, &primary, &load, &[term]);
    eprintln!(
        "SIGTERM test: {} acks before the signal, {inflight} deliveries in flight at the signal, stop took {:?}; \
         at exit {queued_at_exit} messages queued, {active_at_exit} recipients still marked active; \
         {} transactions sent, {} got 250, without 250: {:?} (delivered anyway {}); \
         delivered once {}, twice {}, more {}, lost {}; longest from a repeated copy's data to the signal {:?}; total {:?}",
        sent_before,
        exited - term,
        t.sent,
        t.accepted,
        t.refused,
        t.refused_delivered,
        t.once,
        t.twice,
        t.more,
        t.lost.len(),
        t.max_gap,
        started.elapsed()
    );
    let log = d.log();
    assert!(
        log.contains("stopping: no new connections"),
        "{}",
        tail(&log)
    );
    assert_sound(&d, &primary, drained, &t, total);
    if active_at_exit > 0 {
        assert!(
            log.contains("deliveries interrupted by a stop are due again now"),
            "{}",
            tail(&log)
        );
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
