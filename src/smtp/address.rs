//! Envelope addresses and relay control: who may be a recipient here.
//!
//! A backup MX is an open relay the moment it forwards an address whose
//! real destination hides inside the local part (`user%other@domain`,
//! `other!user@domain`, `"user@other"@domain`): the primary, or something
//! behind it, may route on those. Such recipients are refused outright.
//! Source routes (`@a,@b:user@domain`) are judged by their final address,
//! as RFC 5321 §3.6.1 says.
//!
//! The domain is judged in its canonical form (`crate::domain`), so relay
//! control and the recipient list can never see two spellings of one
//! domain differently; a domain that has none (invisible or disallowed
//! characters, bad labels) is refused. The address itself is kept as the
//! client spelt it: the primary gets what the sender wrote.

use crate::domain::{self, DomainError};

/// An envelope address split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The local part with quoting removed.
    pub local: String,
    /// Whether the local part was a quoted string.
    pub quoted: bool,
    /// The domain in its one canonical form (`crate::domain::canonical`:
    /// lower-case A-labels, no trailing dot), for every decision.
    pub domain: String,
    /// `local@domain` as it will be stored and relayed: the domain as the
    /// client spelt it (U-labels kept), only without the trailing dot and
    /// with ASCII letters lower-cased.
    pub canonical: String,
}

/// Why an address was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum AddressError {
    /// Malformed: `501 5.1.3`.
    Syntax(&'static str),
    /// Routing in the local part: `550 5.7.1`.
    Routing,
    /// A domain with no canonical form (invisible or disallowed characters,
    /// bad label syntax): `553 5.1.3` (`5.1.7` for the sender).
    Domain(DomainError),
}

/// Parses a path's content (between `<` and `>`), dropping any source route.
pub fn parse(path: &str) -> Result<Address, AddressError> {
    let mut p = path.trim();
    // Source route: "@a,@b:user@domain" → "user@domain".
    if p.starts_with('@') {
        match p.find(':') {
            Some(i) => p = &p[i + 1..],
            None => return Err(AddressError::Syntax("Bad address syntax")),
        }
    }
    if p.is_empty() {
        return Err(AddressError::Syntax("Bad address syntax"));
    }
    let (local_raw, domain) = split_at_domain(p)?;
    let quoted = local_raw.starts_with('"');
    let local = if quoted {
        // RFC 5321 qtextSMTP / quoted-pairSMTP: no control characters.
        unquote(local_raw)
            .filter(|l| !l.bytes().any(|b| b < 0x20 || b == 0x7f))
            .ok_or(AddressError::Syntax("Bad address syntax"))?
    } else {
        if local_raw.is_empty()
            || local_raw.contains(['"', ' ', '<', '>', '(', ')', ',', ';', ':', '\\', '[', ']'])
            || local_raw.bytes().any(|b| b < 0x20 || b == 0x7f)
        {
            return Err(AddressError::Syntax("Bad address syntax"));
        }
        local_raw.to_string()
    };
    if domain.is_empty() || domain.bytes().any(|b| b <= 0x20 || b == 0x7f || b == b'@') {
        return Err(AddressError::Syntax("Bad address syntax"));
    }
    let given = domain
        .strip_suffix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase();
    let domain = domain::canonical(domain).map_err(AddressError::Domain)?;
    let canonical = if quoted {
        format!("{local_raw}@{given}")
    } else {
        format!("{local}@{given}")
    };
    Ok(Address {
        local,
        quoted,
        domain,
        canonical,
    })
}

/// Refuses local parts that carry another destination (`%`, `!`, `@`).
pub fn check_routing(a: &Address) -> Result<(), AddressError> {
    if a.local.contains(['%', '!', '@']) {
        return Err(AddressError::Routing);
    }
    Ok(())
}

/// Splits at the last `@` outside a quoted local part.
fn split_at_domain(p: &str) -> Result<(&str, &str), AddressError> {
    if p.starts_with('"') {
        // Find the closing quote, honouring backslash escapes.
        let b = p.as_bytes();
        let mut i = 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => break,
                _ => i += 1,
            }
        }
        if i >= b.len() {
            return Err(AddressError::Syntax("Bad address syntax"));
        }
        let rest = &p[i + 1..];
        return match rest.strip_prefix('@') {
            Some(d) => Ok((&p[..i + 1], d)),
            None => Err(AddressError::Syntax("Bad address syntax")),
        };
    }
    match p.rsplit_once('@') {
        Some((l, d)) => Ok((l, d)),
        None => Err(AddressError::Syntax("Bad address syntax")),
    }
}

fn unquote(q: &str) -> Option<String> {
    let inner = q.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next()?);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_case() {
        let a = parse("Alice@Example.JP.").unwrap();
        assert_eq!(a.domain, "example.jp");
        assert_eq!(a.canonical, "Alice@example.jp");
    }

    #[test]
    fn source_route_uses_final_address() {
        let a = parse("@relay.example,@other.example:user@example.jp").unwrap();
        assert_eq!(a.canonical, "user@example.jp");
        let a = parse("@example.jp:user@evil.example").unwrap();
        assert_eq!(a.domain, "evil.example");
    }

    #[test]
    fn routing_hacks_refused() {
        for p in [
            "user%evil.example@example.jp",
            "evil.example!user@example.jp",
            "\"user@evil.example\"@example.jp",
            "\"user%evil\"@example.jp",
        ] {
            let a = parse(p).unwrap();
            assert_eq!(check_routing(&a), Err(AddressError::Routing), "{p}");
        }
        let ok = parse("\"john smith\"@example.jp").unwrap();
        assert_eq!(check_routing(&ok), Ok(()));
        assert_eq!(ok.canonical, "\"john smith\"@example.jp");
    }

    #[test]
    fn one_domain_form_for_decisions_the_given_one_relayed() {
        let a = parse("Bob@ｅｘａｍｐｌｅ．ｊｐ").unwrap();
        assert_eq!(a.domain, "example.jp");
        assert_eq!(a.canonical, "Bob@ｅｘａｍｐｌｅ．ｊｐ");
        let a = parse("u@例え.JP.").unwrap();
        assert_eq!(a.domain, "xn--r8jz45g.jp");
        assert_eq!(a.canonical, "u@例え.jp");
        for p in [
            "u@example.jp\u{200B}",
            "u@exa\u{AD}mple.jp",
            "u@example..jp",
            "u@a.jp..",
        ] {
            assert!(matches!(parse(p), Err(AddressError::Domain(_))), "{p:?}");
        }
    }

    #[test]
    fn syntax_errors() {
        for p in [
            "",
            "nodomain",
            "a@",
            "@",
            "a b@example.jp",
            "\"open@example.jp",
            "\"a\rb\"@example.jp",
            "\"a\\\x00b\"@example.jp",
            "\"a\x1bb\"@example.jp",
        ] {
            assert!(parse(p).is_err(), "{p:?}");
        }
    }
}
