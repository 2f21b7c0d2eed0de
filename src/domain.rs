//! One spelling of every domain: the form every decision compares.
//!
//! Relay control, the `relay_recipients` list, the callout cache, queue
//! routing (the `domain` column), ETRN and the metrics all key on
//! [`canonical`]. Before there was one form, relay control mapped U-labels
//! (UTS 46) while the list compared lower-cased text, so with only
//! `valid@example.jp` listed, `nosuch@ｅｘａｍｐｌｅ．ｊｐ` or `nosuch@exa` +
//! soft hyphen + `mple.jp` were relayed as example.jp but were unknown to
//! the list: accepted, then bounced (backscatter).
//!
//! The canonical form is ASCII lower case without the trailing dot, with
//! U-labels converted to A-labels by UTS 46 non-transitional processing
//! (IDNA2008 semantics: `ß` stays `ß`). UTS 46 *maps* visible variants:
//! fullwidth `ｅｘａｍｐｌｅ．ｊｐ` and `EXAMPLE.JP` are `example.jp`, as they
//! are for Postfix (ICU's UTS 46) and for a resolver, so the list judges them
//! as example.jp (`550 5.1.1` for an unknown user). What UTS 46 would
//! silently *delete* (zero-width space, soft hyphen, word joiner, BOM,
//! variation selectors: its "ignored" code points, which IDNA2008 disallows)
//! is refused instead: an invisible character in a domain is an attack or a
//! copy-and-paste accident, never a spelling anyone means. Disallowed code
//! points, bad Punycode and context rules (CONTEXTJ, bidi) are refused by
//! UTS 46 itself. The address relayed to the primary keeps the spelling
//! the client used; only decisions use this form.
//!
//! Crate: `idna` (servo/rust-url), the UTS 46 implementation already in the
//! build through hickory and the `transport` crate, whose
//! `normalize_domain` this builds on so that a query and a transport-map
//! pattern can never be normalised differently. ICU through C bindings
//! would add a system library for the same tables.

use std::fmt;
use std::net::IpAddr;

/// Why a domain has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainError {
    /// A character UTS 46 would delete (zero-width, soft hyphen, …).
    Invisible(char),
    /// Anything else: syntax, disallowed code point, bad Punycode.
    Invalid(String),
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainError::Invisible(c) => {
                write!(f, "invisible character U+{:04X} in domain name", *c as u32)
            }
            DomainError::Invalid(why) => f.write_str(why),
        }
    }
}

/// The canonical form of `domain` (see the module doc); address literals
/// (`[192.0.2.1]`, `[IPv6:…]`) come back lower-cased as they are, when
/// they hold a valid address.
pub fn canonical(domain: &str) -> Result<String, DomainError> {
    let d = domain.strip_suffix('.').unwrap_or(domain);
    if d.starts_with('[') {
        return match literal_ip(d) {
            Some(_) => Ok(d.to_ascii_lowercase()),
            None => Err(DomainError::Invalid("bad address literal".into())),
        };
    }
    if d.ends_with('.') {
        return Err(DomainError::Invalid("empty label (misplaced \".\")".into()));
    }
    if let Some(c) = d.chars().find(|&c| ignored_by_uts46(c)) {
        return Err(DomainError::Invisible(c));
    }
    transport::normalize_domain(d).map_err(DomainError::Invalid)
}

/// [`canonical`], or for a domain that has none (a row stored before
/// there was one form, an admin's typo) its lower-cased text, so that a
/// lookup finds nothing rather than failing.
pub fn canonical_or_lower(domain: &str) -> String {
    canonical(domain).unwrap_or_else(|_| domain.trim_end_matches('.').to_lowercase())
}

/// The address inside an address literal: `[192.0.2.1]`, `[IPv6:2001:db8::1]`.
pub fn literal_ip(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    let (v6, text) = match inner.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("ipv6:") => (true, &inner[5..]),
        _ => (false, inner),
    };
    match text.parse::<IpAddr>().ok()? {
        ip @ IpAddr::V6(_) if v6 => Some(ip),
        ip @ IpAddr::V4(_) if !v6 => Some(ip),
        _ => None,
    }
}

/// `s` with every character that does not show escaped as `U+XXXX`, for
/// replies and logs about refused domains.
pub fn visible(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || ignored_by_uts46(c) {
            out.push_str(&format!("U+{:04X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// True for a code point UTS 46 maps to nothing ("ignored"). Asked of the
/// `idna` tables rather than a list copied here, so it follows the
/// Unicode version the crate implements.
fn ignored_by_uts46(c: char) -> bool {
    if c.is_ascii() {
        return false;
    }
    let mut probe = String::with_capacity(8);
    probe.push('a');
    probe.push(c);
    let (mapped, _) = idna::domain_to_unicode(&probe);
    mapped == "a"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_form_for_every_spelling() {
        for d in [
            "example.jp",
            "Example.JP",
            "example.jp.",
            "ｅｘａｍｐｌｅ．ｊｐ",
            "ＥＸＡＭＰＬＥ。ｊｐ",
        ] {
            assert_eq!(canonical(d).as_deref(), Ok("example.jp"), "{d:?}");
        }
        assert_eq!(canonical("例え.jp").as_deref(), Ok("xn--r8jz45g.jp"));
        assert_eq!(
            canonical("XN--R8JZ45G.JP.").as_deref(),
            Ok("xn--r8jz45g.jp")
        );
        // Non-transitional: ß is kept (IDNA2008), not turned into "ss".
        assert_eq!(canonical("faß.de").as_deref(), Ok("xn--fa-hia.de"));
        assert_eq!(canonical("[127.0.0.1]").as_deref(), Ok("[127.0.0.1]"));
        assert_eq!(canonical("[IPv6:::1]").as_deref(), Ok("[ipv6:::1]"));
    }

    #[test]
    fn invisible_characters_are_refused() {
        for (d, c) in [
            ("example.jp\u{200B}", '\u{200B}'),
            ("exa\u{00AD}mple.jp", '\u{00AD}'),
            ("exa\u{2060}mple.jp", '\u{2060}'),
            ("exa\u{FEFF}mple.jp", '\u{FEFF}'),
            ("exa\u{FE0F}mple.jp", '\u{FE0F}'),
            ("exa\u{034F}mple.jp", '\u{034F}'),
        ] {
            assert_eq!(canonical(d), Err(DomainError::Invisible(c)), "{d:?}");
        }
    }

    #[test]
    fn invalid_names_are_refused() {
        for d in [
            "",
            ".",
            "example.jp..",
            "exa\u{200D}mple.jp", // ZWJ outside its CONTEXTJ context
            "exa\u{200C}mple.jp",
            "exa\u{200E}mple.jp", // bidi mark: disallowed
            "exa\u{FFFD}mple.jp", // what invalid UTF-8 became
            "xn--zz--.jp",
            "a..b",
            "-a.example",
            "[127.0.0.1",
            "[300.0.0.1]",
            "[IPv6:127.0.0.1]",
            "[::1]",
            "a b.example",
        ] {
            assert!(canonical(d).is_err(), "{d:?} accepted: {:?}", canonical(d));
        }
        assert_eq!(canonical_or_lower("A..B."), "a..b");
    }

    #[test]
    fn literals_and_visible() {
        assert_eq!(
            literal_ip("[192.0.2.1]"),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            literal_ip("[ipv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(literal_ip("192.0.2.1"), None);
        assert_eq!(
            visible("exa\u{00AD}mple\u{200B}.jp"),
            "exaU+00ADmpleU+200B.jp"
        );
    }
}
