//! Dot-stuffing (RFC 5321 §4.5.2) of stored message bytes: stored data is
//! CRLF and not stuffed; every line starting with `.` gets one more, and
//! `.CRLF` ends the data. Whole for small messages, in bounded pieces for
//! big ones, so a 50 MB message is not copied whole once more to be sent.

/// The stuffed message with its terminator, in one buffer.
pub fn whole(data: &[u8]) -> Vec<u8> {
    Pieces::new(data, usize::MAX).next().unwrap_or_default()
}

/// The stuffed message in pieces of about `size` bytes (the last one ends
/// with the terminator). A message not ending in CRLF gets one, so the
/// terminator always stands on its own line.
pub struct Pieces<'a> {
    data: &'a [u8],
    pos: usize,
    at_line_start: bool,
    size: usize,
    done: bool,
}

impl<'a> Pieces<'a> {
    pub fn new(data: &'a [u8], size: usize) -> Pieces<'a> {
        Pieces {
            data,
            pos: 0,
            at_line_start: true,
            size: size.max(1),
            done: false,
        }
    }
}

impl Iterator for Pieces<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let left = self.data.len() - self.pos;
        let mut out = Vec::with_capacity(left.min(self.size) + left.min(self.size) / 64 + 5);
        while self.pos < self.data.len() && out.len() < self.size {
            let rest = &self.data[self.pos..];
            let room = self.size - out.len();
            let line_end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |i| i + 1);
            let piece = &rest[..line_end.min(room)];
            if self.at_line_start && piece.first() == Some(&b'.') {
                out.push(b'.');
            }
            out.extend_from_slice(piece);
            self.at_line_start = piece.last() == Some(&b'\n');
            self.pos += piece.len();
        }
        if self.pos == self.data.len() {
            if !self.data.is_empty() && !self.data.ends_with(b"\r\n") {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b".\r\n");
            self.done = true;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffing_doubles_leading_dots_and_terminates() {
        assert_eq!(whole(b""), b".\r\n");
        assert_eq!(whole(b"a\r\n"), b"a\r\n.\r\n");
        assert_eq!(
            whole(b".a\r\n..\r\n.\r\nx.y\r\n"),
            b"..a\r\n...\r\n..\r\nx.y\r\n.\r\n"
        );
        // A message whose stored form lacks the final CRLF still ends cleanly.
        assert_eq!(whole(b"a\r\n."), b"a\r\n..\r\n.\r\n");
        // A bare "\r\n.\r\n" inside the body can never end the message early.
        let s = whole(b"head\r\n\r\n.\r\nMAIL FROM:<x>\r\n");
        assert_eq!(s, b"head\r\n\r\n..\r\nMAIL FROM:<x>\r\n.\r\n");
    }

    #[test]
    fn pieces_of_any_size_add_up_to_the_whole() {
        let data: &[u8] = b".a\r\n..\r\n.\r\nlong line without dots\r\n.x\r\n\r\n.";
        let want = whole(data);
        for size in 1..=data.len() + 2 {
            let pieces: Vec<Vec<u8>> = Pieces::new(data, size).collect();
            assert_eq!(pieces.concat(), want, "size {size}");
            // Bounded: a piece is at most `size` bytes plus one stuffed dot
            // (and the terminator on the last one).
            for p in &pieces[..pieces.len() - 1] {
                assert!(p.len() <= size + 1, "size {size}: {}", p.len());
            }
        }
    }
}
