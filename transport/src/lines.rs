//! Physical and logical lines, read the way Postfix's `readllines()` does.

use crate::domain::is_space;

/// One physical line: its byte range in the text, `\n` included if present.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Physical {
    pub start: usize,
    pub end: usize,
}

/// One logical line: a line starting with non-whitespace text, plus the
/// continuation lines (starting with whitespace) that follow it. Comment
/// lines and blank lines in between are skipped and do not end it.
#[derive(Debug, Clone)]
pub(crate) struct Logical {
    /// Index (0-based) of the first physical line.
    pub first: usize,
    /// Index (0-based) of the last physical line with content.
    pub last: usize,
    /// The joined text (lines concatenated as in Postfix; their leading
    /// whitespace separates the parts), trailing `\r` of each line dropped.
    pub text: String,
    /// `true` for continuation text with no line before it to continue
    /// (Postfix: "logical line must not start with whitespace").
    pub orphan: bool,
}

pub(crate) fn physical_lines(text: &str) -> Vec<Physical> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    while start < bytes.len() {
        let end = match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(i) => start + i + 1,
            None => bytes.len(),
        };
        out.push(Physical { start, end });
        start = end;
    }
    out
}

/// The content of a physical line without its line ending.
pub(crate) fn content<'a>(text: &'a str, p: &Physical) -> &'a str {
    let s = &text[p.start..p.end];
    let s = s.strip_suffix('\n').unwrap_or(s);
    s.strip_suffix('\r').unwrap_or(s)
}

/// Blank, whitespace-only, or a comment (`#` as first non-space character).
pub(crate) fn is_skipped(line: &str) -> bool {
    match line.trim_start_matches(is_space).chars().next() {
        None => true,
        Some(c) => c == '#',
    }
}

pub(crate) fn logical_lines(text: &str, phys: &[Physical]) -> Vec<Logical> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < phys.len() {
        let line = content(text, &phys[i]);
        if is_skipped(line) {
            i += 1;
            continue;
        }
        let orphan = line.starts_with(is_space);
        let mut joined = line.to_string();
        let mut last = i;
        let mut j = i + 1;
        while j < phys.len() {
            let l = content(text, &phys[j]);
            if is_skipped(l) {
                j += 1;
                continue;
            }
            if l.starts_with(is_space) {
                joined.push_str(l);
                last = j;
                j += 1;
                continue;
            }
            break;
        }
        out.push(Logical {
            first: i,
            last,
            text: joined,
            orphan,
        });
        i = j;
    }
    out
}

/// Splits a logical line into key and value as postmap(1) does: the key ends
/// at the first whitespace; leading and trailing whitespace is trimmed from
/// the value.
pub(crate) fn split_key_value(text: &str) -> (&str, &str) {
    let text = text.trim_end_matches(is_space);
    match text.find(is_space) {
        Some(i) => (&text[..i], text[i..].trim_matches(is_space)),
        None => (text, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_like_postfix() {
        let t = "# c\na b,\n\n# inner\n   c\n  # indented comment\n\td\ne f\n  \n";
        let p = physical_lines(t);
        let l = logical_lines(t, &p);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].text, "a b,   c\td");
        assert_eq!((l[0].first, l[0].last), (1, 6));
        assert_eq!(l[1].text, "e f");
        assert_eq!(split_key_value(&l[0].text), ("a", "b,   c\td"));
    }

    #[test]
    fn orphan_and_crlf() {
        let t = "  x y\r\n  z\r\na b\r\n";
        let p = physical_lines(t);
        let l = logical_lines(t, &p);
        assert!(l[0].orphan);
        assert_eq!(l[0].last, 1);
        assert_eq!(l[1].text, "a b");
        assert_eq!(split_key_value("k"), ("k", ""));
    }
}
