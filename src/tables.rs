//! The lookup tables the daemon consults on every message, kept live.
//!
//! There is no `postmap` step: the text files are the tables. A watcher
//! re-reads a file within a second or two of its change (and on SIGHUP); a
//! file that fails to load keeps the previous table in force and the error
//! is logged as `FILE:LINE: message`, so a typo never takes the relay down.
//!
//! A table missing at its *default* path is not an error, so a fresh
//! checkout runs: the transport map is then empty (nothing relayable), and
//! the header rules are the built-in ones, [`BUILTIN_RULES`]: the operator's
//! rules, the reason mx2 exists, rather than no rules at all.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Result};
use header_checks::{LoadError, Loaded, Rules};
use transport::TransportMap;

use crate::config::{Config, TablePath};

/// Current transport map and header rules, swapped atomically on reload.
pub struct Tables {
    transport: RwLock<Arc<TransportMap>>,
    rules: RwLock<Arc<Rules>>,
    transport_src: TablePath,
    rules_src: TablePath,
    stamps: RwLock<(Option<Stamp>, Option<Stamp>)>,
}

/// What a file looked like when it was last loaded.
type Stamp = (SystemTime, u64);

fn stamp(p: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Whether a table at a default path is simply not there (not an error).
fn absent_default(t: &TablePath) -> bool {
    !t.explicit && !t.path.is_file()
}

/// Loads the transport map, treating an absent default file as empty.
pub fn load_transport(t: &TablePath) -> Result<TransportMap> {
    if absent_default(t) {
        return TransportMap::parse("", &t.path.display().to_string()).map_err(|e| anyhow!("{e}"));
    }
    TransportMap::load(&t.path).map_err(|e| anyhow!("{e}"))
}

/// The header rules in force when no file is at the default path: the
/// packaged `/etc/mx2/header_checks` (the operator's eight rules, SPEC §1),
/// byte for byte. Included from that file rather than copied, so the
/// built-in rules and the packaged ones cannot drift apart; `mx2 init`
/// writes the same text.
pub const BUILTIN_RULES: &str = include_str!("../packaging/etc/header_checks");

/// The name the built-in rules go by in `FILE:LINE: message` lines.
pub const BUILTIN_RULES_NAME: &str = "<built-in header_checks>";

/// Whether the built-in rules stand in for `t` (no file at its default path).
pub fn uses_builtin_rules(t: &TablePath) -> bool {
    absent_default(t)
}

/// Reads the header rules `t` puts in force, with their load warnings:
/// the built-in rules when no file is at the default path, else the file.
pub fn read_rules(t: &TablePath) -> std::result::Result<Loaded, LoadError> {
    if uses_builtin_rules(t) {
        return Rules::parse(BUILTIN_RULES.as_bytes(), BUILTIN_RULES_NAME);
    }
    Rules::load(&t.path)
}

/// Loads the header rules (warnings are logged); see [`read_rules`].
pub fn load_rules(t: &TablePath) -> Result<Rules> {
    let loaded = read_rules(t).map_err(|e| anyhow!("{e}"))?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    Ok(loaded.rules)
}

/// Which header rules are in force, for logs and `check-config`:
/// `./header_checks (8 rules)` or
/// `the built-in rules (8 rules, as the packaged /etc/mx2/header_checks; no file at ./header_checks)`.
pub fn describe_rules(t: &TablePath, rules: &Rules) -> String {
    let n = match rules.len() {
        1 => "1 rule".to_string(),
        n => format!("{n} rules"),
    };
    if uses_builtin_rules(t) {
        format!(
            "the built-in rules ({n}, as the packaged /etc/mx2/header_checks; no file at {})",
            t.path.display()
        )
    } else {
        format!("{} ({n})", t.path.display())
    }
}

impl Tables {
    /// Loads both tables; any error here is fatal (the daemon must not start half-configured).
    pub fn load(cfg: &Config) -> Result<Tables> {
        let t = &cfg.relay.transport_map;
        let r = &cfg.relay.header_checks;
        let transport = load_transport(t)?;
        let rules = load_rules(r)?;
        if absent_default(t) {
            tracing::warn!(
                "no transport map at {}: no domain is relayable yet (add one with `mx2 transport add DOMAIN NEXTHOP`)",
                t.path.display()
            );
        }
        tracing::info!("header_checks in force: {}", describe_rules(r, &rules));
        Ok(Tables {
            transport: RwLock::new(Arc::new(transport)),
            rules: RwLock::new(Arc::new(rules)),
            stamps: RwLock::new((stamp(&t.path), stamp(&r.path))),
            transport_src: t.clone(),
            rules_src: r.clone(),
        })
    }

    pub fn transport(&self) -> Arc<TransportMap> {
        self.transport
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn rules(&self) -> Arc<Rules> {
        self.rules
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Reloads the tables whose files changed (or all, when `force`).
    pub fn reload(&self, force: bool) {
        let now = (stamp(&self.transport_src.path), stamp(&self.rules_src.path));
        let before = match self.stamps.read() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        };
        if force || now.0 != before.0 {
            match load_transport(&self.transport_src) {
                Ok(t) => {
                    tracing::info!(
                        "reloaded transport map {} ({} entries)",
                        self.transport_src.path.display(),
                        t.entries().len()
                    );
                    if let Ok(mut g) = self.transport.write() {
                        *g = Arc::new(t);
                    }
                }
                Err(e) => tracing::error!("transport map not reloaded, previous table kept: {e}"),
            }
        }
        if force || now.1 != before.1 {
            match load_rules(&self.rules_src) {
                Ok(r) => {
                    tracing::info!(
                        "reloaded header_checks: {}",
                        describe_rules(&self.rules_src, &r)
                    );
                    if let Ok(mut g) = self.rules.write() {
                        *g = Arc::new(r);
                    }
                }
                Err(e) => tracing::error!("header_checks not reloaded, previous rules kept: {e}"),
            }
        }
        if let Ok(mut g) = self.stamps.write() {
            *g = now;
        }
    }

    /// Polls the files once a second for the daemon's lifetime.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let me = self.clone();
            // File reads and regex compiles are blocking work.
            let _ = tokio::task::spawn_blocking(move || me.reload(false)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn table(path: PathBuf, explicit: bool) -> TablePath {
        TablePath { path, explicit }
    }

    /// What the rules do to a message carrying the seed's scanner headers.
    fn cleaned(rules: &Rules) -> Vec<u8> {
        let msg = b"X-Spam-Checker-Version: SpamAssassin 4.0.0\r\nX-Spam-Level: \r\nX-Spam-Status: No, score=0.1 required=17.0\r\nX-Virus-Scanned: clamav-milter 1.0.1\r\nX-Virus-Status: Clean\r\nSubject: hi\r\n\r\nbody\r\n";
        rules.apply(msg).message(msg)
    }

    #[test]
    fn no_file_at_the_default_path_gives_the_builtin_rules() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Missing, and a directory (like the library crate's in the repository root).
        std::fs::create_dir(dir.path().join("header_checks")).expect("mkdir");
        for p in [dir.path().join("missing"), dir.path().join("header_checks")] {
            let t = table(p, false);
            assert!(uses_builtin_rules(&t));
            let rules = load_rules(&t).expect("built-in rules");
            assert_eq!(rules.len(), 8);
            assert_eq!(cleaned(&rules), b"Subject: hi\r\n\r\nbody\r\n");
            assert!(
                describe_rules(&t, &rules).starts_with("the built-in rules (8 rules"),
                "{}",
                describe_rules(&t, &rules)
            );
        }
    }

    #[test]
    fn a_file_at_the_default_path_wins_over_the_builtin_rules() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("header_checks");
        std::fs::write(&p, "/^Subject:/ IGNORE\n").expect("write");
        let t = table(p.clone(), false);
        assert!(!uses_builtin_rules(&t));
        let rules = load_rules(&t).expect("rules");
        assert_eq!(rules.len(), 1);
        assert_eq!(
            describe_rules(&t, &rules),
            format!("{} (1 rule)", p.display())
        );
    }

    #[test]
    fn a_configured_rules_path_that_is_missing_stays_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("header_checks")).expect("mkdir");
        for p in [dir.path().join("missing"), dir.path().join("header_checks")] {
            let t = table(p.clone(), true);
            assert!(!uses_builtin_rules(&t));
            let e = load_rules(&t).expect_err("configured and missing");
            assert!(
                e.to_string()
                    .starts_with(&format!("{}: cannot read rules", p.display())),
                "{e}"
            );
        }
    }
}
