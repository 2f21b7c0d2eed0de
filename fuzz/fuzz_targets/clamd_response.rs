//! clamd's answer line, as arbitrary bytes: parsing never panics, a
//! signature name never carries a line end or NUL (it goes to the log),
//! only an exact `OK` is clean, and applying a verdict adds exactly the
//! two `X-Virus-*` fields (none for "size limit exceeded": no verdict).
//!
//! `cd fuzz && cargo +nightly fuzz run clamd_response -- -max_total_time=30`

#![no_main]

use libfuzzer_sys::fuzz_target;
use mx2::scan::clamd::{self, Verdict};
use mx2::scan::headers::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = clamd::parse_response(data) else {
        return;
    };
    match &v {
        Verdict::Clean => {
            let end = data
                .iter()
                .position(|&b| b == 0 || b == b'\n')
                .unwrap_or(data.len());
            let line = String::from_utf8_lossy(&data[..end]);
            let result = line.trim();
            let result = result.strip_prefix("stream:").map(str::trim).unwrap_or(result);
            assert_eq!(result, "OK");
        }
        Verdict::Found(name) => {
            assert!(!name.contains(['\0', '\n']), "{name:?}");
        }
        Verdict::TooBig => {}
    }
    let mut m = Message::parse(b"Received: by mx2\r\nSubject: s\r\n\r\nb\r\n".to_vec());
    v.apply(&mut m);
    let added = if v == Verdict::TooBig { 0 } else { 2 };
    assert_eq!(m.fields.len(), 2 + added);
    assert_eq!(m.body, b"b\r\n");
});
