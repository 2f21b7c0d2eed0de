//! Parse an arbitrary rules table and apply it (and the operator's table)
//! to an arbitrary message: nothing may panic, and edits may only touch the
//! header block.
//!
//! Input layout: the first two bytes give the table length (little endian,
//! modulo what is left); the table follows, the message is the rest.
//!
//! `cd fuzz && cargo +nightly fuzz run header_checks_parse_apply -- -max_total_time=30`

#![no_main]

use std::sync::OnceLock;

use header_checks::{Rules, Verdict};
use libfuzzer_sys::fuzz_target;

const OPERATOR: &str = include_str!("../../header_checks/testdata/operator.rules");

fn operator() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(
        || match Rules::parse(OPERATOR.as_bytes(), "operator.rules") {
            Ok(l) => l.rules,
            Err(e) => panic!("operator rules must load: {e}"),
        },
    )
}

fn check(rules: &Rules, message: &[u8]) {
    let outcome = rules.apply(message);
    let result = outcome.message(message);
    match &outcome.edit {
        Some(edit) => {
            assert!(edit.body_start <= message.len());
            assert!(result.ends_with(&message[edit.body_start..]));
            assert!(matches!(
                outcome.verdict,
                Verdict::Accept | Verdict::Hold { .. }
            ));
        }
        None => assert_eq!(result, message),
    }
    let _ = outcome.report(message);
    let _ = outcome.verdict.reject_reply();
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let rest = &data[2..];
    let n = usize::from(u16::from_le_bytes([data[0], data[1]])) % (rest.len() + 1);
    let (table, message) = rest.split_at(n);
    check(operator(), message);
    if let Ok(loaded) = Rules::parse(table, "fuzz.pcre") {
        check(&loaded.rules, message);
    }
});
