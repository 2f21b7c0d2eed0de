//! The static list of valid recipients (`[relay] relay_recipients`).
//!
//! One address per line, `@domain` for "any address in this domain", `#`
//! comments. Postfix's `relay_recipient_maps` source format (`user@domain
//! anything`) works too, so admins can reuse theirs: only the first column
//! counts. Lookups are case-insensitive, as Postfix's tables are, and
//! domains are compared in their canonical form (`crate::domain`), so a
//! U-label line matches the A-label spelling and the other way round.

use std::collections::{HashMap, HashSet};

/// What the list says about one domain.
#[derive(Debug, Default, Clone)]
struct DomainEntry {
    /// `@domain` line, if any.
    catch_all: Option<usize>,
    /// local part (lower-case) → line.
    users: HashMap<String, usize>,
}

/// A parsed list.
#[derive(Debug, Default, Clone)]
pub struct RecipientList {
    pub file: String,
    domains: HashMap<String, DomainEntry>,
}

/// What the list decides for one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListVerdict {
    /// Listed (or the domain's catch-all) at this line.
    Listed(usize),
    /// The domain has entries, but not this address.
    Unknown,
    /// The domain has no entries: the list has no opinion.
    NoEntries,
}

impl RecipientList {
    /// Parses the list; every bad line is reported as `FILE:LINE: message`.
    pub fn parse(text: &str, file: &str) -> Result<RecipientList, Vec<String>> {
        let mut list = RecipientList {
            file: file.to_string(),
            domains: HashMap::new(),
        };
        let mut errors = Vec::new();
        let mut seen = HashSet::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = line.split_whitespace().next().unwrap_or("");
            let key = key.trim_start_matches('<').trim_end_matches('>');
            let Some((local, domain)) = key.rsplit_once('@') else {
                errors.push(format!(
                    "{file}:{n}: \"{key}\" is not user@domain or @domain"
                ));
                continue;
            };
            // The one form RCPT's domain is compared in: U-labels and
            // A-labels, any case, match alike.
            let domain = crate::domain::canonical(domain).unwrap_or_default();
            if domain.is_empty()
                || domain.contains(['@', ' ', '['])
                || !domain.contains('.') && domain != "localhost"
            {
                errors.push(format!("{file}:{n}: bad domain in \"{key}\""));
                continue;
            }
            let lkey = format!("{}@{domain}", local.to_lowercase());
            if !seen.insert(lkey) {
                continue; // duplicates are harmless
            }
            let e = list.domains.entry(domain).or_default();
            if local.is_empty() {
                e.catch_all = Some(n);
            } else {
                e.users.insert(local.to_lowercase(), n);
            }
        }
        if errors.is_empty() {
            Ok(list)
        } else {
            Err(errors)
        }
    }

    pub fn check(&self, local: &str, domain: &str) -> ListVerdict {
        let Some(e) = self.domains.get(&crate::domain::canonical_or_lower(domain)) else {
            return ListVerdict::NoEntries;
        };
        if let Some(line) = e.users.get(&local.to_lowercase()) {
            return ListVerdict::Listed(*line);
        }
        match e.catch_all {
            Some(line) => ListVerdict::Listed(line),
            None => ListVerdict::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_postfix_and_catch_all() {
        let text = "# valid users\nalice@example.jp\nBob@Example.JP  OK\n<carol@example.jp> x\n@example.net\n";
        let l = RecipientList::parse(text, "rr").unwrap();
        assert_eq!(l.check("alice", "example.jp"), ListVerdict::Listed(2));
        assert_eq!(l.check("BOB", "example.jp."), ListVerdict::Listed(3));
        assert_eq!(l.check("carol", "example.jp"), ListVerdict::Listed(4));
        assert_eq!(l.check("mallory", "example.jp"), ListVerdict::Unknown);
        assert_eq!(l.check("anyone", "example.net"), ListVerdict::Listed(5));
        assert_eq!(l.check("x", "example.org"), ListVerdict::NoEntries);
    }

    #[test]
    fn every_spelling_of_a_domain_matches() {
        let l = RecipientList::parse("valid@example.jp\nu@例え.jp\n", "rr").unwrap();
        assert_eq!(
            l.check("nosuch", "ｅｘａｍｐｌｅ．ｊｐ"),
            ListVerdict::Unknown
        );
        assert_eq!(
            l.check("valid", "ＥＸＡＭＰＬＥ.jp"),
            ListVerdict::Listed(1)
        );
        assert_eq!(l.check("u", "xn--r8jz45g.jp"), ListVerdict::Listed(2));
        assert!(RecipientList::parse("u@exa\u{AD}mple.jp\n", "rr").is_err());
    }

    #[test]
    fn errors_name_file_and_line() {
        let e =
            RecipientList::parse("ok@example.jp\nnot-an-address\nx@\n", "/etc/mx2/rr").unwrap_err();
        assert_eq!(e.len(), 2);
        assert!(e[0].starts_with("/etc/mx2/rr:2: "), "{e:?}");
        assert!(e[1].starts_with("/etc/mx2/rr:3: "), "{e:?}");
    }
}
