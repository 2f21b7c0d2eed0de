//! `mx2 recipients check ADDRESS`: what RCPT would answer, and why.

use std::sync::Arc;

use anyhow::{anyhow, Result};

use crate::config::Config;
use crate::recipients::{CacheWriter, Decision, Verifier};
use crate::smtp::address;
use crate::tables::Tables;

/// `mx2 recipients …`
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Decide ADDRESS as RCPT would (static list, cached answer, or a live callout).
    Check { address: String },
}

pub fn run(cmd: &Command, cfg: Config) -> Result<i32> {
    let Command::Check { address } = cmd;
    let a = address::parse(address.trim_start_matches('<').trim_end_matches('>'))
        .map_err(|_| anyhow!("{address}: not an address"))?;
    let cfg = Arc::new(cfg);
    let tables = Arc::new(Tables::load(&cfg)?);
    if !tables.transport().is_relay_domain(&a.domain) {
        println!(
            "{}: reject (554 5.7.1 Relay access denied: {} is not in the transport map)",
            crate::escape::line(&a.canonical),
            crate::escape::line(&a.domain)
        );
        return Ok(1);
    }
    let v = Verifier::new(
        cfg.clone(),
        tables,
        CacheWriter::Direct(cfg.queue.path.clone()),
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(v.check(&a.local, &a.domain, &a.canonical));
    let word = match out.decision {
        Decision::Accept => "accept",
        Decision::Reject => "reject",
        Decision::TempFail | Decision::InProgress => "tempfail",
    };
    // The source may quote the primary's reply: escaped for the terminal.
    println!(
        "{}: {word} ({})",
        crate::escape::line(&a.canonical),
        crate::escape::line(&out.source)
    );
    Ok(if out.decision == Decision::Accept {
        0
    } else {
        1
    })
}
