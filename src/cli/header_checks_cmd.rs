//! `mx2 header-checks test`: run a rules file over one message (like `postmap -hq - pcre:…`).
//!
//! stdout: the resulting message byte for byte (line endings as in the
//! input), or one line `DISCARD text` / `REJECT 550 5.7.1 text`.
//! stderr: load warnings (`warning: FILE:LINE: …`), then one line per rule
//! hit (`line N: /pattern/flags ACTION: Header: value`), matching errors
//! (`error: …`) and `HOLD text` for a held message. Exit 0 whatever the
//! verdict; 1 when the rules or the message cannot be read.
//!
//! Without `--rules` it runs the rules the daemon would: the configured
//! `[relay] header_checks`, or, when no file is at the default path, the
//! built-in rules (a note on stderr says so).

use std::io::{self, Read, Write};
use std::path::PathBuf;

use header_checks::Rules;

use crate::config::TablePath;
use crate::tables;

/// `mx2 header-checks …`
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Run the rules over a message (stdin if no FILE); hits on stderr, result on stdout.
    Test {
        /// Rules file (default: `[relay] header_checks` from the config, or the built-in rules when no file is at the default path).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Message file; standard input when absent.
        file: Option<PathBuf>,
    },
}

/// Runs the subcommand; `default_rules` is `[relay] header_checks`. Returns the exit code.
pub fn run(cmd: &Command, default_rules: &TablePath) -> anyhow::Result<i32> {
    let stdin = io::stdin();
    let stdout = io::stdout();
    let stderr = io::stderr();
    run_with(
        cmd,
        default_rules,
        &mut stdin.lock(),
        &mut stdout.lock(),
        &mut stderr.lock(),
    )
}

/// `run` with explicit streams (for tests).
fn run_with(
    cmd: &Command,
    default_rules: &TablePath,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<i32> {
    let Command::Test { rules, file } = cmd;
    let loaded = match rules {
        Some(path) => Rules::load(path),
        None => {
            if tables::uses_builtin_rules(default_rules) {
                writeln!(
                    stderr,
                    "note: no rules file at {}: using the built-in rules (as the packaged /etc/mx2/header_checks)",
                    default_rules.path.display()
                )?;
            }
            tables::read_rules(default_rules)
        }
    };
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => {
            for line in &e.errors {
                writeln!(stderr, "{line}")?;
            }
            return Ok(1);
        }
    };
    for w in &loaded.warnings {
        writeln!(stderr, "warning: {w}")?;
    }
    let message = match file {
        Some(path) => match std::fs::read(path) {
            Ok(m) => m,
            Err(e) => {
                writeln!(stderr, "mx2: cannot read {}: {e}", path.display())?;
                return Ok(1);
            }
        },
        None => {
            let mut m = Vec::new();
            if let Err(e) = stdin.read_to_end(&mut m) {
                writeln!(stderr, "mx2: cannot read standard input: {e}")?;
                return Ok(1);
            }
            m
        }
    };
    let report = loaded.rules.apply(&message).report(&message);
    for line in &report.stderr {
        writeln!(stderr, "{line}")?;
    }
    stderr.flush()?;
    stdout.write_all(&report.stdout)?;
    stdout.flush()?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPERATOR: &str = "/^From:\\s*<>/m                  DISCARD
/^X\\-Spam\\-Flag:\\s+YES/m        DISCARD
/^X\\-Virus\\-Status:\\s+Yes/m     DISCARD
/^X\\-Spam\\-Level:/m             IGNORE
/^X\\-Spam\\-Checker\\-Version:/m  IGNORE
/^X\\-Spam\\-Status:\\s+No/m       IGNORE
/^X\\-Virus\\-Scanned:/m          IGNORE
/^X\\-Virus\\-Status:\\s+Clean/m   IGNORE
";

    fn run_test(rules: &str, message: &[u8]) -> (i32, Vec<u8>, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules_path = dir.path().join("header_checks");
        std::fs::write(&rules_path, rules).expect("write rules");
        let cmd = Command::Test {
            rules: None,
            file: None,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let table = TablePath {
            path: rules_path,
            explicit: true,
        };
        let code = run_with(&cmd, &table, &mut &message[..], &mut out, &mut err).expect("run");
        (code, out, String::from_utf8_lossy(&err).into_owned())
    }

    #[test]
    fn strips_and_reports_hits() {
        let msg = b"Subject: s\r\nX-Spam-Level: **\r\nX-Spam-Status: No, score=0.1\r\n\ttests=NONE\r\n\r\nbody\r\n";
        let (code, out, err) = run_test(OPERATOR, msg);
        assert_eq!(code, 0);
        assert_eq!(out, b"Subject: s\r\n\r\nbody\r\n");
        assert_eq!(
            err,
            "line 4: /^X\\-Spam\\-Level:/m IGNORE: X-Spam-Level: **\n\
             line 6: /^X\\-Spam\\-Status:\\s+No/m IGNORE: X-Spam-Status: No, score=0.1\ttests=NONE\n"
        );
    }

    #[test]
    fn discard_and_reject_lines() {
        let (code, out, _) = run_test(OPERATOR, b"X-Spam-Flag: YES\n\nbody\n");
        assert_eq!((code, out), (0, b"DISCARD\n".to_vec()));
        let (code, out, _) = run_test("/^Subject: buy/ REJECT no ads\n", b"Subject: buy now\n\n");
        assert_eq!((code, out), (0, b"REJECT 550 5.7.1 no ads\n".to_vec()));
    }

    #[test]
    fn hold_prints_the_message_and_notes_it() {
        let (code, out, err) = run_test("/^X-Review:/ HOLD check me\n", b"X-Review: 1\n\nb\n");
        assert_eq!((code, out), (0, b"X-Review: 1\n\nb\n".to_vec()));
        assert!(err.ends_with("HOLD check me\n"), "{err}");
    }

    #[test]
    fn load_errors_exit_1() {
        let (code, out, err) = run_test("/a(/ OK\n/b/ FILTER smtp:x\n", b"Subject: s\n\n");
        assert_eq!(code, 1);
        assert!(out.is_empty());
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{err}");
        assert!(lines[0].ends_with(":1: error in regex at offset 2: missing closing parenthesis"));
        assert!(lines[1].ends_with(":2: unsupported action \"FILTER\""));
    }

    #[test]
    fn warnings_go_to_stderr() {
        let (code, out, err) = run_test("endif\n/x/ WARN\n", b"Subject: s\n\n");
        assert_eq!((code, out), (0, b"Subject: s\n\n".to_vec()));
        assert!(err.starts_with("warning: "), "{err}");
        assert!(
            err.contains(":1: ignoring ENDIF without matching IF"),
            "{err}"
        );
    }

    #[test]
    fn missing_message_file_exits_1() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules_path = dir.path().join("hc");
        std::fs::write(&rules_path, OPERATOR).expect("write");
        let cmd = Command::Test {
            rules: Some(rules_path),
            file: Some(dir.path().join("nope.eml")),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let unused = TablePath {
            path: PathBuf::from("/unused"),
            explicit: true,
        };
        let code = run_with(&cmd, &unused, &mut io::empty(), &mut out, &mut err).expect("run");
        assert_eq!(code, 1);
        assert!(String::from_utf8_lossy(&err).contains("nope.eml"));
    }

    /// Runs `header-checks test` without `--rules` against `table`.
    fn run_default(table: &TablePath, message: &[u8]) -> (i32, Vec<u8>, String) {
        let cmd = Command::Test {
            rules: None,
            file: None,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_with(&cmd, table, &mut &message[..], &mut out, &mut err).expect("run");
        (code, out, String::from_utf8_lossy(&err).into_owned())
    }

    #[test]
    fn without_rules_and_no_file_at_the_default_path_the_builtin_rules_apply() {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = TablePath {
            path: dir.path().join("header_checks"),
            explicit: false,
        };
        let msg = b"X-Spam-Level: \r\nX-Spam-Status: No, score=0.1\r\nSubject: s\r\n\r\nbody\r\n";
        let (code, out, err) = run_default(&table, msg);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, b"Subject: s\r\n\r\nbody\r\n");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 3, "{err}");
        assert!(lines[0].starts_with("note: no rules file at "), "{err}");
        assert!(lines[0].contains("using the built-in rules"), "{err}");
        // Hits name the lines of the packaged file the built-in rules are.
        let level = tables::BUILTIN_RULES
            .lines()
            .position(|l| l.starts_with("/^X\\-Spam\\-Level:/m"))
            .expect("the built-in rules strip X-Spam-Level")
            + 1;
        assert!(
            lines[1].starts_with(&format!("line {level}: /^X\\-Spam\\-Level:/m IGNORE")),
            "{err}"
        );
    }

    #[test]
    fn without_rules_a_configured_path_that_is_missing_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = TablePath {
            path: dir.path().join("header_checks"),
            explicit: true,
        };
        let (code, out, err) = run_default(&table, b"Subject: s\r\n\r\n");
        assert_eq!(code, 1);
        assert!(out.is_empty());
        assert!(err.contains("header_checks: cannot read rules"), "{err}");
        assert!(!err.contains("built-in"), "{err}");
    }
}
