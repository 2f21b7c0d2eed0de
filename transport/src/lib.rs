//! Postfix `transport(5)` maps for mx2: parse, look up, and edit in place.
//!
//! # Why a text file and no `postmap` step
//!
//! Postfix compiles `/etc/postfix/transport` into `transport.db` with
//! `postmap`, and forgetting that step is a classic way to make an edit do
//! nothing. mx2 reads the text file itself: **the text file is the table**.
//! The daemon re-reads it when it changes (or on SIGHUP); `mx2 transport
//! add/remove` edit it with [`add_entry`] / [`remove_entry`], which keep
//! comments, order and formatting byte for byte, validate the result, and
//! replace the file with [`write_atomic`], so a reload never sees half a
//! file. Everything here is pure functions over text (no I/O besides
//! [`TransportMap::load`] and [`write_atomic`], no async).
//!
//! # Syntax (as in Postfix)
//!
//! ```text
//! # comment
//! example.jp      smtp:[primary1.example.net]
//! .example.jp     smtp:[primary1.example.net]:2525
//! example.net     smtp:mx.example.net, [backup.example.net]
//! example.org     relay:[ipv6:2001:db8::1]
//! example.com     smtp:
//! *               smtp:
//! ```
//!
//! * A logical line starts with non-whitespace text; a line starting with
//!   whitespace continues it. Blank lines and comment lines (`#` as first
//!   non-space character) are ignored, also between a line and its
//!   continuation (Postfix `readllines()`).
//! * The pattern ends at the first whitespace; the rest is the result
//!   `transport:nexthop`, split at the **first** `:` as trivial-rewrite(8)
//!   does. A result without `:` is a transport name alone (`smtp` = `smtp:`);
//!   so `example.jp [host]` is an error (Postfix would look for a transport
//!   called `[host]`), with a hint to write `smtp:[host]`.
//! * Transports: `smtp`, `relay` (also an smtp(8) client in Postfix) and
//!   empty (the default, SMTP). Anything else (`local`, `error`, `lmtp`,
//!   `discard`, …) is an error: mx2 only relays by SMTP. Names are
//!   case-sensitive, as master.cf service names are.
//! * The nexthop is a list of destinations separated by commas and/or
//!   whitespace (Postfix 3.5+), tried in order: `[host]` and `[host]:port`
//!   (A/AAAA of host, no MX lookup), `host` and `host:port` (MX lookup of
//!   host), `[192.0.2.1]`, `[192.0.2.1]:2525`, `[ipv6:2001:db8::1]` (also
//!   `[2001:db8::1]`). Ports are 1–65535 or `smtp`, `submission`,
//!   `submissions`/`smtps`; `[host]:` means the default port. IP addresses
//!   must be bracketed.
//! * **An empty nexthop** (`example.jp smtp:`, `example.jp :`,
//!   `example.jp smtp`) means: deliver to the recipient domain itself, with
//!   an MX lookup. It is represented by an empty [`Route::nexthops`]; the
//!   relay substitutes the recipient's domain.
//! * Patterns: `example.jp` (that domain only), `.example.jp` (strict
//!   subdomains: `a.example.jp`, `b.a.example.jp`, not `example.jp`), `*`
//!   (fallback for mail mx2 sends itself; never makes a domain relayable).
//!   Address patterns (`user@domain`) are not supported. Case is ignored and
//!   IDNs match in U-label or A-label form (everything is normalised to
//!   lower-case A-labels). A trailing dot on a pattern is ignored.
//! * Errors (all of them, each `FILE:LINE: message`, LINE being the first
//!   line of the logical line): missing result, unsupported transport, bad
//!   pattern, bad host or port, duplicate pattern (after normalisation;
//!   postmap would only warn and keep the first), continuation text with no
//!   line to continue.
//!
//! # Lookup order
//!
//! As trivial-rewrite(8) with the default `parent_domain_matches_subdomains`
//! (which does not list `transport_maps`). For `a.b.example.jp`:
//! `a.b.example.jp`, then `.b.example.jp`, `.example.jp`, `.jp`, then `*`. The query is lower-cased, may end in one
//! dot, may be a U-label; address literals (`[192.0.2.1]`) and malformed
//! names never match anything.

mod atomic;
mod domain;
mod edit;
mod lines;
mod nexthop;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

pub use atomic::{edit_locked, write_atomic};
pub use domain::normalize_domain;
pub use edit::{add_entry, remove_entry};
pub use nexthop::{parse_nexthop, parse_nexthop_list, Host, NextHop};

use domain::parse_pattern;
use lines::{logical_lines, physical_lines, split_key_value};
use nexthop::parse_result;

/// One entry of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The pattern as written: `example.jp`, `.example.jp`, `*`.
    pub pattern: String,
    /// 1-based line number of the entry's first line.
    pub line: usize,
    /// `"smtp"` or `"relay"` (an empty transport field is reported as
    /// `"smtp"`). Both mean delivery by SMTP.
    pub transport: String,
    /// Destinations, tried in order. **Empty** = the nexthop field was empty:
    /// MX lookup of the recipient domain itself (the caller substitutes it).
    pub nexthops: Vec<NextHop>,
    /// The result column as written (continuation lines joined, outer
    /// whitespace trimmed), e.g. `smtp:[primary1.example.net]`.
    pub raw_value: String,
}

impl Route {
    /// `true` for the `*` fallback entry.
    pub fn is_wildcard(&self) -> bool {
        self.pattern == "*"
    }
}

/// Every problem found in a table, each formatted `FILE:LINE: message`
/// (or `FILE: message` for a file that cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The messages, in file order.
    pub errors: Vec<String>,
}

impl fmt::Display for ParseError {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.errors.join("\n"))
    }
}

impl std::error::Error for ParseError {}

/// A parsed transport map.
#[derive(Debug, Clone, Default)]
pub struct TransportMap {
    file: String,
    entries: Vec<Route>,
    /// Normalised key (`example.jp`, `.example.jp`, `*`) → index in entries.
    index: HashMap<String, usize>,
}

impl TransportMap {
    /// Parses table text; `file` is used in error messages.
    pub fn parse(text: &str, file: &str) -> Result<TransportMap, ParseError> {
        let phys = physical_lines(text);
        let mut errors = Vec::new();
        let mut entries = Vec::new();
        let mut index = HashMap::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for l in logical_lines(text, &phys) {
            let line = l.first + 1;
            if l.orphan {
                errors.push(format!(
                    "{file}:{line}: logical line must not start with whitespace"
                ));
                continue;
            }
            let (pattern, value) = split_key_value(&l.text);
            let mut ok = true;
            let key = match parse_pattern(pattern) {
                Ok(p) => Some(p.key()),
                Err(e) => {
                    errors.push(format!("{file}:{line}: bad pattern \"{pattern}\": {e}"));
                    None
                }
            };
            if let Some(k) = &key {
                if let Some(first) = seen.get(k) {
                    errors.push(format!(
                        "{file}:{line}: duplicate entry for \"{pattern}\" (first at {file}:{first})"
                    ));
                    ok = false;
                } else {
                    seen.insert(k.clone(), line);
                }
            }
            let result = if value.is_empty() {
                errors.push(format!(
                    "{file}:{line}: missing result for \"{pattern}\" (expected \
                     \"PATTERN [transport:]nexthop\")"
                ));
                None
            } else {
                match parse_result(value) {
                    Ok(r) => Some(r),
                    Err(es) => {
                        errors.extend(es.into_iter().map(|e| format!("{file}:{line}: {e}")));
                        None
                    }
                }
            };
            if let (true, Some(k), Some((transport, nexthops))) = (ok, key, result) {
                index.insert(k, entries.len());
                entries.push(Route {
                    pattern: pattern.to_string(),
                    line,
                    transport,
                    nexthops,
                    raw_value: value.to_string(),
                });
            }
        }
        if errors.is_empty() {
            Ok(TransportMap {
                file: file.to_string(),
                entries,
                index,
            })
        } else {
            Err(ParseError { errors })
        }
    }

    /// Reads and parses the file at `path` (named as given in messages).
    /// A file that cannot be read is one error `FILE: reason`.
    pub fn load(path: &Path) -> Result<TransportMap, ParseError> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| ParseError {
            errors: vec![format!("{file}: cannot read: {e}")],
        })?;
        match String::from_utf8(bytes) {
            Ok(text) => TransportMap::parse(&text, &file),
            Err(e) => {
                let bad = e.utf8_error().valid_up_to();
                let line = e.as_bytes()[..bad].iter().filter(|&&b| b == b'\n').count() + 1;
                Err(ParseError {
                    errors: vec![format!("{file}:{line}: invalid UTF-8")],
                })
            }
        }
    }

    /// The route for mail to `domain`: the exact entry, else the `.parent`
    /// entries from the most specific parent up, else `*`. `None` for no
    /// match and for a malformed domain or an address literal.
    pub fn lookup(&self, domain: &str) -> Option<&Route> {
        self.find(domain, true)
    }

    /// Whether mx2 relays mail for `domain`: like [`lookup`](Self::lookup)
    /// but the `*` fallback does not count.
    pub fn is_relay_domain(&self, domain: &str) -> bool {
        self.find(domain, false).is_some()
    }

    /// The entries in file order.
    pub fn entries(&self) -> &[Route] {
        &self.entries
    }

    /// The entry whose pattern is `pattern` (`example.jp`, `.example.jp`,
    /// `*`, compared after normalisation), without any fallback.
    pub fn entry(&self, pattern: &str) -> Option<&Route> {
        let key = parse_pattern(pattern).ok()?.key();
        self.index.get(&key).and_then(|&i| self.entries.get(i))
    }

    /// The file name given to [`parse`](Self::parse) or [`load`](Self::load).
    pub fn file(&self) -> &str {
        &self.file
    }

    fn find(&self, domain: &str, wildcard: bool) -> Option<&Route> {
        let d = normalize_domain(domain).ok()?;
        let get = |k: &str| self.index.get(k).and_then(|&i| self.entries.get(i));
        if let Some(r) = get(&d) {
            return Some(r);
        }
        for (pos, _) in d.match_indices('.') {
            if let Some(r) = get(&d[pos..]) {
                return Some(r);
            }
        }
        if wildcard {
            get("*")
        } else {
            None
        }
    }
}
