//! The SMTP command-line parser and the envelope-address parser behind it:
//! nothing may panic on any line, and what they accept must be safe to
//! relay.
//!
//! - `command::parse` is deterministic; parameter keys are non-empty,
//!   upper-case `[A-Z0-9-]`.
//! - For MAIL/RCPT paths `address::parse` accepts: the domain is
//!   non-empty ASCII (A-labels), lower-case, without a trailing dot, spaces,
//!   controls or `@`, and is the canonical form (`mx2::domain`) of the
//!   domain in the stored address; the stored form (what is relayed) holds
//!   no ASCII control character (nothing can break a relayed command
//!   line); a local part carrying `%`, `!` or `@` is refused by
//!   `check_routing` (relay control), and any other address with a valid
//!   domain name (one that can be a relay domain) parses back to itself.
//! - xtext (DSN ENVID/ORCPT): `decode(encode(s)) == s` for every string.
//!
//! `cd fuzz && cargo +nightly fuzz run smtp_command -- -max_total_time=30`

#![no_main]

use libfuzzer_sys::fuzz_target;
use mx2::smtp::address;
use mx2::smtp::command::{self, Command};

fn check_path(path: &str) {
    let Ok(a) = address::parse(path) else { return };
    assert!(!a.domain.is_empty(), "{path:?}");
    assert!(!a.domain.ends_with('.'), "{path:?}");
    assert!(
        !a.domain
            .bytes()
            .any(|b| b <= 0x20 || b == 0x7f || b == b'@'),
        "{path:?}"
    );
    assert!(
        !a.domain.bytes().any(|b| b.is_ascii_uppercase()),
        "{path:?}"
    );
    assert!(a.domain.is_ascii(), "{path:?}");
    let given = a.canonical.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    assert_eq!(
        mx2::domain::canonical(given).as_deref(),
        Ok(a.domain.as_str()),
        "{path:?}"
    );
    assert!(
        !a.canonical.bytes().any(|b| b < 0x20 || b == 0x7f),
        "control character in an accepted address: {path:?} -> {:?}",
        a.canonical
    );
    if a.local.contains(['%', '!', '@']) {
        assert!(address::check_routing(&a).is_err(), "{path:?}");
        return;
    }
    // Only a valid domain name can be a relay domain: what would then be
    // stored and relayed parses back to itself.
    if transport::normalize_domain(&a.domain).is_err() {
        return;
    }
    let again = address::parse(&a.canonical).unwrap_or_else(|e| {
        panic!(
            "canonical {:?} of {path:?} does not parse: {e:?}",
            a.canonical
        )
    });
    assert_eq!(again.canonical, a.canonical, "{path:?}");
    assert_eq!(again.domain, a.domain, "{path:?}");
}

fuzz_target!(|data: &[u8]| {
    let cmd = command::parse(data);
    assert_eq!(cmd, command::parse(data));
    if let Command::Mail { path, params } | Command::Rcpt { path, params } = &cmd {
        for p in params {
            assert!(!p.key.is_empty());
            assert!(p
                .key
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-'));
        }
        check_path(path);
    }
    let s = String::from_utf8_lossy(data);
    check_path(&s);
    assert_eq!(
        command::xtext_decode(&command::xtext_encode(&s)).as_deref(),
        Some(&*s)
    );
    if let Some(d) = command::xtext_decode(&s) {
        assert_eq!(
            command::xtext_decode(&command::xtext_encode(&d)).as_deref(),
            Some(&*d)
        );
    }
});
