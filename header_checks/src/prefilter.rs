//! A cheap, conservative pre-check that skips PCRE for headers a rule
//! cannot match.
//!
//! Typical rules look like `/^X\-Spam\-Level:/m`: `^` followed by literal
//! text. Such a pattern can only match a header key that starts with that
//! text, because:
//!
//! - without `m`, `^` matches only at the start of the key;
//! - with `m`, `^` also matches after a "\n", but in a header key every
//!   "\n" is followed by the space or tab that made the line a
//!   continuation, so a literal that does not start with space or tab can
//!   still only match at offset 0.
//!
//! The literal is taken only when it is certain: no `x` flag, no `|`
//! anywhere in the pattern, only plain printable ASCII or backslash-escaped
//! punctuation, and the last character is dropped when a quantifier follows
//! it. Case is compared as PCRE2 does without UTF mode (ASCII letters only).
//! When in doubt, there is no prefilter and PCRE decides.

use crate::pcre;

/// Characters that are not literal (or may start something that is not).
const META: &[u8] = b"\\^$.[]|()?*+{}#";

/// Required literal start of every match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prefix {
    bytes: Vec<u8>,
    caseless: bool,
}

impl Prefix {
    /// The literal that any match of `pattern` (compiled with `options`)
    /// must start the key with, if it can be determined safely.
    pub(crate) fn from_pattern(pattern: &[u8], options: u32) -> Option<Prefix> {
        if options & pcre::EXTENDED != 0 || pattern.contains(&b'|') {
            return None;
        }
        let rest = pattern.strip_prefix(b"^")?;
        let mut bytes = Vec::new();
        let mut i = 0;
        while let Some(&c) = rest.get(i) {
            if c == b'\\' {
                match rest.get(i + 1) {
                    Some(&n) if n.is_ascii_punctuation() => {
                        bytes.push(n);
                        i += 2;
                    }
                    _ => break,
                }
            } else if (c.is_ascii_graphic() || c == b' ') && !META.contains(&c) {
                bytes.push(c);
                i += 1;
            } else {
                break;
            }
        }
        if matches!(rest.get(i), Some(b'*' | b'+' | b'?' | b'{')) {
            bytes.pop();
        }
        match bytes.first() {
            None | Some(b' ' | b'\t') => None,
            Some(_) => Some(Prefix {
                bytes,
                caseless: options & pcre::CASELESS != 0,
            }),
        }
    }

    /// False when a match is impossible; true when PCRE must decide.
    pub(crate) fn may_match(&self, key: &[u8]) -> bool {
        match key.get(..self.bytes.len()) {
            None => false,
            Some(head) if self.caseless => head.eq_ignore_ascii_case(&self.bytes),
            Some(head) => head == self.bytes.as_slice(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcre::{MatchResult, Matcher, Regex};

    const DEFAULT: u32 = pcre::CASELESS | pcre::DOTALL;

    fn prefix(p: &str, o: u32) -> Option<String> {
        Prefix::from_pattern(p.as_bytes(), o).map(|x| String::from_utf8(x.bytes).unwrap())
    }

    #[test]
    fn extraction() {
        let m = DEFAULT | pcre::MULTILINE;
        assert_eq!(
            prefix(r"^X\-Spam\-Level:", m).as_deref(),
            Some("X-Spam-Level:")
        );
        assert_eq!(prefix(r"^From:\s*<>", m).as_deref(), Some("From:"));
        assert_eq!(
            prefix(r"^X\-Spam\-Flag:\s+YES", m).as_deref(),
            Some("X-Spam-Flag:")
        );
        assert_eq!(prefix(r"^Subjects?:", DEFAULT).as_deref(), Some("Subject"));
        assert_eq!(prefix(r"^ab{2}", DEFAULT).as_deref(), Some("a"));
        assert_eq!(prefix(r"^a*", DEFAULT), None);
        assert_eq!(prefix(r"^(From|To):", DEFAULT), None);
        assert_eq!(prefix(r"^From:|^To:", DEFAULT), None);
        assert_eq!(prefix(r"From:", DEFAULT), None);
        assert_eq!(prefix(r"^\QFrom\E", DEFAULT), None);
        assert_eq!(prefix(r"^ X-X", DEFAULT | pcre::EXTENDED), None);
        assert_eq!(prefix("^\tsecond", m), None);
        assert_eq!(prefix(r"^\x41", DEFAULT), None);
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, xs: &[&'a [u8]]) -> &'a [u8] {
            xs[(self.next() % xs.len() as u64) as usize]
        }
    }

    /// Whenever the prefilter says "impossible", PCRE agrees.
    #[test]
    fn never_hides_a_match() {
        let pieces: &[&[u8]] = &[
            b"^", b"X", b"x", b"-", b"\\-", b":", b"\\:", b" ", b"\t", b"a", b"A", b"?", b"*",
            b"+", b"{1}", b".", b"\\s", b"(a)", b"$", b"|", b"[a-z]", b"\\", b"\n", b"\\Q",
        ];
        let keys: &[&[u8]] = &[
            b"X-a: A",
            b"x-A:",
            b"X:",
            b"Xa",
            b"x",
            b"",
            b"X-A: v\n\tX-A: w",
            b"\tX-a",
            b"X\\-a",
            b"XX-a:",
            b"A: X-a",
            b"x-:",
            b"X- :",
        ];
        let options = [
            pcre::CASELESS | pcre::DOTALL,
            pcre::DOTALL,
            pcre::CASELESS | pcre::MULTILINE,
            pcre::MULTILINE,
            pcre::ANCHORED,
        ];
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut matcher = Matcher::new(4).unwrap();
        let mut checked = 0;
        for _ in 0..20_000 {
            let mut pat = b"^".to_vec();
            for _ in 0..(rng.next() % 6) {
                pat.extend_from_slice(rng.pick(pieces));
            }
            let opts = options[(rng.next() % options.len() as u64) as usize];
            let Some(pf) = Prefix::from_pattern(&pat, opts) else {
                continue;
            };
            let Ok(re) = Regex::new(&pat, opts) else {
                continue;
            };
            for key in keys {
                if !pf.may_match(key) {
                    checked += 1;
                    assert_eq!(
                        matcher.exec(&re, key),
                        MatchResult::NoMatch,
                        "pattern {:?} key {:?}",
                        String::from_utf8_lossy(&pat),
                        String::from_utf8_lossy(key)
                    );
                }
            }
        }
        assert!(checked > 1000);
    }
}
