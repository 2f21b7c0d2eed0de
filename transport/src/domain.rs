//! Domain-name syntax: normalisation to lower-case A-labels and validation.

/// Postfix's `ISSPACE`: the C `isspace()` set.
pub(crate) fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Normalises a domain name (a query, a pattern without its leading `.`, or
/// a next-hop host name) to lower-case ASCII (A-labels), tolerating one
/// trailing dot, and checks its syntax.
///
/// Accepted: letters, digits, `-` and `_` in labels of 1–63 characters, no
/// label starting or ending with `-`, at most 253 characters, and a last
/// label that is not all digits (so `192.0.2.1` is not a domain). U-labels
/// are converted with UTS #46 (the `idna` crate). Address literals such as
/// `[192.0.2.1]` are rejected.
pub fn normalize_domain(input: &str) -> Result<String, String> {
    let s = input.strip_suffix('.').unwrap_or(input);
    if s.is_empty() {
        return Err("empty domain name".to_string());
    }
    if s.starts_with('[') {
        return Err("address literals are not domain names".to_string());
    }
    if s.contains('@') {
        return Err("\"@\" is not allowed in a domain name".to_string());
    }
    if let Some(c) = s.chars().find(|c| is_space(*c) || c.is_control()) {
        return Err(format!("character {c:?} is not allowed in a domain name"));
    }
    let ascii = if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii_cow(s.as_bytes(), idna::AsciiDenyList::EMPTY)
            .map_err(|_| "not a valid internationalised domain name".to_string())?
            .into_owned()
    };
    check_ascii_domain(&ascii)?;
    Ok(ascii)
}

fn check_ascii_domain(d: &str) -> Result<(), String> {
    if d.is_empty() {
        return Err("empty domain name".to_string());
    }
    if d.len() > 253 {
        return Err("domain name longer than 253 characters".to_string());
    }
    let mut last = "";
    for label in d.split('.') {
        if label.is_empty() {
            return Err("empty label (misplaced \".\")".to_string());
        }
        if label.len() > 63 {
            return Err(format!("label \"{label}\" longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("character {c:?} is not allowed in a domain name"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label \"{label}\" starts or ends with \"-\""));
        }
        if label.starts_with("xn--") {
            // Must decode as Punycode; the idna crate tells us.
            let (_, res) = idna::domain_to_unicode(label);
            if res.is_err() {
                return Err(format!("label \"{label}\" is not valid Punycode"));
            }
        }
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("numeric top-level label (an IP address needs brackets)".to_string());
    }
    Ok(())
}

/// A transport-map pattern, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    /// `example.jp`: that domain only.
    Exact(String),
    /// `.example.jp`: strict subdomains of `example.jp` (key keeps the dot).
    Parent(String),
    /// `*`: fallback.
    Wildcard,
}

impl Pattern {
    /// The lookup key: `example.jp`, `.example.jp` or `*`.
    pub(crate) fn key(&self) -> String {
        match self {
            Pattern::Exact(d) => d.clone(),
            Pattern::Parent(d) => format!(".{d}"),
            Pattern::Wildcard => "*".to_string(),
        }
    }
}

/// Parses a pattern as written in the table (or given to `add`/`remove`).
pub(crate) fn parse_pattern(p: &str) -> Result<Pattern, String> {
    if p == "*" {
        return Ok(Pattern::Wildcard);
    }
    if p.contains('@') {
        return Err(
            "address patterns (user@domain, @domain) are not supported: mx2 routes by domain"
                .to_string(),
        );
    }
    if p.starts_with("*.") {
        let rest = &p[1..];
        return Err(format!(
            "wildcards inside names are not transport(5) syntax; write \"{rest}\" for subdomains"
        ));
    }
    if let Some(rest) = p.strip_prefix('.') {
        if rest.is_empty() || rest.starts_with('.') {
            return Err("empty domain name".to_string());
        }
        return normalize_domain(rest).map(Pattern::Parent);
    }
    if p.ends_with(':') {
        return Err("pattern ends in \":\" (\"key: value\" format: is this an alias file?)".into());
    }
    normalize_domain(p).map(Pattern::Exact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize_domain("Example.JP.").as_deref(), Ok("example.jp"));
        assert_eq!(normalize_domain("例え.jp").as_deref(), Ok("xn--r8jz45g.jp"));
        assert_eq!(
            normalize_domain("XN--R8JZ45G.JP").as_deref(),
            Ok("xn--r8jz45g.jp")
        );
        assert_eq!(
            normalize_domain("a_b.example").as_deref(),
            Ok("a_b.example")
        );
        for bad in [
            "",
            ".",
            "a..b",
            "-a.example",
            "a-.example",
            "192.0.2.1",
            "[192.0.2.1]",
            "a b",
            "a@b",
            "example.jp..",
            "xn--zz--.jp",
            "a/b.example",
        ] {
            assert!(normalize_domain(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}.jp", "a".repeat(64));
        assert!(normalize_domain(&long).is_err());
    }

    #[test]
    fn patterns() {
        assert_eq!(parse_pattern("*"), Ok(Pattern::Wildcard));
        assert_eq!(
            parse_pattern(".Example.jp"),
            Ok(Pattern::Parent("example.jp".into()))
        );
        assert!(parse_pattern("*.example.jp").is_err());
        assert!(parse_pattern("user@example.jp").is_err());
        assert!(parse_pattern("..example.jp").is_err());
        assert!(parse_pattern(".").is_err());
        assert!(parse_pattern("example.jp:").is_err());
    }
}
