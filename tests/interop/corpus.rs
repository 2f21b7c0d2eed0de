//! The real-world message corpus (`tests/interop/corpus/*.eml`, CRLF) and
//! the byte comparison of what a primary's mailbox holds against it.
//!
//! Expected mailbox content = the corpus file
//!   - with the operator's header rules applied by an independent oracle
//!     here (`operator_edit`: the IGNORE rules of `common::OPERATOR_RULES`
//!     delete the whole logical header, folded lines included),
//!   - with CRLF turned into LF (both Postfix and Exim store LF), and a
//!     final LF when the file had none (the SMTP client adds a CRLF).
//!
//! Actual mailbox content, top down, must be exactly:
//!   1. the delivery headers the primary's local delivery adds, each at most
//!      once and only these: `Return-Path:`, `X-Original-To:`,
//!      `Delivered-To:` (Postfix virtual(8); our Exim transport adds none);
//!   2. the primary's own `Received:` (names the primary's host name);
//!   3. exactly one `Received:` from mx2 (`by mx2.test (mx2)`);
//!   4. the expected content, byte for byte.
//!
//! So nothing else is stripped, and a second mx2 `Received:` or any other
//! change fails the comparison.

use std::path::Path;

pub fn load() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/corpus");
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    assert!(v.len() >= 9, "corpus incomplete in {}", dir.display());
    v
}

/// Lines with their terminators.
fn lines(b: &[u8]) -> Vec<&[u8]> {
    b.split_inclusive(|&c| c == b'\n').collect()
}

fn is_blank(line: &[u8]) -> bool {
    line == b"\n" || line == b"\r\n"
}

/// The top-level header block as logical headers (each with its
/// continuation lines and terminators), and the remaining bytes (from the
/// blank line on).
pub fn headers(b: &[u8]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let ls = lines(b);
    let mut hs: Vec<Vec<u8>> = Vec::new();
    let mut i = 0;
    while i < ls.len() && !is_blank(ls[i]) {
        let l = ls[i];
        if (l[0] == b' ' || l[0] == b'\t') && !hs.is_empty() {
            hs.last_mut().unwrap().extend_from_slice(l);
        } else {
            hs.push(l.to_vec());
        }
        i += 1;
    }
    (hs, ls[i..].concat())
}

pub fn name(h: &[u8]) -> String {
    let end = h.iter().position(|&c| c == b':').unwrap_or(h.len());
    String::from_utf8_lossy(&h[..end])
        .trim()
        .to_ascii_lowercase()
}

fn value(h: &[u8]) -> String {
    let start = h.iter().position(|&c| c == b':').map_or(h.len(), |p| p + 1);
    String::from_utf8_lossy(&h[start..]).into_owned()
}

/// `\s+WORD` right after the colon, caseless (how the rules are written).
fn ws_then(v: &str, word: &str) -> bool {
    let t = v.trim_start();
    t.len() < v.len() && t.to_ascii_lowercase().starts_with(word)
}

/// The operator's rules (SPEC §1), computed independently of mx2.
pub fn operator_edit(msg: &[u8]) -> Vec<u8> {
    let (hs, rest) = headers(msg);
    let mut out = Vec::new();
    for h in hs {
        let (n, v) = (name(&h), value(&h));
        let discard = (n == "from" && v.trim_start().starts_with("<>"))
            || (n == "x-spam-flag" && ws_then(&v, "yes"))
            || (n == "x-virus-status" && ws_then(&v, "yes"));
        assert!(
            !discard,
            "corpus message would be discarded: {}",
            String::from_utf8_lossy(&h)
        );
        let ignore = matches!(
            n.as_str(),
            "x-spam-level" | "x-spam-checker-version" | "x-virus-scanned"
        ) || (n == "x-spam-status" && ws_then(&v, "no"))
            || (n == "x-virus-status" && ws_then(&v, "clean"));
        if !ignore {
            out.extend_from_slice(&h);
        }
    }
    out.extend_from_slice(&rest);
    out
}

/// CRLF → LF, and a final LF if missing.
pub fn to_lf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out
}

/// What the primary delivered: the headers it prepended (names), its
/// Received, mx2's Received, and the rest.
pub struct Delivered {
    pub prepended: Vec<String>,
    pub primary_received: String,
    pub mx2_received: String,
    pub rest: Vec<u8>,
}

/// Splits a delivered message per the module doc; `primary` is a string
/// the primary's Received must contain (e.g. `by pf-primary.test (Postfix)`).
pub fn split_delivered(actual: &[u8], primary: &str) -> Result<Delivered, String> {
    let (hs, _) = headers(actual);
    let mut prepended = Vec::new();
    let mut i = 0;
    while i < hs.len() {
        let n = name(&hs[i]);
        if !matches!(n.as_str(), "return-path" | "x-original-to" | "delivered-to") {
            break;
        }
        if prepended.contains(&n) {
            return Err(format!("{n}: twice"));
        }
        prepended.push(n);
        i += 1;
    }
    let received = |k: usize| -> Result<String, String> {
        match hs.get(k) {
            Some(h) if name(h) == "received" => Ok(String::from_utf8_lossy(h).into_owned()),
            Some(h) => Err(format!(
                "expected Received: at header {k}, got {:?}",
                String::from_utf8_lossy(h)
            )),
            None => Err("message too short".into()),
        }
    };
    let primary_received = received(i)?;
    if !primary_received.contains(primary) {
        return Err(format!(
            "first Received is not the primary's ({primary}): {primary_received}"
        ));
    }
    let mx2_received = received(i + 1)?;
    if !mx2_received.contains("by mx2.test (mx2)") {
        return Err(format!("second Received is not mx2's: {mx2_received}"));
    }
    let skip: usize = hs[..i + 2].iter().map(|h| h.len()).sum();
    Ok(Delivered {
        prepended,
        primary_received,
        mx2_received,
        rest: actual[skip..].to_vec(),
    })
}

/// Compares the rest of a delivered message with the corpus file: Ok or a
/// description of the first difference.
pub fn compare(original: &[u8], rest: &[u8]) -> Result<(), String> {
    let want = to_lf(&operator_edit(original));
    if want == rest {
        return Ok(());
    }
    Err(first_diff(&want, rest))
}

/// Where two byte strings first differ, line by line.
pub fn first_diff(want: &[u8], got: &[u8]) -> String {
    let (a, b) = (lines(want), lines(got));
    for (k, (x, y)) in a.iter().zip(b.iter()).enumerate() {
        if x != y {
            return format!(
                "line {}: want {:?}\n          got  {:?}",
                k + 1,
                String::from_utf8_lossy(x),
                String::from_utf8_lossy(y)
            );
        }
    }
    format!(
        "length differs: want {} lines/{} bytes, got {} lines/{} bytes",
        a.len(),
        want.len(),
        b.len(),
        got.len()
    )
}

/// Any Received: header anywhere in the top block naming mx2.
pub fn mx2_received_count(msg: &[u8]) -> usize {
    headers(msg)
        .0
        .iter()
        .filter(|h| name(h) == "received" && String::from_utf8_lossy(h).contains("(mx2)"))
        .count()
}
