//! The relay client's reply reader (what the primary answers), on
//! arbitrary bytes split into lines as the session splits them: nothing
//! may panic, and every reply it returns is consistent.
//!
//! - The code is three digits (0–999) and the same on every line.
//! - No line of a reply holds a line end (LF never; CR only as the server
//!   sent it inside a line).
//! - `enhanced`, `one_line` and the EHLO capability reader never panic;
//!   an enhanced code found starts with the reply's class digit.
//!
//! `cd fuzz && cargo +nightly fuzz run relay_reply -- -max_total_time=30`

#![no_main]

use libfuzzer_sys::fuzz_target;
use mx2::relay::client::{Caps, ReplyReader};

fuzz_target!(|data: &[u8]| {
    let mut reader = ReplyReader::default();
    for raw in data.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        match reader.push(line) {
            Err(_) => reader = ReplyReader::default(),
            Ok(None) => {}
            Ok(Some(r)) => {
                assert!(r.code <= 999);
                assert_eq!(r.code / 100, u16::from(line[0] - b'0'));
                assert!(!r.lines.is_empty());
                assert!(r.lines.iter().all(|l| !l.contains('\n')));
                if let Some(e) = r.enhanced() {
                    assert_eq!(e.as_bytes()[0], b'0' + (r.code / 100) as u8);
                }
                let one = r.one_line();
                assert!(one.starts_with(&format!("{}", r.code)));
                let _ = Caps::from_ehlo(&r);
                let _ = r.is_positive();
            }
        }
    }
});
