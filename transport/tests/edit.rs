//! Exact results of `add_entry` / `remove_entry` on hand-written files.

use transport::{add_entry, remove_entry, TransportMap};

const SEED: &str =
    "example.jp smtp:[primary1.example.net]\nexample.net smtp:[primary2.example.net]\n";

#[test]
fn add_to_the_seed_file() {
    let new = add_entry(SEED, "transport", "example.org", "[primary3.example.net]").expect("add");
    assert_eq!(
        new,
        format!("{SEED}example.org smtp:[primary3.example.net]\n")
    );
    let new = add_entry(
        SEED,
        "transport",
        ".example.jp",
        "smtp:mx.example.net:2525, [b.example.net]",
    )
    .expect("add");
    assert_eq!(
        new,
        format!("{SEED}.example.jp smtp:mx.example.net:2525, [b.example.net]\n")
    );
    let map = TransportMap::parse(&new, "transport").expect("parses");
    assert_eq!(map.lookup("www.example.jp").map(|r| r.line), Some(3));
}

#[test]
fn add_normalises_the_value() {
    let new = add_entry("", "t", "例え.jp", "[IPv6:2001:DB8::1]:25,[MX.例え.jp]").expect("add");
    assert_eq!(
        new,
        "例え.jp\tsmtp:[ipv6:2001:db8::1]:25, [mx.xn--r8jz45g.jp]\n"
    );
    let new = add_entry("", "t", "*", "smtp:").expect("add");
    assert_eq!(new, "*\tsmtp:\n");
    let new = add_entry("", "t", "relay.example", "relay:[r.example.net]").expect("add");
    assert_eq!(new, "relay.example\trelay:[r.example.net]\n");
}

#[test]
fn add_refusals() {
    assert_eq!(
        add_entry(SEED, "transport", "EXAMPLE.JP.", "[x.example]").unwrap_err(),
        "EXAMPLE.JP. is already in transport:1"
    );
    assert_eq!(
        add_entry(SEED, "transport", "xn--r8jz45g.jp", "[x]")
            .and_then(|t| add_entry(&t, "transport", "例え.jp", "[y]"))
            .unwrap_err(),
        "例え.jp is already in transport:3"
    );
    assert_eq!(
        add_entry(SEED, "t", "bad..example", "[x.example]").unwrap_err(),
        "bad domain \"bad..example\": empty label (misplaced \".\")"
    );
    assert_eq!(
        add_entry(SEED, "t", "[192.0.2.1]", "[x.example]").unwrap_err(),
        "bad domain \"[192.0.2.1]\": address literals are not domain names"
    );
    assert_eq!(
        add_entry(SEED, "t", "a.example", "local:").unwrap_err(),
        "unsupported transport \"local\" (mx2 relays by SMTP only: use \"smtp:\" or \"relay:\")"
    );
    assert_eq!(
        add_entry(SEED, "t", "a.example", "[x.example]:70000").unwrap_err(),
        "bad port \"70000\" in next hop \"[x.example]:70000\" (must be 1-65535)"
    );
    assert_eq!(
        add_entry("a.example local:\n", "t", "b.example", "[x.example]").unwrap_err(),
        "t has errors; fix them first: t:1: unsupported transport \"local\" (mx2 relays by SMTP only: use \"smtp:\" or \"relay:\")"
    );
}

#[test]
fn remove_from_a_commented_file() {
    let text = "# Primary MX hosts\n\
                example.jp\tsmtp:[primary1.example.net],\n\
                \t[backup.example.net]\n\
                \n\
                # the other one\n\
                example.net\tsmtp:[primary2.example.net]\n";
    assert_eq!(
        remove_entry(text, "t", "example.jp").expect("remove"),
        "# Primary MX hosts\n\n# the other one\nexample.net\tsmtp:[primary2.example.net]\n"
    );
    assert_eq!(
        remove_entry(text, "t", "Example.NET").expect("remove"),
        "# Primary MX hosts\nexample.jp\tsmtp:[primary1.example.net],\n\t[backup.example.net]\n\n# the other one\n"
    );
    assert_eq!(
        remove_entry(text, "t", "example.org").unwrap_err(),
        "example.org is not in t"
    );
    assert_eq!(
        remove_entry(text, "t", ".example.jp").unwrap_err(),
        ".example.jp is not in t"
    );
}

#[test]
fn remove_fixes_a_duplicate() {
    let text = "a.example smtp:[x.example]\nb.example smtp:\nA.example smtp:[y.example]\n";
    assert!(TransportMap::parse(text, "t").is_err());
    assert_eq!(
        remove_entry(text, "t", "a.example").expect("remove"),
        "b.example smtp:\n"
    );
}
