//! Rules against hostile headers: padding a header past PCRE's match limit,
//! patterns that cannot be evaluated, and thousands of copies of one header.

use header_checks::{Rules, Verdict, DEFAULT_HEADER_SIZE_LIMIT, TEMPFAIL_REPLY};

fn rules(table: &str) -> Rules {
    Rules::parse(table.as_bytes(), "t.pcre")
        .expect("loads")
        .rules
}

/// `Subject: ` + `before` padding bytes + `word` + `after` padding bytes.
fn padded_subject(before: usize, word: &str, after: usize) -> Vec<u8> {
    let mut m = b"Subject: ".to_vec();
    m.extend(std::iter::repeat_n(b'x', before));
    m.extend_from_slice(word.as_bytes());
    m.extend(std::iter::repeat_n(b'x', after));
    m.extend_from_slice(b"\r\nFrom: a@b\r\n\r\nbody\r\n");
    m
}

const VIAGRA: &str = "/^Subject:.*viagra/ REJECT spam\n";

#[test]
fn padding_after_the_word_no_longer_hides_it() {
    // 1.5 MB after the word: on the whole header `.*` backtracks 1.5 MB
    // and hits the match limit (this was "no match", so accepted). The
    // rule sees the first 102,400 bytes, which hold the word.
    let msg = padded_subject(50_000, "viagra", 1_500_000);
    let out = rules(VIAGRA).apply(&msg);
    assert_eq!(
        out.verdict.reject_reply().as_deref(),
        Some("550 5.7.1 spam"),
        "{:?} {:?}",
        out.verdict,
        out.errors
    );
    assert!(out.errors.is_empty(), "{:?}", out.errors);
}

#[test]
fn small_padding_is_rejected_as_before() {
    let msg = padded_subject(50_000, "viagra", 10);
    let out = rules(VIAGRA).apply(&msg);
    assert!(matches!(out.verdict, Verdict::Reject { .. }), "{out:?}");
}

#[test]
fn a_word_past_the_limit_is_not_seen_as_in_postfix() {
    // Postfix's cleanup never shows text past header_size_limit to
    // header_checks either: not matched, and not an error.
    let msg = padded_subject(DEFAULT_HEADER_SIZE_LIMIT + 10, "viagra", 10);
    let out = rules(VIAGRA).apply(&msg);
    assert_eq!(out.verdict, Verdict::Accept);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    // The stored message is not cut.
    assert_eq!(out.message(&msg), msg);
    // A smaller limit moves the cut.
    let msg = padded_subject(500, "viagra", 10);
    assert!(matches!(
        rules(VIAGRA).apply_with_limit(&msg, 400).verdict,
        Verdict::Accept
    ));
    assert!(matches!(
        rules(VIAGRA).apply_with_limit(&msg, 600).verdict,
        Verdict::Reject { .. }
    ));
}

/// A header that makes `(a+)+$` run out of its match limit.
fn runaway(name: &str) -> Vec<u8> {
    let mut h = format!("{name}: ").into_bytes();
    h.extend(std::iter::repeat_n(b'a', 64));
    h.extend_from_slice(b"!\r\n");
    h
}

#[test]
fn a_refusing_rule_that_cannot_be_evaluated_fails_closed() {
    for action in ["REJECT no", "DISCARD", "HOLD", "$1", "reject"] {
        let r = rules(&format!("/^X-Evil: (a+)+$/ {action}\n/^X-Evil:/ IGNORE\n"));
        let mut msg = runaway("X-Evil");
        msg.extend_from_slice(b"Subject: s\r\n\r\nbody\r\n");
        let out = r.apply(&msg);
        match &out.verdict {
            Verdict::TempFail { reason } => {
                assert!(reason.starts_with("t.pcre:1: "), "{action}: {reason}")
            }
            v => panic!("{action}: {v:?} (errors {:?})", out.errors),
        }
        assert!(out.edit.is_none(), "{action}");
        assert_eq!(out.errors.len(), 1, "{action}: {:?}", out.errors);
        let report = out.report(&msg);
        assert_eq!(
            String::from_utf8_lossy(&report.stdout),
            format!("TEMPFAIL {TEMPFAIL_REPLY}\n")
        );
    }
    assert!(TEMPFAIL_REPLY.starts_with("451 4.3.0 "));
}

#[test]
fn an_if_block_that_cannot_be_evaluated_fails_closed_when_it_guards() {
    let table = "if /^X-Evil: (a+)+$/\n/^X-Evil:/ {}\nendif\n";
    let mut msg = runaway("X-Evil");
    msg.extend_from_slice(b"\r\nbody\r\n");
    let out = rules(&table.replace("{}", "REJECT")).apply(&msg);
    assert!(matches!(out.verdict, Verdict::TempFail { .. }), "{out:?}");
    let out = rules(&table.replace("{}", "WARN w")).apply(&msg);
    assert_eq!(out.verdict, Verdict::Accept, "{out:?}");
    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
}

#[test]
fn a_definite_reject_beats_a_failing_edit_rule() {
    let r = rules("/^X-Evil: (a+)+$/ IGNORE\n/^Subject: bad/ REJECT bad\n");
    let mut msg = runaway("X-Evil");
    msg.extend_from_slice(b"Subject: bad\r\n\r\nbody\r\n");
    let out = r.apply(&msg);
    assert_eq!(out.verdict.reject_reply().as_deref(), Some("550 5.7.1 bad"));
}

#[test]
fn a_matching_error_is_reported_once_per_rule_with_a_count() {
    let r = rules("/^X-Evil: (a+)+$/ WARN evil\n");
    let mut msg = Vec::new();
    for _ in 0..5 {
        msg.extend_from_slice(&runaway("X-Evil"));
    }
    msg.extend_from_slice(b"\r\nbody\r\n");
    let out = r.apply(&msg);
    assert_eq!(out.verdict, Verdict::Accept);
    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
    assert!(out.errors[0].contains("(5 headers; "), "{:?}", out.errors);
}

#[test]
fn hits_are_summarised_once_per_rule() {
    let r = rules("/^X-Spam-Level:/ IGNORE\n/^Subject:/ WARN s\n");
    let mut msg = Vec::new();
    for i in 0..5000 {
        msg.extend_from_slice(format!("X-Spam-Level: {i}\r\n").as_bytes());
    }
    msg.extend_from_slice(b"Subject: a\r\nSubject: b\r\n\r\nbody\r\n");
    let out = r.apply(&msg);
    let summary = out.hit_summary();
    assert_eq!(summary.len(), 2);
    assert_eq!(summary[0].first.header, "X-Spam-Level: 0");
    assert_eq!(summary[0].count, 5000);
    assert_eq!(summary[1].first.header, "Subject: a");
    assert_eq!(summary[1].count, 2);
    assert_eq!(
        out.message(&msg),
        b"Subject: a\r\nSubject: b\r\n\r\nbody\r\n"
    );
}

#[test]
fn the_bounded_attempt_gives_the_full_result_or_nothing() {
    use std::time::{Duration, Instant};
    let table = concat!(
        "/^From:\\s*<>/m DISCARD\n/^X-Spam-Level:/m IGNORE\n",
        "/^Subject: (.*)/ REPLACE Subject: [x] $1\n/^X-Hold:/ HOLD h\n",
        "/^X-Evil: (a+)+$/ WARN evil\n",
    );
    let r = rules(table);
    let later = || Instant::now() + Duration::from_secs(60);
    for msg in [
        &b"Subject: hi\r\nX-Spam-Level: **\r\n\r\nbody\r\n"[..],
        b"From: <>\r\nSubject: hi\r\n\r\n",
        b"X-Hold: 1\r\nSubject: s\r\n\r\n",
        b"",
    ] {
        let full = r.apply(msg);
        let quick = r
            .apply_bounded(msg, DEFAULT_HEADER_SIZE_LIMIT, later())
            .expect("cheap message done in the bounded attempt");
        assert_eq!(quick, full);
    }
    // A pattern that needs more than the small match limit: nothing, and
    // the full run decides (here: no error, under the usual limit).
    let mut msg = b"X-Evil: ".to_vec();
    msg.extend(std::iter::repeat_n(b'a', 14));
    msg.extend_from_slice(b"!\r\n\r\n");
    assert_eq!(
        r.apply_bounded(&msg, DEFAULT_HEADER_SIZE_LIMIT, later()),
        None
    );
    let full = r.apply(&msg);
    assert!(full.errors.is_empty(), "{:?}", full.errors);
    // A deadline already passed: nothing.
    let msg = b"Subject: hi\r\n\r\n";
    assert_eq!(
        r.apply_bounded(
            msg,
            DEFAULT_HEADER_SIZE_LIMIT,
            Instant::now() - Duration::from_millis(1)
        ),
        None
    );
}
