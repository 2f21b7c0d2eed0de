//! `mx2 serve`: wires the parts together and runs until SIGTERM.
//!
//! Startup order: config → tables → queue (crash recovery) → relay →
//! listeners. SIGHUP reloads tables and certificates; SIGTERM stops the
//! listeners, lets sessions finish (up to a deadline), and exits 0.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::queue::Queue;
use crate::recipients::{CacheWriter, Verifier};
use crate::scan::Scanners;
use crate::smtp;
use crate::tables::Tables;

/// How long sessions may take to finish after SIGTERM.
const DRAIN_DEADLINE: Duration = Duration::from_secs(20);

pub fn run(cfg: Config) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(main(cfg))
}

async fn main(cfg: Config) -> Result<i32> {
    if !cfg.serve_errors.is_empty() {
        anyhow::bail!("{}", cfg.serve_errors.join("\n"));
    }
    let cfg = Arc::new(cfg);
    // Before anything else touches the queue: one daemon per queue.
    let lock = crate::queue::lock::acquire(&cfg.queue.path)?;
    let mut lost = crate::supervise::install();
    for w in &cfg.warnings {
        tracing::warn!("config: {w}");
    }
    let tables = Arc::new(Tables::load(&cfg)?);
    let queue = Queue::open(&cfg.queue.path, lock)?;
    let (stop_tx, stop_rx) = watch::channel(false);

    let listeners = smtp::bind(&cfg)?;
    let scanners = Scanners::from_config(&cfg)?;
    if !scanners.is_empty() {
        tracing::info!("scanners: {}", scanners.describe());
    }
    let pipeline = Pipeline {
        tables: tables.clone(),
        queue: queue.clone(),
        scanners,
        header_size_limit: cfg.smtp.header_size_limit,
    };
    let verifier = Arc::new(Verifier::new(
        cfg.clone(),
        tables.clone(),
        CacheWriter::Queue(queue.clone()),
    )?);
    let v = verifier.clone();
    tokio::spawn(async move {
        let _critical = crate::supervise::critical("recipient list watcher");
        v.watch().await
    });
    let shared = Arc::new(smtp::Shared::new(
        cfg.clone(),
        tables.clone(),
        pipeline,
        verifier,
        stop_rx.clone(),
    )?);

    let t = tables.clone();
    tokio::spawn(async move {
        let _critical = crate::supervise::critical("table watcher");
        t.watch().await
    });
    crate::control::start(&cfg.control.socket, queue.clone(), tables.clone())?;
    if let Some(addr) = &cfg.metrics.listen {
        crate::metrics::serve(addr, queue.clone()).await?;
    }
    let relay = crate::relay::start(cfg.clone(), tables.clone(), queue.clone(), stop_rx.clone())?;

    let mut servers = Vec::new();
    for l in listeners {
        if let Ok(a) = l.local_addr() {
            tracing::info!("listening on {a}");
        }
        let s = shared.clone();
        servers.push(tokio::spawn(async move {
            let _critical = crate::supervise::critical("SMTP listener");
            smtp::serve(l, s).await
        }));
    }
    tracing::info!(
        "mx2 started: hostname={} queue={} transport_map={} header_checks={}",
        cfg.hostname,
        cfg.queue.path.display(),
        cfg.relay.transport_map.path.display(),
        crate::tables::describe_rules(&cfg.relay.header_checks, &tables.rules())
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut exit = 0;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            Some(what) = lost.recv() => {
                tracing::error!("fatal: {what} unexpectedly; stopping so that the service manager restarts mx2");
                exit = 1;
                break;
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading tables and certificates");
                let t = tables.clone();
                let _ = tokio::task::spawn_blocking(move || t.reload(true)).await;
                shared.reload_tls();
            }
        }
    }
    tracing::info!("stopping: no new connections, finishing sessions");
    let _ = stop_tx.send(true);
    let stopped_at = tokio::time::Instant::now();
    let deadline = stopped_at + DRAIN_DEADLINE;
    while shared.connections() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Deliveries on the wire finish and are recorded, up to stop_timeout
    // from the stop; jobs not yet started were left at once. Whatever is
    // still leased after that is handed back to the queue, so a stopped
    // mx2 leaves no recipient marked as being delivered (a delivery cut
    // by the deadline may be sent again: docs/reliability.md).
    let deadline = stopped_at + cfg.relay.stop_timeout;
    while relay.busy() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if relay.busy() > 0 {
        tracing::warn!(
            "stopping: deliveries still under way after stop_timeout ({} s) are cut; they are due again at the next start",
            cfg.relay.stop_timeout.as_secs()
        );
    }
    match queue.write(crate::queue::admin::release_leases).await {
        Ok(0) => {}
        Ok(n) => tracing::info!("{n} recipients whose delivery was cut short are due again"),
        Err(e) => tracing::error!("could not release delivery leases: {e:#}"),
    }
    for s in servers {
        s.abort();
    }
    tracing::info!("stopped");
    Ok(exit)
}
