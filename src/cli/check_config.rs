//! `mx2 check-config`: validate everything the daemon would load (like `postfix check`).
//!
//! Errors go to stderr as `FILE:LINE: message`; stdout says which header
//! rules are in force (a file, or the built-in ones) and ends with `ok`.

use crate::config::Config;
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
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    for e in &cfg.serve_errors {
        bad = true;
        eprintln!("{e}");
    }
    // What `serve` would refuse to start without (outbound TLS set-up).
    if let Err(e) = crate::relay::connector(&cfg) {
        bad = true;
        eprintln!("relay: {e:#}");
    }
    let t = &cfg.relay.transport_map;
    if let Err(e) = tables::load_transport(t) {
        bad = true;
        eprintln!("{e}");
    } else if !t.explicit && !t.path.is_file() {
        eprintln!(
            "warning: no transport map at {} (built-in default path; table is empty)",
            t.path.display()
        );
    }
    // The header rules are never "empty by default": say which are in force.
    let r = &cfg.relay.header_checks;
    match tables::load_rules(r) {
        Ok(rules) => println!("header_checks: {}", tables::describe_rules(r, &rules)),
        Err(e) => {
            bad = true;
            eprintln!("{e}");
        }
    }
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
