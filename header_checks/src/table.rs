//! Reading a pcre_table(5) file the way Postfix's `readllines()` and
//! `dict_pcre_open()` do, and compiling it into rules.
//!
//! Postfix skips a broken rule with a warning and keeps going; mx2 refuses
//! the whole file instead (every problem is listed as `FILE:LINE: message`),
//! because a silently skipped rule is exactly how X-Spam headers leaked in
//! the first place. Things Postfix only warns about and that do not change
//! what the table means (stray `endif`, missing `endif`, the obsolete `X`
//! flag, text after `if`/`endif`) stay warnings.

use crate::action::{self, Action};
use crate::header::header_name_len;
use crate::pcre::{self, Regex};
use crate::prefilter::Prefix;
use crate::template::Template;

/// One rules-file line as mx2 keeps it.
#[derive(Debug)]
pub(crate) enum Op {
    Match(MatchRule),
    If(IfRule),
    Endif,
}

/// A compiled `/pattern/flags` (or `!/pattern/flags`).
#[derive(Debug)]
pub(crate) struct Pattern {
    pub(crate) regex: Regex,
    /// Literal every match must start with, when known (skips PCRE).
    pub(crate) prefix: Option<Prefix>,
    pub(crate) negate: bool,
}

impl Pattern {
    fn compile(spec: &PatternSpec<'_>) -> Result<Pattern, String> {
        Ok(Pattern {
            regex: Regex::new(spec.regex, spec.options)?,
            prefix: Prefix::from_pattern(spec.regex, spec.options),
            negate: spec.negate,
        })
    }
}

/// `/pattern/flags ACTION text`
#[derive(Debug)]
pub(crate) struct MatchRule {
    pub(crate) line: usize,
    pub(crate) pattern: Pattern,
    /// "/pattern/flags ACTION text" as written.
    pub(crate) source: String,
    pub(crate) template: Template,
}

/// `if /pattern/flags` with the index of its `endif` (none when missing).
#[derive(Debug)]
pub(crate) struct IfRule {
    pub(crate) line: usize,
    pub(crate) pattern: Pattern,
    pub(crate) endif: Option<usize>,
}

/// A parsed table plus its diagnostics.
pub(crate) struct Parsed {
    pub(crate) ops: Vec<Op>,
    pub(crate) errors: Vec<String>,
    pub(crate) warnings: Vec<String>,
}

use action::is_space;

/// Logical lines (text, first physical line number), as readllines() makes
/// them: comments and blank lines dropped, lines starting with whitespace
/// appended to the previous one (without the newline), trailing whitespace
/// trimmed. Text that continues nothing is reported and dropped.
fn logical_lines(text: &[u8], file: &str, warnings: &mut Vec<String>) -> Vec<(Vec<u8>, usize)> {
    let mut out: Vec<(Vec<u8>, usize)> = Vec::new();
    let mut current: Option<(Vec<u8>, usize)> = None;
    for (idx, raw) in text.split(|&b| b == b'\n').enumerate() {
        let lineno = idx + 1;
        let first = raw.iter().position(|&b| !is_space(b));
        let Some(first) = first else { continue }; // blank
        if raw[first] == b'#' {
            continue; // comment, even inside a multi-line rule
        }
        if is_space(raw[0]) {
            match current.as_mut() {
                Some((buf, _)) => buf.extend_from_slice(raw),
                None => {
                    // Postfix drops it (and its own continuations).
                    let shown: String = String::from_utf8_lossy(raw).chars().take(30).collect();
                    warnings.push(format!(
                        "{file}:{lineno}: logical line must not start with whitespace: \"{}{}\"",
                        shown,
                        if raw.len() > 30 { "..." } else { "" }
                    ));
                    current = Some((Vec::new(), 0));
                }
            }
            continue;
        }
        if let Some(done) = current.take() {
            out.push(done);
        }
        current = Some((raw.to_vec(), lineno));
    }
    if let Some(done) = current.take() {
        out.push(done);
    }
    out.retain(|(buf, n)| *n != 0 && !buf.is_empty());
    for (buf, _) in &mut out {
        while buf.last().is_some_and(|&b| is_space(b)) {
            buf.pop();
        }
    }
    out
}

/// A pattern as found on a rule line.
struct PatternSpec<'a> {
    negate: bool,
    regex: &'a [u8],
    options: u32,
    /// Rest of the line after the flags.
    rest: &'a [u8],
    /// Bytes consumed from the start of the input (for "as written").
    consumed: usize,
}

/// dict_pcre_get_pattern(): `!`s and spaces, a delimiter, the pattern with
/// backslash escapes, the closing delimiter, then flag letters.
fn get_pattern<'a>(
    input: &'a [u8],
    file: &str,
    line: usize,
    warnings: &mut Vec<String>,
) -> Result<PatternSpec<'a>, String> {
    let mut negate = false;
    let mut p = 0;
    while p < input.len() {
        if input[p] == b'!' {
            negate = !negate;
        } else if !is_space(input[p]) {
            break;
        }
        p += 1;
    }
    let Some(&delim) = input.get(p) else {
        return Err("no regexp".to_string());
    };
    p += 1;
    let start = p;
    loop {
        match input.get(p) {
            None => {
                return Err(format!(
                    "no closing regexp delimiter \"{}\"",
                    char::from(delim).escape_default()
                ))
            }
            Some(b'\\') => {
                if p + 1 >= input.len() {
                    return Err(format!(
                        "no closing regexp delimiter \"{}\"",
                        char::from(delim).escape_default()
                    ));
                }
                p += 2;
            }
            Some(&c) if c == delim => break,
            Some(_) => p += 1,
        }
    }
    let regex = &input[start..p];
    p += 1;
    let mut options = pcre::CASELESS | pcre::DOTALL;
    while let Some(&c) = input.get(p) {
        if is_space(c) {
            break;
        }
        match c {
            b'i' => options ^= pcre::CASELESS,
            b'm' => options ^= pcre::MULTILINE,
            b's' => options ^= pcre::DOTALL,
            b'x' => options ^= pcre::EXTENDED,
            b'A' => options ^= pcre::ANCHORED,
            b'E' => options ^= pcre::DOLLAR_ENDONLY,
            b'U' => options ^= pcre::UNGREEDY,
            b'X' => warnings.push(format!(
                "{file}:{line}: ignoring obsolete regexp option \"X\""
            )),
            other => {
                return Err(format!(
                    "unknown regexp option \"{}\"",
                    String::from_utf8_lossy(&[other])
                ))
            }
        }
        p += 1;
    }
    Ok(PatternSpec {
        negate,
        regex,
        options,
        rest: &input[p..],
        consumed: p,
    })
}

fn skip_space(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| is_space(b)).count();
    &s[n..]
}

/// Checks an action text whose action word is known at load time.
fn check_action(template: &Template) -> Result<(), String> {
    let prefix = template.static_prefix();
    let literal = template.literal();
    let whole = literal.as_deref();
    // The action word is static when the text has no $n, or when the
    // literal prefix already contains the separator.
    let word_end = prefix.iter().position(|&b| b == b' ' || b == b'\t');
    let (word, args_known): (&[u8], Option<&[u8]>) = match (whole, word_end) {
        (Some(w), _) => {
            let (word, args) = action::split(w);
            (word, Some(args))
        }
        (None, Some(_)) => (action::split(prefix).0, None),
        (None, None) => return Ok(()), // action computed from the header
    };
    if word.is_empty() {
        return Err("missing action".to_string());
    }
    let Some(act) = Action::from_word(word) else {
        return Err(format!(
            "unsupported action \"{}\"",
            String::from_utf8_lossy(word)
        ));
    };
    if act.needs_header_text() {
        match args_known {
            Some(args) => {
                if args.is_empty() {
                    return Err(format!("{} action without text", act.name()));
                }
                if header_name_len(args).is_none() {
                    return Err(format!(
                        "bad {} header text \"{}\" -- need \"headername: headervalue\"",
                        act.name(),
                        String::from_utf8_lossy(args)
                    ));
                }
            }
            None => {
                // Text after the word is partly computed: check what is
                // already known up to the first $n, if it decides.
                let args = action::split(prefix).1;
                let label_end = args.iter().position(|&b| b == b':');
                if label_end.is_some() && header_name_len(args).is_none() {
                    return Err(format!(
                        "bad {} header text \"{}\" -- need \"headername: headervalue\"",
                        act.name(),
                        String::from_utf8_lossy(args)
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Parses and compiles a whole table.
pub(crate) fn parse(text: &[u8], file: &str) -> Parsed {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut ops: Vec<Op> = Vec::new();
    let mut if_stack: Vec<usize> = Vec::new();

    for (line_text, line) in logical_lines(text, file, &mut warnings) {
        if line_text.contains(&0) {
            errors.push(format!("{file}:{line}: rule contains a NUL byte"));
            continue;
        }
        let p = &line_text[..];
        let first = p[0];
        if !first.is_ascii_alphanumeric() {
            // Ordinary rule.
            let spec = match get_pattern(p, file, line, &mut warnings) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(format!("{file}:{line}: {e}"));
                    continue;
                }
            };
            let value = skip_space(spec.rest);
            if value.is_empty() {
                errors.push(format!("{file}:{line}: missing action"));
                continue;
            }
            let template = match Template::parse(value) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(format!("{file}:{line}: {e}"));
                    continue;
                }
            };
            if template.max_group() > 0 && spec.negate {
                errors.push(format!(
                    "{file}:{line}: $number found in negative match replacement text"
                ));
                continue;
            }
            let pattern = match Pattern::compile(&spec) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(format!("{file}:{line}: {e}"));
                    continue;
                }
            };
            if template.max_group() > pattern.regex.captures() as usize {
                errors.push(format!(
                    "{file}:{line}: out of range replacement index \"{}\"",
                    template.max_group()
                ));
                continue;
            }
            if let Err(e) = check_action(&template) {
                errors.push(format!("{file}:{line}: {e}"));
                continue;
            }
            let mut source = String::from_utf8_lossy(&p[..spec.consumed]).into_owned();
            source.push(' ');
            source.push_str(&String::from_utf8_lossy(value));
            ops.push(Op::Match(MatchRule {
                line,
                pattern,
                source,
                template,
            }));
        } else if p.len() >= 2
            && p[..2].eq_ignore_ascii_case(b"IF")
            && !p.get(2).is_some_and(u8::is_ascii_alphanumeric)
        {
            let spec = match get_pattern(skip_space(&p[2..]), file, line, &mut warnings) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(format!("{file}:{line}: {e}"));
                    continue;
                }
            };
            let extra = skip_space(spec.rest);
            if !extra.is_empty() {
                warnings.push(format!(
                    "{file}:{line}: ignoring extra text after IF statement: \"{}\"",
                    String::from_utf8_lossy(extra)
                ));
                warnings.push(format!(
                    "{file}:{line}: do not prepend whitespace to statements between IF and ENDIF"
                ));
            }
            let pattern = match Pattern::compile(&spec) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(format!("{file}:{line}: {e}"));
                    continue;
                }
            };
            if_stack.push(ops.len());
            ops.push(Op::If(IfRule {
                line,
                pattern,
                endif: None,
            }));
        } else if p.len() >= 5
            && p[..5].eq_ignore_ascii_case(b"ENDIF")
            && !p.get(5).is_some_and(u8::is_ascii_alphanumeric)
        {
            let Some(open) = if_stack.pop() else {
                warnings.push(format!("{file}:{line}: ignoring ENDIF without matching IF"));
                continue;
            };
            if !skip_space(&p[5..]).is_empty() {
                warnings.push(format!("{file}:{line}: ignoring extra text after ENDIF"));
            }
            let here = ops.len();
            if let Some(Op::If(rule)) = ops.get_mut(open) {
                rule.endif = Some(here);
            }
            ops.push(Op::Endif);
        } else {
            errors.push(format!(
                "{file}:{line}: unrecognized request: \"{}\"",
                String::from_utf8_lossy(p)
            ));
        }
    }
    while let Some(open) = if_stack.pop() {
        if let Some(Op::If(rule)) = ops.get(open) {
            warnings.push(format!("{file}:{}: IF has no matching ENDIF", rule.line));
        }
    }
    Parsed {
        ops,
        errors,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(t: &str) -> Vec<(String, usize)> {
        let mut w = Vec::new();
        logical_lines(t.as_bytes(), "f", &mut w)
            .into_iter()
            .map(|(b, n)| (String::from_utf8(b).unwrap(), n))
            .collect()
    }

    #[test]
    fn readllines_semantics() {
        assert_eq!(
            lines("# c\n/^a/ REJECT\n  x\n\n/b/ OK  \r\n  # note\n\tmore\n"),
            [
                ("/^a/ REJECT  x".to_string(), 2),
                ("/b/ OK  \r\tmore".to_string(), 5)
            ]
        );
        let mut w = Vec::new();
        let l = logical_lines(b"  lead\n  cont\n/a/ OK\n", "f", &mut w);
        assert_eq!(l.len(), 1);
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("f:1: logical line must not start with whitespace"));
    }
}
