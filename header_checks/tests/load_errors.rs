//! Load errors and warnings: every problem is reported as `FILE:LINE: ...`,
//! on the lines where Postfix 3.7 (`postmap -q x pcre:FILE`) reports a
//! skipped rule (errors here) or a harmless oddity (warnings here).

use header_checks::{LoadError, Rules};

fn errors(table: &str) -> Vec<String> {
    match Rules::parse(table.as_bytes(), "hc.pcre") {
        Ok(l) => panic!("expected errors, loaded {} rules", l.rules.len()),
        Err(LoadError { errors }) => errors,
    }
}

fn one_error(table: &str) -> String {
    let e = errors(table);
    assert_eq!(e.len(), 1, "{e:?}");
    e.into_iter().next().unwrap_or_default()
}

#[test]
fn bad_regex_names_line_and_pcre_message() {
    assert_eq!(
        one_error("/a/ DUNNO\n\n/c(/ OK\n"),
        "hc.pcre:3: error in regex at offset 2: missing closing parenthesis"
    );
    assert_eq!(
        one_error("/[z-a]/ OK\n"),
        "hc.pcre:1: error in regex at offset 3: range out of order in character class"
    );
}

#[test]
fn bad_flag() {
    assert_eq!(
        one_error("# c\n/b/mz DISCARD\n"),
        "hc.pcre:2: unknown regexp option \"z\""
    );
    // No space between flags and action: the action's letters are flags.
    assert_eq!(
        one_error("/b/DISCARD\n"),
        "hc.pcre:1: unknown regexp option \"D\""
    );
}

#[test]
fn unsupported_actions() {
    for (action, word) in [
        ("FILTER smtp:[127.0.0.1]:10025", "FILTER"),
        ("REDIRECT a@example.jp", "REDIRECT"),
        ("BCC a@example.jp", "BCC"),
        ("DELAY 1h", "DELAY"),
        ("INFO hello", "INFO"),
        ("PASS", "PASS"),
        ("frobnicate", "frobnicate"),
    ] {
        assert_eq!(
            one_error(&format!("/a/ OK\n/^Subject:/ {action}\n")),
            format!("hc.pcre:2: unsupported action \"{word}\"")
        );
    }
}

#[test]
fn missing_text() {
    assert_eq!(
        one_error("/^Subject:/ REPLACE\n"),
        "hc.pcre:1: REPLACE action without text"
    );
    assert_eq!(
        one_error("/^Subject:/    prepend   \n"),
        "hc.pcre:1: PREPEND action without text"
    );
    assert_eq!(
        one_error("/^Subject:/ PREPEND not a header\n"),
        "hc.pcre:1: bad PREPEND header text \"not a header\" -- need \"headername: headervalue\""
    );
    assert_eq!(one_error("/^Subject:/\n"), "hc.pcre:1: missing action");
}

#[test]
fn substitution_errors() {
    assert_eq!(
        one_error("/(x)/ REPLACE X: $2\n"),
        "hc.pcre:1: out of range replacement index \"2\""
    );
    assert_eq!(
        one_error("!/(x)/ WARN $1\n"),
        "hc.pcre:1: $number found in negative match replacement text"
    );
    assert!(one_error("/x/ WARN cost $\n").starts_with("hc.pcre:1: bad replacement syntax"));
    assert!(one_error("/x/ WARN $a\n").starts_with("hc.pcre:1: bad replacement syntax"));
}

/// The same file as fed to Postfix 3.7.11's postmap (see the module doc):
/// the error lines are exactly the ones Postfix skips.
#[test]
fn every_problem_is_listed_at_postfix_lines() {
    let table = "  leading\n/a/ DUNNO\n/b/z DISCARD\n/c(/ OK\n/d/\n/e(x)/ REPLACE X: $2\n\
                 !/f(x)/ WARN $1\n/g/ WARN $a\n/h/ WARN cost $\nif /i/ extra\nendif junk\nendif\n\
                 foo bar\n/j\n/k/X WARN\n/l\\/m/ WARN ${1\nIF\n!\n/n/ FILTER smtp:x\n/o/ REPLACE\n\
                 /p/ PREPEND bad text\nif !/q/\n";
    let lines: Vec<usize> = errors(table)
        .iter()
        .map(|e| {
            let rest = e.strip_prefix("hc.pcre:").unwrap_or_default();
            rest.split(':')
                .next()
                .unwrap_or_default()
                .parse()
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(lines, [3, 4, 5, 6, 7, 8, 9, 13, 14, 16, 17, 18, 19, 20, 21]);
}

#[test]
fn warnings_do_not_prevent_loading() {
    let table = "  leading\n/a/ DUNNO\nif /i/ extra\nendif junk\nendif\n/k/X WARN\nif !/q/\n";
    let loaded = Rules::parse(table.as_bytes(), "hc.pcre").expect("loads");
    assert_eq!(loaded.rules.len(), 2);
    assert_eq!(
        loaded.warnings,
        [
            "hc.pcre:1: logical line must not start with whitespace: \"  leading\"",
            "hc.pcre:3: ignoring extra text after IF statement: \"extra\"",
            "hc.pcre:3: do not prepend whitespace to statements between IF and ENDIF",
            "hc.pcre:4: ignoring extra text after ENDIF",
            "hc.pcre:5: ignoring ENDIF without matching IF",
            "hc.pcre:6: ignoring obsolete regexp option \"X\"",
            "hc.pcre:7: IF has no matching ENDIF",
        ]
    );
}

#[test]
fn display_is_one_error_per_line() {
    let err = Rules::parse(b"/a(/ OK\n/b/ FILTER x:y\n", "f").unwrap_err();
    assert_eq!(
        err.to_string(),
        "f:1: error in regex at offset 2: missing closing parenthesis\nf:2: unsupported action \"FILTER\""
    );
    let _: &dyn std::error::Error = &err;
}

#[test]
fn io_error_is_a_load_error() {
    let err = Rules::load(std::path::Path::new("/nonexistent/hc.pcre")).unwrap_err();
    assert_eq!(err.errors.len(), 1);
    assert!(err.errors[0].starts_with("/nonexistent/hc.pcre: "), "{err}");
}

#[test]
fn multi_line_rule_reports_its_first_line() {
    assert_eq!(
        one_error("/a/ OK\n/^Subject:/\n  FILTER\n  smtp:x\n"),
        "hc.pcre:2: unsupported action \"FILTER\""
    );
}

#[test]
fn any_delimiter_and_escaped_delimiter() {
    // A line starting with "#" is a comment even if meant as a delimiter,
    // exactly as in Postfix's readllines().
    let loaded = Rules::parse(
        b"#^From:\\s*<>#m DISCARD\n\"a\\\"b\" WARN quote\n!%^X-%  DUNNO\n/^X-A\\/B:/ IGNORE\n",
        "f",
    )
    .expect("loads");
    assert_eq!(loaded.rules.len(), 3, "{:?}", loaded.warnings);
    let out = loaded
        .rules
        .apply(b"X-A/B: 1\nSubject: a\"b\nFrom: x\n\nbody\n");
    let rules: Vec<&str> = out.hits.iter().map(|h| h.rule.as_str()).collect();
    assert_eq!(
        rules,
        [
            "/^X-A\\/B:/ IGNORE",
            "\"a\\\"b\" WARN quote",
            "!%^X-% DUNNO"
        ]
    );
}
