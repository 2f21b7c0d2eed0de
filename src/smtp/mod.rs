//! The inbound SMTP server: listeners, connection limits, graceful stop.
//!
//! - `conn`: buffered I/O over plain or TLS streams.
//! - `command`: command-line parsing; `address`: envelope addresses and relay control.
//! - `data`: the DATA reader (dot-unstuffing, smuggling-safe line endings, size limit).
//! - `session`: the per-connection command loop.
//! - `received`: the trace header; `tls`: STARTTLS certificates.
//! - `limits`: who counts as one client (IPv6 by prefix), connection
//!   counts, the ETRN rate.

pub mod address;
pub mod command;
pub mod conn;
pub mod data;
pub mod limits;
pub mod received;
pub mod session;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::tables::Tables;

/// State every session shares.
pub struct Shared {
    pub cfg: Arc<Config>,
    pub tables: Arc<Tables>,
    pub pipeline: Pipeline,
    pub verifier: Arc<crate::recipients::Verifier>,
    tls: RwLock<Option<TlsAcceptor>>,
    pub shutdown: watch::Receiver<bool>,
    pub greet_pause: Duration,
    clients: Mutex<limits::Counter>,
    pub etrn: Mutex<limits::EtrnGate>,
}

impl Shared {
    pub fn new(
        cfg: Arc<Config>,
        tables: Arc<Tables>,
        pipeline: Pipeline,
        verifier: Arc<crate::recipients::Verifier>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Shared> {
        let tls = load_tls(&cfg)?;
        Ok(Shared {
            cfg,
            tables,
            pipeline,
            verifier,
            tls: RwLock::new(tls),
            shutdown,
            greet_pause: Duration::from_millis(200),
            clients: Mutex::new(limits::Counter::default()),
            etrn: Mutex::new(limits::EtrnGate::default()),
        })
    }

    pub fn tls_acceptor(&self) -> Option<TlsAcceptor> {
        self.tls.read().ok().and_then(|g| g.clone())
    }

    /// Re-reads the certificate (SIGHUP); a broken one keeps the old.
    pub fn reload_tls(&self) {
        match load_tls(&self.cfg) {
            Ok(t) => {
                if let Ok(mut g) = self.tls.write() {
                    *g = t;
                }
            }
            Err(e) => tracing::error!("TLS certificate not reloaded, previous kept: {e:#}"),
        }
    }

    /// Open sessions right now.
    pub fn connections(&self) -> usize {
        self.clients.lock().map(|g| g.total()).unwrap_or(0)
    }
}

fn load_tls(cfg: &Config) -> Result<Option<TlsAcceptor>> {
    match (&cfg.smtp.tls_cert, &cfg.smtp.tls_key) {
        (Some(c), Some(k)) => Ok(Some(tls::acceptor(c, k)?)),
        _ => Ok(None),
    }
}

/// Releases a connection slot when the session ends, however it ends.
struct Slot {
    shared: Arc<Shared>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut c) = self.shared.clients.lock() {
            c.release(self.key);
        }
        crate::metrics::get().connections.dec();
    }
}

/// Binds every `[smtp] listen` address (fails fast, naming the address).
pub fn bind(cfg: &Config) -> Result<Vec<TcpListener>> {
    use socket2::{Domain, Socket, Type};
    let mut out = Vec::new();
    for l in &cfg.smtp.listen {
        let addr: SocketAddr = l.parse().with_context(|| format!("listen address {l}"))?;
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)
            .with_context(|| format!("socket for {addr}"))?;
        sock.set_reuse_address(true)?;
        if addr.is_ipv6() {
            // So "[::]:25" and "0.0.0.0:25" can be listed side by side.
            sock.set_only_v6(true)?;
        }
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())
            .with_context(|| format!("cannot listen on {addr}"))?;
        sock.listen(1024)
            .with_context(|| format!("cannot listen on {addr}"))?;
        let std_listener: std::net::TcpListener = sock.into();
        out.push(TcpListener::from_std(std_listener).with_context(|| format!("listener {addr}"))?);
    }
    Ok(out)
}

/// Accepts connections; each session runs in its own task. After shutdown
/// begins, new connections are told `421` (instead of being refused by the
/// kernel) until the process exits.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if *shared.shutdown.borrow() {
            tokio::spawn(async move {
                let mut c = conn::Conn::new(tcp, Duration::from_secs(5));
                c.close_with("421 4.3.2 Service shutting down, try again later")
                    .await;
            });
            continue;
        }
        let ip = canonical_ip(peer.ip());
        let verdict = admit(&shared, ip);
        let shared2 = shared.clone();
        tokio::spawn(async move {
            match verdict {
                Ok(slot) => {
                    session::run(shared2, tcp, peer).await;
                    drop(slot);
                }
                Err(reply) => {
                    let mut c = conn::Conn::new(tcp, Duration::from_secs(10));
                    tracing::info!("refused connection from [{ip}]: {reply}");
                    c.close_with(reply).await;
                }
            }
        });
    }
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Takes a connection slot or says why not (SPEC §5 codes). IPv6
/// clients count per `ipv6_prefix` (see `limits`).
fn admit(shared: &Arc<Shared>, ip: IpAddr) -> Result<Slot, &'static str> {
    let cfg = &shared.cfg.smtp;
    let key = limits::client_key(ip, cfg.ipv6_prefix);
    shared
        .clients
        .lock()
        .map_err(|_| "421 4.3.2 Service not available")?
        .admit(key, cfg.max_connections, cfg.max_connections_per_ip)?;
    let m = crate::metrics::get();
    m.connections.inc();
    m.connections_total.inc();
    Ok(Slot {
        shared: shared.clone(),
        key,
    })
}
