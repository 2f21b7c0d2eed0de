//! Behaviour of `Rules::apply` through the public API: verdicts, edits,
//! byte preservation, errors, and robustness on arbitrary input.

use std::sync::Arc;

use header_checks::{Edit, Rules, Verdict};

const OPERATOR: &str = include_str!("../testdata/operator.rules");

fn rules(table: &str) -> Rules {
    Rules::parse(table.as_bytes(), "t.pcre")
        .expect("loads")
        .rules
}

#[test]
fn rules_are_send_sync_and_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Rules>();
    let shared = Arc::new(rules(OPERATOR));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let r = Arc::clone(&shared);
            std::thread::spawn(move || {
                let msg = format!("X-Spam-Level: {i}\r\nSubject: {i}\r\n\r\nbody\r\n");
                r.apply(msg.as_bytes()).message(msg.as_bytes())
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let out = h.join().expect("thread");
        assert_eq!(out, format!("Subject: {i}\r\n\r\nbody\r\n").into_bytes());
    }
}

#[test]
fn empty_rules_change_nothing() {
    let r = Rules::empty();
    assert!(r.is_empty());
    assert_eq!(r.len(), 0);
    let out = r.apply(b"X-Spam-Level: *\n\nbody\n");
    assert_eq!(out.verdict, Verdict::Accept);
    assert!(out.hits.is_empty() && out.edit.is_none() && out.errors.is_empty());
}

#[test]
fn len_counts_rules_not_if_endif() {
    let r = rules("if /^X-/\n/a/ IGNORE\n/b/ DUNNO\nendif\n");
    assert_eq!(r.len(), 2);
    assert_eq!(rules(OPERATOR).len(), 8);
}

#[test]
fn edit_lets_the_body_be_streamed() {
    let msg = b"Subject: s\r\nX-Spam-Level: **\r\nTo: b\r\n\r\nbody\r\nX-Spam-Level: in body\r\n";
    let out = rules(OPERATOR).apply(msg);
    let Some(Edit {
        new_header,
        body_start,
    }) = &out.edit
    else {
        panic!("expected an edit")
    };
    assert_eq!(new_header, b"Subject: s\r\nTo: b\r\n");
    assert_eq!(
        &msg[*body_start..],
        b"\r\nbody\r\nX-Spam-Level: in body\r\n"
    );
    assert_eq!(
        out.message(msg),
        b"Subject: s\r\nTo: b\r\n\r\nbody\r\nX-Spam-Level: in body\r\n"
    );
}

#[test]
fn unchanged_message_has_no_edit() {
    let msg = b"Subject: s\n\nbody\n";
    let out = rules(OPERATOR).apply(msg);
    assert_eq!(out.edit, None);
    assert_eq!(out.message(msg), msg);
}

#[test]
fn discard_and_reject_stop_processing() {
    let r = rules("/^X-A:/ IGNORE\n/^X-D:/ DISCARD gone\n/^X-R:/ REJECT 5.7.0 no\n/^X-H:/ HOLD\n");
    let out = r.apply(b"X-H: 1\nX-A: 1\nX-D: 1\nX-R: 1\n\n");
    assert_eq!(
        out.verdict,
        Verdict::Discard {
            text: "gone".into()
        }
    );
    assert_eq!(out.hits.len(), 3);
    assert_eq!(out.edit, None);
    let out = r.apply(b"X-H: 1\nX-R: 1\nX-D: 1\n\n");
    assert_eq!(
        out.verdict,
        Verdict::Reject {
            text: "5.7.0 no".into()
        }
    );
    assert_eq!(out.verdict.reject_reply().as_deref(), Some("550 5.7.0 no"));
    assert_eq!(out.hits.len(), 2);
}

#[test]
fn hold_keeps_edits_and_first_text() {
    let r = rules("/^X-A:/ IGNORE\n/^X-H: (.*)/ HOLD because $1\n");
    let msg = b"X-H: one\nX-A: 1\nX-H: two\n\nbody\n";
    let out = r.apply(msg);
    assert_eq!(
        out.verdict,
        Verdict::Hold {
            text: "because one".into()
        }
    );
    assert_eq!(out.message(msg), b"X-H: one\nX-H: two\n\nbody\n");
    assert_eq!(out.hits.len(), 3);
    assert_eq!(out.verdict.reject_reply(), None);
}

#[test]
fn reject_replies() {
    let reply = |t: &str| Verdict::Reject { text: t.into() }.reject_reply();
    assert_eq!(
        reply("").as_deref(),
        Some("550 5.7.1 message content rejected")
    );
    assert_eq!(reply("no thanks").as_deref(), Some("550 5.7.1 no thanks"));
    assert_eq!(reply("4.7.1 later").as_deref(), Some("451 4.7.1 later"));
    assert_eq!(Verdict::Accept.reject_reply(), None);
}

#[test]
fn hit_fields() {
    let r = rules("# comment\n/^Subject: (.*)/  REPLACE Subject: [x] $1\n");
    let out = r.apply(b"Subject: a\r\n\tb\r\n\r\n");
    assert_eq!(out.hits.len(), 1);
    let h = &out.hits[0];
    assert_eq!(h.line, 2);
    assert_eq!(h.rule, "/^Subject: (.*)/ REPLACE Subject: [x] $1");
    assert_eq!(h.action, "REPLACE");
    assert_eq!(h.header, "Subject: a\n\tb");
    assert_eq!(h.text, "Subject: [x] a\n\tb");
    assert_eq!(
        h.to_string(),
        "line 2: /^Subject: (.*)/ REPLACE Subject: [x] $1: Subject: a\tb"
    );
    assert_eq!(
        out.message(b"Subject: a\r\n\tb\r\n\r\n"),
        b"Subject: [x] a\r\n\tb\r\n\r\n"
    );
}

#[test]
fn runaway_pattern_is_no_match_and_recorded() {
    // A rule that only edits: an error is "no match" (as Postfix's
    // dict_pcre), and the next rule decides. (A DISCARD rule that cannot be
    // evaluated fails closed instead: tests/hostile.rs.)
    let r = rules("/^X-Evil: (a+)+$/ WARN evil\n/^X-Evil:/ IGNORE\n");
    let mut msg = b"X-Evil: ".to_vec();
    msg.extend(std::iter::repeat_n(b'a', 64));
    msg.extend_from_slice(b"!\r\nSubject: s\r\n\r\nbody\r\n");
    let out = r.apply(&msg);
    assert_eq!(out.verdict, Verdict::Accept);
    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
    assert!(out.errors[0].starts_with("t.pcre:1: "), "{:?}", out.errors);
    assert_eq!(out.message(&msg), b"Subject: s\r\n\r\nbody\r\n");
}

#[test]
fn dynamic_action_from_the_header() {
    let r = rules("/^X-Action: (\\w+)/ $1 from header\n");
    let out = r.apply(b"X-Action: ignore\nX-Action: FILTER\n\n");
    assert_eq!(out.hits.len(), 2);
    assert_eq!(out.hits[0].action, "IGNORE");
    assert_eq!(out.hits[1].action, "FILTER");
    assert_eq!(out.errors.len(), 1);
    assert_eq!(
        out.message(b"X-Action: ignore\nX-Action: FILTER\n\n"),
        b"X-Action: FILTER\n\n"
    );
}

#[test]
fn replace_with_computed_bad_header_keeps_the_header() {
    let r = rules("/^X-R: (.*)/ REPLACE $1\n");
    let msg = b"X-R: not a header\nX-R: Y: ok\n\n";
    let out = r.apply(msg);
    assert_eq!(out.errors.len(), 1);
    assert_eq!(out.message(msg), b"X-R: not a header\nY: ok\n\n");
}

#[test]
fn prepend_at_end_of_unterminated_message() {
    let r = rules("/^Subject:/ PREPEND X-New: 1\n");
    assert_eq!(
        r.apply(b"From: a\r\nSubject: s")
            .message(b"From: a\r\nSubject: s"),
        b"From: a\r\nX-New: 1\r\nSubject: s"
    );
    assert_eq!(
        r.apply(b"Subject: s").message(b"Subject: s"),
        b"X-New: 1\nSubject: s"
    );
}

#[test]
fn obsolete_space_before_colon_is_normalised_for_matching_only() {
    let r = rules("/^Subject: (.*)/ WARN $1\n/^X-Gone:/ IGNORE\n");
    let msg = b"Subject  : hi\r\nX-Gone\t: 1\r\n\r\n";
    let out = r.apply(msg);
    assert_eq!(out.hits[0].header, "Subject: hi");
    assert_eq!(out.message(msg), b"Subject  : hi\r\n\r\n");
}

/// Tiny deterministic PRNG so the run is reproducible without a crate.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn random_bytes(rng: &mut XorShift, alphabet: &[u8], max: usize) -> Vec<u8> {
    let len = (rng.next() % max as u64) as usize;
    (0..len)
        .map(|_| {
            let r = rng.next();
            if r.is_multiple_of(8) {
                (r >> 8) as u8
            } else {
                alphabet[(r >> 8) as usize % alphabet.len()]
            }
        })
        .collect()
}

#[test]
fn never_panics_on_random_tables_and_messages() {
    const TABLE_ALPHABET: &[u8] =
        b"/!#\\$()[]{}^.*+?|: \t\n\rimsxAEUXifendIFENDIF12aXSpm-DISCARDIGNOREPLACEREJECTHOLDWARN";
    const MSG_ALPHABET: &[u8] = b"XSpamLevl-: \t\r\n\0aFrom<>Subject\x1b$B\xe9";
    let operator = rules(OPERATOR);
    let catch_all = rules(
        "if !/^Received:/\n/^([^:]+):(.*)/ REPLACE $1:[$2]\n/^X-/ PREPEND X-Seen: 1\nendif\n",
    );
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut loaded_tables = 0;
    for _ in 0..3000 {
        let table = random_bytes(&mut rng, TABLE_ALPHABET, 120);
        let msg = random_bytes(&mut rng, MSG_ALPHABET, 400);
        for r in [&operator, &catch_all] {
            let out = r.apply(&msg);
            let result = out.message(&msg);
            if let Some(edit) = &out.edit {
                assert!(edit.body_start <= msg.len());
                assert!(result.ends_with(&msg[edit.body_start..]));
            }
            let _ = out.report(&msg);
        }
        if let Ok(loaded) = Rules::parse(&table, "random") {
            loaded_tables += 1;
            let out = loaded.rules.apply(&msg);
            let _ = out.message(&msg);
        }
    }
    assert!(loaded_tables > 0, "the generator never made a valid table");
}
