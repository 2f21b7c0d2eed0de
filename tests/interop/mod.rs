//! Support for `tests/interop.rs`: real MTAs started per test, each from a
//! fresh temporary directory on free loopback ports, stopped on drop.
//!
//! The peers are installed by `scripts/interop-setup.sh` (Postfix, swaks,
//! python3 from Debian; Exim and OpenSMTPD unpacked from their .debs under
//! `$MX2_INTEROP_ROOT`, default `/tmp/mx2-interop`, because both conflict
//! with postfix). A peer that cannot start fails the test with its log.
#![allow(dead_code)]

pub mod corpus;
pub mod exim;
pub mod opensmtpd;
pub mod postfix;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where the setup script unpacked Exim and OpenSMTPD.
pub fn root() -> PathBuf {
    std::env::var_os("MX2_INTEROP_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/mx2-interop"))
}

/// Panics (never skips) when something the setup script installs is missing.
pub fn require(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{what} not found at {}: run scripts/interop-setup.sh (as root) first",
        path.display()
    );
}

/// A fresh directory every peer user can traverse (tempdirs are 0700).
/// `MX2_INTEROP_KEEP=1` keeps it after the test (configs, logs, mailboxes).
pub fn peer_dir(tag: &str) -> tempfile::TempDir {
    let mut d = tempfile::Builder::new()
        .prefix(&format!("mx2-interop-{tag}-"))
        .tempdir_in("/tmp")
        .expect("tempdir");
    if std::env::var_os("MX2_INTEROP_KEEP").is_some() {
        d.disable_cleanup(true);
    }
    chmod(d.path(), 0o755);
    d
}

pub fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `mkdir -p` + mode + optional `chown user:group`.
pub fn mkdir(p: &Path, mode: u32, owner: Option<&str>) {
    std::fs::create_dir_all(p).expect("mkdir");
    chmod(p, mode);
    if let Some(o) = owner {
        let st = Command::new("chown").arg(o).arg(p).status().expect("chown");
        assert!(st.success(), "chown {o} {}", p.display());
    }
}

/// A self-signed certificate (RSA 2048, CN given), world-readable because
/// the peers read it as their own unprivileged users.
pub struct Cert {
    pub dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn cert(cn: &str) -> Cert {
    let dir = peer_dir("cert");
    let (cert, key) = crate::common::make_cert(dir.path(), cn);
    let (cert, key) = (PathBuf::from(cert), PathBuf::from(key));
    chmod(&cert, 0o644);
    chmod(&key, 0o644);
    Cert { dir, cert, key }
}

/// Runs a command with `stdin` as input; kills it after `secs`.
pub fn run_timeout(cmd: &mut Command, stdin: &[u8], secs: u64) -> Output {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
    {
        let mut i = child.stdin.take().unwrap();
        let _ = i.write_all(stdin);
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            kill_group(child.id(), libc::SIGKILL);
            let out = child.wait_with_output().unwrap();
            panic!(
                "{desc} did not finish in {secs} s; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Like `run_timeout`, and panics unless the exit status is 0.
pub fn run_ok(cmd: &mut Command, stdin: &[u8], secs: u64) -> Output {
    let desc = format!("{cmd:?}");
    let out = run_timeout(cmd, stdin, secs);
    assert!(
        out.status.success(),
        "{desc} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn kill_group(pgid: u32, sig: i32) {
    // SAFETY: kill(2) on a process group we created (process_group(0)).
    unsafe {
        libc::kill(-(pgid as i32), sig);
    }
}

/// The process exists and is not a zombie (daemons we started are
/// reparented to a pid 1 that may not reap them).
pub fn pid_alive(pid: i32) -> bool {
    let stat = read_lossy(Path::new(&format!("/proc/{pid}/stat")));
    match stat.rfind(')') {
        Some(i) => !stat[i + 1..].trim_start().starts_with(['Z', 'X']),
        None => false,
    }
}

/// A child started in its own process group; on drop the whole group gets
/// SIGTERM, then SIGKILL after 5 s.
pub struct Group {
    pub child: Child,
}

impl Group {
    pub fn spawn(cmd: &mut Command) -> Group {
        let desc = format!("{cmd:?}");
        let child = cmd
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
        Group { child }
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = self.child.id();
        kill_group(pgid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // leftovers of the group (delivery processes) and the leader
        kill_group(pgid, libc::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_port(port: u16, secs: u64) -> bool {
    wait_until(secs, || TcpStream::connect(("127.0.0.1", port)).is_ok())
}

pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn read_lossy(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Messages in a Maildir's `new/` (oldest first by name, which starts with the time).
pub fn maildir(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir.join("new"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    names.sort();
    names.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// Waits until the Maildir holds `n` messages; returns them (maybe fewer on timeout).
pub fn wait_maildir(dir: &Path, n: usize, secs: u64) -> Vec<Vec<u8>> {
    wait_until(secs, || maildir(dir).len() >= n);
    maildir(dir)
}

/// `python3 tests/interop/send.py ARGS`: one SMTP transaction with smtplib.
pub fn py_send(args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/send.py");
    run_timeout(Command::new("python3").arg(script).args(args), b"", 60)
}

/// Every peer's TLS log lines in one place, for the assertion messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
