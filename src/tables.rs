//! The lookup tables the daemon consults on every message, kept live.
//!
//! There is no `postmap` step: the text files are the tables. A watcher
//! re-reads a file within a second or two of its change (and on SIGHUP); a
//! file that fails to load keeps the previous table in force and the error
//! is logged as `FILE:LINE: message`, so a typo never takes the relay down.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Result};
use header_checks::Rules;
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

/// Loads the header rules (warnings are logged), treating an absent default file as empty.
pub fn load_rules(t: &TablePath) -> Result<Rules> {
    if absent_default(t) {
        return Ok(Rules::empty());
    }
    let loaded = Rules::load(&t.path).map_err(|e| anyhow!("{e}"))?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    Ok(loaded.rules)
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
        if absent_default(r) {
            tracing::warn!(
                "no header_checks file at {}: no header rules",
                r.path.display()
            );
        }
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
                        "reloaded header_checks {} ({} rules)",
                        self.rules_src.path.display(),
                        r.len()
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
