//! Action text with `$1`..`$n` references, parsed and checked like Postfix's
//! `mac_parse()` + `dict_pcre_prescan()`: `$n`, `${n}` and `$(n)` name a
//! capture group, `$$` is a literal `$`, anything else after `$` is an error.

/// One piece of action text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Vec<u8>),
    Group(usize),
}

/// Parsed action text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    segments: Vec<Segment>,
    max_group: usize,
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl Template {
    /// Parses `text`. The error is the reason Postfix would give for
    /// skipping the rule.
    pub(crate) fn parse(text: &[u8]) -> Result<Template, String> {
        let mut segments = Vec::new();
        let mut literal = Vec::new();
        let mut max_group = 0usize;
        let mut i = 0;
        while i < text.len() {
            if text[i] != b'$' {
                literal.push(text[i]);
                i += 1;
                continue;
            }
            if text.get(i + 1) == Some(&b'$') {
                literal.push(b'$');
                i += 2;
                continue;
            }
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut literal)));
            }
            i += 1;
            let name: &[u8];
            match text.get(i) {
                Some(&open @ (b'(' | b'{')) => {
                    let close = if open == b'(' { b')' } else { b'}' };
                    let start = i + 1;
                    let mut level = 1usize;
                    let mut j = start;
                    loop {
                        let Some(&c) = text.get(j) else {
                            return Err(format!(
                                "bad replacement syntax: truncated macro reference: \"{}\"",
                                String::from_utf8_lossy(text)
                            ));
                        };
                        if c == open {
                            level += 1;
                        } else if c == close {
                            level -= 1;
                        }
                        j += 1;
                        if level == 0 {
                            break;
                        }
                    }
                    name = &text[start..j - 1];
                    i = j;
                }
                _ => {
                    let start = i;
                    while i < text.len() && is_name_byte(text[i]) {
                        i += 1;
                    }
                    name = &text[start..i];
                }
            }
            if name.is_empty() {
                return Err(format!(
                    "bad replacement syntax: empty macro name: \"{}\"",
                    String::from_utf8_lossy(text)
                ));
            }
            if !name.iter().all(u8::is_ascii_digit) {
                return Err(format!(
                    "bad replacement syntax: non-numeric replacement index \"{}\"",
                    String::from_utf8_lossy(name)
                ));
            }
            let n = name.iter().fold(0usize, |acc, d| {
                acc.saturating_mul(10).saturating_add(usize::from(d - b'0'))
            });
            if n < 1 {
                return Err(format!(
                    "bad replacement syntax: out of range replacement index \"{}\"",
                    String::from_utf8_lossy(name)
                ));
            }
            max_group = max_group.max(n);
            segments.push(Segment::Group(n));
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template {
            segments,
            max_group,
        })
    }

    /// Largest `$n` used (0 when the text has no reference).
    pub(crate) fn max_group(&self) -> usize {
        self.max_group
    }

    /// The text when it has no `$n` (with `$$` already turned into `$`).
    pub(crate) fn literal(&self) -> Option<Vec<u8>> {
        if self.max_group != 0 {
            return None;
        }
        let mut out = Vec::new();
        for s in &self.segments {
            if let Segment::Literal(l) = s {
                out.extend_from_slice(l);
            }
        }
        Some(out)
    }

    /// The longest literal prefix (before the first `$n`).
    pub(crate) fn static_prefix(&self) -> &[u8] {
        match self.segments.first() {
            Some(Segment::Literal(l)) => l,
            _ => b"",
        }
    }

    /// Expands the text; `group(n)` gives the bytes captured by group n
    /// (`None` or empty: nothing is inserted, as in Postfix).
    pub(crate) fn expand<'a>(&self, group: impl Fn(usize) -> Option<&'a [u8]>) -> Vec<u8> {
        let mut out = Vec::new();
        for s in &self.segments {
            match s {
                Segment::Literal(l) => out.extend_from_slice(l),
                Segment::Group(n) => {
                    if let Some(g) = group(*n) {
                        out.extend_from_slice(g);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(t: &str, groups: &[&str]) -> String {
        let t = Template::parse(t.as_bytes()).unwrap();
        let out = t.expand(|n| groups.get(n).map(|g| g.as_bytes()));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn references() {
        assert_eq!(expand("X: $1 ${2}x $(1)", &["", "a", "b"]), "X: a bx a");
        assert_eq!(expand("cost $$5", &[""]), "cost $5");
        assert_eq!(Template::parse(b"a $12 b").unwrap().max_group(), 12);
        assert_eq!(
            Template::parse(b"a $$ b").unwrap().literal().unwrap(),
            b"a $ b"
        );
    }

    #[test]
    fn errors() {
        for bad in ["x $", "x $ y", "x $0", "x $1a", "x ${1", "x $(a)", "x ${}"] {
            assert!(Template::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
