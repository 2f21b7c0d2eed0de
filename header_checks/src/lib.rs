//! Postfix-compatible `header_checks` (header_checks(5) rules in
//! pcre_table(5) syntax), applied to raw message bytes.
//!
//! # Why this crate exists
//!
//! Postfix's cleanup(8) runs `header_checks` on the message *as received*,
//! before any milter sees it, and never shows milter-added headers to those
//! rules. So on a secondary MX running spamass-milter and clamav-milter,
//! `/^X-Spam-Status:/ IGNORE` silently does nothing: the header does not exist
//! yet when the rule runs, and the recipient ends up with X-Spam-* headers
//! twice. mx2 instead applies the same rules *after* every scanner has added
//! its headers, to the final header block as it will be relayed, so the
//! operator's unmodified file does what its author meant.
//!
//! # Semantics
//!
//! Everything else follows Postfix 3.7 as closely as the two documents and
//! its source allow:
//!
//! - the table is read like `readllines()` + `dict_pcre_open()`: comments,
//!   blank lines, continuation lines, `if`/`endif` (nested, negated), `!`
//!   negation, any delimiter, flags `i m s x A E U` toggling the defaults
//!   (`i` and `s` on), `$n`/`${n}`/`$(n)`/`$$` in the action text;
//! - each logical header of the top-level header block is one lookup key:
//!   its lines joined with "\n", CRs before the LF removed, "Name :" shown as
//!   "Name:", cut at a NUL byte; matched as bytes (no UTF mode), so 8-bit
//!   values match and are never altered;
//! - the first matching rule decides for a header; every header is examined,
//!   except that DISCARD and REJECT end processing at once;
//! - the message is edited in place: removed, replaced or prepended headers
//!   change, every other byte (folding, line endings, the body) is kept.
//!
//! Differences, on purpose: a rule Postfix would skip with a warning (bad
//! regex, unknown flag, unsupported action, REPLACE without text, ...)
//! makes the whole table fail to load, so a typo cannot go unnoticed; only
//! the top-level headers are examined (Postfix also applies the table to MIME
//! part headers and attached messages through `mime_header_checks` and
//! `nested_header_checks`); and a pattern that cannot be evaluated (PCRE's
//! match or heap limit) does not quietly count as "no match" when its rule
//! could keep the message from the recipient.
//!
//! # Hostile input
//!
//! A rule sees at most `header_size_limit` bytes of one header (Postfix's
//! 102400 by default, [`DEFAULT_HEADER_SIZE_LIMIT`]), so padding a header
//! costs the sender, not the matcher. The stored message is not cut: only
//! what the rules see is (a REPLACE or IGNORE still acts on the whole
//! header). A runaway pattern is stopped by PCRE's match and heap limits;
//! then, as Postfix's `dict_pcre` does, the rule counts as not matching,
//! *unless* its action is REJECT, DISCARD or HOLD (or computed from `$n`,
//! so possibly one of those): such a rule fails closed, the verdict is
//! [`Verdict::TempFail`] and the sender is asked to try again, never a
//! silent accept of what the rule was written to stop. Each failing rule is
//! reported once per message in [`Outcome::errors`], with a count.

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod action;
mod header;
#[cfg(test)]
mod oracle_tests;
mod pcre;
mod prefilter;
mod reply;
mod table;
mod template;

use std::ffi::c_int;
use std::fmt;
use std::path::Path;
use std::time::Instant;

use action::Action;
use pcre::{MatchResult, Matcher};
use table::Op;

pub use header::DEFAULT_HEADER_SIZE_LIMIT;

/// Whether `line` (without its line end) starts a header field, by
/// Postfix's `is_header()`: a name of printable ASCII without spaces or
/// colons, optional spaces or tabs, then a colon. The line that is neither
/// this nor a continuation (space or tab first) ends the header block.
pub fn is_header_line(line: &[u8]) -> bool {
    header::header_name_len(line).is_some()
}

/// PCRE match limit of [`Rules::apply_bounded`]: about 50 µs per attempt
/// at worst, where the usual limit allows about 5 ms.
const BOUNDED_MATCH_LIMIT: u32 = 10_000;

/// The reply for [`Verdict::TempFail`]: the message could not be checked,
/// so it is neither accepted nor refused for good.
pub const TEMPFAIL_REPLY: &str =
    "451 4.3.0 Error: message content could not be checked, try again later";

/// A compiled rules table. Immutable, `Send + Sync`: share it via `Arc`.
pub struct Rules {
    ops: Vec<Op>,
    /// Per op: could it (or, for an `if`, a rule inside it) keep the
    /// message from the recipient (REJECT, DISCARD, HOLD or a `$n` action)?
    /// Such a rule fails closed when it cannot be evaluated.
    guards: Vec<bool>,
    file: String,
    rules: usize,
    max_captures: u32,
}

impl fmt::Debug for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rules")
            .field("file", &self.file)
            .field("rules", &self.rules)
            .finish()
    }
}

/// A successfully loaded table and what Postfix would have warned about.
#[derive(Debug)]
pub struct Loaded {
    /// The rules.
    pub rules: Rules,
    /// `FILE:LINE: message` for each warning (unbalanced if/endif, ...).
    pub warnings: Vec<String>,
}

/// Why a table could not be loaded: every problem found, one per entry,
/// each `FILE:LINE: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The messages.
    pub errors: Vec<String>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            f.write_str(e)?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

/// What happens to the message as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Relay it (possibly edited).
    Accept,
    /// Claim delivery (250) and drop it.
    Discard {
        /// Optional text from the rule (for the log).
        text: String,
    },
    /// Refuse it; see [`Verdict::reject_reply`].
    Reject {
        /// Optional text from the rule, as written (after `$n`).
        text: String,
    },
    /// Queue it (edited) but keep it on hold.
    Hold {
        /// Optional text from the first HOLD rule (for the log).
        text: String,
    },
    /// A rule that could refuse, discard or hold the message could not be
    /// evaluated (match or heap limit): answer [`TEMPFAIL_REPLY`].
    TempFail {
        /// `FILE:LINE: why`, for the log.
        reason: String,
    },
}

impl Verdict {
    /// For a REJECT, the SMTP reply Postfix would give: `550 5.7.1 text`,
    /// `550 5.7.1 message content rejected` without text, an enhanced
    /// status code at the start of the text replaces 5.7.1, and a 4.x.x
    /// code makes it a temporary `451 4.x.x text`. `None` otherwise.
    pub fn reject_reply(&self) -> Option<String> {
        match self {
            Verdict::Reject { text } => Some(reply::reject_reply(text)),
            _ => None,
        }
    }
}

/// One rule that fired on one header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Line of the rule in the table (first line of a multi-line rule).
    pub line: usize,
    /// The rule as written: `/pattern/flags ACTION text`.
    pub rule: String,
    /// The action, upper case: `IGNORE`, `REJECT`, ...
    pub action: String,
    /// The header as the rule saw it (lines joined with "\n"), lossy UTF-8.
    pub header: String,
    /// The action's text after `$n` substitution (may be empty).
    pub text: String,
}

/// The edited header block: the resulting message is
/// `new_header ++ message[body_start..]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The new header block (replaces `message[..body_start]`).
    pub new_header: Vec<u8>,
    /// Where the untouched rest of the message starts (separator + body).
    pub body_start: usize,
}

/// Result of [`Rules::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What to do with the message.
    pub verdict: Verdict,
    /// Every rule that fired, in header order (one entry per header; see
    /// [`Outcome::hit_summary`] for one per rule).
    pub hits: Vec<Hit>,
    /// Header edits; `None` when the message is unchanged (always `None`
    /// for DISCARD and REJECT).
    pub edit: Option<Edit>,
    /// Problems met while matching (a pattern exceeding the match limit, an
    /// action computed from `$n` that is not usable, ...), a matching error
    /// once per rule with the number of headers it hit. Such a rule counted
    /// as not matching, or made the verdict [`Verdict::TempFail`] (see the
    /// crate docs); the message is never lost because of them.
    pub errors: Vec<String>,
}

/// One rule's hits in one message: the first, and how many headers in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HitSummary<'o> {
    /// The first header this rule fired on.
    pub first: &'o Hit,
    /// Headers it fired on (at least 1).
    pub count: usize,
}

impl Outcome {
    /// The hits grouped by rule, in the order each rule first fired: what a
    /// log shows, one line per rule however many headers it hit.
    pub fn hit_summary(&self) -> Vec<HitSummary<'_>> {
        let mut out: Vec<HitSummary<'_>> = Vec::new();
        for h in &self.hits {
            match out.iter_mut().find(|s| s.first.line == h.line) {
                Some(s) => s.count += 1,
                None => out.push(HitSummary { first: h, count: 1 }),
            }
        }
        out
    }

    /// The message after the edits (a copy of `original` if none).
    pub fn message(&self, original: &[u8]) -> Vec<u8> {
        match &self.edit {
            None => original.to_vec(),
            Some(e) => {
                let rest = original.get(e.body_start..).unwrap_or_default();
                let mut out = Vec::with_capacity(e.new_header.len() + rest.len());
                out.extend_from_slice(&e.new_header);
                out.extend_from_slice(rest);
                out
            }
        }
    }
}

impl fmt::Display for Hit {
    /// `line N: /pattern/flags ACTION text: Header: value`, the header
    /// unfolded onto one line (the "\n" of each fold removed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: {}: {}",
            self.line,
            self.rule,
            self.header.replace('\n', "")
        )
    }
}

/// What `mx2 header-checks test` prints for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The resulting message byte for byte, or one line `DISCARD text` /
    /// `REJECT 550 5.7.1 text`.
    pub stdout: Vec<u8>,
    /// One line each: every hit, every matching error (`error: ...`), and
    /// `HOLD text` when the message would be held.
    pub stderr: Vec<String>,
}

impl Outcome {
    /// Renders this outcome as `mx2 header-checks test` shows it.
    pub fn report(&self, original: &[u8]) -> Report {
        let stdout = match &self.verdict {
            Verdict::Discard { text } if text.is_empty() => b"DISCARD\n".to_vec(),
            Verdict::Discard { text } => format!("DISCARD {text}\n").into_bytes(),
            Verdict::Reject { .. } => {
                let reply = self.verdict.reject_reply().unwrap_or_default();
                format!("REJECT {reply}\n").into_bytes()
            }
            Verdict::TempFail { .. } => format!("TEMPFAIL {TEMPFAIL_REPLY}\n").into_bytes(),
            Verdict::Accept | Verdict::Hold { .. } => self.message(original),
        };
        let mut stderr: Vec<String> = self.hits.iter().map(Hit::to_string).collect();
        stderr.extend(self.errors.iter().map(|e| format!("error: {e}")));
        if let Verdict::TempFail { reason } = &self.verdict {
            stderr.push(format!("TEMPFAIL {reason}"));
        }
        if let Verdict::Hold { text } = &self.verdict {
            stderr.push(if text.is_empty() {
                "HOLD".to_string()
            } else {
                format!("HOLD {text}")
            });
        }
        Report { stdout, stderr }
    }
}

/// What a header turns into.
enum Change {
    Remove,
    Replace(Vec<u8>),
    Prepend(Vec<u8>),
}

/// Matching errors met in one message.
#[derive(Default)]
struct Tally {
    /// (rule line, PCRE error code, headers it failed on), first seen first.
    errors: Vec<(usize, c_int, usize)>,
    /// The first rule that could keep the message from the recipient and
    /// could not be evaluated.
    unevaluable: Option<usize>,
}

impl Tally {
    fn record(&mut self, line: usize, code: c_int, guard: bool) {
        match self.errors.iter_mut().find(|e| e.0 == line) {
            Some(e) => e.2 += 1,
            None => self.errors.push((line, code, 1)),
        }
        if guard {
            self.unevaluable.get_or_insert(line);
        }
    }
}

/// Whether a rule's action could keep the message from the recipient:
/// REJECT, DISCARD or HOLD, or a word computed from `$n` (unknown until
/// it matches, so it could be any of them).
fn may_keep_from_recipient(template: &template::Template) -> bool {
    let known = match template.literal() {
        Some(text) => text,
        None => {
            let pre = template.static_prefix();
            if !pre.iter().any(|&b| b == b' ' || b == b'\t') {
                return true;
            }
            pre.to_vec()
        }
    };
    let (word, _) = action::split(&known);
    matches!(
        Action::from_word(word),
        Some(Action::Reject | Action::Discard | Action::Hold)
    )
}

/// [`Rules::guards`] for a table: a rule's own action; an `if` guards when
/// any rule up to its `endif` (or the end of the table) does.
fn guards(ops: &[Op]) -> Vec<bool> {
    let own: Vec<bool> = ops
        .iter()
        .map(|op| match op {
            Op::Match(m) => may_keep_from_recipient(&m.template),
            Op::If(_) | Op::Endif => false,
        })
        .collect();
    ops.iter()
        .enumerate()
        .map(|(i, op)| match op {
            Op::If(rule) => {
                let end = rule.endif.unwrap_or(ops.len()).min(ops.len());
                own.get(i + 1..end).is_some_and(|g| g.iter().any(|&b| b))
            }
            _ => own[i],
        })
        .collect()
}

impl Rules {
    /// Parses a rules table; `file` names it in messages (`FILE:LINE: ...`).
    pub fn parse(text: &[u8], file: &str) -> Result<Loaded, LoadError> {
        let parsed = table::parse(text, file);
        if !parsed.errors.is_empty() {
            return Err(LoadError {
                errors: parsed.errors,
            });
        }
        let mut rules = 0;
        let mut max_captures = 0;
        for op in &parsed.ops {
            if let Op::Match(m) = op {
                rules += 1;
                max_captures = max_captures.max(m.pattern.regex.captures());
            }
        }
        Ok(Loaded {
            rules: Rules {
                guards: guards(&parsed.ops),
                ops: parsed.ops,
                file: file.to_string(),
                rules,
                max_captures,
            },
            warnings: parsed.warnings,
        })
    }

    /// Reads and parses a rules file.
    pub fn load(path: &Path) -> Result<Loaded, LoadError> {
        let name = path.display().to_string();
        match std::fs::read(path) {
            Ok(text) => Rules::parse(&text, &name),
            Err(e) => Err(LoadError {
                errors: vec![format!("{name}: cannot read rules: {e}")],
            }),
        }
    }

    /// A table with no rules: every message is accepted unchanged.
    pub fn empty() -> Rules {
        Rules {
            ops: Vec::new(),
            guards: Vec::new(),
            file: String::new(),
            rules: 0,
            max_captures: 0,
        }
    }

    /// Number of `/pattern/ ACTION` rules (not counting if/endif).
    pub fn len(&self) -> usize {
        self.rules
    }

    /// True when there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules == 0
    }

    /// Finds the first rule matching `key` (dict_pcre_lookup) and returns
    /// it with its expanded action text.
    fn lookup<'r>(
        &'r self,
        matcher: &mut Matcher,
        key: &[u8],
        tally: &mut Tally,
    ) -> Option<(&'r table::MatchRule, Vec<u8>)> {
        let mut i = 0;
        while let Some(op) = self.ops.get(i) {
            let guard = self.guards.get(i).copied().unwrap_or(true);
            match op {
                Op::Match(rule) => {
                    if test(matcher, &rule.pattern, rule.line, guard, key, tally) {
                        let value = rule
                            .template
                            .expand(|n| matcher.group(n).and_then(|(s, e)| key.get(s..e)));
                        return Some((rule, value));
                    }
                }
                Op::If(rule) => {
                    if !test(matcher, &rule.pattern, rule.line, guard, key, tally) {
                        // An IF without ENDIF that fails ends the search.
                        i = rule.endif?;
                    }
                }
                Op::Endif => {}
            }
            i += 1;
        }
        None
    }

    /// Applies the rules to a whole raw message (header block + body), each
    /// header cut at [`DEFAULT_HEADER_SIZE_LIMIT`] for matching.
    /// Never panics, whatever the input.
    pub fn apply(&self, message: &[u8]) -> Outcome {
        self.apply_with_limit(message, DEFAULT_HEADER_SIZE_LIMIT)
    }

    /// [`Rules::apply`] with the rules seeing at most `header_size_limit`
    /// bytes of each header (Postfix's `header_size_limit`).
    pub fn apply_with_limit(&self, message: &[u8], header_size_limit: usize) -> Outcome {
        self.run(message, header_size_limit, pcre::MATCH_LIMIT, None)
            .unwrap_or_else(|| Outcome {
                // Unreachable: only a deadline abandons a run.
                verdict: Verdict::Accept,
                hits: Vec::new(),
                edit: None,
                errors: Vec::new(),
            })
    }

    /// A cheap attempt at [`Rules::apply_with_limit`] for a caller that
    /// must not be held up (an async thread): `None` as soon as a pattern
    /// needs more than a small match limit or `deadline` passes (checked
    /// after each header), and the caller should then run the full
    /// [`Rules::apply_with_limit`] where time does not matter. A `Some` is
    /// exactly what the full run gives: a lower match limit changes only
    /// which attempts end in an error, and any error abandons the attempt.
    pub fn apply_bounded(
        &self,
        message: &[u8],
        header_size_limit: usize,
        deadline: Instant,
    ) -> Option<Outcome> {
        self.run(
            message,
            header_size_limit,
            BOUNDED_MATCH_LIMIT,
            Some(deadline),
        )
    }

    /// The rules over one message; with a `deadline`, `None` on the first
    /// matching error or once it has passed.
    fn run(
        &self,
        message: &[u8],
        header_size_limit: usize,
        match_limit: u32,
        deadline: Option<Instant>,
    ) -> Option<Outcome> {
        let mut outcome = Outcome {
            verdict: Verdict::Accept,
            hits: Vec::new(),
            edit: None,
            errors: Vec::new(),
        };
        if self.ops.is_empty() {
            return Some(outcome);
        }
        let Some(mut matcher) = Matcher::with_match_limit(self.max_captures, match_limit) else {
            deadline?;
            let why = "out of memory for PCRE2 match data: rules not applied";
            outcome.errors.push(why.to_string());
            if self.guards.iter().any(|&g| g) {
                outcome.verdict = Verdict::TempFail {
                    reason: format!("{}: {why}", self.file),
                };
            }
            return Some(outcome);
        };
        let mut tally = Tally::default();
        self.apply_headers(
            &mut matcher,
            message,
            header_size_limit,
            deadline,
            &mut tally,
            &mut outcome,
        )?;
        let mut errors: Vec<String> = tally
            .errors
            .iter()
            .map(|&(line, code, n)| {
                let guard = tally.unevaluable == Some(line);
                format!(
                    "{}:{}: {} ({} header{}; {})",
                    self.file,
                    line,
                    pcre::error_message(code),
                    n,
                    if n == 1 { "" } else { "s" },
                    if guard {
                        "the rule could not be evaluated: message not accepted, try again later"
                    } else {
                        "treated as not matching"
                    }
                )
            })
            .collect();
        errors.append(&mut outcome.errors);
        outcome.errors = errors;
        if let Some(line) = tally.unevaluable {
            outcome.verdict = Verdict::TempFail {
                reason: format!(
                    "{}:{}: rule could not be evaluated -- message not accepted, try again later",
                    self.file, line
                ),
            };
            outcome.edit = None;
        }
        Some(outcome)
    }

    /// The header loop of [`Rules::run`]; stops at the first DISCARD or
    /// REJECT, or at the first rule that fails closed. `None`: abandoned
    /// (with a `deadline`: a matching error, or the deadline passed).
    fn apply_headers(
        &self,
        matcher: &mut Matcher,
        message: &[u8],
        header_size_limit: usize,
        deadline: Option<Instant>,
        tally: &mut Tally,
        outcome: &mut Outcome,
    ) -> Option<()> {
        let block = header::scan(message, header_size_limit);
        let mut changes: Vec<(usize, Change)> = Vec::new();
        let mut hold: Option<String> = None;

        for (index, h) in block.headers.iter().enumerate() {
            let found = self.lookup(matcher, &h.key, tally);
            if let Some(d) = deadline {
                if !tally.errors.is_empty() || Instant::now() > d {
                    return None;
                }
            }
            if tally.unevaluable.is_some() {
                return Some(());
            }
            let Some((rule, value)) = found else {
                continue;
            };
            let (word, args) = action::split(&value);
            let act = Action::from_word(word);
            let text = String::from_utf8_lossy(args).into_owned();
            outcome.hits.push(Hit {
                line: rule.line,
                rule: rule.source.clone(),
                action: match act {
                    Some(a) => a.name().to_string(),
                    None => String::from_utf8_lossy(word).to_ascii_uppercase(),
                },
                header: String::from_utf8_lossy(&h.key).into_owned(),
                text: text.clone(),
            });
            let Some(act) = act else {
                outcome.errors.push(format!(
                    "{}:{}: unsupported action \"{}\" (header kept)",
                    self.file,
                    rule.line,
                    String::from_utf8_lossy(word)
                ));
                continue;
            };
            match act {
                Action::Discard => {
                    outcome.verdict = Verdict::Discard { text };
                    return Some(());
                }
                Action::Reject => {
                    outcome.verdict = Verdict::Reject { text };
                    return Some(());
                }
                Action::Hold => {
                    hold.get_or_insert(text);
                }
                Action::Ignore | Action::Strip => changes.push((index, Change::Remove)),
                Action::Replace | Action::Prepend => {
                    if args.is_empty() || header::header_name_len(args).is_none() {
                        outcome.errors.push(format!(
                            "{}:{}: bad {} header text \"{}\" -- need \"headername: headervalue\" (header kept)",
                            self.file,
                            rule.line,
                            act.name(),
                            text
                        ));
                    } else if act == Action::Replace {
                        changes.push((index, Change::Replace(args.to_vec())));
                    } else {
                        changes.push((index, Change::Prepend(args.to_vec())));
                    }
                }
                Action::Warn | Action::Dunno | Action::Ok => {}
            }
        }
        if let Some(text) = hold {
            outcome.verdict = Verdict::Hold { text };
        }
        if !changes.is_empty() {
            outcome.edit = Some(build_edit(message, &block, &changes));
        }
        Some(())
    }
}

/// One pattern test. A matching error counts as "no match" and is tallied;
/// for a `guard` rule it also makes the message unevaluable.
fn test(
    matcher: &mut Matcher,
    pattern: &table::Pattern,
    line: usize,
    guard: bool,
    key: &[u8],
    tally: &mut Tally,
) -> bool {
    if pattern.prefix.as_ref().is_some_and(|p| !p.may_match(key)) {
        return pattern.negate;
    }
    match matcher.exec(&pattern.regex, key) {
        MatchResult::Match => !pattern.negate,
        MatchResult::NoMatch => pattern.negate,
        MatchResult::Error(code) => {
            tally.record(line, code, guard);
            false
        }
    }
}

/// Line terminator for inserted lines: CRLF if the header's first line
/// ends with CRLF, LF if with LF; for a header at the very end of an
/// unterminated message, whatever the message's first line uses.
fn eol_for<'a>(message: &[u8], h: &header::Header<'a>) -> &'static [u8] {
    let style = |eol: &[u8]| -> Option<&'static [u8]> {
        if eol.ends_with(b"\r\n") {
            Some(b"\r\n")
        } else if eol.ends_with(b"\n") {
            Some(b"\n")
        } else {
            None
        }
    };
    style(h.first_eol)
        .or_else(|| {
            let first_lf = message.iter().position(|&b| b == b'\n')?;
            style(&message[..=first_lf])
        })
        .unwrap_or(b"\n")
}

/// Writes action text, turning "\n" (from a folded header's `$n`) into the
/// header's line terminator.
fn push_text(out: &mut Vec<u8>, text: &[u8], eol: &[u8]) {
    for (i, part) in text.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(part);
    }
}

fn build_edit(
    message: &[u8],
    block: &header::HeaderBlock<'_>,
    changes: &[(usize, Change)],
) -> Edit {
    let mut out = Vec::with_capacity(block.end + 128);
    let mut cursor = 0;
    for (index, change) in changes {
        let Some(h) = block.headers.get(*index) else {
            continue;
        };
        out.extend_from_slice(&message[cursor..h.start]);
        match change {
            Change::Remove => {}
            Change::Replace(text) => {
                push_text(&mut out, text, eol_for(message, h));
                out.extend_from_slice(h.last_eol);
            }
            Change::Prepend(text) => {
                let eol = eol_for(message, h);
                push_text(&mut out, text, eol);
                out.extend_from_slice(eol);
                out.extend_from_slice(&message[h.start..h.end]);
            }
        }
        cursor = h.end;
    }
    out.extend_from_slice(&message[cursor..block.end]);
    Edit {
        new_header: out,
        body_start: block.end,
    }
}
