//! SMTP command lines: verbs, paths and ESMTP parameters (RFC 5321 §4.1).
//!
//! Parsing is separate from policy: this module says what the client asked
//! for; `address` decides whether mx2 will take it.

/// One parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail {
        path: String,
        params: Vec<Param>,
    },
    Rcpt {
        path: String,
        params: Vec<Param>,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Etrn(String),
    StartTls,
    /// Known but not offered (AUTH, BDAT, …): answered 502.
    NotImplemented(String),
    Unknown(String),
    /// Recognised verb, malformed arguments; the text is the reply detail.
    Syntax(&'static str),
}

/// An ESMTP parameter `KEY[=VALUE]`, key upper-cased.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Param {
    pub key: String,
    pub value: Option<String>,
}

/// Parses one command line (without its line ending).
pub fn parse(line: &[u8]) -> Command {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches([' ', '\t']);
    let (verb, rest) = match text.find(' ') {
        Some(i) => (&text[..i], text[i + 1..].trim_start()),
        None => (text, ""),
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" if rest.is_empty() => Command::Syntax("Syntax: EHLO hostname"),
        "HELO" if rest.is_empty() => Command::Syntax("Syntax: HELO hostname"),
        "EHLO" => Command::Ehlo(rest.to_string()),
        "HELO" => Command::Helo(rest.to_string()),
        "MAIL" => match strip_keyword(rest, "FROM:") {
            Some(arg) => match split_path(arg) {
                Some((path, params)) => Command::Mail { path, params },
                None => Command::Syntax("Syntax: MAIL FROM:<address>"),
            },
            None => Command::Syntax("Syntax: MAIL FROM:<address>"),
        },
        "RCPT" => match strip_keyword(rest, "TO:") {
            Some(arg) => match split_path(arg) {
                Some((path, params)) => Command::Rcpt { path, params },
                None => Command::Syntax("Syntax: RCPT TO:<address>"),
            },
            None => Command::Syntax("Syntax: RCPT TO:<address>"),
        },
        "DATA" if rest.is_empty() => Command::Data,
        "DATA" => Command::Syntax("Syntax: DATA"),
        "RSET" if rest.is_empty() => Command::Rset,
        "RSET" => Command::Syntax("Syntax: RSET"),
        "NOOP" => Command::Noop,
        "QUIT" => Command::Quit,
        "VRFY" => Command::Vrfy,
        "ETRN" if rest.is_empty() => Command::Syntax("Syntax: ETRN domain"),
        "ETRN" => Command::Etrn(rest.to_string()),
        "STARTTLS" if rest.is_empty() => Command::StartTls,
        "STARTTLS" => Command::Syntax("Syntax: STARTTLS"),
        "AUTH" | "BDAT" | "EXPN" | "TURN" | "ATRN" | "HELP" => {
            Command::NotImplemented(verb.to_ascii_uppercase())
        }
        _ => Command::Unknown(verb.to_string()),
    }
}

/// `FROM:` / `TO:` case-insensitively, allowing the space Postfix allows after the colon.
fn strip_keyword<'a>(s: &'a str, kw: &str) -> Option<&'a str> {
    if s.get(..kw.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(kw))
    {
        Some(s[kw.len()..].trim_start())
    } else {
        None
    }
}

/// Splits `<path> PARAMS…`; tolerates a path without brackets as Postfix does.
fn split_path(arg: &str) -> Option<(String, Vec<Param>)> {
    let (path, rest) = if let Some(stripped) = arg.strip_prefix('<') {
        // The path ends at the first '>' outside a quoted string.
        let mut quoted = false;
        let mut escaped = false;
        let mut end = None;
        for (i, c) in stripped.char_indices() {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '>' if !quoted => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end?;
        (stripped[..end].to_string(), &stripped[end + 1..])
    } else {
        match arg.find(' ') {
            Some(i) => (arg[..i].to_string(), &arg[i..]),
            None => (arg.to_string(), ""),
        }
    };
    if !rest.is_empty() && !rest.starts_with(' ') {
        return None;
    }
    let mut params = Vec::new();
    for p in rest.split(' ').filter(|p| !p.is_empty()) {
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (p, None),
        };
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return None;
        }
        params.push(Param {
            key: k.to_ascii_uppercase(),
            value: v,
        });
    }
    Some((path, params))
}

/// Decodes RFC 3461 xtext (`+XX` hex escapes). `None` if malformed.
pub fn xtext_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = s.get(i + 1..i + 3)?;
                if !hex
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c if (b'!'..=b'~').contains(&c) && c != b'=' => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// `ORCPT=addr-type;xtext` (RFC 3461 §4.2) as stored: `addr-type;address`,
/// decoded. `None` unless the type is an atom and the decoded address is
/// non-empty and free of control characters: the value is relayed, shown
/// to milters and written into DSNs, so a CR or LF in it (raw, or as
/// `+0D`/`+0A`) could smuggle a command or a header.
pub fn parse_orcpt(v: &str) -> Option<String> {
    let (kind, xtext) = v.split_once(';')?;
    if kind.is_empty() || !kind.bytes().all(is_atext) {
        return None;
    }
    let addr = xtext_decode(xtext)?;
    if addr.is_empty() || addr.chars().any(char::is_control) {
        return None;
    }
    Some(format!("{kind};{addr}"))
}

/// `ENVID=xtext` decoded; `None` if malformed, longer than 100 bytes or
/// holding a control character (RFC 3461 §4.4: printable US-ASCII).
pub fn parse_envid(v: &str) -> Option<String> {
    xtext_decode(v).filter(|d| d.len() <= 100 && !d.chars().any(char::is_control))
}

/// RFC 5322 `atext`: the characters of an atom.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// Encodes a value as xtext for passing a DSN parameter on.
pub fn xtext_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if (b'!'..=b'~').contains(&c) && c != b'+' && c != b'=' {
            out.push(c as char);
        } else {
            out.push_str(&format!("+{c:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs() {
        assert_eq!(
            parse(b"EHLO client.example"),
            Command::Ehlo("client.example".into())
        );
        assert_eq!(parse(b"ehlo"), Command::Syntax("Syntax: EHLO hostname"));
        assert_eq!(parse(b"data"), Command::Data);
        assert_eq!(parse(b"QUIT"), Command::Quit);
        assert_eq!(parse(b"VRFY root"), Command::Vrfy);
        assert_eq!(
            parse(b"ETRN example.jp"),
            Command::Etrn("example.jp".into())
        );
        assert_eq!(parse(b"XYZZY"), Command::Unknown("XYZZY".into()));
        assert_eq!(
            parse(b"AUTH PLAIN x"),
            Command::NotImplemented("AUTH".into())
        );
    }

    #[test]
    fn mail_with_params() {
        let c = parse(b"MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=x+2By");
        match c {
            Command::Mail { path, params } => {
                assert_eq!(path, "a@b.example");
                assert_eq!(params.len(), 4);
                assert_eq!(params[0].key, "SIZE");
                assert_eq!(params[0].value.as_deref(), Some("100"));
                assert_eq!(params[3].value.as_deref(), Some("x+2By"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(b"MAIL FROM:<>"), Command::Mail { path, .. } if path.is_empty()));
        assert!(matches!(parse(b"mail from: <a@b>"), Command::Mail { path, .. } if path == "a@b"));
        assert!(matches!(parse(b"MAIL TO:<a@b>"), Command::Syntax(_)));
        assert!(matches!(parse(b"MAIL FROM:<a@b"), Command::Syntax(_)));
        // A multi-byte character where the keyword should end (fuzzing).
        assert!(matches!(parse(b"RCPT TO\xae:<a@b>"), Command::Syntax(_)));
        assert!(matches!(
            parse("MAIL FROMé<a@b>".as_bytes()),
            Command::Syntax(_)
        ));
    }

    #[test]
    fn rcpt_quoted_gt() {
        match parse(b"RCPT TO:<\"a>b\"@example.jp> NOTIFY=NEVER") {
            Command::Rcpt { path, params } => {
                assert_eq!(path, "\"a>b\"@example.jp");
                assert_eq!(params[0].key, "NOTIFY");
            }
            other => panic!("{other:?}"),
        }
    }

    /// Regression (issue 16): control characters in ORCPT reached the
    /// primary and the milters.
    #[test]
    fn orcpt_needs_an_atom_and_no_controls() {
        assert_eq!(
            parse_orcpt("rfc822;a+2Bb@example.jp").as_deref(),
            Some("rfc822;a+b@example.jp")
        );
        assert_eq!(
            parse_orcpt("utf-8;b@example.jp").as_deref(),
            Some("utf-8;b@example.jp")
        );
        assert_eq!(parse_orcpt("rfc822\rRSET\r;u@x"), None);
        assert_eq!(parse_orcpt("rfc 822;u@x"), None);
        assert_eq!(parse_orcpt(";u@x"), None);
        assert_eq!(parse_orcpt("rfc822;u@x+0D+0ARSET"), None);
        assert_eq!(parse_orcpt("rfc822;u@x+0ARSET"), None);
        assert_eq!(parse_orcpt("rfc822;u+00@x"), None);
        assert_eq!(parse_orcpt("rfc822;u+1B[2J@x"), None);
        assert_eq!(parse_orcpt("rfc822;u+C2+9B@x"), None); // C1 CSI
        assert_eq!(parse_orcpt("rfc822;"), None);
        assert_eq!(parse_orcpt("rfc822"), None);
        assert_eq!(parse_envid("a+2Bb").as_deref(), Some("a+b"));
        assert_eq!(parse_envid("a+0D+0Ab"), None);
        assert_eq!(parse_envid(&"x".repeat(101)), None);
    }

    #[test]
    fn xtext_round_trip() {
        assert_eq!(
            xtext_decode("rfc822;a+2Bb@example.jp").as_deref(),
            Some("rfc822;a+b@example.jp")
        );
        assert_eq!(xtext_decode("bad+zz"), None);
        assert_eq!(xtext_decode("a=b"), None);
        let s = "rfc822;a+b=c@例.jp";
        assert_eq!(xtext_decode(&xtext_encode(s)).as_deref(), Some(s));
    }
}
