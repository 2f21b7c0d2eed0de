//! The first run of a new user: `mx2` with no configuration at all, and
//! `mx2 init` (issue 25). The operator's rules are in force out of the box.

mod common;

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::sink::Sink;
use common::{mx2_bin, wait_for, Client};

/// The built-in default listen address: a config-less daemon can use no other.
const DEFAULT_LISTEN: (&str, u16) = ("127.0.0.1", 2525);

/// The scanner headers of the seed (spamass-milter and clamav-milter on a
/// Postfix secondary), which the operator's rules remove.
const SCANNER_HEADERS: &str =
    "X-Spam-Checker-Version: SpamAssassin 4.0.0 (2022-12-13) on mx2.example.net\r\n\
X-Spam-Level: \r\n\
X-Spam-Status: No, score=-0.1 required=17.0 tests=DKIM_SIGNED,DKIM_VALID\r\n\
\tautolearn=ham autolearn_force=no version=4.0.0\r\n\
X-Virus-Scanned: clamav-milter 1.0.1 at mx2.example.net\r\n\
X-Virus-Status: Clean\r\n";

/// `mx2 ARGS` in `cwd` with no configuration: no `--config`, no `MX2_CONFIG`.
fn mx2_in(cwd: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(mx2_bin());
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("MX2_CONFIG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("spawn mx2");
    if let Some(input) = stdin {
        use std::io::Write;
        let mut w = child.stdin.take().expect("stdin");
        // mx2 may refuse before it reads its input (a missing rules file):
        // then the pipe is closed, which is its answer, not a test failure.
        if let Err(e) = w.write_all(input) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
        }
    }
    child.wait_with_output().expect("mx2 output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The config-less run reads /etc/mx2/mx2.toml when it exists: then this
/// machine has mx2 installed and "no config" cannot be tested here.
fn assert_no_system_config() {
    assert!(
        !Path::new(mx2::config::DEFAULT_CONFIG_PATH).exists(),
        "{} exists (mx2 installed on this machine?): a run without --config would use it",
        mx2::config::DEFAULT_CONFIG_PATH
    );
}

/// Holds the built-in default port for one test at a time, across test
/// binaries and worktrees on this machine: an exclusive lock on a fixed
/// file, then a bounded wait until nothing else listens there.
struct DefaultPort {
    _lock: File,
}

impl DefaultPort {
    fn acquire() -> DefaultPort {
        let lock = File::create(std::env::temp_dir().join("mx2-tests-127.0.0.1-2525.lock"))
            .expect("create the port lock file");
        lock.lock().expect("lock the port lock file");
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpListener::bind(DEFAULT_LISTEN).is_err() {
            assert!(
                Instant::now() < deadline,
                "127.0.0.1:2525 stayed in use by another program for 60 s; the config-less test needs it"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        DefaultPort { _lock: lock }
    }
}

/// `mx2 serve` with no configuration in `cwd`; killed on drop.
struct Serve {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Serve {
    fn start(cwd: &Path, log: &Path) -> Serve {
        let err = File::create(log).expect("log file");
        let child = Command::new(mx2_bin())
            .arg("serve")
            .current_dir(cwd)
            .env_remove("MX2_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn mx2 serve");
        let mut s = Serve {
            child: Some(child),
            log: log.to_path_buf(),
        };
        let up = wait_for(20, || {
            s.running()
                && TcpStream::connect(DEFAULT_LISTEN).is_ok()
                && s.log().contains("listening on 127.0.0.1:2525")
        });
        assert!(up, "mx2 serve did not start; log:\n{}", s.log());
        s
    }

    fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait (bounded); the exit code.
    fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn with_no_config_the_operators_rules_strip_the_scanner_headers() {
    assert_no_system_config();
    let _port = DefaultPort::acquire();
    let primary = Sink::start();
    let cwd = tempfile::tempdir().expect("tempdir");
    let logs = tempfile::tempdir().expect("tempdir");

    // The README's first commands: a relay domain added with the CLI, then serve.
    let nexthop = format!("[127.0.0.1]:{}", primary.port);
    let out = mx2_in(
        cwd.path(),
        &["transport", "add", "example.jp", &nexthop],
        None,
    );
    assert!(out.status.success(), "transport add: {}", text(&out.stderr));
    assert!(cwd.path().join("transport.map").is_file());

    let mut serve = Serve::start(cwd.path(), &logs.path().join("mx2.log"));
    let body = format!(
        "{SCANNER_HEADERS}From: alice@example.net\r\nTo: bob@example.jp\r\nSubject: first run\r\n\r\nhello\r\n"
    );
    let mut client = Client::connect(DEFAULT_LISTEN.1);
    let r = client.send_mail("alice@example.net", &["bob@example.jp"], body.as_bytes());
    assert!(r.starts_with("250"), "{r}");
    let _ = client.cmd("QUIT");

    assert!(
        wait_for(30, || primary.count() >= 1),
        "nothing reached the primary; log:\n{}",
        serve.log()
    );
    let got = primary.txns()[0].text();
    assert!(got.contains("Subject: first run\r\n"), "{got}");
    assert!(got.contains("\r\n\r\nhello\r\n"), "{got}");
    for h in [
        "X-Spam-Checker-Version:",
        "X-Spam-Level:",
        "X-Spam-Status:",
        "autolearn=ham",
        "X-Virus-Scanned:",
        "X-Virus-Status:",
    ] {
        assert!(!got.contains(h), "{h} reached the primary:\n{got}");
    }

    // It said once, at start, which rules are in force.
    assert_eq!(serve.stop(), Some(0), "log:\n{}", serve.log());
    let log = serve.log();
    let in_force: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("header_checks in force:"))
        .collect();
    assert_eq!(in_force.len(), 1, "{log}");
    assert!(in_force[0].contains("the built-in rules (8 rules"), "{log}");
    // Everything it wrote is in the working directory.
    assert!(cwd.path().join("mx2-data/queue.db").is_file());
}

#[test]
fn header_checks_test_without_rules_uses_the_builtin_rules_like_the_daemon() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let msg = format!("{SCANNER_HEADERS}Subject: s\r\n\r\nbody\r\n");
    // Missing, and a directory at the default path (the repository root's case).
    for make_dir in [false, true] {
        if make_dir {
            std::fs::create_dir(cwd.path().join("header_checks")).expect("mkdir");
        }
        let out = mx2_in(cwd.path(), &["header-checks", "test"], Some(msg.as_bytes()));
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert_eq!(text(&out.stdout), "Subject: s\r\n\r\nbody\r\n", "{err}");
        assert!(err.contains("using the built-in rules"), "{err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("line ")).count(),
            5,
            "{err}"
        );
    }

    // The same verdicts, byte for byte, as the packaged file.
    let packaged = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/etc/header_checks");
    let packaged = packaged.to_str().expect("utf-8 path");
    for m in [
        msg.clone(),
        "X-Spam-Flag: YES\r\nSubject: s\r\n\r\nb\r\n".to_string(),
        "From: <>\r\n\r\nb\r\n".to_string(),
    ] {
        let builtin = mx2_in(cwd.path(), &["header-checks", "test"], Some(m.as_bytes()));
        let file = mx2_in(
            cwd.path(),
            &["header-checks", "test", "--rules", packaged],
            Some(m.as_bytes()),
        );
        assert_eq!(text(&builtin.stdout), text(&file.stdout), "{m:?}");
        let hits = |o: &Output| -> Vec<String> {
            text(&o.stderr)
                .lines()
                .filter(|l| !l.starts_with("note: "))
                .map(String::from)
                .collect()
        };
        assert_eq!(hits(&builtin), hits(&file), "{m:?}");
    }
}

#[test]
fn check_config_with_no_config_says_the_builtin_rules_are_in_force() {
    assert_no_system_config();
    let cwd = tempfile::tempdir().expect("tempdir");
    let out = mx2_in(cwd.path(), &["check-config"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("header_checks: the built-in rules (8 rules, as the packaged /etc/mx2/header_checks; no file at ./header_checks)"),
        "{stdout}"
    );
    assert!(stdout.ends_with("built-in defaults: ok\n"), "{stdout}");
}

#[test]
fn a_configured_rules_path_that_is_missing_stays_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("mx2.toml");
    let port = common::free_port();
    std::fs::write(
        &cfg,
        format!("[smtp]\nlisten = [\"127.0.0.1:{port}\"]\n[relay]\nheader_checks = \"rules\"\n"),
    )
    .expect("write config");
    let missing = dir.path().join("rules").display().to_string();
    let c = cfg.to_str().expect("utf-8 path");

    let out = mx2_in(dir.path(), &["--config", c, "check-config"], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains(&format!("{missing}: cannot read rules")),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !text(&out.stdout).contains("built-in"),
        "{}",
        text(&out.stdout)
    );

    let out = mx2_in(
        dir.path(),
        &["--config", c, "header-checks", "test"],
        Some(b"Subject: s\r\n\r\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("{missing}: cannot read rules")),
        "{}",
        text(&out.stderr)
    );

    // The daemon refuses to start rather than relay with other rules.
    let mut serve = Command::new(mx2_bin())
        .args(["--config", c, "serve"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let exited = wait_for(20, || matches!(serve.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = serve.kill();
    }
    let out = serve.wait_with_output().expect("output");
    assert!(
        exited,
        "mx2 serve started with a configured rules file missing"
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("{missing}: cannot read rules")),
        "{}",
        text(&out.stderr)
    );
}

// ---- mx2 init ----------------------------------------------------------------

#[test]
fn init_writes_a_starter_set_that_passes_check_config() {
    let top = tempfile::tempdir().expect("tempdir");
    let dir = top.path().join("mx2");
    let d = dir.to_str().expect("utf-8 path");
    let out = mx2_in(top.path(), &["init", d], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for f in ["mx2.toml", "transport.map", "header_checks"] {
        assert!(
            text(&out.stdout).contains(&format!("wrote {d}/{f}\n")),
            "{}",
            text(&out.stdout)
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("header_checks")).expect("header_checks"),
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/etc/header_checks")
        )
        .expect("packaged")
    );

    // From another working directory: the tables are found beside the config.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let cfg = dir.join("mx2.toml");
    let c = cfg.to_str().expect("utf-8 path");
    let out = mx2_in(elsewhere.path(), &["check-config", "--config", c], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The starter set leaves `hostname` to the system's name: only a
    // short one (no dot) is worth a warning (it listens on 2525, not 25).
    let system = std::process::Command::new("hostname")
        .output()
        .map(|o| text(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let expected = if system.contains('.') {
        String::new()
    } else {
        format!(
            "warning: hostname {system:?} is not a fully qualified domain name (no dot); set `hostname` to this MX's name\n"
        )
    };
    assert_eq!(
        text(&out.stderr),
        expected,
        "check-config warned about the starter set"
    );
    assert_eq!(
        text(&out.stdout),
        format!("header_checks: {d}/header_checks (8 rules)\n{c}: ok\n")
    );
    let out = mx2_in(
        elsewhere.path(),
        &[
            "--config",
            c,
            "transport",
            "add",
            "example.jp",
            "[127.0.0.1]:2526",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::read_to_string(dir.join("transport.map"))
        .expect("map")
        .contains("example.jp"));
    assert!(!elsewhere.path().join("transport.map").exists());
    let out = mx2_in(elsewhere.path(), &["check-config", "--config", c], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn init_defaults_to_the_working_directory() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let out = mx2_in(cwd.path(), &["init"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for f in ["mx2.toml", "transport.map", "header_checks"] {
        assert!(cwd.path().join(f).is_file(), "{f}");
    }
    let out = mx2_in(cwd.path(), &["check-config", "--config", "mx2.toml"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let map = dir.path().join("transport.map");
    std::fs::write(&map, "example.jp [192.0.2.1]\n").expect("write");
    let d = dir.path().to_str().expect("utf-8 path");

    let out = mx2_in(dir.path(), &["init", d], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("{d}/transport.map already exists")),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert_eq!(text(&out.stdout), "");
    assert!(
        !dir.path().join("mx2.toml").exists(),
        "written despite the refusal"
    );
    assert!(
        !dir.path().join("header_checks").exists(),
        "written despite the refusal"
    );
    assert_eq!(
        std::fs::read_to_string(&map).expect("map"),
        "example.jp [192.0.2.1]\n"
    );

    let out = mx2_in(dir.path(), &["init", "--force", d], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(&map).expect("map"),
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/etc/transport.map")
        )
        .expect("packaged")
    );
    assert!(dir.path().join("mx2.toml").is_file());
}
