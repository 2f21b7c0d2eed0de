//! header_checks(5) actions: which ones mx2 supports and how a result string
//! ("ACTION optional text") splits, as in Postfix's `hbc_action()`.

/// A supported action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Discard,
    Reject,
    Ignore,
    Strip,
    Replace,
    Prepend,
    Warn,
    Hold,
    Dunno,
    Ok,
}

impl Action {
    const ALL: [Action; 10] = [
        Action::Discard,
        Action::Reject,
        Action::Ignore,
        Action::Strip,
        Action::Replace,
        Action::Prepend,
        Action::Warn,
        Action::Hold,
        Action::Dunno,
        Action::Ok,
    ];

    /// Canonical (upper-case) name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Action::Discard => "DISCARD",
            Action::Reject => "REJECT",
            Action::Ignore => "IGNORE",
            Action::Strip => "STRIP",
            Action::Replace => "REPLACE",
            Action::Prepend => "PREPEND",
            Action::Warn => "WARN",
            Action::Hold => "HOLD",
            Action::Dunno => "DUNNO",
            Action::Ok => "OK",
        }
    }

    /// Looks up an action word, case-insensitively (as Postfix does).
    pub(crate) fn from_word(word: &[u8]) -> Option<Action> {
        Action::ALL
            .into_iter()
            .find(|a| a.name().as_bytes().eq_ignore_ascii_case(word))
    }

    /// REPLACE and PREPEND need text that starts with a header label.
    pub(crate) fn needs_header_text(self) -> bool {
        matches!(self, Action::Replace | Action::Prepend)
    }
}

/// C's isspace() in the "C" locale.
pub(crate) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Splits "ACTION text": the action word ends at the first space or tab, the
/// text starts after any whitespace that follows.
pub(crate) fn split(value: &[u8]) -> (&[u8], &[u8]) {
    let cut = value
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(value.len());
    let (word, rest) = value.split_at(cut);
    let skip = rest.iter().take_while(|&&b| is_space(b)).count();
    (word, &rest[skip..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(Action::from_word(b"ignore"), Some(Action::Ignore));
        assert_eq!(Action::from_word(b"Reject"), Some(Action::Reject));
        assert_eq!(Action::from_word(b"FILTER"), None);
        assert_eq!(Action::from_word(b""), None);
        assert_eq!(
            split(b"REJECT  go away "),
            (&b"REJECT"[..], &b"go away "[..])
        );
        assert_eq!(split(b"IGNORE"), (&b"IGNORE"[..], &b""[..]));
    }
}
