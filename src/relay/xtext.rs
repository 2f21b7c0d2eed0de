//! xtext (RFC 3461 §4): how DSN parameter values travel in MAIL and RCPT.
//!
//! The queue stores ENVID and ORCPT decoded (what the sender meant), so
//! they are encoded again on the way out: `+`, `=`, and every byte outside
//! `!`..`~` become `+XX`.

/// Encodes `s` as xtext.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_plus_equals_space_controls_and_8bit() {
        assert_eq!(encode("user@example.jp"), "user@example.jp");
        assert_eq!(encode("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(encode("x\r\n"), "x+0D+0A");
        assert_eq!(encode("é"), "+C3+A9");
        assert_eq!(encode(""), "");
    }
}
