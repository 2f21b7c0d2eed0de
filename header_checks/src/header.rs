//! Finding the top-level header block of a raw message and the string each
//! logical header presents to the rules, the way Postfix's smtpd(8) and
//! mime_state (cleanup(8)) build it:
//!
//! - lines end at LF; every CR right before the LF is dropped (smtp_get);
//! - a line starting with space or tab continues the current header; the
//!   lines are joined with "\n";
//! - a header starts with a name of printable ASCII (no space, no colon),
//!   optionally followed by spaces/tabs, then a colon (`is_header()`); the
//!   obsolete "Name :" form is presented as "Name:";
//! - any other line (empty or not) ends the header block;
//! - each line is appended as a C string, so text after a NUL byte in a
//!   line is not seen;
//! - the key is cut at `header_size_limit` bytes (Postfix's default,
//!   102400): text past it is never shown to a rule.
//!
//! Up to that limit this is byte for byte what `postmap -hq -` (Postfix's
//! own header parser) produces; `oracle_tests` checks it against the
//! installed Postfix. At the limit mx2 cuts exactly, where Postfix's
//! cleanup(8) stops appending once the key has reached the limit, so its key
//! may run past it by up to one input record (2048 bytes through smtpd;
//! `postmap` does not split lines at all). An exact cut keeps the promise
//! simple ("a rule sees at most N bytes of a header") and bounds the work
//! one header can cost a pattern.
//!
//! Only the matching string follows these rules: the byte ranges returned
//! cover the header exactly as it is in the message, so edits never touch a
//! byte they do not mean to.

use std::borrow::Cow;

/// Postfix `header_size_limit` default.
pub const DEFAULT_HEADER_SIZE_LIMIT: usize = 102_400;

/// Postfix's `is_header()`: the length of the header name when `line`
/// starts with "name:" or "name  :", else `None`.
pub(crate) fn header_name_len(line: &[u8]) -> Option<usize> {
    #[derive(PartialEq)]
    enum State {
        Init,
        InChar,
        InCharSpace,
    }
    let mut state = State::Init;
    let mut len = 0usize;
    for &c in line {
        match c {
            b' ' | b'\t' => match state {
                State::Init => return None,
                _ => state = State::InCharSpace,
            },
            b':' => {
                return if state == State::Init {
                    None
                } else {
                    Some(len)
                }
            }
            0 => return None,
            c if !(0x20..0x7f).contains(&c) => return None,
            _ => match state {
                State::InCharSpace => return None,
                _ => {
                    state = State::InChar;
                    len += 1;
                }
            },
        }
    }
    None
}

/// One physical line: `[start, content_end)` is the text without the line
/// terminator, `[content_end, end)` is the terminator ("\r\n", "\n",
/// "\r\r\n", or empty at the end of input).
#[derive(Debug, Clone, Copy)]
struct Line {
    start: usize,
    content_end: usize,
    end: usize,
}

fn next_line(msg: &[u8], start: usize) -> Line {
    let rest = &msg[start..];
    match memchr::memchr(b'\n', rest) {
        Some(i) => {
            let mut content_end = start + i;
            while content_end > start && msg[content_end - 1] == b'\r' {
                content_end -= 1;
            }
            Line {
                start,
                content_end,
                end: start + i + 1,
            }
        }
        None => {
            // Unterminated last line: keep trailing CRs in the terminator
            // too, so a message cut after "\r" still splits the same way.
            let mut content_end = msg.len();
            while content_end > start && msg[content_end - 1] == b'\r' {
                content_end -= 1;
            }
            Line {
                start,
                content_end,
                end: msg.len(),
            }
        }
    }
}

/// One logical header of the top-level block.
#[derive(Debug, Clone)]
pub(crate) struct Header<'m> {
    /// Byte range of all its physical lines, terminators included.
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Terminator of its first physical line.
    pub(crate) first_eol: &'m [u8],
    /// Terminator of its last physical line (may be empty at end of input).
    pub(crate) last_eol: &'m [u8],
    /// What the rules see.
    pub(crate) key: Cow<'m, [u8]>,
}

/// The top-level header block of a message.
#[derive(Debug)]
pub(crate) struct HeaderBlock<'m> {
    pub(crate) headers: Vec<Header<'m>>,
    /// Offset just past the last header: where the separator line or the
    /// body (or the end of input) starts.
    pub(crate) end: usize,
}

/// Appends one record's text to the key, cut at a NUL as strcat() would,
/// and never past `limit` bytes in all.
fn push_c_string(key: &mut Vec<u8>, text: &[u8], limit: usize) {
    let text = match memchr::memchr(0, text) {
        Some(n) => &text[..n],
        None => text,
    };
    let room = limit.saturating_sub(key.len());
    key.extend_from_slice(&text[..text.len().min(room)]);
}

struct Builder<'m> {
    msg: &'m [u8],
    first: Line,
    last: Line,
    /// Set once the key must differ from the first line's raw content.
    owned: Option<Vec<u8>>,
    /// Most bytes the key may have (`header_size_limit`).
    limit: usize,
}

impl<'m> Builder<'m> {
    /// The first line's raw content, cut at the limit.
    fn first_content(&self) -> &'m [u8] {
        let end = self
            .first
            .content_end
            .min(self.first.start.saturating_add(self.limit));
        &self.msg[self.first.start..end]
    }

    fn new(msg: &'m [u8], line: Line, name_len: usize, limit: usize) -> Builder<'m> {
        let content = &msg[line.start..line.content_end];
        let after_name = &content[name_len..];
        let spaces = after_name
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        let owned = if spaces == 0 && memchr::memchr(0, content).is_none() {
            None
        } else {
            let mut key = Vec::with_capacity(content.len().min(limit));
            key.extend_from_slice(&content[..name_len.min(limit)]);
            push_c_string(&mut key, &after_name[spaces..], limit);
            Some(key)
        };
        Builder {
            msg,
            first: line,
            last: line,
            owned,
            limit,
        }
    }

    fn continue_with(&mut self, line: Line) {
        let msg = self.msg;
        let limit = self.limit;
        if self.owned.is_none() {
            self.owned = Some(self.first_content().to_vec());
        }
        if let Some(key) = self.owned.as_mut() {
            if key.len() < limit {
                key.push(b'\n');
                push_c_string(key, &msg[line.start..line.content_end], limit);
            }
        }
        self.last = line;
    }

    fn finish(self) -> Header<'m> {
        let key = match self.owned {
            Some(k) => Cow::Owned(k),
            None => Cow::Borrowed(self.first_content()),
        };
        Header {
            start: self.first.start,
            end: self.last.end,
            first_eol: &self.msg[self.first.content_end..self.first.end],
            last_eol: &self.msg[self.last.content_end..self.last.end],
            key,
        }
    }
}

/// Splits the top-level header block of `msg` into logical headers; each
/// key holds at most `limit` bytes.
pub(crate) fn scan(msg: &[u8], limit: usize) -> HeaderBlock<'_> {
    let mut headers = Vec::with_capacity(32);
    let mut current: Option<Builder<'_>> = None;
    let mut pos = 0;
    while pos < msg.len() {
        let line = next_line(msg, pos);
        let content = &msg[line.start..line.content_end];
        if let Some(b) = current.as_mut() {
            if matches!(content.first(), Some(b' ' | b'\t')) {
                b.continue_with(line);
                pos = line.end;
                continue;
            }
        }
        if let Some(b) = current.take() {
            headers.push(b.finish());
        }
        match header_name_len(content) {
            Some(n) => {
                current = Some(Builder::new(msg, line, n, limit));
                pos = line.end;
            }
            None => break,
        }
    }
    if let Some(b) = current.take() {
        headers.push(b.finish());
    }
    let end = headers.last().map_or(0, |h| h.end);
    HeaderBlock { headers, end }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_header_like_postfix() {
        assert_eq!(header_name_len(b"Subject: x"), Some(7));
        assert_eq!(header_name_len(b"Subject : x"), Some(7));
        assert_eq!(header_name_len(b"X-Spam-Level:"), Some(12));
        assert_eq!(header_name_len(b": x"), None);
        assert_eq!(header_name_len(b" Subject: x"), None);
        assert_eq!(header_name_len(b"Two words: x"), None);
        assert_eq!(header_name_len(b"Caf\xe9: x"), None);
        assert_eq!(header_name_len(b"NoColon"), None);
        assert_eq!(
            header_name_len(b"From nobody Mon Jan 1 00:00:00 2024"),
            None
        );
    }

    fn keys(msg: &[u8]) -> Vec<String> {
        scan(msg, DEFAULT_HEADER_SIZE_LIMIT)
            .headers
            .iter()
            .map(|h| String::from_utf8_lossy(&h.key).into_owned())
            .collect()
    }

    #[test]
    fn folding_and_line_endings() {
        let msg = b"A: 1\r\nB: 2\r\n\tmore\r\n  end\r\nC : 3\r\n\r\nbody: x\r\n";
        let block = scan(msg, DEFAULT_HEADER_SIZE_LIMIT);
        assert_eq!(keys(msg), ["A: 1", "B: 2\n\tmore\n  end", "C: 3"]);
        assert_eq!(block.end, msg.len() - b"\r\nbody: x\r\n".len());
        assert_eq!(block.headers[1].first_eol, b"\r\n");
        assert!(matches!(block.headers[0].key, Cow::Borrowed(_)));
    }

    #[test]
    fn block_ends_at_non_header_line() {
        let msg = b"A: 1\nnot a header\nB: 2\n";
        assert_eq!(keys(msg), ["A: 1"]);
        assert_eq!(scan(msg, DEFAULT_HEADER_SIZE_LIMIT).end, 5);
        assert_eq!(keys(b" x: 1\nA: 2\n"), Vec::<String>::new());
        assert_eq!(keys(b"A: 1"), ["A: 1"]);
        assert_eq!(keys(b"A: 1\r\r\n\r\r\nB: 2"), ["A: 1"]);
    }

    #[test]
    fn nul_cuts_the_key() {
        assert_eq!(keys(b"A: x\0y\n\tz\0w\n"), ["A: x\n\tz"]);
    }

    #[test]
    fn size_limit_cuts_the_key_not_the_header() {
        let mut msg = b"A: ".to_vec();
        msg.extend(std::iter::repeat_n(b'x', 200_000));
        msg.extend_from_slice(b"\n\tmore\n");
        let block = scan(&msg, DEFAULT_HEADER_SIZE_LIMIT);
        assert_eq!(block.headers.len(), 1);
        assert_eq!(block.headers[0].key.len(), DEFAULT_HEADER_SIZE_LIMIT);
        // The header's byte range still covers all of it.
        assert_eq!(block.headers[0].end, msg.len());
        // An unfolded long line: the key borrows a cut of the message.
        let block = scan(&msg[..200_004], DEFAULT_HEADER_SIZE_LIMIT);
        assert_eq!(block.headers[0].key.len(), DEFAULT_HEADER_SIZE_LIMIT);
        assert!(matches!(block.headers[0].key, Cow::Borrowed(_)));
    }

    #[test]
    fn size_limit_applies_to_folded_and_normalised_keys() {
        // Folded: the first line fits, the folds take it over the limit.
        let mut msg = b"A: 1".to_vec();
        for _ in 0..100 {
            msg.extend_from_slice(b"\n\t");
            msg.extend(std::iter::repeat_n(b'y', 50));
        }
        msg.extend_from_slice(b"\nB: 2\n");
        let block = scan(&msg, 1000);
        assert_eq!(block.headers.len(), 2);
        assert_eq!(block.headers[0].key.len(), 1000);
        assert!(block.headers[0].key.starts_with(b"A: 1\n\tyyy"));
        assert_eq!(&*block.headers[1].key, b"B: 2");
        // "Name :" form (an owned key) and a tiny limit.
        let block = scan(b"Subject : hello\n", 9);
        assert_eq!(&*block.headers[0].key, b"Subject: ");
        let block = scan(b"Subject: hello\n\tworld\n", 4);
        assert_eq!(&*block.headers[0].key, b"Subj");
    }
}
