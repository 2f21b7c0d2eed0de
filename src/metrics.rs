//! Prometheus metrics (`[metrics] listen` → `GET /metrics`, SPEC §7).
//!
//! Counters and histograms live in one process-wide registry: like a
//! Prometheus client library's default registry, every part of the daemon
//! counts into it without threading a handle through every call. Queue
//! gauges are read from the database at scrape time, so they can't drift
//! from what `mx2 queue stats` says.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::queue::Queue;

/// A monotonically increasing count.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (open connections).
#[derive(Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(1))
            });
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Seconds-valued histogram with fixed buckets.
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in microseconds (atomics have no f64 add).
    sum_us: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in self.bounds.iter().enumerate() {
            if s <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            d.as_micros().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in self.bounds.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Every counter mx2 exports.
pub struct Metrics {
    pub accepted: Counter,
    pub discarded: Counter,
    pub rejected: Counter,
    pub held: Counter,
    /// RCPTs refused as unknown recipients (static list or callout).
    pub recipients_rejected: Counter,
    pub delivered: Counter,
    pub deferred: Counter,
    pub bounced: Counter,
    pub connections: Gauge,
    pub connections_total: Counter,
    /// One delivery attempt (connect to end of DATA).
    pub delivery_seconds: Histogram,
    /// Arrival to delivery of a recipient.
    pub residence_seconds: Histogram,
    /// Final dot received → reply sent (scanning, rules, durable commit).
    pub accept_seconds: Histogram,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process-wide registry.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics {
        accepted: Counter::default(),
        discarded: Counter::default(),
        rejected: Counter::default(),
        held: Counter::default(),
        recipients_rejected: Counter::default(),
        delivered: Counter::default(),
        deferred: Counter::default(),
        bounced: Counter::default(),
        connections: Gauge::default(),
        connections_total: Counter::default(),
        delivery_seconds: Histogram::new(&[
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ]),
        residence_seconds: Histogram::new(&[
            0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0, 86400.0, 432000.0,
        ]),
        accept_seconds: Histogram::new(&[
            0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
        ]),
    })
}

/// The exposition text: counters plus queue gauges read from `conn`.
pub fn render(conn: &rusqlite::Connection) -> Result<String> {
    let m = get();
    let mut out = String::new();
    let counters: [(&str, &str, &Counter); 9] = [
        (
            "mx2_recipients_rejected_total",
            "RCPTs refused as unknown recipients (list or callout).",
            &m.recipients_rejected,
        ),
        (
            "mx2_messages_accepted_total",
            "Messages accepted and queued (250 after commit).",
            &m.accepted,
        ),
        (
            "mx2_messages_discarded_total",
            "Messages dropped by DISCARD rules or scanners (client got 250).",
            &m.discarded,
        ),
        (
            "mx2_messages_rejected_total",
            "Messages refused after DATA (rules, scanners, limits).",
            &m.rejected,
        ),
        (
            "mx2_messages_held_total",
            "Messages queued held (HOLD, quarantine).",
            &m.held,
        ),
        (
            "mx2_recipients_delivered_total",
            "Recipients accepted by a primary.",
            &m.delivered,
        ),
        (
            "mx2_recipients_deferred_total",
            "Delivery attempts that ended in a deferral.",
            &m.deferred,
        ),
        (
            "mx2_recipients_bounced_total",
            "Recipients bounced (5xx or expiry).",
            &m.bounced,
        ),
        (
            "mx2_connections_total",
            "SMTP connections accepted.",
            &m.connections_total,
        ),
    ];
    for (name, help, c) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            c.get()
        );
    }
    let _ = writeln!(
        out,
        "# HELP mx2_connections Open SMTP sessions.\n# TYPE mx2_connections gauge\nmx2_connections {}",
        m.connections.get()
    );
    m.delivery_seconds.render(
        &mut out,
        "mx2_delivery_seconds",
        "Duration of one delivery attempt to a primary.",
    );
    m.residence_seconds.render(
        &mut out,
        "mx2_queue_residence_seconds",
        "Time from arrival to delivery of a recipient.",
    );
    m.accept_seconds.render(
        &mut out,
        "mx2_accept_seconds",
        "From the final dot to the reply (scanning, rules, durable commit).",
    );

    // Queue gauges, by state.
    let _ = writeln!(
        out,
        "# HELP mx2_queue_messages Queued messages by state.\n# TYPE mx2_queue_messages gauge"
    );
    let mut bytes_lines = String::new();
    let mut st = conn.prepare(
        "SELECT CASE WHEN m.held THEN 'held'
                     WHEN EXISTS (SELECT 1 FROM recipients r WHERE r.msg_id = m.id AND r.status = 'active') THEN 'active'
                     WHEN EXISTS (SELECT 1 FROM recipients r WHERE r.msg_id = m.id AND r.status = 'deferred') THEN 'deferred'
                     ELSE 'queued' END AS state, count(*), COALESCE(sum(m.size), 0)
         FROM messages m GROUP BY state",
    )?;
    let mut seen = std::collections::BTreeMap::new();
    for row in st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })? {
        let (state, n, b) = row?;
        seen.insert(state, (n, b));
    }
    for state in ["queued", "active", "deferred", "held"] {
        let (n, b) = seen.get(state).copied().unwrap_or((0, 0));
        let _ = writeln!(out, "mx2_queue_messages{{state=\"{state}\"}} {n}");
        let _ = writeln!(bytes_lines, "mx2_queue_bytes{{state=\"{state}\"}} {b}");
    }
    let _ = writeln!(
        out,
        "# HELP mx2_queue_bytes Queued message bytes by state.\n# TYPE mx2_queue_bytes gauge"
    );
    out.push_str(&bytes_lines);
    let _ = writeln!(out, "# HELP mx2_queue_deferred_recipients Deferred recipients per domain.\n# TYPE mx2_queue_deferred_recipients gauge");
    let mut st = conn.prepare(
        "SELECT domain, count(*) FROM recipients WHERE status = 'deferred' GROUP BY domain ORDER BY domain",
    )?;
    for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (d, n) = row?;
        let d = d.replace(['"', '\\', '\n'], "_");
        let _ = writeln!(out, "mx2_queue_deferred_recipients{{domain=\"{d}\"}} {n}");
    }
    Ok(out)
}

/// Serves `GET /metrics` on `addr` (plain HTTP/1.0, one response per connection).
pub async fn serve(addr: &str, queue: Queue) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    tracing::info!("metrics on http://{addr}/metrics");
    tokio::spawn(async move {
        let _critical = crate::supervise::critical("metrics listener");
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                let n = match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let req = String::from_utf8_lossy(&buf[..n]);
                let path = req.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = if path == "/metrics" {
                    let q = queue.clone();
                    match tokio::task::spawn_blocking(move || q.reader().and_then(|c| render(&c)))
                        .await
                    {
                        Ok(Ok(b)) => ("200 OK", b),
                        Ok(Err(e)) => ("500 Internal Server Error", format!("{e:#}\n")),
                        Err(e) => ("500 Internal Server Error", format!("{e}\n")),
                    }
                } else {
                    ("404 Not Found", "try /metrics\n".to_string())
                };
                let resp = format!(
                    "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(())
}
