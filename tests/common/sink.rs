//! An in-test SMTP sink playing the primary: std threads, loopback only.
//!
//! - Answers per recipient as configured (`set_rcpt_reply`), 250 by default.
//! - Can be `down()` (port closed, open sessions cut) and `up()` again on
//!   the same port.
//! - Records every transaction: MAIL FROM argument (with parameters), each
//!   RCPT line and the accepted recipients, and the DATA bytes exactly as
//!   the client meant them (dot-stuffing removed, terminator not included).
//! - Speaks EHLO with PIPELINING, SIZE, 8BITMIME, DSN, SMTPUTF8,
//!   ENHANCEDSTATUSCODES; optionally STARTTLS that always fails (to test
//!   fallback), and a mode that stalls after the final dot (to test crashes
//!   in the middle of a delivery).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One SMTP transaction as the sink saw it.
#[derive(Debug, Clone, Default)]
pub struct Txn {
    /// What followed `MAIL FROM:` (address in brackets and parameters).
    pub mail_from: String,
    /// Every RCPT argument, accepted or not.
    pub rcpt_lines: Vec<String>,
    /// Addresses accepted (2xx), without brackets.
    pub rcpts: Vec<String>,
    /// The message, un-dot-stuffed, without the `.` line.
    pub data: Vec<u8>,
    /// The transaction ran inside TLS (after STARTTLS).
    pub tls: bool,
}

impl Txn {
    /// The sender address (without brackets and parameters).
    pub fn sender(&self) -> String {
        address(&self.mail_from)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

#[derive(Debug, Clone)]
struct Config {
    rcpt_replies: HashMap<String, String>,
    data_reply: Option<String>,
    stall_after_data: bool,
    hold_after_data: bool,
    broken_starttls: bool,
    dsn: bool,
    pipelining: bool,
    /// Real STARTTLS with this server config (`set_tls`).
    tls: Option<Arc<rustls::ServerConfig>>,
}

struct Inner {
    port: u16,
    up: AtomicBool,
    shutdown: AtomicBool,
    cfg: Mutex<Config>,
    txns: Mutex<Vec<Txn>>,
    streams: Mutex<Vec<TcpStream>>,
    connections: AtomicUsize,
    concurrent: AtomicUsize,
    max_concurrent: AtomicUsize,
    queued: AtomicUsize,
}

/// The sink; stops its threads when dropped.
pub struct Sink {
    pub port: u16,
    inner: Arc<Inner>,
    acceptor: Option<JoinHandle<()>>,
}

impl Sink {
    /// A sink accepting connections now.
    pub fn start() -> Sink {
        Self::new(true)
    }

    /// A sink whose port is reserved but closed (the primary is down).
    pub fn start_down() -> Sink {
        Self::new(false)
    }

    fn new(up: bool) -> Sink {
        let port = super::free_port();
        let inner = Arc::new(Inner {
            port,
            up: AtomicBool::new(up),
            shutdown: AtomicBool::new(false),
            cfg: Mutex::new(Config {
                rcpt_replies: HashMap::new(),
                data_reply: None,
                stall_after_data: false,
                hold_after_data: false,
                broken_starttls: false,
                dsn: true,
                pipelining: true,
                tls: None,
            }),
            txns: Mutex::new(Vec::new()),
            streams: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            concurrent: AtomicUsize::new(0),
            max_concurrent: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
        });
        let i = inner.clone();
        let acceptor = std::thread::spawn(move || accept_loop(i));
        let s = Sink {
            port,
            inner,
            acceptor: Some(acceptor),
        };
        if up {
            s.wait_listening(true);
        }
        s
    }

    /// Closes the port and cuts every open session.
    pub fn down(&self) {
        self.inner.up.store(false, Ordering::SeqCst);
        for s in self.inner.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.wait_listening(false);
    }

    /// Opens the port again.
    pub fn up(&self) {
        self.inner.up.store(true, Ordering::SeqCst);
        self.wait_listening(true);
    }

    fn wait_listening(&self, want: bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "sink on port {} did not become {}",
            self.port,
            if want { "up" } else { "down" }
        );
    }

    /// Sets the reply to `RCPT TO:<addr>` (e.g. `451 4.3.0 Try later`); `None` = 250.
    pub fn set_rcpt_reply(&self, addr: &str, reply: Option<&str>) {
        let mut c = self.inner.cfg.lock().unwrap();
        match reply {
            Some(r) => c
                .rcpt_replies
                .insert(addr.to_ascii_lowercase(), r.to_string()),
            None => c.rcpt_replies.remove(&addr.to_ascii_lowercase()),
        };
    }

    /// Sets the reply to the final dot; `None` = `250 2.0.0 Ok: queued as N`.
    pub fn set_data_reply(&self, reply: Option<&str>) {
        self.inner.cfg.lock().unwrap().data_reply = reply.map(str::to_string);
    }

    /// After the final dot: record the message, then say nothing while set.
    /// While on, the reply to a final dot waits (then comes as usual).
    pub fn set_hold(&self, on: bool) {
        self.inner.cfg.lock().unwrap().hold_after_data = on;
    }

    pub fn set_stall(&self, on: bool) {
        self.inner.cfg.lock().unwrap().stall_after_data = on;
    }

    /// Advertise STARTTLS, and fail every handshake.
    pub fn set_broken_starttls(&self, on: bool) {
        self.inner.cfg.lock().unwrap().broken_starttls = on;
    }

    /// Offer STARTTLS and really do it, with this certificate chain and
    /// key (PEM files).
    pub fn set_tls(&self, cert: &str, key: &str) {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .expect("cert file")
            .map(|c| c.expect("cert"))
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).expect("key file");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        self.inner.cfg.lock().unwrap().tls = Some(Arc::new(cfg));
    }

    /// Advertise DSN (default on).
    pub fn set_dsn(&self, on: bool) {
        self.inner.cfg.lock().unwrap().dsn = on;
    }

    /// Advertise PIPELINING (default on).
    pub fn set_pipelining(&self, on: bool) {
        self.inner.cfg.lock().unwrap().pipelining = on;
    }

    /// Every completed transaction so far.
    pub fn txns(&self) -> Vec<Txn> {
        self.inner.txns.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.inner.txns.lock().unwrap().len()
    }

    /// Transactions that delivered to `addr`.
    pub fn to(&self, addr: &str) -> Vec<Txn> {
        self.txns()
            .into_iter()
            .filter(|t| t.rcpts.iter().any(|r| r.eq_ignore_ascii_case(addr)))
            .collect()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::SeqCst)
    }

    /// Most sessions open at the same time.
    pub fn max_concurrent(&self) -> usize {
        self.inner.max_concurrent.load(Ordering::SeqCst)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        self.inner.up.store(false, Ordering::SeqCst);
        for s in self.inner.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(inner: Arc<Inner>) {
    let mut listener: Option<TcpListener> = None;
    while !inner.shutdown.load(Ordering::SeqCst) {
        let want = inner.up.load(Ordering::SeqCst);
        if want && listener.is_none() {
            match TcpListener::bind(("127.0.0.1", inner.port)) {
                Ok(l) => {
                    let _ = l.set_nonblocking(true);
                    listener = Some(l);
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        if !want && listener.is_some() {
            listener = None;
        }
        let Some(l) = &listener else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        match l.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                if let Ok(c) = stream.try_clone() {
                    inner.streams.lock().unwrap().push(c);
                }
                inner.connections.fetch_add(1, Ordering::SeqCst);
                let now = inner.concurrent.fetch_add(1, Ordering::SeqCst) + 1;
                inner.max_concurrent.fetch_max(now, Ordering::SeqCst);
                let i = inner.clone();
                std::thread::spawn(move || {
                    let _ = session(&i, stream);
                    i.concurrent.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn address(arg: &str) -> String {
    let a = arg.trim();
    match (a.find('<'), a.find('>')) {
        (Some(s), Some(e)) if s < e => a[s + 1..e].to_string(),
        _ => a.split_whitespace().next().unwrap_or("").to_string(),
    }
}

/// A session's byte stream: the TCP connection, or TLS over it.
trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

fn send(r: &mut BufReader<Box<dyn Io>>, bytes: &[u8]) -> std::io::Result<()> {
    r.get_mut().write_all(bytes)?;
    r.get_mut().flush()
}

fn session(inner: &Inner, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut r: BufReader<Box<dyn Io>> = BufReader::new(Box::new(stream));
    let mut tls = false;
    send(&mut r, b"220 sink.test ESMTP test sink\r\n")?;
    let mut txn = Txn::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let upper = text.to_ascii_uppercase();
        let cfg = inner.cfg.lock().unwrap().clone();
        if upper.starts_with("EHLO") {
            let mut caps = vec!["sink.test"];
            if cfg.pipelining {
                caps.push("PIPELINING");
            }
            caps.extend(["SIZE 100000000", "8BITMIME"]);
            if cfg.dsn {
                caps.push("DSN");
            }
            if cfg.broken_starttls || (cfg.tls.is_some() && !tls) {
                caps.push("STARTTLS");
            }
            caps.extend(["SMTPUTF8", "ENHANCEDSTATUSCODES"]);
            let mut reply = String::new();
            for (i, c) in caps.iter().enumerate() {
                let sep = if i + 1 == caps.len() { ' ' } else { '-' };
                reply.push_str(&format!("250{sep}{c}\r\n"));
            }
            send(&mut r, reply.as_bytes())?;
        } else if upper.starts_with("HELO") {
            send(&mut r, b"250 sink.test\r\n")?;
        } else if upper == "STARTTLS" && !tls && !cfg.broken_starttls && cfg.tls.is_some() {
            send(&mut r, b"220 2.0.0 Ready to start TLS\r\n")?;
            let Some(server) = cfg.tls.clone() else {
                return Ok(());
            };
            // Plaintext pipelined behind STARTTLS is dropped with the buffer.
            let plain = r.into_inner();
            let conn = rustls::ServerConnection::new(server).map_err(std::io::Error::other)?;
            r = BufReader::new(Box::new(rustls::StreamOwned::new(conn, plain)));
            tls = true;
            txn = Txn::default();
        } else if upper == "STARTTLS" {
            send(&mut r, b"220 2.0.0 Ready to start TLS\r\n")?;
            // Read the ClientHello, answer nonsense, hang up: a failed handshake.
            let mut junk = [0u8; 512];
            let _ = std::io::Read::read(&mut r, &mut junk);
            let _ = send(&mut r, b"this is not TLS\r\n");
            return Ok(());
        } else if upper.starts_with("MAIL FROM:") {
            txn = Txn {
                mail_from: text[10..].trim().to_string(),
                ..Txn::default()
            };
            send(&mut r, b"250 2.1.0 Ok\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            let arg = text[8..].trim().to_string();
            let addr = address(&arg);
            txn.rcpt_lines.push(arg);
            let reply = cfg
                .rcpt_replies
                .get(&addr.to_ascii_lowercase())
                .cloned()
                .unwrap_or_else(|| "250 2.1.5 Ok".into());
            if reply.starts_with('2') {
                txn.rcpts.push(addr);
            }
            send(&mut r, format!("{reply}\r\n").as_bytes())?;
        } else if upper == "DATA" {
            if txn.rcpts.is_empty() {
                send(&mut r, b"554 5.5.1 Error: no valid recipients\r\n")?;
                continue;
            }
            send(&mut r, b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
            let Some(data) = read_data(&mut r)? else {
                return Ok(());
            };
            txn.data = data;
            txn.tls = tls;
            inner.txns.lock().unwrap().push(std::mem::take(&mut txn));
            if cfg.stall_after_data {
                wait_while(inner, |c| c.stall_after_data);
                return Ok(());
            }
            if cfg.hold_after_data {
                wait_while(inner, |c| c.hold_after_data);
            }
            let n = inner.queued.fetch_add(1, Ordering::SeqCst) + 1;
            let reply = cfg
                .data_reply
                .unwrap_or_else(|| format!("250 2.0.0 Ok: queued as SINK{n}"));
            send(&mut r, format!("{reply}\r\n").as_bytes())?;
        } else if upper == "RSET" {
            txn = Txn::default();
            send(&mut r, b"250 2.0.0 Ok\r\n")?;
        } else if upper == "NOOP" {
            send(&mut r, b"250 2.0.0 Ok\r\n")?;
        } else if upper == "QUIT" {
            send(&mut r, b"221 2.0.0 Bye\r\n")?;
            return Ok(());
        } else {
            send(&mut r, b"502 5.5.2 Error: command not recognized\r\n")?;
        }
    }
}

/// Waits (60 s at most, or until the sink is dropped) while `flag` holds.
fn wait_while(inner: &Inner, flag: fn(&Config) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while flag(&inner.cfg.lock().unwrap())
        && Instant::now() < deadline
        && !inner.shutdown.load(Ordering::SeqCst)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads message data after a `354` up to the lone-dot line, un-stuffed,
/// without the terminator; `None` if the client hung up first.
pub fn read_data(r: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        if line == b".\r\n" {
            return Ok(Some(data));
        }
        let l = if line.first() == Some(&b'.') {
            &line[1..]
        } else {
            &line[..]
        };
        data.extend_from_slice(l);
    }
}
