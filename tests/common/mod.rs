//! Shared test helpers: start `mx2 serve` on a loopback port with a private
//! directory, and talk raw SMTP to it.
#![allow(dead_code)]

pub mod sink;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

pub const OPERATOR_RULES: &str = r"/^From:\s*<>/m                  DISCARD
/^X\-Spam\-Flag:\s+YES/m        DISCARD
/^X\-Virus\-Status:\s+Yes/m     DISCARD
/^X\-Spam\-Level:/m             IGNORE
/^X\-Spam\-Checker\-Version:/m  IGNORE
/^X\-Spam\-Status:\s+No/m       IGNORE
/^X\-Virus\-Scanned:/m          IGNORE
/^X\-Virus\-Status:\s+Clean/m   IGNORE
";

/// A running `mx2 serve` with its own directory; killed on drop.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub child: Option<Child>,
    pub config: PathBuf,
    /// The queue database.
    pub queue: PathBuf,
    /// Extra environment for the process (applied at the next `spawn`).
    pub env: Vec<(String, String)>,
}

pub fn mx2_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mx2")
}

impl Daemon {
    /// Writes `mx2.toml` (listen + queue path + tables, then `extra` TOML
    /// appended verbatim; it may open `[smtp]` and the listen key joins it) and starts the daemon, waiting for the port to accept.
    pub fn start(transport: &str, rules: &str, extra: &str) -> Daemon {
        Self::start_with_queue(transport, rules, "queue.db", extra)
    }

    /// Like `start`, with the queue database at `queue_path`.
    pub fn start_with_queue(transport: &str, rules: &str, queue_path: &str, extra: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        std::fs::write(dir.path().join("transport.map"), transport).unwrap();
        std::fs::write(dir.path().join("header_checks"), rules).unwrap();
        let config = dir.path().join("mx2.toml");
        let listen = format!("[smtp]\nlisten = [\"127.0.0.1:{port}\"]\n");
        // `extra` may open its own [smtp] table: the listen key joins it.
        let (extra, tail) = if extra.contains("[smtp]\n") {
            (extra.replacen("[smtp]\n", &listen, 1), String::new())
        } else {
            (extra.to_string(), listen)
        };
        let toml = format!(
            "hostname = \"mx2.test\"\n[queue]\npath = \"{queue_path}\"\nmin_backoff = \"1s\"\nmax_backoff = \"2s\"\n[relay]\ntransport_map = \"transport.map\"\nheader_checks = \"header_checks\"\nconnect_timeout = \"2s\"\n{extra}\n{tail}"
        );
        std::fs::write(&config, toml).unwrap();
        let queue = dir.path().join(queue_path);
        let mut d = Daemon {
            dir,
            port,
            child: None,
            config,
            queue,
            env: Vec::new(),
        };
        d.spawn();
        d
    }

    /// (Re)starts the process on the same directory and port.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mx2.log"))
            .unwrap();
        let child = Command::new(mx2_bin())
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mx2");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("mx2 did not start; log:\n{}", self.log());
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The daemon's log so far (it writes in 5 ms batches: give it a moment).
    pub fn log(&self) -> String {
        std::thread::sleep(Duration::from_millis(60));
        std::fs::read_to_string(self.dir.path().join("mx2.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        unsafe_kill(c.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        None
    }

    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            unsafe_kill(c.id(), sig);
        }
    }

    /// Runs `mx2 ARGS --config <ours>`; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        run_cli(&self.config, args)
    }

    /// Opens an SMTP client session (greeting already read).
    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// The queue database, read-only, for assertions.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            &self.queue,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open queue.db")
    }

    /// Message bytes stored for each queued message, in arrival order.
    pub fn stored(&self) -> Vec<Vec<u8>> {
        let db = self.db();
        let mut st = db.prepare("SELECT data FROM messages ORDER BY id").unwrap();
        st.query_map([], |r| r.get::<_, Vec<u8>>(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn run_cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(mx2_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run mx2");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// A minimal raw SMTP client, so tests control every byte on the wire.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    pub greeting: String,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        let mut c = Client {
            stream,
            reader,
            greeting: String::new(),
        };
        c.greeting = c.reply();
        c
    }

    /// Reads one (possibly multi-line) reply; returns all its lines joined by "\n".
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return all + "<EOF>",
                Ok(_) => {}
            }
            let done = line.len() < 4 || line.as_bytes()[3] != b'-';
            all.push_str(line.trim_end());
            if done {
                return all;
            }
            all.push('\n');
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Sends a command line and returns the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// EHLO, MAIL, RCPTs, DATA with `body` (already CRLF, no terminator); returns the final reply.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &[u8]) -> String {
        let rcpts: Vec<String> = to.iter().map(|t| format!("<{t}>")).collect();
        let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        self.send_mail_args(&format!("<{from}>"), &rcpts, body)
    }

    /// Like `send_mail`, with the MAIL and RCPT arguments as given
    /// (brackets and parameters included); the body is dot-stuffed here.
    pub fn send_mail_args(&mut self, mail: &str, rcpts: &[&str], body: &[u8]) -> String {
        let r = self.cmd("EHLO client.test");
        assert!(r.starts_with("250"), "{r}");
        let r = self.cmd(&format!("MAIL FROM:{mail}"));
        assert!(r.starts_with("250"), "MAIL {mail}: {r}");
        for t in rcpts {
            let r = self.cmd(&format!("RCPT TO:{t}"));
            assert!(r.starts_with("250"), "RCPT {t}: {r}");
        }
        let r = self.cmd("DATA");
        assert!(r.starts_with("354"), "{r}");
        let mut stuffed = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            if line.first() == Some(&b'.') {
                stuffed.push(b'.');
            }
            stuffed.extend_from_slice(line);
        }
        if !stuffed.ends_with(b"\r\n") {
            stuffed.extend_from_slice(b"\r\n");
        }
        stuffed.extend_from_slice(b".\r\n");
        self.send_raw(&stuffed);
        self.reply()
    }

    /// Reads whatever arrives until EOF or timeout.
    pub fn read_to_end(&mut self) -> String {
        let mut s = String::new();
        let _ = self.reader.read_to_string(&mut s);
        s
    }
}

/// Waits until `f` is true or `secs` pass.
pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Daemon {
    /// Like `start`, with the keys of `[queue]` (besides `path`; empty =
    /// the 1s/2s backoff of `start`) and extra keys for `[relay]` given
    /// separately, so tests can change backoff, lifetime or relay settings.
    pub fn start_with(transport: &str, rules: &str, queue: &str, relay: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        std::fs::write(dir.path().join("transport.map"), transport).unwrap();
        std::fs::write(dir.path().join("header_checks"), rules).unwrap();
        let config = dir.path().join("mx2.toml");
        let queue = if queue.is_empty() {
            "min_backoff = \"1s\"\nmax_backoff = \"2s\"\n"
        } else {
            queue
        };
        let toml = format!(
            "hostname = \"mx2.test\"\n[queue]\npath = \"queue.db\"\n{queue}\n[relay]\ntransport_map = \"transport.map\"\nheader_checks = \"header_checks\"\n{relay}\n[smtp]\nlisten = [\"127.0.0.1:{port}\"]\n"
        );
        std::fs::write(&config, toml).unwrap();
        let queue = dir.path().join("queue.db");
        let mut d = Daemon {
            dir,
            port,
            child: None,
            config,
            queue,
            env: Vec::new(),
        };
        d.spawn();
        d
    }
}

impl Daemon {
    /// The running process's id, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `(VmRSS, VmHWM)` of the running daemon in kB, from /proc/PID/status.
    pub fn memory_kb(&self) -> Option<(u64, u64)> {
        proc_memory_kb(self.pid()?)
    }
}

/// `(VmRSS, VmHWM)` of process `pid` in kB, from /proc/PID/status.
pub fn proc_memory_kb(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The token tests put in `Message-ID: <TOKEN@…>` to tell messages apart.
pub fn token_of(data: &[u8]) -> String {
    String::from_utf8_lossy(data)
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: <"))
        .and_then(|l| l.split('@').next())
        .unwrap_or("")
        .to_string()
}

/// A self-signed certificate (`CN=cn`) made with openssl; (cert, key) paths.
pub fn make_cert(dir: &Path, cn: &str) -> (String, String) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", &format!("/CN={cn}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

/// A test CA in `dir` (`ca.pem`) and a certificate it signed for `names`
/// (subjectAltName DNS entries); returns (CA, cert, key) paths. The cert
/// and key files are named after the first name.
pub fn make_ca_cert(dir: &Path, names: &[&str]) -> (String, String, String) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if !dir.join("ca.pem").exists() {
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=mx2 test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }
    let base = names[0];
    let (key, csr, cert, ext) = (
        format!("{base}.key"),
        format!("{base}.csr"),
        format!("{base}.pem"),
        format!("{base}.ext"),
    );
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    std::fs::write(
        dir.join(&ext),
        format!(
            "subjectAltName={}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n",
            san.join(",")
        ),
    )
    .unwrap();
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        &format!("/CN={base}"),
        "-keyout",
        &key,
        "-out",
        &csr,
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        &cert,
        "-extfile",
        &ext,
    ]);
    let p = |f: &str| dir.join(f).display().to_string();
    (p("ca.pem"), p(&cert), p(&key))
}

/// A small tmpfs (for disk-full tests; needs root), unmounted on drop.
pub struct SmallFs {
    pub dir: tempfile::TempDir,
}

impl SmallFs {
    pub fn mount(size: &str) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount");
        assert!(
            st.status.success(),
            "this test mounts a tmpfs and must run as root: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        SmallFs { dir }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
