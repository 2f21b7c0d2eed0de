//! spamd's answer to `HEADERS SPAMC/1.5`, as arbitrary bytes: parsing
//! never panics, and what it keeps can only ever be SpamAssassin's own
//! `X-Spam-*` fields.
//!
//! - Every field kept is an `X-Spam-*` field ending in CRLF, with no bare
//!   CR or LF inside (so applying it cannot end the header block or add a
//!   field of another name).
//! - Applying the report to a message leaves exactly the report's
//!   `X-Spam-*` fields in it, no other new field, and the body untouched.
//!
//! `cd fuzz && cargo +nightly fuzz run spamd_response -- -max_total_time=30`

#![no_main]

use libfuzzer_sys::fuzz_target;
use mx2::scan::headers::{field_name, Message};
use mx2::scan::spamd;

fn is_spam(f: &[u8]) -> bool {
    let n = field_name(f);
    n.len() > 7 && n[..7].eq_ignore_ascii_case(b"X-Spam-")
}

fuzz_target!(|data: &[u8]| {
    let Ok(report) = spamd::parse_response(data) else {
        return;
    };
    for f in &report.fields {
        assert!(is_spam(f), "{:?}", String::from_utf8_lossy(f));
        assert!(f.ends_with(b"\r\n"));
        for (i, &b) in f.iter().enumerate() {
            if b == b'\n' {
                assert!(i > 0 && f[i - 1] == b'\r', "bare LF in {f:?}");
            }
            if b == b'\r' {
                assert_eq!(f.get(i + 1), Some(&b'\n'), "bare CR in {f:?}");
            }
        }
    }
    let body = b"X-Spam-Flag: YES\r\nbody\r\n";
    let mut m = Message::parse(
        [
            &b"Received: by mx2\r\nX-Spam-Flag: YES\r\nSubject: s\r\n\r\n"[..],
            body,
        ]
        .concat(),
    );
    report.apply(&mut m);
    assert_eq!(m.body, body);
    let again = Message::parse(m.to_bytes());
    let spam: Vec<&Vec<u8>> = again.fields.iter().filter(|f| is_spam(f)).collect();
    assert_eq!(spam.len(), report.fields.len());
    // Received and Subject, plus the report's fields: nothing else appeared.
    assert_eq!(again.fields.len(), 2 + report.fields.len());
    assert_eq!(again.body, body);
});
