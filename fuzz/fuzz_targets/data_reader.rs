//! The DATA reader, fed arbitrary bytes in arbitrary chunks.
//!
//! - Feeding the input whole, byte by byte, or in fuzzer-chosen chunks
//!   gives the same end-of-data position and the same result.
//! - The data ends only at `<CRLF>.<CRLF>` (or a `.<CRLF>` first line),
//!   and at the first one.
//! - The stored message never holds a bare CR, a bare LF or a NUL.
//! - Smuggling-proof round trip: the stored message, dot-stuffed and
//!   terminated as the relay sends it, is read back by a fresh reader as
//!   exactly one message equal to it, ending at the very end; and a lenient
//!   receiver (any lone dot line, whatever the line endings, ends the data)
//!   also finds its end only there.
//! - Size accounting: past the limit nothing more is stored.
//! - Header limits (sized from byte 0): the same in every chunking; they
//!   never move the end of data (the session stays in sync); past one the
//!   message is empty; without one the message equals the unlimited one.
//!
//! Input: byte 0 chooses the chunking, byte 1 the size limit; the rest is
//! the data. `cd fuzz && cargo +nightly fuzz run data_reader -- -max_total_time=30`

#![no_main]

use libfuzzer_sys::fuzz_target;
use mx2::smtp::data::{DataReader, DataResult};

fn whole(input: &[u8], limit: u64) -> (Option<usize>, DataResult) {
    let mut r = DataReader::new(Vec::new(), limit);
    let end = r.feed(input);
    (end, r.finish())
}

fn chunked(
    input: &[u8],
    limit: u64,
    sizes: impl Iterator<Item = usize>,
) -> (Option<usize>, DataResult) {
    let mut r = DataReader::new(Vec::new(), limit);
    let mut pos = 0;
    let mut end = None;
    for n in sizes {
        if pos >= input.len() {
            break;
        }
        let stop = (pos + n.max(1)).min(input.len());
        if let Some(k) = r.feed(&input[pos..stop]) {
            end = Some(pos + k);
            break;
        }
        pos = stop;
    }
    (end, r.finish())
}

fn same(a: &(Option<usize>, DataResult), b: &(Option<usize>, DataResult), how: &str) {
    assert_eq!(a.0, b.0, "end differs ({how})");
    assert_eq!(a.1.message, b.1.message, "message differs ({how})");
    assert_eq!(a.1.size, b.1.size, "size differs ({how})");
    assert_eq!(a.1.too_big, b.1.too_big, "too_big differs ({how})");
    assert_eq!(a.1.saw_nul, b.1.saw_nul, "saw_nul differs ({how})");
    assert_eq!(
        a.1.bare_newlines, b.1.bare_newlines,
        "bare_newlines differs ({how})"
    );
}

/// Dot-stuffing plus terminator, as the relay sends a stored message.
fn stuff(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len() + 8);
    for line in m.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Where a lenient receiver ends the data: after the first lone dot line,
/// lines ended by CRLF, LF or CR, NULs ignored.
fn lenient_end(buf: &[u8]) -> Option<usize> {
    let nl = |b: u8| b == b'\r' || b == b'\n';
    let mut line_start = true;
    for i in 0..buf.len() {
        let b = buf[i];
        if b == 0 {
            continue;
        }
        if line_start && b == b'.' {
            let mut j = i + 1;
            while j < buf.len() && buf[j] == 0 {
                j += 1;
            }
            if j < buf.len() && nl(buf[j]) {
                let crlf = buf[j] == b'\r' && buf.get(j + 1) == Some(&b'\n');
                return Some(if crlf { j + 2 } else { j + 1 });
            }
        }
        line_start = nl(b);
    }
    None
}

/// The header limits checked against the unlimited reader's result.
fn header_limits(input: &[u8], limit: u64, ctl: u8, unlimited: &(Option<usize>, DataResult)) {
    let max_size = u64::from(ctl % 64) * 4 + 1;
    let max_count = usize::from(ctl % 8) + 1;
    let run = |sizes: &mut dyn Iterator<Item = usize>| {
        let mut r = DataReader::new(b"Received: x\r\n".to_vec(), limit)
            .with_header_limits(max_size, max_count);
        let mut pos = 0;
        let mut end = None;
        for n in sizes {
            if pos >= input.len() {
                break;
            }
            let stop = (pos + n.max(1)).min(input.len());
            if let Some(k) = r.feed(&input[pos..stop]) {
                end = Some(pos + k);
                break;
            }
            pos = stop;
        }
        (end, r.finish())
    };
    let w = run(&mut std::iter::once(input.len()));
    let b = run(&mut std::iter::repeat(1));
    same(&w, &b, "header limits, byte by byte");
    assert_eq!(w.1.header_overflow, b.1.header_overflow);
    assert_eq!(w.0, unlimited.0, "a header limit moved the end of data");
    assert_eq!(w.1.size, unlimited.1.size);
    if w.1.header_overflow.is_some() {
        assert!(w.1.message.is_empty(), "stored past a header limit");
    } else if !w.1.too_big {
        assert_eq!(&w.1.message[b"Received: x\r\n".len()..], &unlimited.1.message[..]);
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (ctl, input) = (data[0], &data[2..]);
    let limit = match data[1] {
        0 => u64::MAX,
        b => u64::from(b) * 8,
    };
    let w = whole(input, limit);
    let bytes = chunked(input, limit, std::iter::repeat(1));
    same(&w, &bytes, "byte by byte");
    let pattern = [1 + usize::from(ctl % 7), 1 + usize::from(ctl / 7 % 13), 2];
    let chunks = chunked(input, limit, pattern.iter().copied().cycle());
    same(&w, &chunks, "chunks");
    header_limits(input, limit, ctl, &w);

    let (end, res) = w;
    if let Some(n) = end {
        let consumed = &input[..n];
        assert!(
            consumed == b".\r\n" || consumed.ends_with(b"\r\n.\r\n"),
            "ended at {n} without a terminator"
        );
        // The first terminator: no shorter prefix ends the data.
        if n > 3 {
            assert_eq!(whole(&input[..n - 1], limit).0, None);
        }
    }
    let m = &res.message;
    for (i, &b) in m.iter().enumerate() {
        assert_ne!(b, 0, "NUL stored");
        if b == b'\n' {
            assert!(i > 0 && m[i - 1] == b'\r', "bare LF stored at {i}");
        }
        if b == b'\r' {
            // A CR is only ever stored together with its LF.
            assert_eq!(m.get(i + 1), Some(&b'\n'), "bare CR stored at {i}");
        }
    }
    if res.too_big {
        assert!(res.size > limit);
        assert!(m.len() as u64 <= limit, "stored past the limit");
        return;
    }
    assert_eq!(res.size, m.len() as u64);
    if end.is_some() {
        assert!(m.is_empty() || m.ends_with(b"\r\n"));
        let wire = stuff(m);
        let mut again = DataReader::new(Vec::new(), u64::MAX);
        assert_eq!(
            again.feed(&wire),
            Some(wire.len()),
            "relayed form ends early"
        );
        assert_eq!(
            &again.finish().message,
            m,
            "relayed form reads back differently"
        );
        assert_eq!(
            lenient_end(&wire),
            Some(wire.len()),
            "a lenient receiver ends early"
        );
    }
});
