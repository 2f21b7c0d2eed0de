//! Header edits on raw message bytes.
//!
//! A [`Message`] is the top-level header block cut into raw fields (each
//! with its continuation lines and line ending), the blank separator line,
//! and the body. Parsing and re-assembling without edits gives back the
//! input byte for byte; an edit touches only the fields it names. Fields
//! that scanners add are written with CRLF line ends, as mx2 stores every
//! line, and can never smuggle a blank line (an early end of the header
//! block) or an unfolded second header into the message.

/// A message split for editing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Raw header fields, each with its continuation lines and line ends.
    pub fields: Vec<Vec<u8>>,
    /// The blank line ending the header block (`\r\n` or `\n`), or empty
    /// when the message has no separator line.
    pub separator: Vec<u8>,
    /// Everything after the separator (or after the last field when there
    /// is none).
    pub body: Vec<u8>,
}

impl Message {
    /// Splits `data`. A line that is neither a header field nor a
    /// continuation ends the header block, as in Postfix.
    pub fn parse(mut data: Vec<u8>) -> Message {
        let mut fields: Vec<Vec<u8>> = Vec::new();
        let mut pos = 0;
        let mut sep_len = 0;
        while pos < data.len() {
            let end = data[pos..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| pos + i + 1)
                .unwrap_or(data.len());
            let line = &data[pos..end];
            if line == b"\r\n" || line == b"\n" {
                sep_len = line.len();
                break;
            }
            if matches!(line.first(), Some(b' ' | b'\t')) {
                match fields.last_mut() {
                    Some(f) => f.extend_from_slice(line),
                    None => break,
                }
            } else if field_name_len(line).is_some() {
                fields.push(line.to_vec());
            } else {
                break;
            }
            pos = end;
        }
        let body = data.split_off(pos + sep_len);
        data.drain(..pos);
        Message {
            fields,
            separator: data,
            body,
        }
    }

    /// The message as bytes again.
    pub fn to_bytes(&self) -> Vec<u8> {
        let len = self.fields.iter().map(Vec::len).sum::<usize>()
            + self.separator.len()
            + self.body.len();
        let mut out = Vec::with_capacity(len);
        for f in &self.fields {
            out.extend_from_slice(f);
        }
        out.extend_from_slice(&self.separator);
        out.extend_from_slice(&self.body);
        out
    }

    /// Index of the first field after mx2's own `Received:` line (the
    /// first field), where scanner verdict headers go.
    pub fn after_trace(&self) -> usize {
        match self.fields.first() {
            Some(f) if name_is(f, "Received") => 1,
            _ => 0,
        }
    }

    /// Inserts a field before index `at` (clamped to the end).
    pub fn insert(&mut self, at: usize, field: Vec<u8>) {
        self.terminate_last_field();
        let at = at.min(self.fields.len());
        self.fields.insert(at, field);
    }

    /// Appends a field at the end of the header block.
    pub fn append(&mut self, field: Vec<u8>) {
        self.terminate_last_field();
        self.fields.push(field);
    }

    /// Removes every field whose name satisfies `pred`; returns how many.
    pub fn remove_where(&mut self, mut pred: impl FnMut(&str) -> bool) -> usize {
        let before = self.fields.len();
        self.fields
            .retain(|f| !pred(&String::from_utf8_lossy(field_name(f))));
        before - self.fields.len()
    }

    /// Changes the `nth` (1-based; 0 counts as 1) field called `name` to
    /// `value`; an empty value deletes it. With fewer such fields, the
    /// field is appended (sendmail's `smfi_chgheader`), unless the value
    /// is empty.
    pub fn change(&mut self, name: &str, nth: usize, value: &[u8], leadspc: bool) {
        let nth = nth.max(1);
        let found = self
            .fields
            .iter()
            .enumerate()
            .filter(|(_, f)| name_is(f, name))
            .nth(nth - 1)
            .map(|(i, _)| i);
        match (found, value.is_empty()) {
            (Some(i), true) => {
                self.fields.remove(i);
            }
            (Some(i), false) => self.fields[i] = format_field(name, value, leadspc),
            (None, true) => {}
            (None, false) => self.append(format_field(name, value, leadspc)),
        }
    }

    /// Replaces the body, normalising its line ends to CRLF; adds the blank
    /// separator line when the message had none.
    pub fn replace_body(&mut self, body: &[u8]) {
        if self.separator.is_empty() {
            self.terminate_last_field();
            self.separator = b"\r\n".to_vec();
        }
        self.body = crlf(body);
    }

    /// A field without a line end (the very last line of a message with no
    /// final newline) gets one before anything is put after it.
    fn terminate_last_field(&mut self) {
        if let Some(f) = self.fields.last_mut() {
            if !f.ends_with(b"\n") {
                f.extend_from_slice(b"\r\n");
            }
        }
    }
}

/// Length of the field name if `line` starts a header field (`Name:` with
/// printable ASCII, optional blanks before the colon as RFC 822 allowed).
fn field_name_len(line: &[u8]) -> Option<usize> {
    let n = line
        .iter()
        .position(|&b| !(33..=126).contains(&b) || b == b':')?;
    if n == 0 {
        return None;
    }
    let rest = &line[n..];
    let blanks = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    (rest.get(blanks) == Some(&b':')).then_some(n)
}

/// The name of a raw field (`Subject` for `Subject: x`).
pub fn field_name(field: &[u8]) -> &[u8] {
    let n = field_name_len(field).unwrap_or(0);
    &field[..n]
}

/// Whether a raw field is called `name` (ASCII case-insensitive).
pub fn name_is(field: &[u8], name: &str) -> bool {
    field_name(field).eq_ignore_ascii_case(name.as_bytes())
}

/// The value of a raw field: what follows the colon, line ends included
/// except the last.
pub fn field_value(field: &[u8]) -> &[u8] {
    let colon = field.iter().position(|&b| b == b':').map(|i| i + 1);
    let v = &field[colon.unwrap_or(field.len())..];
    let v = v.strip_suffix(b"\n").unwrap_or(v);
    v.strip_suffix(b"\r").unwrap_or(v)
}

/// Builds a field `Name: value\r\n` from a name and a value that may hold
/// line breaks (`\n`, `\r\n` or `\r`). Every line after the first is made
/// a continuation line and empty lines are dropped, so a value can never
/// end the header block or start a header of its own. With `leadspc` (the
/// milter's SMFIP_HDR_LEADSPC) the value carries its own leading space;
/// otherwise one space follows the colon.
pub fn format_field(name: &str, value: &[u8], leadspc: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + value.len() + 4);
    out.extend_from_slice(name.as_bytes());
    out.push(b':');
    if !leadspc && !matches!(value.first(), Some(b' ' | b'\t')) {
        out.push(b' ');
    }
    let text = crlf(value);
    let mut first = true;
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if first {
            out.extend_from_slice(line);
            first = false;
            continue;
        }
        if line.iter().all(|&b| b == b' ' || b == b'\t') {
            continue;
        }
        out.extend_from_slice(b"\r\n");
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            out.push(b'\t');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Normalises every line end (`\n`, `\r`, `\r\n`) to CRLF.
pub fn crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 32);
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if data.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// A raw field copied from another program's output, with CRLF line ends.
/// Rebuilt with `format_field`, so a bare CR inside it (which becomes a
/// line end) can only ever continue this field, never start another.
pub fn normalise_field(raw: &[u8]) -> Vec<u8> {
    let name = String::from_utf8_lossy(field_name(raw));
    format_field(&name, field_value(raw), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(data: &[u8]) {
        let m = Message::parse(data.to_vec());
        assert_eq!(m.to_bytes(), data, "{:?}", String::from_utf8_lossy(data));
    }

    #[test]
    fn parse_and_assemble_is_identity() {
        roundtrip(b"");
        roundtrip(b"\r\n");
        roundtrip(b"\r\nbody only\r\n");
        roundtrip(b"Subject: x\r\n\r\nbody\r\n");
        roundtrip(b"Subject: x\r\n");
        roundtrip(b"Subject: x");
        roundtrip(b"Subject: x\n\tfolded\nTo: y\n\nbody\n\nmore\n");
        roundtrip(b"Subject: x\r\nnot a header line\r\nTo: y\r\n\r\nbody");
        roundtrip(b" leading continuation\r\nSubject: x\r\n\r\n");
        roundtrip(b"Old-Style : value\r\n\r\n\x00\xff binary");
        let mut seed = 7u32;
        for _ in 0..2000 {
            let len = (seed % 40) as usize;
            let mut d = Vec::new();
            for _ in 0..len {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                d.push(b"ab:\r\n \t"[(seed >> 16) as usize % 7]);
            }
            roundtrip(&d);
        }
    }

    #[test]
    fn splits_fields_separator_and_body() {
        let m = Message::parse(b"A: 1\r\nB: 2\r\n\t3\r\n\r\nbody\r\n".to_vec());
        assert_eq!(
            m.fields,
            vec![b"A: 1\r\n".to_vec(), b"B: 2\r\n\t3\r\n".to_vec()]
        );
        assert_eq!(m.separator, b"\r\n");
        assert_eq!(m.body, b"body\r\n");
        let m = Message::parse(b"A: 1\r\nnot header\r\n".to_vec());
        assert_eq!(m.fields.len(), 1);
        assert!(m.separator.is_empty());
        assert_eq!(m.body, b"not header\r\n");
    }

    #[test]
    fn edits_touch_only_their_fields() {
        let mut m = Message::parse(
            b"Received: from a\r\n\tby b\r\nX-A: 1\r\nSubject: s\r\nx-a: 2\r\n\r\nbody\r\n"
                .to_vec(),
        );
        assert_eq!(m.after_trace(), 1);
        m.insert(1, format_field("X-Top", b"t", false));
        m.change("X-A", 2, b"changed", false);
        m.change("X-A", 1, b"", false);
        m.change("X-New", 3, b"n", false);
        m.append(format_field("X-End", b"e", false));
        assert_eq!(
            m.to_bytes(),
            b"Received: from a\r\n\tby b\r\nX-Top: t\r\nSubject: s\r\nX-A: changed\r\nX-New: n\r\nX-End: e\r\n\r\nbody\r\n"
        );
        assert_eq!(m.remove_where(|n| n.eq_ignore_ascii_case("x-top")), 1);
    }

    #[test]
    fn formatted_fields_cannot_break_the_header_block() {
        assert_eq!(format_field("X", b"", false), b"X: \r\n");
        assert_eq!(format_field("X", b" v", false), b"X: v\r\n");
        assert_eq!(format_field("X", b" v", true), b"X: v\r\n");
        assert_eq!(format_field("X", b"v", true), b"X:v\r\n");
        assert_eq!(
            format_field(
                "X-Spam-Status",
                b"No, score=1\n\ttests=A\r\n\n\nInjected: yes\rz",
                false
            ),
            b"X-Spam-Status: No, score=1\r\n\ttests=A\r\n\tInjected: yes\r\n\tz\r\n"
        );
    }

    #[test]
    fn body_replacement_normalises_line_ends() {
        let mut m = Message::parse(b"A: 1".to_vec());
        m.replace_body(b"x\ny\r\n.\rz");
        assert_eq!(m.to_bytes(), b"A: 1\r\n\r\nx\r\ny\r\n.\r\nz");
    }

    #[test]
    fn values() {
        assert_eq!(
            field_value(b"Subject:  hi\r\n\tthere\r\n"),
            b"  hi\r\n\tthere"
        );
        assert_eq!(field_name(b"Old-Style : v\r\n"), b"Old-Style");
    }
}
