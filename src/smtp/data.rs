//! The DATA reader: turns the client's dot-stuffed stream into message bytes.
//!
//! Only `<CRLF>.<CRLF>` ends the data (a `.` line that began after a real
//! CRLF and ends with one). Bare LF and bare CR are normalised to CRLF, so
//! the stored message has one line-ending convention and the relay's
//! dot-stuffing covers every line: a `\n.\n` a client hides in the data is
//! stored as an ordinary `.` line, never forwarded as an end of data (SMTP
//! smuggling). NUL bytes are noted and the message refused; they are never
//! stored, and a NUL never makes a following dot count as a line start.
//! Past the size limit the bytes are counted and dropped, so memory stays
//! bounded however much a client sends.
//!
//! The header block is measured as it arrives (fields and bytes, until the
//! first line that is neither a header field nor a continuation, as
//! Postfix's `is_header()` decides): past `max_header_count` fields or
//! `max_header_size` bytes the stored bytes are freed at once and the rest
//! is only counted, like an oversized message. A header block made of
//! millions of tiny fields would otherwise cost the rules one entry per
//! field, many times the message's size.

/// Which header limit a message went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderOverflow {
    /// More header fields than this.
    Count(usize),
    /// A header block larger than this many bytes.
    Size(u64),
}

impl std::fmt::Display for HeaderOverflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderOverflow::Count(n) => write!(f, "more than {n} header fields"),
            HeaderOverflow::Size(n) => write!(f, "header block over {n} bytes"),
        }
    }
}

/// Incremental parser state; feed it chunks until it reports the end.
#[derive(Debug)]
pub struct DataReader {
    out: Vec<u8>,
    limit: u64,
    /// Length of the prefix (mx2's own header), not the client's bytes.
    prefix_len: usize,
    max_header_size: u64,
    max_header_count: usize,
    /// Still inside the client's header block.
    in_header: bool,
    header_count: usize,
    /// Where the current line starts in `out`.
    line_start: usize,
    header_overflow: Option<HeaderOverflow>,
    /// Bytes of message content seen (also after the limit was passed).
    seen: u64,
    too_big: bool,
    saw_nul: bool,
    bare_newlines: bool,
    pending_cr: bool,
    /// Raw bytes seen on the current line (any byte, NUL included).
    line_raw: usize,
    /// The current line's first byte was a dot (not yet stored).
    dot_first: bool,
    /// The current line began after a real CRLF (or is the first line).
    line_after_crlf: bool,
}

/// What the reader made of the data once the terminator arrived.
#[derive(Debug)]
pub struct DataResult {
    pub message: Vec<u8>,
    /// Content bytes the client sent (after unstuffing), even past the limit.
    pub size: u64,
    pub too_big: bool,
    pub saw_nul: bool,
    pub bare_newlines: bool,
    /// Set when the header block went past a limit (the message is empty).
    pub header_overflow: Option<HeaderOverflow>,
}

impl DataReader {
    /// `prefix` is stored first (mx2's `Received:` header); `limit` bounds
    /// the content. The header block is unlimited until
    /// [`DataReader::with_header_limits`].
    pub fn new(prefix: Vec<u8>, limit: u64) -> DataReader {
        DataReader {
            prefix_len: prefix.len(),
            line_start: prefix.len(),
            out: prefix,
            limit,
            max_header_size: u64::MAX,
            max_header_count: usize::MAX,
            in_header: true,
            header_count: 0,
            header_overflow: None,
            seen: 0,
            too_big: false,
            saw_nul: false,
            bare_newlines: false,
            pending_cr: false,
            line_raw: 0,
            dot_first: false,
            line_after_crlf: true,
        }
    }

    /// Bounds the client's header block: at most `max_size` bytes and
    /// `max_count` header fields.
    pub fn with_header_limits(mut self, max_size: u64, max_count: usize) -> DataReader {
        self.max_header_size = max_size;
        self.max_header_count = max_count;
        self
    }

    /// Consumes bytes from `input`; returns `Some(n)` when the end of data
    /// was found after `n` bytes (the rest belongs to the next command).
    ///
    /// Within a line, runs of ordinary bytes are copied in one go (this
    /// reader sees every byte mx2 accepts; byte-by-byte copying was its
    /// largest cost). Line ends, a leading dot and NUL are handled one
    /// byte at a time.
    pub fn feed(&mut self, input: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    i += 1;
                    if self.end_of_line(true) {
                        return Some(i);
                    }
                    continue;
                }
                self.bare_newlines = true;
                self.end_of_line(false);
            }
            match b {
                b'\r' => {
                    self.pending_cr = true;
                    i += 1;
                }
                b'\n' => {
                    self.bare_newlines = true;
                    self.end_of_line(false);
                    i += 1;
                }
                0 => {
                    self.line_raw += 1;
                    self.saw_nul = true;
                    i += 1;
                }
                b'.' if self.line_raw == 0 => {
                    self.line_raw = 1;
                    self.dot_first = true;
                    i += 1;
                }
                _ => {
                    // A dot that began the line and is followed by more
                    // text was stuffing: it is simply not stored.
                    let end = input[i..]
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n' || c == 0)
                        .map_or(input.len(), |p| i + p);
                    self.line_raw += end - i;
                    self.dot_first = false;
                    self.push_run(&input[i..end]);
                    i = end;
                }
            }
        }
        None
    }

    /// Handles a line end; returns true when this was the terminating dot.
    fn end_of_line(&mut self, crlf: bool) -> bool {
        if self.dot_first && self.line_raw == 1 {
            if crlf && self.line_after_crlf {
                return true;
            }
            // A lone dot that is not a real terminator is kept as content.
            self.push(b".");
        }
        if self.in_header {
            self.header_line();
        }
        self.push(b"\r\n");
        self.line_start = self.out.len();
        self.dot_first = false;
        self.line_raw = 0;
        self.line_after_crlf = crlf;
        false
    }

    /// A complete line of the header block (in `out` from `line_start`,
    /// line end not yet stored): a new field, a continuation, or the end
    /// of the block.
    fn header_line(&mut self) {
        let line = self.out.get(self.line_start..).unwrap_or_default();
        match line.first() {
            Some(b' ' | b'\t') if self.header_count > 0 => {}
            Some(_) if header_checks::is_header_line(line) => {
                self.header_count += 1;
                if self.header_count > self.max_header_count {
                    self.overflow(HeaderOverflow::Count(self.max_header_count));
                }
            }
            _ => self.in_header = false,
        }
    }

    /// Checks the header block's size after bytes were stored.
    fn check_header_size(&mut self) {
        if self.in_header {
            let size = self.out.len().saturating_sub(self.prefix_len) as u64;
            if size > self.max_header_size {
                self.overflow(HeaderOverflow::Size(self.max_header_size));
            }
        }
    }

    /// The header block is over a limit: free what was stored and only
    /// count from now on.
    fn overflow(&mut self, why: HeaderOverflow) {
        self.header_overflow = Some(why);
        self.in_header = false;
        self.out = Vec::new();
    }

    /// Content bytes, stored as if pushed one by one: those that still fit
    /// under the limit are kept.
    fn push_run(&mut self, bytes: &[u8]) {
        if !self.too_big {
            let room = self.limit.saturating_sub(self.seen);
            let keep = bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            if self.header_overflow.is_none() {
                self.out.extend_from_slice(&bytes[..keep]);
                self.check_header_size();
            }
            if keep < bytes.len() {
                self.too_big = true;
            }
        }
        self.seen += bytes.len() as u64;
    }

    /// A line end or a kept dot: stored whole or not at all.
    fn push(&mut self, bytes: &[u8]) {
        self.seen += bytes.len() as u64;
        if self.seen > self.limit {
            self.too_big = true;
        }
        if !self.too_big && self.header_overflow.is_none() {
            self.out.extend_from_slice(bytes);
            self.check_header_size();
        }
    }

    pub fn finish(self) -> DataResult {
        DataResult {
            message: self.out,
            size: self.seen,
            too_big: self.too_big,
            saw_nul: self.saw_nul,
            bare_newlines: self.bare_newlines,
            header_overflow: self.header_overflow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> (Option<usize>, DataResult) {
        let mut r = DataReader::new(Vec::new(), 1 << 20);
        let end = r.feed(input);
        (end, r.finish())
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf() {
        let (end, r) = run(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n");
        assert_eq!(end, Some(24));
        assert_eq!(r.message, b"Subject: x\r\n\r\nhello\r\n");
    }

    #[test]
    fn empty_message() {
        let (end, r) = run(b".\r\n");
        assert_eq!(end, Some(3));
        assert!(r.message.is_empty());
    }

    #[test]
    fn dot_unstuffing() {
        let (end, r) = run(b"..leading\r\n...\r\n.\r\n");
        assert!(end.is_some());
        assert_eq!(r.message, b".leading\r\n..\r\n");
    }

    #[test]
    fn smuggling_variants_do_not_end_data() {
        for v in [
            &b"a\n.\nMAIL FROM:<x@y>\r\n"[..],
            b"a\n.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r.\rMAIL FROM:<x@y>\r\n",
            b"a\r\n.\rMAIL FROM:<x@y>\r\n",
            b"a\r\n.\nMAIL FROM:<x@y>\r\n",
            b"a\r\n\x00.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\x00\r\nMAIL FROM:<x@y>\r\n",
        ] {
            let (end, r) = run(v);
            assert_eq!(end, None, "{v:?} ended the data");
            // Every line ending stored is CRLF: the relay will dot-stuff any "." line.
            let m = &r.message;
            for (i, &b) in m.iter().enumerate() {
                if b == b'\n' {
                    assert!(i > 0 && m[i - 1] == b'\r', "bare LF stored for {v:?}");
                }
                if b == b'\r' {
                    assert_eq!(m.get(i + 1), Some(&b'\n'), "bare CR stored for {v:?}");
                }
            }
        }
    }

    #[test]
    fn nul_is_noted_and_not_stored() {
        let (end, r) = run(b"a\x00b\r\n.\r\n");
        assert!(end.is_some());
        assert!(r.saw_nul);
        assert_eq!(r.message, b"ab\r\n");
    }

    #[test]
    fn size_limit_counts_but_does_not_store() {
        let mut r = DataReader::new(Vec::new(), 10);
        assert_eq!(r.feed(b"0123456789abcdef\r\n"), None);
        assert_eq!(r.feed(b".\r\n"), Some(3));
        let res = r.finish();
        assert!(res.too_big);
        assert_eq!(res.size, 18);
        assert!(res.message.len() <= 10);
    }

    #[test]
    fn terminator_split_across_chunks() {
        let mut r = DataReader::new(b"X: y\r\n".to_vec(), 1000);
        assert_eq!(r.feed(b"body\r"), None);
        assert_eq!(r.feed(b"\n."), None);
        assert_eq!(r.feed(b"\r"), None);
        assert_eq!(r.feed(b"\nNEXT"), Some(1));
        assert_eq!(r.finish().message, b"X: y\r\nbody\r\n");
    }

    #[test]
    fn byte_at_a_time_equals_whole() {
        let input = b"A: b\r\n c\n\r\n..x\r\n.y\n\r\n.\r\n";
        let (_, whole) = run(input);
        let mut r = DataReader::new(Vec::new(), 1 << 20);
        let mut end = None;
        for (i, b) in input.iter().enumerate() {
            if r.feed(std::slice::from_ref(b)).is_some() {
                end = Some(i);
                break;
            }
        }
        assert_eq!(end, Some(input.len() - 1));
        assert_eq!(r.finish().message, whole.message);
    }

    fn limited(input: &[u8], max_size: u64, max_count: usize) -> (Option<usize>, DataResult) {
        let mut r = DataReader::new(b"Received: by mx2\r\n".to_vec(), 1 << 30)
            .with_header_limits(max_size, max_count);
        let end = r.feed(input);
        (end, r.finish())
    }

    #[test]
    fn header_count_limit_frees_the_message_and_reads_to_the_end() {
        let mut input = b"a:\r\n".repeat(11);
        input.extend_from_slice(b"\r\nbody\r\n.\r\nQUIT\r\n");
        let (end, r) = limited(&input, 1 << 20, 10);
        assert_eq!(end, Some(input.len() - 6), "the session stays in sync");
        assert_eq!(r.header_overflow, Some(HeaderOverflow::Count(10)));
        assert!(r.message.is_empty());
        assert_eq!(r.size, 11 * 4 + 8);
        // Exactly at the limit is fine, continuation lines do not count,
        // and a body full of header-like lines is not a header block.
        let mut ok = b"a:\r\n".repeat(9);
        ok.extend_from_slice(b"b: x\r\n y\r\n\tz\r\n\r\n");
        ok.extend_from_slice(&b"c:\r\n".repeat(50));
        ok.extend_from_slice(b".\r\n");
        let (end, r) = limited(&ok, 1 << 20, 10);
        assert!(end.is_some());
        assert_eq!(r.header_overflow, None);
        assert!(r.message.starts_with(b"Received: by mx2\r\na:\r\n"));
    }

    #[test]
    fn header_block_ends_at_a_non_header_line() {
        // As in Postfix: no empty line needed; "From x" is not a field.
        let mut input = b"a: 1\r\nnot a header\r\n".to_vec();
        input.extend_from_slice(&b"b:\r\n".repeat(20));
        input.extend_from_slice(b".\r\n");
        let (_, r) = limited(&input, 1 << 20, 10);
        assert_eq!(r.header_overflow, None);
        // A leading continuation line is not a field either.
        let mut input = b" a:\r\n".to_vec();
        input.extend_from_slice(&b"b:\r\n".repeat(20));
        input.extend_from_slice(b".\r\n");
        let (_, r) = limited(&input, 1 << 20, 10);
        assert_eq!(r.header_overflow, None);
    }

    #[test]
    fn header_size_limit_counts_one_long_line_before_it_ends() {
        let mut r =
            DataReader::new(b"Received: x\r\n".to_vec(), 1 << 30).with_header_limits(1000, 10);
        assert_eq!(r.feed(b"Subject: "), None);
        let chunk = [b'x'; 600];
        assert_eq!(r.feed(&chunk), None);
        assert_eq!(r.header_overflow, None);
        assert_eq!(r.feed(&chunk), None);
        // Over the limit mid-line: the stored bytes are gone already.
        assert_eq!(r.header_overflow, Some(HeaderOverflow::Size(1000)));
        assert!(r.out.capacity() == 0);
        assert_eq!(r.feed(b"\r\n\r\nbody\r\n.\r\n"), Some(13));
        let res = r.finish();
        assert!(res.message.is_empty() && !res.too_big);
        // A body of any size is not a header block.
        let mut input = b"Subject: s\r\n\r\n".to_vec();
        input.extend_from_slice(&[b'y'; 5000]);
        input.extend_from_slice(b"\r\n.\r\n");
        let (_, r) = limited(&input, 1000, 10);
        assert_eq!(r.header_overflow, None);
        assert_eq!(
            r.message.len(),
            "Received: by mx2\r\n".len() + input.len() - 3
        );
    }

    /// The byte-at-a-time reader this one replaced, kept as the reference.
    fn reference(input: &[u8], limit: u64) -> (Option<usize>, DataResult) {
        let mut r = DataReader::new(Vec::new(), limit);
        for (i, &b) in input.iter().enumerate() {
            if r.pending_cr {
                r.pending_cr = false;
                if b == b'\n' {
                    if r.end_of_line(true) {
                        return (Some(i + 1), r.finish());
                    }
                    continue;
                }
                r.bare_newlines = true;
                r.end_of_line(false);
            }
            match b {
                b'\r' => r.pending_cr = true,
                b'\n' => {
                    r.bare_newlines = true;
                    r.end_of_line(false);
                }
                _ => {
                    let first = r.line_raw == 0;
                    r.line_raw += 1;
                    if b == 0 {
                        r.saw_nul = true;
                    } else if first && b == b'.' {
                        r.dot_first = true;
                    } else {
                        r.dot_first = false;
                        r.push(&[b]);
                    }
                }
            }
        }
        (None, r.finish())
    }

    #[test]
    fn same_as_the_byte_at_a_time_reader_on_random_streams() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = b"ab.\r\n\0 X";
        for _ in 0..20_000 {
            let len = rng.gen_range(0..60);
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let limit = rng.gen_range(0..80);
            let (want_end, want) = reference(&input, limit);
            // Fed in random chunks.
            let mut r = DataReader::new(Vec::new(), limit);
            let mut pos = 0;
            let mut got_end = None;
            while pos < input.len() {
                let n = rng.gen_range(1..=input.len() - pos);
                if let Some(k) = r.feed(&input[pos..pos + n]) {
                    got_end = Some(pos + k);
                    break;
                }
                pos += n;
            }
            let got = r.finish();
            let case = String::from_utf8_lossy(&input).escape_debug().to_string();
            assert_eq!(got_end, want_end, "{case}");
            assert_eq!(
                (got.size, got.too_big, got.saw_nul, got.bare_newlines),
                (want.size, want.too_big, want.saw_nul, want.bare_newlines),
                "{case}"
            );
            assert_eq!(got.message, want.message, "{case}");
        }
    }
}
