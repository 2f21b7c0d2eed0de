//! Property tests for in-place editing: parse → add/remove → parse gives the
//! intended table, and every other line is byte-identical.

use proptest::prelude::*;
use transport::{add_entry, parse_nexthop_list, remove_entry, Route, TransportMap};

/// Values as they may appear in a file; the second part, if any, can go on a
/// continuation line.
const VALUES: &[(&str, Option<&str>)] = &[
    ("smtp:[a.example.net]", None),
    ("smtp:mx.example.net:2525", None),
    ("relay:[192.0.2.1]", None),
    ("smtp:[ipv6:2001:db8::1]:25", None),
    (":", None),
    ("smtp:", None),
    ("smtp", None),
    (":[n.example.net]", None),
    ("smtp:[a.example.net],", Some("[b.example.net]:2526")),
    ("smtp:a.example.net", Some("b.example.net")),
];

/// Next hops as given to `mx2 transport add`.
const CLI_VALUES: &[&str] = &[
    "[new.example.net]",
    "smtp:[new.example.net]:2525",
    "new.example.net",
    "relay:mx.example.net",
    "[192.0.2.9]",
    "[ipv6:2001:db8::9]",
    "smtp:[a.example.net], [b.example.net]",
    "smtp:",
    "localhost:2525",
];

#[derive(Debug, Clone)]
enum Block {
    Comment(String),
    Blank(String),
    Entry {
        parent: bool,
        label: String,
        upper: bool,
        sep: &'static str,
        value: usize,
        cont: bool,
        inner_comment: bool,
    },
}

#[derive(Debug, Clone)]
struct Doc {
    blocks: Vec<Block>,
    crlf: bool,
    final_nl: bool,
}

struct Rendered {
    text: String,
    /// (pattern as written, raw value, first..=last physical line, 0-based)
    entries: Vec<(String, String, usize, usize)>,
}

fn render(doc: &Doc) -> Rendered {
    let mut lines: Vec<String> = Vec::new();
    let mut entries = Vec::new();
    for (i, b) in doc.blocks.iter().enumerate() {
        match b {
            Block::Comment(c) => lines.push(c.clone()),
            Block::Blank(w) => lines.push(w.clone()),
            Block::Entry {
                parent,
                label,
                upper,
                sep,
                value,
                cont,
                inner_comment,
            } => {
                let mut pat = format!("{}{label}{i}.example", if *parent { "." } else { "" });
                if *upper {
                    pat = pat.to_uppercase();
                }
                let (v1, v2) = VALUES[*value % VALUES.len()];
                let first = lines.len();
                let raw = match (v2, cont) {
                    (Some(v2), true) => {
                        lines.push(format!("{pat}{sep}{v1}"));
                        if *inner_comment {
                            lines.push("# inside the entry".to_string());
                        }
                        lines.push(format!("    {v2}"));
                        format!("{v1}    {v2}")
                    }
                    (Some(v2), false) => {
                        lines.push(format!("{pat}{sep}{v1} {v2}"));
                        format!("{v1} {v2}")
                    }
                    (None, _) => {
                        lines.push(format!("{pat}{sep}{v1}"));
                        v1.to_string()
                    }
                };
                entries.push((pat, raw, first, lines.len() - 1));
            }
        }
    }
    let eol = if doc.crlf { "\r\n" } else { "\n" };
    let mut text = lines.join(eol);
    if doc.final_nl && !lines.is_empty() {
        text.push_str(eol);
    }
    Rendered { text, entries }
}

fn block() -> impl Strategy<Value = Block> {
    prop_oneof![
        "[ ]{0,2}# [a-z :#\\[\\]]{0,12}".prop_map(Block::Comment),
        "[ \t]{0,3}".prop_map(Block::Blank),
        (
            any::<bool>(),
            "[a-z][a-z0-9-]{0,6}[a-z]".prop_filter("not an A-label", |l| !l.starts_with("xn--")),
            any::<bool>(),
            prop::sample::select(vec![" ", "\t", "   ", "\t\t"]),
            0..VALUES.len(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(parent, label, upper, sep, value, cont, inner_comment)| {
                Block::Entry {
                    parent,
                    label,
                    upper,
                    sep,
                    value,
                    cont,
                    inner_comment,
                }
            }),
    ]
}

fn doc() -> impl Strategy<Value = Doc> {
    (
        prop::collection::vec(block(), 0..12),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(blocks, crlf, final_nl)| Doc {
            blocks,
            crlf,
            final_nl,
        })
}

/// What a route means, without its line number.
fn meaning(r: &Route) -> (String, String, String, Vec<String>) {
    (
        r.pattern.clone(),
        r.raw_value.clone(),
        r.transport.clone(),
        r.nexthops.iter().map(|h| h.to_string()).collect(),
    )
}

fn meanings(m: &TransportMap) -> Vec<(String, String, String, Vec<String>)> {
    m.entries().iter().map(meaning).collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_files_parse(d in doc()) {
        let r = render(&d);
        let map = TransportMap::parse(&r.text, "t").map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(map.entries().len(), r.entries.len());
        for (route, (pat, raw, first, _)) in map.entries().iter().zip(&r.entries) {
            prop_assert_eq!(&route.pattern, pat);
            prop_assert_eq!(&route.raw_value, raw);
            prop_assert_eq!(route.line, first + 1);
        }
    }

    #[test]
    fn add_appends_and_keeps_everything(
        d in doc(),
        label in "[a-z]{1,8}",
        parent in any::<bool>(),
        v in 0..CLI_VALUES.len(),
    ) {
        let r = render(&d);
        let before = TransportMap::parse(&r.text, "t").map_err(|e| TestCaseError::fail(e.to_string()))?;
        let domain = format!("{}{label}.new.example", if parent { "." } else { "" });
        let value = CLI_VALUES[v];
        let new = add_entry(&r.text, "t", &domain, value).map_err(TestCaseError::fail)?;

        // Untouched bytes: the old text is a prefix; a newline is inserted
        // only when the old text lacked a final one.
        // The line ending is learnt from the file's first line break.
        let eol = if d.crlf && r.text.contains('\n') { "\r\n" } else { "\n" };
        if r.text.is_empty() || r.text.ends_with('\n') {
            prop_assert!(new.starts_with(&r.text));
            prop_assert!(new.ends_with('\n'));
        } else {
            let prefix = format!("{}{}", r.text, eol);
            prop_assert!(new.starts_with(&prefix));
            prop_assert!(!new.ends_with('\n'));
        }
        if d.crlf && r.text.contains('\n') {
            prop_assert!(new.ends_with("\r\n") || !new.ends_with('\n'));
        }

        let after = TransportMap::parse(&new, "t").map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut want = meanings(&before);
        let (transport, hops) = parse_nexthop_list(value).map_err(TestCaseError::fail)?;
        let added = after.entries().last().cloned();
        prop_assert!(added.is_some());
        let added = added.unwrap_or_else(|| unreachable!());
        prop_assert_eq!(&added.pattern, &domain);
        prop_assert_eq!(&added.transport, &transport);
        prop_assert_eq!(&added.nexthops, &hops);
        want.push(meaning(&added));
        prop_assert_eq!(meanings(&after), want);
        for (a, b) in before.entries().iter().zip(after.entries()) {
            prop_assert_eq!(a.line, b.line);
        }
        let q = format!("x.{label}.new.example");
        prop_assert_eq!(after.is_relay_domain(&q), parent);

        // Adding it again is refused; removing it restores the file exactly.
        let again = add_entry(&new, "t", &domain.to_uppercase(), value);
        prop_assert!(again.is_err_and(|e| e.contains("is already in t:")));
        let back = remove_entry(&new, "t", &domain).map_err(TestCaseError::fail)?;
        prop_assert_eq!(back, r.text);
    }

    #[test]
    fn remove_drops_exactly_the_entry(d in doc(), pick in any::<prop::sample::Index>()) {
        let r = render(&d);
        if r.entries.is_empty() {
            prop_assert!(remove_entry(&r.text, "t", "a.example").is_err());
            return Ok(());
        }
        let (pat, _, first, last) = r.entries[pick.index(r.entries.len())].clone();
        let before = TransportMap::parse(&r.text, "t").map_err(|e| TestCaseError::fail(e.to_string()))?;
        let new = remove_entry(&r.text, "t", &pat.to_lowercase()).map_err(TestCaseError::fail)?;

        // Expected text: the physical lines outside first..=last, unchanged.
        let mut want: String = r
            .text
            .split_inclusive('\n')
            .enumerate()
            .filter(|(i, _)| *i < first || *i > last)
            .map(|(_, l)| l)
            .collect();
        if !r.text.ends_with('\n') && want.ends_with('\n') {
            want.pop();
            if want.ends_with('\r') {
                want.pop();
            }
        }
        prop_assert_eq!(&new, &want);

        let after = TransportMap::parse(&new, "t").map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut expect = meanings(&before);
        expect.retain(|m| m.0 != pat);
        prop_assert_eq!(meanings(&after), expect);
        prop_assert!(after.entry(&pat).is_none());

        // Removing it again is refused.
        let again = remove_entry(&new, "t", &pat);
        prop_assert!(again.is_err_and(|e| e.ends_with("is not in t")));
    }
}
