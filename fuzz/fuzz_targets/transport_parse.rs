//! The transport map parser, lookups and in-place editing, on arbitrary
//! table text.
//!
//! - Parsing never panics; errors are all `FILE:LINE: message` (or
//!   `FILE: message`), at least one.
//! - A parsed table finds each entry by its own pattern; an exact domain
//!   entry is a relay domain (and `*` never makes anything one).
//! - Removing an entry (`mx2 transport remove`) gives a table that parses,
//!   has one entry less and no longer that pattern; adding it back
//!   (`mx2 transport add`) gives a table that parses with the same next hops.
//! - Lookups of arbitrary names (the input's lines) never panic.
//!
//! `cd fuzz && cargo +nightly fuzz run transport_parse -- -max_total_time=30`

#![no_main]

use libfuzzer_sys::fuzz_target;
use transport::{add_entry, remove_entry, TransportMap};

const FILE: &str = "fuzz.map";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let map = match TransportMap::parse(text, FILE) {
        Ok(m) => m,
        Err(e) => {
            assert!(!e.errors.is_empty());
            for m in &e.errors {
                assert!(m.starts_with("fuzz.map:"), "{m}");
            }
            return;
        }
    };
    assert_eq!(map.file(), FILE);
    for r in map.entries() {
        let e = map
            .entry(&r.pattern)
            .unwrap_or_else(|| panic!("entry {:?} not found by its pattern", r.pattern));
        assert_eq!(e, r);
        if !r.is_wildcard() && !r.pattern.starts_with('.') {
            assert!(map.is_relay_domain(&r.pattern), "{:?}", r.pattern);
            assert_eq!(map.lookup(&r.pattern), Some(r));
        }
    }
    assert!(!map.is_relay_domain("*"));
    for line in text.lines().take(8) {
        let _ = map.lookup(line.trim());
        let _ = map.is_relay_domain(line.trim());
    }
    if let Some(r) = map.entries().first() {
        let removed = remove_entry(text, FILE, &r.pattern)
            .unwrap_or_else(|e| panic!("cannot remove {:?}: {e}", r.pattern));
        let m2 = TransportMap::parse(&removed, FILE)
            .unwrap_or_else(|e| panic!("table without {:?} does not parse: {e}", r.pattern));
        assert!(m2.entry(&r.pattern).is_none());
        assert_eq!(m2.entries().len(), map.entries().len() - 1);
        let added = add_entry(&removed, FILE, &r.pattern, &r.raw_value)
            .unwrap_or_else(|e| panic!("cannot add {:?} {:?} back: {e}", r.pattern, r.raw_value));
        let m3 = TransportMap::parse(&added, FILE).unwrap_or_else(|e| {
            panic!("table with {:?} added back does not parse: {e}", r.pattern)
        });
        let back = m3.entry(&r.pattern).expect("added entry found");
        assert_eq!(back.nexthops, r.nexthops);
        assert_eq!(m3.entries().len(), map.entries().len());
    }
});
