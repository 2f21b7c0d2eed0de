//! `mx2 check-config`: validate everything the daemon would load (like `postfix check`).

use crate::config::{Config, TablePath};
use crate::tables;

/// Prints every problem as `FILE:LINE: message` on stderr; returns the exit code.
pub fn run(cfg_path: &std::path::Path, explicit: bool) -> i32 {
    let cfg = match Config::load(cfg_path, explicit) {
        Ok(c) => c,
        Err(e) => {
            for line in &e.errors {
                eprintln!("{line}");
            }
            return 1;
        }
    };
    let mut bad = false;
    let report = |what: &str, t: &TablePath, res: anyhow::Result<()>, bad: &mut bool| {
        if let Err(e) = res {
            *bad = true;
            eprintln!("{e}");
        } else if !t.explicit && !t.path.is_file() {
            eprintln!(
                "warning: no {what} at {} (built-in default path; table is empty)",
                t.path.display()
            );
        }
    };
    let t = &cfg.relay.transport_map;
    report(
        "transport map",
        t,
        tables::load_transport(t).map(|_| ()),
        &mut bad,
    );
    let r = &cfg.relay.header_checks;
    report(
        "header_checks",
        r,
        tables::load_rules(r).map(|_| ()),
        &mut bad,
    );
    if let (Some(c), Some(k)) = (&cfg.smtp.tls_cert, &cfg.smtp.tls_key) {
        if let Err(e) = crate::smtp::tls::acceptor(c, k) {
            bad = true;
            eprintln!("{e:#}");
        }
    }
    if let Err(e) = crate::recipients::load_list(cfg.relay.relay_recipients.as_ref()) {
        bad = true;
        eprintln!("{e}");
    }
    if let Err(e) = crate::scan::Scanners::from_config(&cfg) {
        bad = true;
        let file = cfg
            .source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<defaults>".into());
        eprintln!("{file}: [scan]: {e:#}");
    }
    if bad {
        1
    } else {
        println!(
            "{}: ok",
            cfg.source
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "built-in defaults".into())
        );
        0
    }
}
