//! Starts the real scanners from Debian's packages for `tests/scan.rs`:
//! spamd (package `spamd`, with `spamassassin` and `spamc`), clamd
//! (`clamav-daemon`) with a one-signature EICAR database, spamass-milter
//! and clamav-milter, each on loopback or a unix socket in a private
//! directory, each in its own process group (run under `timeout` so that
//! nothing outlives a killed test run) and killed when dropped.
//!
//! A daemon that cannot be started fails the test with its log and the
//! packages to install: nothing is skipped silently.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub const PACKAGES: &str = "spamassassin spamd spamc clamav-daemon spamass-milter clamav-milter";

/// Longest any daemon may live (safety net if the test process is killed).
const LIFETIME_SECS: &str = "900";

/// EICAR's MD5 and size: the whole database clamd needs here.
pub const EICAR_HDB: &str = "44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n";

/// One daemon process (group), killed on drop.
pub struct Proc {
    pub name: &'static str,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, dir: &Path, program: &str, args: &[&str]) -> Proc {
        let log = dir.join(format!("{name}.out"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new("timeout")
            .args(["-k", "5", LIFETIME_SECS, program])
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {program}: {e}; install the Debian packages: apt-get install {PACKAGES}")
            });
        Proc { name, child, log }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test unless `ready` turns true before `secs` pass.
    fn wait_ready(&mut self, secs: u64, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if ready() {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "{} exited ({st}) before {what}; output:\n{}\n(packages: {PACKAGES})",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{} not ready ({what}) within {secs}s; output:\n{}\n(packages: {PACKAGES})",
            self.name,
            self.output()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// spamd on 127.0.0.1:`port`, local tests only, no user configs.
pub struct Spamd {
    pub port: u16,
    pub proc: Proc,
}

impl Spamd {
    pub fn start(dir: &Path) -> Spamd {
        let port = free_port();
        let listen = format!("--listen=127.0.0.1:{port}");
        let pid = format!("--pidfile={}", dir.join("spamd.pid").display());
        let mut args = vec![
            listen.as_str(),
            "--local",
            "--nouser-config",
            "--syslog=stderr",
            pid.as_str(),
            "--min-children=1",
            "--max-children=2",
        ];
        if is_root() {
            args.extend(["-u", "nobody"]);
        }
        let mut proc = Proc::spawn("spamd", dir, "spamd", &args);
        proc.wait_ready(90, "answering PING", || spamd_ping(port));
        Spamd { port, proc }
    }
}

fn spamd_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"PING SPAMC/1.5\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.contains("PONG")
}

/// clamd on a unix socket with only the EICAR signature.
pub struct Clamd {
    pub socket: PathBuf,
    pub proc: Proc,
}

impl Clamd {
    pub fn start(dir: &Path) -> Clamd {
        let db = dir.join("clamdb");
        std::fs::create_dir_all(&db).expect("db dir");
        std::fs::write(db.join("test.hdb"), EICAR_HDB).expect("test.hdb");
        let socket = dir.join("clamd.sock");
        let conf = dir.join("clamd.conf");
        std::fs::write(
            &conf,
            format!(
                "LocalSocket {}\nFixStaleSocket yes\nForeground yes\nDatabaseDirectory {}\nPidFile {}\nTemporaryDirectory {}\nLogFile {}\nLogTime yes\n",
                socket.display(),
                db.display(),
                dir.join("clamd.pid").display(),
                dir.display(),
                dir.join("clamd.log").display(),
            ),
        )
        .expect("clamd.conf");
        let conf_s = conf.display().to_string();
        let mut proc = Proc::spawn("clamd", dir, "clamd", &["-c", &conf_s]);
        let sock = socket.clone();
        proc.wait_ready(90, "answering PING", || clamd_ping(&sock));
        Clamd { socket, proc }
    }
}

fn clamd_ping(sock: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"zPING\0").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"PONG"))
}

/// spamd and clamd, shared by the tests running at the same time (they are
/// slow to start) and stopped when the last user lets go.
pub struct Peers {
    pub dir: tempfile::TempDir,
    pub spamd: Spamd,
    pub clamd: Clamd,
}

static PEERS: Mutex<Weak<Peers>> = Mutex::new(Weak::new());

pub fn peers() -> Arc<Peers> {
    let mut g = PEERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = g.upgrade() {
        return p;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // Start both, then wait: they load in parallel.
    let spamd = Spamd::start(dir.path());
    let clamd = Clamd::start(dir.path());
    let p = Arc::new(Peers { dir, spamd, clamd });
    *g = Arc::downgrade(&p);
    p
}

/// spamass-milter on a unix socket, asking our spamd (its default flags,
/// as in the operator's setup: it may rewrite spam).
pub struct SpamassMilter {
    pub socket: PathBuf,
    pub proc: Proc,
}

impl SpamassMilter {
    pub fn start(dir: &Path, spamd_port: u16) -> SpamassMilter {
        let socket = dir.join("spamass.sock");
        let sock_s = socket.display().to_string();
        let pid = dir.join("spamass-milter.pid").display().to_string();
        let port = spamd_port.to_string();
        let mut proc = Proc::spawn(
            "spamass-milter",
            dir,
            "spamass-milter",
            &[
                "-p",
                &sock_s,
                "-P",
                &pid,
                "--",
                "-d",
                "127.0.0.1",
                "-p",
                &port,
            ],
        );
        let s = socket.clone();
        proc.wait_ready(30, "creating its socket", || {
            UnixStream::connect(&s).is_ok()
        });
        SpamassMilter { socket, proc }
    }
}

/// clamav-milter on a unix socket, scanning with our clamd; infected
/// mail is silently dropped (`OnInfected Blackhole`), clean mail gets
/// `X-Virus-Scanned` / `X-Virus-Status: Clean`.
pub struct ClamavMilter {
    pub socket: PathBuf,
    pub proc: Proc,
}

impl ClamavMilter {
    pub fn start(dir: &Path, clamd_socket: &Path) -> ClamavMilter {
        let socket = dir.join("clamav-milter.sock");
        let conf = dir.join("clamav-milter.conf");
        std::fs::write(
            &conf,
            format!(
                "MilterSocket unix:{}\nFixStaleSocket yes\nClamdSocket unix:{}\nForeground yes\nPidFile {}\nTemporaryDirectory {}\nOnClean Accept\nOnInfected Blackhole\nOnFail Defer\nAddHeader Replace\nLogFile {}\nLogTime yes\nLogInfected Full\nLogClean Full\n",
                socket.display(),
                clamd_socket.display(),
                dir.join("clamav-milter.pid").display(),
                dir.display(),
                dir.join("clamav-milter.log").display(),
            ),
        )
        .expect("clamav-milter.conf");
        let conf_s = conf.display().to_string();
        let mut proc = Proc::spawn("clamav-milter", dir, "clamav-milter", &["-c", &conf_s]);
        let s = socket.clone();
        proc.wait_ready(30, "creating its socket", || {
            UnixStream::connect(&s).is_ok()
        });
        ClamavMilter { socket, proc }
    }
}
