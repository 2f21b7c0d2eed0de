//! `mx2 transport list|add|remove|lookup`: read and edit the transport map in place.
//!
//! The text file is the table (no `postmap` step): `add` and `remove` edit it
//! keeping comments, order and formatting, validate the result, and replace
//! it atomically; the running daemon notices the change and reloads it.

use std::io::{self, Write};
use std::path::Path;

use anyhow::bail;
use transport::{
    add_entry, edit_locked, normalize_domain, remove_entry, write_atomic, Host, TransportMap,
};

/// `mx2 transport …`
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print the table's entries.
    List,
    /// Add `DOMAIN NEXTHOP` (validated, atomic write, comments kept).
    Add { domain: String, nexthop: String },
    /// Remove the entry for DOMAIN.
    Remove { domain: String },
    /// Show which entry routes ADDRESS (or a bare domain) and where it goes.
    Lookup { address: String },
}

/// Runs the subcommand against the map at `path`. Returns the exit code.
pub fn run(cmd: &Command, path: &Path) -> anyhow::Result<i32> {
    match cmd {
        Command::List => list(path),
        Command::Add { domain, nexthop } => add(path, domain, nexthop),
        Command::Remove { domain } => remove(path, domain),
        Command::Lookup { address } => lookup(path, address),
    }
}

/// Loads the table; on errors prints each `FILE:LINE: message` on stderr.
fn load(path: &Path) -> Option<TransportMap> {
    match TransportMap::load(path) {
        Ok(map) => Some(map),
        Err(e) => {
            for line in &e.errors {
                eprintln!("{line}");
            }
            None
        }
    }
}

fn list(path: &Path) -> anyhow::Result<i32> {
    let Some(map) = load(path) else {
        return Ok(1);
    };
    let mut out = io::stdout().lock();
    for r in map.entries() {
        writeln!(out, "{}\t{}", r.pattern, r.raw_value)?;
    }
    out.flush()?;
    Ok(0)
}

/// The file's text, or `""` if it does not exist yet.
fn read_text(path: &Path) -> anyhow::Result<String> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{}: not valid UTF-8", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    }
}

/// Runs a read-modify-write of the map under the editors' lock
/// (`transport::edit_locked`), keeping `edit`'s own error as it is.
fn locked<T>(path: &Path, edit: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mut inner = None;
    let res = edit_locked(path, || match edit() {
        Ok(v) => Ok(v),
        Err(e) => {
            inner = Some(e);
            Err(io::Error::other("edit failed"))
        }
    });
    match (res, inner) {
        (_, Some(e)) => Err(e),
        (Ok(v), None) => Ok(v),
        (Err(e), None) => bail!("cannot lock the directory of {}: {e}", path.display()),
    }
}

fn add(path: &Path, domain: &str, nexthop: &str) -> anyhow::Result<i32> {
    let file = path.display().to_string();
    let new = locked(path, || {
        let text = read_text(path)?;
        let new = match add_entry(&text, &file, domain, nexthop) {
            Ok(t) => t,
            Err(e) => bail!("{e}"),
        };
        if let Err(e) = write_atomic(path, &new) {
            bail!("cannot write {file}: {e}");
        }
        Ok(new)
    })?;
    let map = TransportMap::parse(&new, &file).map_err(|e| anyhow::anyhow!("{e}"))?;
    match map.entry(domain.trim()) {
        Some(r) => println!("added {file}:{}: {} {}", r.line, r.pattern, r.raw_value),
        None => println!("added {} to {file}", domain.trim()),
    }
    Ok(0)
}

fn remove(path: &Path, domain: &str) -> anyhow::Result<i32> {
    let file = path.display().to_string();
    let old = locked(path, || remove_from(path, &file, domain))?;
    match old {
        Some(r) => println!("removed {file}:{}: {} {}", r.line, r.pattern, r.raw_value),
        None => println!("removed {} from {file}", domain.trim()),
    }
    Ok(0)
}

/// Removes `domain`'s entry; returns the entry as it was.
fn remove_from(path: &Path, file: &str, domain: &str) -> anyhow::Result<Option<transport::Route>> {
    let text = match std::fs::read(path) {
        Ok(bytes) => {
            String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{file}: not valid UTF-8"))?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            bail!("{} is not in {file} ({file} does not exist)", domain.trim())
        }
        Err(e) => bail!("cannot read {file}: {e}"),
    };
    let old = TransportMap::parse(&text, file)
        .ok()
        .and_then(|m| m.entry(domain.trim()).cloned());
    let new = match remove_entry(&text, file, domain) {
        Ok(t) => t,
        Err(e) => bail!("{e}"),
    };
    if let Err(e) = write_atomic(path, &new) {
        bail!("cannot write {file}: {e}");
    }
    Ok(old)
}

/// The domain of `user@domain`, `<user@domain>` or a bare domain.
fn domain_of(address: &str) -> &str {
    let a = address.trim();
    let a = a
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(a);
    match a.rsplit_once('@') {
        Some((_, d)) => d,
        None => a,
    }
}

fn lookup(path: &Path, address: &str) -> anyhow::Result<i32> {
    let domain = domain_of(address);
    if domain.is_empty() {
        eprintln!("no route: \"{}\" has no domain", address.trim());
        return Ok(1);
    }
    if domain.starts_with('[') {
        eprintln!("no route for {domain}: address literals are never relayed");
        return Ok(1);
    }
    let normalized = match normalize_domain(domain) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("no route for \"{domain}\": not a valid domain ({e})");
            return Ok(1);
        }
    };
    let Some(map) = load(path) else {
        return Ok(1);
    };
    let Some(route) = map.lookup(&normalized) else {
        eprintln!(
            "no route for {domain} in {}: not a relay domain (mail for it is refused at RCPT)",
            map.file()
        );
        return Ok(1);
    };

    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{}:{}: {} {}",
        map.file(),
        route.line,
        route.pattern,
        route.raw_value
    )?;
    if route.nexthops.is_empty() {
        writeln!(
            out,
            "next hop: MX lookup of {normalized} (empty nexthop: the recipient domain itself)"
        )?;
    }
    let many = route.nexthops.len() > 1;
    for (i, hop) in route.nexthops.iter().enumerate() {
        let label = if many {
            format!("next hop {}", i + 1)
        } else {
            "next hop".to_string()
        };
        let port = hop.port.map(|p| format!(", port {p}")).unwrap_or_default();
        let how = match (&hop.host, hop.mx_lookup) {
            (Host::Name(n), true) => format!("MX lookup of {n}{port}"),
            (host, _) => format!("direct to host {host}{port}, no MX lookup"),
        };
        writeln!(out, "{label}: {hop} ({how})")?;
    }
    if map.is_relay_domain(&normalized) {
        writeln!(out, "relay domain: yes (mx2 accepts mail for {normalized})")?;
    } else {
        writeln!(
            out,
            "relay domain: no (only the \"*\" fallback matches; it routes mail mx2 sends itself, \
             such as bounces; RCPT to {normalized} is refused)"
        )?;
    }
    out.flush()?;
    Ok(0)
}
