//! Golden tests: each `testdata/NAME.map` is parsed (file name `NAME.map`
//! in messages) and rendered next to lookups of the queries listed in
//! `testdata/NAME.expected`; the rendering must equal that file.
//!
//! Set `UPDATE_GOLDEN=1` to rewrite the expected files (then review them).

use std::fs;
use std::path::Path;

use transport::{Route, TransportMap};

fn render_route(r: &Route) -> String {
    let hops = if r.nexthops.is_empty() {
        "(empty: MX lookup of the recipient domain)".to_string()
    } else {
        r.nexthops
            .iter()
            .map(|h| format!("{h} ({})", if h.mx_lookup { "mx" } else { "direct" }))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("{} {} => {}: {}", r.line, r.pattern, r.transport, hops)
}

fn render(name: &str, text: &str, queries: &[String]) -> String {
    let mut out = String::new();
    match TransportMap::parse(text, name) {
        Ok(map) => {
            out.push_str("== entries\n");
            for r in map.entries() {
                out.push_str(&render_route(r));
                out.push('\n');
            }
            out.push_str("== lookups\n");
            for q in queries {
                let relay = if map.is_relay_domain(q) {
                    "relay"
                } else {
                    "not-relay"
                };
                match map.lookup(q) {
                    Some(r) => out.push_str(&format!("{q} => {} {} {relay}\n", r.line, r.pattern)),
                    None => out.push_str(&format!("{q} => none {relay}\n")),
                }
            }
        }
        Err(e) => {
            out.push_str("== errors\n");
            out.push_str(&e.to_string());
            out.push('\n');
        }
    }
    out
}

fn queries(expected: &str) -> Vec<String> {
    expected
        .split("== lookups\n")
        .nth(1)
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.split(" => ").next())
        .filter(|q| !q.is_empty())
        .map(str::to_string)
        .collect()
}

fn golden(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let map_name = format!("{name}.map");
    let text = fs::read_to_string(dir.join(&map_name)).expect("map file");
    let exp_path = dir.join(format!("{name}.expected"));
    let expected = fs::read_to_string(&exp_path).unwrap_or_default();
    let actual = render(&map_name, &text, &queries(&expected));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::write(&exp_path, &actual).expect("write expected");
        return;
    }
    assert_eq!(actual, expected, "golden mismatch for {name}");
}

#[test]
fn seed() {
    golden("seed");
}

#[test]
fn patterns() {
    golden("patterns");
}

#[test]
fn idn() {
    golden("idn");
}

#[test]
fn nexthops() {
    golden("nexthops");
}

#[test]
fn continuation() {
    golden("continuation");
}

#[test]
fn errors() {
    golden("errors");
}

/// The seed's file, byte for byte, and what the relay gets from it.
#[test]
fn seed_exact_values() {
    let text = "example.jp smtp:[primary1.example.net]\nexample.net smtp:[primary2.example.net]\n";
    let map = TransportMap::parse(text, "transport").expect("seed parses");
    let r = map.lookup("example.jp").expect("route");
    assert_eq!(r.pattern, "example.jp");
    assert_eq!(r.line, 1);
    assert_eq!(r.transport, "smtp");
    assert_eq!(r.raw_value, "smtp:[primary1.example.net]");
    assert_eq!(
        r.nexthops,
        vec![transport::NextHop {
            host: transport::Host::Name("primary1.example.net".into()),
            port: None,
            mx_lookup: false,
        }]
    );
    assert_eq!(r.nexthops[0].to_string(), "[primary1.example.net]");
    assert_eq!(map.lookup("example.net").map(|r| r.line), Some(2));
    assert!(map.lookup("www.example.jp").is_none());
    assert!(!map.is_relay_domain("example.org"));
    assert_eq!(map.entries().len(), 2);
}
