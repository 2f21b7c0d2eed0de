//! In-place editing of the table text that keeps every untouched byte.

use std::collections::HashMap;

use crate::domain::{is_space, parse_pattern};
use crate::lines::{content, logical_lines, physical_lines, split_key_value, Logical, Physical};
use crate::nexthop::{format_result, parse_nexthop_list};
use crate::TransportMap;

/// Adds `DOMAIN  transport:nexthop` at the end of the table text and returns
/// the new text. Everything already in `text` is kept byte for byte.
///
/// * `domain` is a pattern: `example.jp`, `.example.jp` or `*` (a trailing
///   dot is dropped; IDNs may be given as U-labels or A-labels).
/// * `value` is checked with [`parse_nexthop_list`] (so the `smtp:` prefix is
///   optional) and written canonically, e.g. `smtp:[primary.example.net]`.
/// * The separator between pattern and value follows the file's existing
///   style (one space, one tab, or padding to the column the values are
///   aligned on); a single tab when there is nothing to copy.
/// * The line ending follows the file (LF or CRLF); if the file does not end
///   in a newline, one is added before the new line and the file still ends
///   without one.
///
/// Refuses a pattern already present (`DOMAIN is already in FILE:LINE`,
/// compared after normalisation) and a table that has errors before or
/// after the edit.
pub fn add_entry(text: &str, file: &str, domain: &str, value: &str) -> Result<String, String> {
    let domain = domain.trim_matches(is_space);
    let pattern = parse_pattern(domain).map_err(|e| format!("bad domain \"{domain}\": {e}"))?;
    let (transport, hops) = parse_nexthop_list(value)?;
    let key = pattern.key();

    let phys = physical_lines(text);
    let logical = logical_lines(text, &phys);
    if let Some(l) = find(&logical, &key).first() {
        return Err(format!("{domain} is already in {file}:{}", l.first + 1));
    }
    if let Err(e) = TransportMap::parse(text, file) {
        return Err(format!(
            "{file} has errors; fix them first: {}",
            e.errors.join("; ")
        ));
    }

    let written = if domain == "*" {
        domain
    } else {
        domain.strip_suffix('.').unwrap_or(domain)
    };
    let sep = separator(text, &phys, &logical, written.chars().count());
    let line = format!("{written}{sep}{}", format_result(&transport, &hops));
    let eol = line_ending(text);
    let mut out = String::with_capacity(text.len() + line.len() + 2);
    out.push_str(text);
    if text.is_empty() || text.ends_with('\n') {
        out.push_str(&line);
        out.push_str(eol);
    } else {
        out.push_str(eol);
        out.push_str(&line);
    }
    check(&out, file)?;
    Ok(out)
}

/// Removes the entry for `domain` (a pattern as for [`add_entry`], compared
/// after normalisation) and returns the new text: its first line, its
/// continuation lines and any comment or blank lines between those go;
/// every other byte stays. If `text` did not end in a newline, neither does
/// the result.
///
/// Refuses a pattern that is not in the table (`DOMAIN is not in FILE`) and
/// a result that would not parse. Should a table hold the pattern more than
/// once (an error), every copy is removed.
pub fn remove_entry(text: &str, file: &str, domain: &str) -> Result<String, String> {
    let domain = domain.trim_matches(is_space);
    let pattern = parse_pattern(domain).map_err(|e| format!("bad domain \"{domain}\": {e}"))?;
    let phys = physical_lines(text);
    let logical = logical_lines(text, &phys);
    let hits = find(&logical, &pattern.key());
    if hits.is_empty() {
        return Err(format!("{domain} is not in {file}"));
    }
    let mut out = String::with_capacity(text.len());
    for (i, p) in phys.iter().enumerate() {
        if !hits.iter().any(|l| (l.first..=l.last).contains(&i)) {
            out.push_str(&text[p.start..p.end]);
        }
    }
    if !text.ends_with('\n') && out.ends_with('\n') {
        out.pop();
        if out.ends_with('\r') {
            out.pop();
        }
    }
    check(&out, file)?;
    Ok(out)
}

fn check(text: &str, file: &str) -> Result<(), String> {
    TransportMap::parse(text, file).map(|_| ()).map_err(|e| {
        format!(
            "refusing to write {file}: the result would not parse: {}",
            e.errors.join("; ")
        )
    })
}

/// Logical lines whose pattern normalises to `key`.
fn find<'a>(logical: &'a [Logical], key: &str) -> Vec<&'a Logical> {
    logical
        .iter()
        .filter(|l| !l.orphan)
        .filter(|l| {
            let (k, _) = split_key_value(&l.text);
            parse_pattern(k).is_ok_and(|p| p.key() == key)
        })
        .collect()
}

fn line_ending(text: &str) -> &'static str {
    match text.find('\n') {
        Some(i) if text[..i].ends_with('\r') => "\r\n",
        _ => "\n",
    }
}

/// Display column reached after `s` starting at column `col` (tabs every 8).
fn advance(col: usize, s: &str) -> usize {
    s.chars().fold(
        col,
        |c, ch| if ch == '\t' { (c / 8 + 1) * 8 } else { c + 1 },
    )
}

/// The separator to put between a new pattern of `key_width` characters and
/// its value, copied from the entries already in the file.
fn separator(text: &str, phys: &[Physical], logical: &[Logical], key_width: usize) -> String {
    // (separator, column where the value starts) of each entry whose value
    // starts on its first line.
    let mut samples: Vec<(&str, usize)> = Vec::new();
    for l in logical.iter().filter(|l| !l.orphan) {
        let Some(p) = phys.get(l.first) else { continue };
        let line = content(text, p);
        let Some(k) = line.find(is_space) else {
            continue;
        };
        let rest = &line[k..];
        let sep_len = rest.len() - rest.trim_start_matches(is_space).len();
        if sep_len == rest.len() {
            continue;
        }
        let sep = &rest[..sep_len];
        if !sep.chars().all(|c| c == ' ' || c == '\t') {
            continue;
        }
        samples.push((sep, advance(advance(0, &line[..k]), sep)));
    }
    let Some(&(first_sep, first_col)) = samples.first() else {
        return "\t".to_string();
    };
    let same_col = samples.iter().all(|s| s.1 == first_col);
    if same_col && samples.iter().all(|s| !s.0.contains('\t')) {
        return " ".repeat(first_col.saturating_sub(key_width).max(1));
    }
    if same_col && samples.iter().all(|s| !s.0.contains(' ')) {
        let mut col = key_width;
        let mut tabs = 0;
        while col < first_col {
            col = advance(col, "\t");
            tabs += 1;
        }
        return "\t".repeat(tabs.max(1));
    }
    if samples.iter().all(|s| s.0 == first_sep) {
        return first_sep.to_string();
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (s, _) in &samples {
        *counts.entry(s).or_default() += 1;
    }
    let best = samples
        .iter()
        .map(|(s, _)| *s)
        .max_by_key(|s| counts.get(s).copied().unwrap_or(0));
    best.unwrap_or("\t").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separator_styles() {
        let add = |t: &str, d: &str| add_entry(t, "t", d, "[x.example]").unwrap();
        assert_eq!(
            add("a.example smtp:\nbb.example smtp:\n", "c.example"),
            "a.example smtp:\nbb.example smtp:\nc.example smtp:[x.example]\n"
        );
        assert_eq!(
            add("a.example\tsmtp:\n", "cc.example"),
            "a.example\tsmtp:\ncc.example\tsmtp:[x.example]\n"
        );
        assert_eq!(
            add("a.example       smtp:\nbb.example      smtp:\n", "c.jp"),
            "a.example       smtp:\nbb.example      smtp:\nc.jp            smtp:[x.example]\n"
        );
        assert_eq!(
            add("a.ex\t\t\tsmtp:\nbbbbbbbbbbbbbbbbb.ex\tsmtp:\n", "c.jp"),
            "a.ex\t\t\tsmtp:\nbbbbbbbbbbbbbbbbb.ex\tsmtp:\nc.jp\t\t\tsmtp:[x.example]\n"
        );
        assert_eq!(add("", "c.jp"), "c.jp\tsmtp:[x.example]\n");
        assert_eq!(
            add("# only a comment", "c.jp"),
            "# only a comment\nc.jp\tsmtp:[x.example]"
        );
        assert_eq!(
            add("a.ex smtp:\r\n", "c.jp"),
            "a.ex smtp:\r\nc.jp smtp:[x.example]\r\n"
        );
    }

    #[test]
    fn remove_keeps_the_rest() {
        let t = "# head\na.ex smtp:[a],\n# between\n  [b]\n# tail\nb.ex smtp:";
        assert_eq!(
            remove_entry(t, "t", "A.EX").unwrap(),
            "# head\n# tail\nb.ex smtp:"
        );
        assert_eq!(
            remove_entry(t, "t", "b.ex").unwrap(),
            "# head\na.ex smtp:[a],\n# between\n  [b]\n# tail"
        );
        assert_eq!(
            remove_entry(t, "t", "c.ex").unwrap_err(),
            "c.ex is not in t"
        );
        assert_eq!(
            add_entry(t, "t", "b.ex.", "smtp:").unwrap_err(),
            "b.ex. is already in t:6"
        );
    }
}
