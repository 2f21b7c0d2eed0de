//! Making untrusted text safe to print for a person.
//!
//! Envelope fields, remote replies and message headers come from strangers.
//! Printed raw, an ESC or BEL byte drives the admin's terminal (change the
//! title, hide lines, fake output), a bare CR overwrites what was just
//! printed, and a CR/LF in a log line forges a log line of its own. Every
//! human-readable output (`mx2 queue list/show`, `mx2 recipients check`,
//! the text log format) goes through here; `--raw` and `--json` do not
//! (the first is byte-exact on purpose, the second is escaped by JSON).
//!
//! The form: control characters and bytes that are not UTF-8 become `\xNN`
//! (lower-case hex, as tracing-subscriber already writes ESC in log
//! messages); C1 controls and the Unicode characters that reorder or hide
//! text (bidi controls, line and paragraph separators) become `\u{NNNN}`.
//! Everything else, backslashes included, is printed as it is: the output
//! is for reading, and `--raw`/`--json` give the exact bytes.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` must not reach a terminal as it is.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}'
            | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    if (c as u32) < 0x80 {
        let _ = write!(out, "\\x{:02x}", c as u32);
    } else {
        let _ = write!(out, "\\u{{{:04x}}}", c as u32);
    }
}

/// One line of text: every control character escaped, CR, LF and TAB
/// included, so the result is exactly one line.
pub fn line(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Bytes that should be text (a header block, a message): valid UTF-8 is
/// kept, other bytes become `\xNN`; control characters are escaped except
/// TAB, LF and the CR of a CRLF, so the text keeps its lines and a clean
/// message prints exactly as stored.
pub fn text(b: &[u8]) -> Vec<u8> {
    let mut out = String::with_capacity(b.len() + 16);
    for chunk in b.utf8_chunks() {
        let valid = chunk.valid();
        for (i, c) in valid.char_indices() {
            let keep = match c {
                '\t' | '\n' => true,
                '\r' => valid[i + 1..].starts_with('\n'),
                c => !unsafe_char(c),
            };
            if keep {
                out.push(c);
            } else {
                push_escaped(&mut out, c);
            }
        }
        for &x in chunk.invalid() {
            let _ = write!(out, "\\x{x:02x}");
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert!(matches!(line("client.example"), Cow::Borrowed(_)));
        assert_eq!(line("a\x1b]0;pwned\x07b"), "a\\x1b]0;pwned\\x07b");
        assert_eq!(line("a\rb\nc\td"), "a\\x0db\\x0ac\\x09d");
        assert_eq!(line("\x7f\u{9b}2J"), "\\x7f\\u{009b}2J");
        assert_eq!(line("abc\u{202e}fdp.exe"), "abc\\u{202e}fdp.exe");
        assert_eq!(line("例え.jp \\x1b"), "例え.jp \\x1b");
    }

    #[test]
    fn texts() {
        let clean = b"Subject: s\r\n\tfolded\r\n\r\nbody\r\n";
        assert_eq!(text(clean), clean);
        assert_eq!(
            text(b"Subject: \x1b[2Jx\rY\r\n\xff\xfe\r\n"),
            b"Subject: \\x1b[2Jx\\x0dY\r\n\\xff\\xfe\r\n"
        );
        assert_eq!(text("é\u{85}".as_bytes()), "é\\u{0085}".as_bytes());
        assert_eq!(text(b"a\r"), b"a\\x0d");
    }
}
