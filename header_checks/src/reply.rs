//! The SMTP reply for a REJECT, built as Postfix's cleanup(8) and smtpd(8)
//! build it: an optional RFC 3463 enhanced status code at the start of the
//! text is kept (default "5.7.1"); a 4.x.x code turns the reject into a
//! temporary failure (451), a 2.x.x code is invalid and becomes 4.x.x. An
//! SMTP reply code ("554 ...") in the text is *not* special to Postfix: it
//! stays part of the text.

/// Postfix `dsn_valid()`: length of an enhanced status code at the start of
/// `text` ("5.7.1" followed by end or whitespace), or 0.
fn dsn_len(text: &[u8]) -> usize {
    let Some(&first) = text.first() else { return 0 };
    if !matches!(first, b'2' | b'4' | b'5') || text.get(1) != Some(&b'.') {
        return 0;
    }
    let mut i = 2;
    let digits = text[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 3 || text.get(i + digits) != Some(&b'.') {
        return 0;
    }
    i += digits + 1;
    let digits = text[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 3 {
        return 0;
    }
    i += digits;
    match text.get(i) {
        None => i,
        Some(&b) if crate::action::is_space(b) => i,
        Some(_) => 0,
    }
}

/// "550 5.7.1 text" (or "451 4.x.x text") for REJECT with `text`.
pub(crate) fn reject_reply(text: &str) -> String {
    let bytes = text.as_bytes();
    let lead = bytes
        .iter()
        .take_while(|&&b| crate::action::is_space(b))
        .count();
    if lead == bytes.len() {
        return "550 5.7.1 message content rejected".to_string();
    }
    let rest = &text[lead..];
    let n = dsn_len(rest.as_bytes());
    let (dsn, free) = if n > 0 {
        (rest[..n].to_string(), &rest[n..])
    } else {
        ("5.7.1".to_string(), rest)
    };
    let free = free.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '\x0b');
    let mut reason = dsn;
    if reason.starts_with('2') {
        // "bad DSN action ... need 4.x.x or 5.x.x": Postfix makes it 4.x.x.
        reason.replace_range(0..1, "4");
    }
    let code = if reason.starts_with('4') { 451 } else { 550 };
    if free.is_empty() {
        format!("{code} {reason}")
    } else {
        format!("{code} {reason} {free}")
    }
}

#[cfg(test)]
mod tests {
    use super::reject_reply;

    #[test]
    fn replies() {
        assert_eq!(reject_reply(""), "550 5.7.1 message content rejected");
        assert_eq!(reject_reply("go away"), "550 5.7.1 go away");
        assert_eq!(reject_reply("5.7.0 no spam"), "550 5.7.0 no spam");
        assert_eq!(reject_reply("4.7.0 try later"), "451 4.7.0 try later");
        assert_eq!(reject_reply("2.0.0 odd"), "451 4.0.0 odd");
        assert_eq!(reject_reply("554 5.7.1 nope"), "550 5.7.1 554 5.7.1 nope");
        assert_eq!(reject_reply("5.7.1x nope"), "550 5.7.1 5.7.1x nope");
    }
}
