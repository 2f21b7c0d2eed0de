//! Packaging checks that need no root: the systemd unit, the production
//! sample configuration and tables, the man pages, the maintainer and rc.d
//! scripts, and the cargo-deb metadata. `packaging/ci.sh` does the real
//! thing as root (build the .deb, install, relay a message, purge).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn mx2(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mx2"))
        .args(args)
        .env_remove("MX2_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("running mx2")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---- systemd unit ---------------------------------------------------------

/// `Key=Value` lines per `[Section]`, in order (keys may repeat).
fn unit_directives() -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in read("packaging/mx2.service").lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = l
            .split_once('=')
            .unwrap_or_else(|| panic!("mx2.service: not Key=Value: {l}"));
        out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
    }
    out
}

#[test]
fn unit_file_has_the_required_directives() {
    let d = unit_directives();
    let has = |section: &str, key: &str, value: &str| {
        d.iter()
            .any(|(s, k, v)| s == section && k == key && v == value)
    };
    let required = [
        ("Type", "simple"),
        ("User", "mx2"),
        ("Group", "mx2"),
        ("ExecStart", "/usr/bin/mx2 serve --config /etc/mx2/mx2.toml"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/var/lib/mx2"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("SystemCallFilter", "@system-service"),
        ("SystemCallArchitectures", "native"),
        ("UMask", "0027"),
        ("StateDirectory", "mx2"),
        ("RuntimeDirectory", "mx2"),
    ];
    for (k, v) in required {
        assert!(has("Service", k, v), "mx2.service: [Service] lacks {k}={v}");
    }
    assert!(has("Install", "WantedBy", "multi-user.target"));
    // The PCRE2 JIT needs W+X memory (see the comment in the unit).
    assert!(
        !d.iter()
            .any(|(_, k, v)| k == "MemoryDenyWriteExecute" && v == "yes"),
        "MemoryDenyWriteExecute=yes would disable the PCRE2 JIT"
    );
    // No capability beyond binding port 25.
    for (_, k, v) in &d {
        if k == "AmbientCapabilities" || k == "CapabilityBoundingSet" {
            assert_eq!(v, "CAP_NET_BIND_SERVICE", "{k}={v}");
        }
    }
}

#[test]
fn unit_file_agrees_with_the_sample_config() {
    let d = unit_directives();
    let get = |key: &str| -> Vec<&str> {
        d.iter()
            .filter(|(_, k, _)| k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    };
    let cfg: toml::Table = toml::from_str(&read("packaging/etc/mx2.toml")).unwrap();
    let queue = cfg["queue"]["path"].as_str().unwrap();
    let socket = cfg["control"]["socket"].as_str().unwrap();
    // StateDirectory=mx2 is /var/lib/mx2, RuntimeDirectory=mx2 is /run/mx2:
    // the queue and the control socket must live there to be writable.
    assert_eq!(
        Path::new(queue).parent(),
        Some(Path::new("/var/lib/mx2")),
        "{queue}"
    );
    assert_eq!(
        Path::new(socket).parent(),
        Some(Path::new("/run/mx2")),
        "{socket}"
    );
    // The config the unit runs with is the one the package installs.
    for cmd in get("ExecStart").into_iter().chain(get("ExecStartPre")) {
        assert!(cmd.ends_with("--config /etc/mx2/mx2.toml"), "{cmd}");
    }
    assert!(deb_assets().contains(&(
        "packaging/etc/mx2.toml".to_string(),
        "etc/mx2/mx2.toml".to_string()
    )));
}

// ---- the production sample configuration ------------------------------------

#[test]
fn sample_config_has_the_production_values() {
    let cfg: toml::Table = toml::from_str(&read("packaging/etc/mx2.toml")).unwrap();
    let listen: Vec<&str> = cfg["smtp"]["listen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(listen, ["0.0.0.0:25", "[::]:25"]);
    assert_eq!(cfg["queue"]["path"].as_str(), Some("/var/lib/mx2/queue.db"));
    assert_eq!(
        cfg["relay"]["transport_map"].as_str(),
        Some("/etc/mx2/transport.map")
    );
    assert_eq!(
        cfg["relay"]["header_checks"].as_str(),
        Some("/etc/mx2/header_checks")
    );
    assert_eq!(
        cfg["control"]["socket"].as_str(),
        Some("/run/mx2/control.sock")
    );
    // Metrics off: no listen key set (its commented default is "").
    assert!(cfg.get("metrics").and_then(|m| m.get("listen")).is_none());
}

/// The sample files copied to a temporary tree, with the absolute paths
/// /etc/mx2, /var/lib/mx2 and /run/mx2 moved into it, and `hostname` set
/// (the sample listens on port 25, where a name without a dot is refused,
/// and a build machine's name often has none; packaging/ci.sh checks that
/// refusal on the installed package). Nothing else changed.
struct Installed {
    _dir: tempfile::TempDir,
    etc: PathBuf,
}

impl Installed {
    fn new(edit: impl Fn(&str, String) -> String) -> Installed {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        for d in ["etc", "state", "run"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let base = dir.path().display().to_string();
        for f in ["mx2.toml", "transport.map", "header_checks"] {
            let t = read(&format!("packaging/etc/{f}"))
                .replace("/etc/mx2/", &format!("{base}/etc/"))
                .replace("/var/lib/mx2/", &format!("{base}/state/"))
                .replace("/run/mx2/", &format!("{base}/run/"))
                .replace("\n# hostname = \"\"", "\nhostname = \"mx2.example.test\"");
            std::fs::write(etc.join(f), edit(f, t)).unwrap();
        }
        Installed { _dir: dir, etc }
    }

    fn config(&self) -> String {
        self.etc.join("mx2.toml").display().to_string()
    }

    fn mx2(&self, args: &[&str]) -> Output {
        let cfg = self.config();
        let mut all = vec!["--config", cfg.as_str()];
        all.extend_from_slice(args);
        mx2(&all)
    }
}

#[test]
fn sample_config_passes_check_config() {
    let inst = Installed::new(|_, t| t);
    let out = inst.mx2(&["check-config"]);
    assert!(
        out.status.success(),
        "check-config failed:\n{}",
        text(&out.stderr)
    );
    assert_eq!(
        text(&out.stdout),
        format!(
            "header_checks: {} (8 rules)\n{}: ok\n",
            inst.etc.join("header_checks").display(),
            inst.config()
        )
    );
    assert_eq!(
        text(&out.stderr),
        "",
        "check-config warned about the sample"
    );
}

/// Whether a line is a commented-out setting: `# key = value  # comment`.
fn commented_key(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("# ")?;
    let (key, _) = rest.split_once(" = ")?;
    key.chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        .then_some(key)
}

#[test]
fn every_commented_default_in_the_sample_is_a_valid_setting() {
    // Uncommenting any line that shows a default must give a valid config:
    // the documented keys exist and their shown defaults parse.
    let inst = Installed::new(|f, t| {
        if f != "mx2.toml" {
            return t;
        }
        t.lines()
            .map(|l| match commented_key(l) {
                Some(_) => &l[2..],
                None => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    let uncommented = std::fs::read_to_string(inst.etc.join("mx2.toml")).unwrap();
    assert!(
        uncommented.lines().filter(|l| l.contains(" = ")).count() > 30,
        "{uncommented}"
    );
    let out = inst.mx2(&["check-config"]);
    assert!(
        out.status.success(),
        "uncommented sample fails check-config:\n{}",
        text(&out.stderr)
    );
}

#[test]
fn every_commented_default_in_the_init_config_is_a_valid_setting() {
    // `mx2 init`'s mx2.toml, every default uncommented, still checks out
    // with the tables `mx2 init` wrote beside it.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = mx2(&["init", d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cfg = dir.path().join("mx2.toml");
    let uncommented: Vec<String> = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .map(|l| match commented_key(l) {
            Some(_) => l[2..].to_string(),
            None => l.to_string(),
        })
        .collect();
    assert!(
        uncommented.iter().filter(|l| l.contains(" = ")).count() > 30,
        "{uncommented:?}"
    );
    std::fs::write(&cfg, uncommented.join("\n")).unwrap();
    let out = mx2(&["--config", cfg.to_str().unwrap(), "check-config"]);
    assert!(
        out.status.success(),
        "uncommented init config fails check-config:\n{}",
        text(&out.stderr)
    );
}

/// `section -> keys` as written in a sample config (set or commented
/// out); the top level is "".
fn sample_keys(rel: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in read(rel).lines() {
        if let Some(s) = line.strip_prefix('[') {
            section = s.split(']').next().unwrap().to_string();
            continue;
        }
        let key = commented_key(line).or_else(|| line.split_once(" = ").map(|(k, _)| k.trim()));
        if let Some(k) = key.filter(|k| !k.starts_with('#')) {
            out.entry(section.clone())
                .or_default()
                .insert(k.to_string());
        }
    }
    out
}

/// `section -> keys` that src/config.rs accepts, read from its `Raw*`
/// structs (the serde view of the file, with `deny_unknown_fields`).
fn accepted_keys() -> BTreeMap<String, BTreeSet<String>> {
    let src = read("src/config.rs");
    let mut structs: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in src.lines() {
        let l = line.trim();
        if let Some(name) = l
            .strip_prefix("struct Raw")
            .and_then(|r| r.strip_suffix(" {"))
        {
            current = Some(format!("Raw{name}"));
            structs.entry(format!("Raw{name}")).or_default();
            continue;
        }
        let Some(name) = &current else { continue };
        if l == "}" {
            current = None;
            continue;
        }
        if l.starts_with('#') || l.starts_with("//") {
            continue;
        }
        if let Some((field, ty)) = l.trim_end_matches(',').split_once(':') {
            structs
                .get_mut(name)
                .unwrap()
                .push((field.trim().to_string(), ty.trim().to_string()));
        }
    }
    let top = structs
        .get("RawConfig")
        .expect("src/config.rs has no `struct RawConfig {`: update tests/packaging.rs");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (field, ty) in top {
        match structs.get(ty.as_str()) {
            Some(fields) => {
                out.insert(
                    field.clone(),
                    fields.iter().map(|(f, _)| f.clone()).collect(),
                );
            }
            None => {
                out.entry(String::new()).or_default().insert(field.clone());
            }
        }
    }
    assert!(out.len() >= 7, "could not read the config structs: {out:?}");
    out
}

/// `section -> keys` documented in mx2.toml(5): `.TP` then `.B key` under
/// a `.SH` heading naming `[section]` (or "TOP-LEVEL KEYS").
fn man5_keys() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section: Option<String> = None;
    let mut after_tp = false;
    for l in read("packaging/man/mx2.toml.5").lines() {
        if let Some(h) = l.strip_prefix(".SH ") {
            section = if h.contains("TOP-LEVEL KEYS") {
                Some(String::new())
            } else {
                h.split_once('[')
                    .and_then(|(_, r)| r.split_once(']'))
                    .map(|(s, _)| s.to_string())
            };
            after_tp = false;
            continue;
        }
        if l == ".TP" {
            after_tp = true;
            continue;
        }
        if after_tp {
            if let (Some(s), Some(k)) = (&section, l.strip_prefix(".B ")) {
                out.entry(s.clone()).or_default().insert(k.to_string());
            }
        }
        after_tp = false;
    }
    out
}

#[test]
fn every_config_key_is_in_the_sample_and_the_man_page() {
    let accepted = accepted_keys();
    assert_eq!(
        sample_keys("packaging/etc/mx2.toml"),
        accepted,
        "packaging/etc/mx2.toml (left) must show every key src/config.rs accepts (right)"
    );
    assert_eq!(
        sample_keys("packaging/init/mx2.toml"),
        accepted,
        "packaging/init/mx2.toml (`mx2 init`, left) must show every key src/config.rs accepts (right)"
    );
    assert_eq!(
        man5_keys(),
        accepted,
        "packaging/man/mx2.toml.5 (left) must document every key src/config.rs accepts (right)"
    );
}

#[test]
fn man5_states_the_defaults_of_the_spec() {
    let page = read("packaging/man/mx2.toml.5");
    for default in [
        "127.0.0.1:2525",
        "0.0.0.0:25",
        "\\(dq50MB\\(dq",
        "Default: 100.",
        "Default: 1000.",
        "Default: 20.",
        "./mx2\\-data/queue.db",
        "/var/lib/mx2/queue.db",
        "\\(dq4h\\(dq",
        "\\(dq5d\\(dq",
        "./transport.map",
        "./header_checks",
        "\\(dqopportunistic\\(dq",
        "\\(dqaccept\\(dq",
        "\\(dqtext\\(dq",
        "/run/mx2/control.sock",
    ] {
        assert!(page.contains(default), "mx2.toml.5 lacks {default}");
    }
}

// ---- the sample tables -----------------------------------------------------------

/// The rule lines of a header_checks file (no comments or blank lines).
fn rule_lines(t: &str) -> Vec<String> {
    t.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

#[test]
fn sample_header_checks_are_the_operators_rules_unmodified() {
    // The rules quoted in README.md (SPEC §1), character for character.
    let readme = read("README.md");
    let block = readme
        .split("```")
        .find(|b| b.contains("DISCARD") && b.contains("IGNORE"))
        .expect("README.md quotes the operator's rules");
    let sample = read("packaging/etc/header_checks");
    assert_eq!(rule_lines(&sample), rule_lines(block));
    assert_eq!(rule_lines(&sample).len(), 8);
}

#[test]
fn sample_header_checks_do_what_their_author_meant() {
    let dir = tempfile::tempdir().unwrap();
    let rules = root().join("packaging/etc/header_checks");
    let rules = rules.to_str().unwrap();
    let run = |msg: &str| {
        let f = dir.path().join("msg");
        std::fs::write(&f, msg).unwrap();
        let out = mx2(&[
            "header-checks",
            "test",
            "--rules",
            rules,
            f.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let cleaned = run("Received: from a by b\r\nX-Spam-Checker-Version: SpamAssassin 4.0\r\nX-Spam-Level: *\r\nX-Spam-Status: No, score=0.1 required=5.0\r\n\ttests=NONE\r\nX-Virus-Scanned: clamav-milter\r\nX-Virus-Status: Clean\r\nSubject: hi\r\n\r\nbody\r\n");
    assert_eq!(
        cleaned,
        "Received: from a by b\r\nSubject: hi\r\n\r\nbody\r\n"
    );
    for bad in [
        "X-Spam-Flag: YES\r\nSubject: s\r\n\r\nb\r\n",
        "X-Virus-Status: Yes\r\nSubject: v\r\n\r\nb\r\n",
        "From: <>\r\nSubject: n\r\n\r\nb\r\n",
    ] {
        assert!(run(bad).starts_with("DISCARD"), "{bad:?}");
    }
}

#[test]
fn sample_transport_map_relays_nothing_and_its_examples_parse() {
    let inst = Installed::new(|_, t| t);
    let out = inst.mx2(&["transport", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "the shipped map must relay nothing");

    let examples = Installed::new(|f, t| {
        if f != "transport.map" {
            return t;
        }
        t.lines()
            .map(|l| {
                l.strip_prefix('#')
                    .filter(|r| r.starts_with("example"))
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    let out = examples.mx2(&["transport", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().count(),
        3,
        "{}",
        text(&out.stdout)
    );
    let out = examples.mx2(&["transport", "lookup", "bob@example.jp"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("primary1.example.net"));
    let out = examples.mx2(&["check-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

// ---- man pages -----------------------------------------------------------------

#[test]
fn man_pages_are_generated_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let out = mx2(&["man", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = |name: &str| {
        std::fs::read_to_string(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let main = page("mx2.8");
    assert!(main.lines().any(|l| l.starts_with(".TH mx2 8 ")), "{main}");
    for needle in [
        "mx2\\-serve(8)",
        "mx2\\-check\\-config(8)",
        "mx2\\-init(8)",
        "mx2\\-queue(8)",
        "mx2\\-transport(8)",
        "mx2\\-header\\-checks(8)",
        "\\-\\-config",
        "MX2_CONFIG",
        ".SH FILES",
        ".SH SIGNALS",
        "\\fBmx2.toml\\fR(5)",
    ] {
        assert!(main.contains(needle), "mx2.8 lacks {needle}");
    }
    for sub in [
        "mx2-serve.8",
        "mx2-check-config.8",
        "mx2-init.8",
        "mx2-queue.8",
        "mx2-queue-list.8",
        "mx2-queue-flush.8",
        "mx2-transport-add.8",
        "mx2-header-checks-test.8",
    ] {
        assert!(page(sub).lines().any(|l| l.starts_with(".TH ")), "{sub}");
    }
    // The generator itself is hidden.
    assert!(!dir.path().join("mx2-man.8").exists());
    assert!(!main.contains("mx2\\-man("));
    let help = text(&mx2(&["--help"]).stdout);
    assert!(!help.contains(" man "), "{help}");

    // Render everything with groff's warnings on, where groff is installed.
    let groff = Command::new("groff").arg("--version").output();
    if groff.map(|o| o.status.success()).unwrap_or(false) {
        let mut pages: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        pages.push(root().join("packaging/man/mx2.toml.5"));
        for p in pages {
            let out = Command::new("groff")
                .args(["-man", "-Tutf8", "-ww", "-z"])
                .arg(&p)
                .output()
                .unwrap();
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "{}: {}",
                p.display(),
                text(&out.stderr)
            );
        }
    }
}

// ---- scripts and cargo-deb metadata --------------------------------------------------

fn syntax_ok(shell: &str, rel: &str) {
    let out = Command::new(shell)
        .arg("-n")
        .arg(root().join(rel))
        .output()
        .unwrap();
    assert!(out.status.success(), "{rel}: {}", text(&out.stderr));
}

fn mode(rel: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(root().join(rel))
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn maintainer_scripts() {
    for s in ["postinst", "prerm", "postrm"] {
        let rel = format!("packaging/debian/{s}");
        syntax_ok("sh", &rel);
        assert_eq!(mode(&rel) & 0o111, 0o111, "{rel} must be executable");
        assert!(read(&rel).starts_with("#!/bin/sh\n"), "{rel}");
        assert!(read(&rel).contains("set -e\n"), "{rel}");
    }
    let postinst = read("packaging/debian/postinst");
    assert!(postinst.contains("adduser --quiet --system"));
    assert!(postinst.contains("--home \"$STATE\""));
    assert!(postinst.contains("--no-create-home"));
    assert!(postinst.contains("chown mx2:mx2 \"$STATE\""));
    // systemd calls are guarded for machines without systemd.
    assert!(postinst.contains("[ -d /run/systemd/system ]"));
    let postrm = read("packaging/debian/postrm");
    assert!(postrm.contains("purge)"));
    assert!(postrm.contains("rm -rf /var/lib/mx2"));
    assert!(!postrm.contains("deluser"), "the mx2 user is kept on purge");
}

#[test]
fn freebsd_rc_script() {
    let rel = "packaging/freebsd/mx2";
    syntax_ok("sh", rel);
    assert_eq!(mode(rel) & 0o111, 0o111, "{rel} must be executable");
    let rc = read(rel);
    for needle in [
        ". /etc/rc.subr",
        "name=mx2",
        "rcvar=mx2_enable",
        "load_rc_config $name",
        "command=\"/usr/sbin/daemon\"",
        "-p ${pidfile} -u ${mx2_runas}",
        "/usr/local/bin/mx2",
        "serve --config ${mx2_config}",
        "/usr/local/etc/mx2/mx2.toml",
        "extra_commands=\"reload configtest\"",
        "sig_reload=\"HUP\"",
        "run_rc_command \"$1\"",
    ] {
        assert!(rc.contains(needle), "{rel} lacks {needle}");
    }
    // rc.subr runs the command through su when ${name}_user is set, and
    // daemon(8) must start as root to write the pidfile and switch user.
    assert!(
        !rc.contains("mx2_user"),
        "{rel}: use mx2_runas, not mx2_user"
    );
}

#[test]
fn ci_and_build_scripts_parse() {
    for rel in ["packaging/ci.sh", "packaging/build-deb.sh"] {
        syntax_ok("bash", rel);
        assert_eq!(mode(rel) & 0o111, 0o111, "{rel} must be executable");
    }
}

/// `(source, dest)` of the cargo-deb assets.
fn deb_assets() -> Vec<(String, String)> {
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("[package.metadata.deb] assets")
        .iter()
        .map(|a| {
            let a = a.as_array().unwrap();
            (
                a[0].as_str().unwrap().to_string(),
                a[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn deb_metadata_ships_the_packaging_files() {
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    assert_eq!(
        deb["maintainer-scripts"].as_str(),
        Some("packaging/debian/")
    );
    assert!(deb["depends"].as_str().unwrap().contains("adduser"));
    let assets = deb_assets();
    for (src, _) in &assets {
        if !src.starts_with("target/") {
            assert!(root().join(src).is_file(), "asset {src} does not exist");
        }
    }
    let dests: BTreeSet<&str> = assets.iter().map(|(_, d)| d.as_str()).collect();
    for d in [
        "usr/bin/",
        "etc/mx2/mx2.toml",
        "etc/mx2/transport.map",
        "etc/mx2/header_checks",
        "lib/systemd/system/mx2.service",
        "usr/share/man/man8/",
        "usr/share/man/man5/mx2.toml.5",
    ] {
        assert!(dests.contains(d), "no asset installs {d}");
    }
}
