//! Next hops (`[host]:port`, `host`, `[ipv6:…]`) and the `transport:nexthop`
//! result of a table entry.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::domain::{is_space, normalize_domain};

/// Where to connect: a host name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A host name in lower-case ASCII (IDNs as A-labels).
    Name(String),
    /// An IP address (only ever written in brackets).
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// One next-hop destination of an SMTP route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// Host name or address.
    pub host: Host,
    /// TCP port; `None` = 25.
    pub port: Option<u16>,
    /// `true` for `host` / `host:port` (look up the MX records of `host`);
    /// `false` for the bracketed forms (connect to the A/AAAA of the host, or
    /// to the address). Always `false` for IP addresses.
    pub mx_lookup: bool,
}

impl fmt::Display for NextHop {
    /// Postfix syntax: `[host]`, `[host]:port`, `host`, `host:port`,
    /// `[192.0.2.1]`, `[ipv6:2001:db8::1]:25`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, self.mx_lookup) {
            (Host::Name(n), true) => f.write_str(n)?,
            (Host::Name(n), false) => write!(f, "[{n}]")?,
            (Host::Ip(IpAddr::V4(a)), _) => write!(f, "[{a}]")?,
            (Host::Ip(IpAddr::V6(a)), _) => write!(f, "[ipv6:{a}]")?,
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// Transport names mx2 accepts: both are SMTP clients in Postfix
/// (`relay` is the smtp(8) client under another name).
const SMTP_TRANSPORTS: [&str; 2] = ["smtp", "relay"];

/// Postfix services (master.cf names) that are not SMTP clients; used by
/// [`parse_nexthop_list`] to tell `local:` (a transport) from `mail:25`
/// (a host and port).
const OTHER_TRANSPORTS: &[&str] = &[
    "local",
    "virtual",
    "lmtp",
    "error",
    "retry",
    "discard",
    "pipe",
    "uucp",
    "bsmtp",
    "hold",
    "defer",
    "bounce",
    "trace",
    "verify",
    "flush",
    "proxymap",
    "proxywrite",
    "scache",
    "showq",
    "cleanup",
    "qmgr",
    "pickup",
    "rewrite",
    "anvil",
    "tlsmgr",
    "postlog",
    "maildrop",
    "cyrus",
    "dovecot",
    "ifmail",
    "mailman",
    "spamassassin",
    "amavis",
    "amavisfeed",
    "smtp-amavis",
    "dfilter",
];

fn parse_port(s: &str, hop: &str) -> Result<Option<u16>, String> {
    if s.is_empty() {
        // Postfix: `[host]:` and `host:` mean the default port.
        return Ok(None);
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(Some(n as u16)),
            _ => Err(format!(
                "bad port \"{s}\" in next hop \"{hop}\" (must be 1-65535)"
            )),
        };
    }
    // Postfix resolves service names with getservbyname(3); the SMTP ones:
    let named = match s {
        "smtp" => Some(25),
        "submission" => Some(587),
        "submissions" | "smtps" => Some(465),
        _ => None,
    };
    match named {
        Some(p) => Ok(Some(p)),
        None => Err(format!(
            "bad port \"{s}\" in next hop \"{hop}\" (must be 1-65535)"
        )),
    }
}

fn host_name(name: &str, hop: &str) -> Result<String, String> {
    normalize_domain(name).map_err(|e| format!("bad host \"{name}\" in next hop \"{hop}\": {e}"))
}

/// Parses one next hop: `[host]`, `[host]:port`, `host`, `host:port`,
/// `[192.0.2.1]`, `[ipv6:2001:db8::1]:25`, `[2001:db8::1]`.
pub fn parse_nexthop(hop: &str) -> Result<NextHop, String> {
    if hop.is_empty() {
        return Err("empty next hop".to_string());
    }
    if let Some(after) = hop.strip_prefix('[') {
        let Some(close) = after.find(']') else {
            return Err(format!("bad next hop \"{hop}\": missing \"]\""));
        };
        let inner = &after[..close];
        let rest = &after[close + 1..];
        let port = if rest.is_empty() {
            None
        } else if let Some(p) = rest.strip_prefix(':') {
            parse_port(p, hop)?
        } else {
            return Err(format!("bad next hop \"{hop}\": garbage after \"]\""));
        };
        if inner.is_empty() {
            return Err(format!("bad next hop \"{hop}\": missing host"));
        }
        let v6 = inner
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("ipv6:"))
            .map(|_| &inner[5..]);
        let host = if let Some(addr) = v6 {
            match addr.parse::<Ipv6Addr>() {
                Ok(a) => Host::Ip(IpAddr::V6(a)),
                Err(_) => {
                    return Err(format!(
                        "bad next hop \"{hop}\": malformed IPv6 address \"{addr}\""
                    ))
                }
            }
        } else if inner.contains(':') {
            match inner.parse::<Ipv6Addr>() {
                Ok(a) => Host::Ip(IpAddr::V6(a)),
                Err(_) => {
                    return Err(format!(
                        "bad next hop \"{hop}\": malformed IPv6 address \"{inner}\" \
                         (a port goes after the bracket: [host]:port)"
                    ))
                }
            }
        } else if let Ok(a) = inner.parse::<Ipv4Addr>() {
            Host::Ip(IpAddr::V4(a))
        } else if inner.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(format!(
                "bad next hop \"{hop}\": malformed IPv4 address \"{inner}\""
            ));
        } else {
            Host::Name(host_name(inner, hop)?)
        };
        return Ok(NextHop {
            host,
            port,
            mx_lookup: false,
        });
    }
    if hop.contains(']') {
        return Err(format!("bad next hop \"{hop}\": \"]\" without \"[\""));
    }
    let (name, port) = match hop.rsplit_once(':') {
        Some((h, p)) => (h, parse_port(p, hop)?),
        None => (hop, None),
    };
    if name.is_empty() {
        return Err(format!("bad next hop \"{hop}\": missing host"));
    }
    if name.contains(':') || hop.parse::<Ipv6Addr>().is_ok() {
        return Err(format!(
            "bad next hop \"{hop}\": an IPv6 address must be in brackets, as [ipv6:ADDRESS]"
        ));
    }
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return Err(format!(
            "bad next hop \"{hop}\": an IP address must be in brackets, as [{ip}]"
        ));
    }
    Ok(NextHop {
        host: Host::Name(host_name(name, hop)?),
        port,
        mx_lookup: true,
    })
}

/// Splits a nexthop field into its destinations: separated by commas and/or
/// whitespace (Postfix 3.5 and later), empty elements skipped.
fn parse_hops(field: &str, errors: &mut Vec<String>) -> Vec<NextHop> {
    let mut hops = Vec::new();
    for tok in field.split(|c: char| c == ',' || is_space(c)) {
        if tok.is_empty() {
            continue;
        }
        if tok.starts_with('#') {
            errors.push(
                "\"#\" inside an entry: comments must be on their own line (as in Postfix)"
                    .to_string(),
            );
            break;
        }
        match parse_nexthop(tok) {
            Ok(h) => hops.push(h),
            Err(e) => errors.push(e),
        }
    }
    hops
}

/// A Postfix service name that is not an SMTP client (refused, never read as a host).
fn is_other_transport(t: &str) -> bool {
    OTHER_TRANSPORTS.contains(&t.to_ascii_lowercase().as_str())
        || t.eq_ignore_ascii_case("smtp")
        || t.eq_ignore_ascii_case("relay")
}

fn looks_like_host(s: &str) -> bool {
    s.contains('.') || s.contains('[') || s.contains(']')
}

/// Parses the result column of a table entry as Postfix does: the text
/// before the first `:` is the transport, the rest the nexthop; without a
/// `:`, a bare `smtp`/`relay` is a transport with an empty nexthop. Unlike
/// Postfix, and as SPEC §4 (`[transport:]NEXTHOP`) promises, a value whose
/// "transport" is no known service but which parses as a next-hop list is
/// that next-hop list.
///
/// Returns the transport (`""` normalised to `"smtp"`) and the next hops
/// (empty = the recipient domain itself, with MX lookup). Errors are
/// messages without a `FILE:LINE:` prefix; there may be several.
pub(crate) fn parse_result(value: &str) -> Result<(String, Vec<NextHop>), Vec<String>> {
    let (transport, nexthop) = match value.split_once(':') {
        Some((t, n)) => (t, n),
        None => (value, ""),
    };
    let mut errors = Vec::new();
    if !transport.is_empty()
        && !SMTP_TRANSPORTS.contains(&transport)
        && !is_other_transport(transport)
    {
        // SPEC §4: the transport is optional (`example.jp [primary]`,
        // `example.jp primary:2525`). Postfix would read the text before the
        // first ':' as a transport name; an admin writing a bare next hop
        // means the next hop, so take it as one when it parses as one.
        let hops = parse_hops(value, &mut errors);
        if errors.is_empty() && !hops.is_empty() {
            return Ok(("smtp".to_string(), hops));
        }
        errors.clear();
    }
    if !transport.is_empty() && !SMTP_TRANSPORTS.contains(&transport) {
        let msg = if looks_like_host(transport) {
            format!(
                "result \"{value}\" has no transport: Postfix reads \"{transport}\" as a \
                 transport name; write \"smtp:{value}\""
            )
        } else if transport.eq_ignore_ascii_case("smtp") || transport.eq_ignore_ascii_case("relay")
        {
            format!(
                "unsupported transport \"{transport}\" (transport names are case-sensitive: \
                 use \"{}\")",
                transport.to_ascii_lowercase()
            )
        } else {
            format!(
                "unsupported transport \"{transport}\" (mx2 relays by SMTP only: use \"smtp:\" \
                 or \"relay:\")"
            )
        };
        return Err(vec![msg]);
    }
    let transport = if transport.is_empty() {
        "smtp"
    } else {
        transport
    };
    let hops = parse_hops(nexthop, &mut errors);
    if errors.is_empty() && hops.is_empty() && !nexthop.trim_matches(is_space).is_empty() {
        errors.push(format!("empty next-hop list in \"{value}\""));
    }
    if errors.is_empty() {
        Ok((transport.to_string(), hops))
    } else {
        Err(errors)
    }
}

/// Validates a next-hop value as given on the command line (`mx2 transport
/// add DOMAIN NEXTHOP`), with or without a transport prefix:
/// `[primary.example.net]`, `smtp:[primary.example.net]:2525`,
/// `relay:mx.example.net`, `[a.example], [b.example]`, `localhost:2525`,
/// `smtp:` (empty nexthop: MX lookup of the recipient domain).
///
/// A prefix before the first `:` is taken as a transport when it is empty,
/// `smtp`, `relay` or the name of a known non-SMTP Postfix service (which is
/// refused); otherwise the whole value is a next-hop list (so `mail:25` is
/// host `mail`, port 25). A bare `smtp` or `relay` is a transport with an
/// empty nexthop, as in Postfix.
///
/// Returns the transport (`"smtp"` when none was given) and the next hops;
/// an empty list means "MX lookup of the recipient domain".
pub fn parse_nexthop_list(value: &str) -> Result<(String, Vec<NextHop>), String> {
    let v = value.trim_matches(is_space);
    if v.is_empty() {
        return Err("empty next hop (use \"smtp:\" for an MX lookup of the domain itself)".into());
    }
    let prefix = v.split_once(':').map(|(p, _)| p);
    let has_transport = match prefix {
        Some(p) => {
            p.is_empty()
                || SMTP_TRANSPORTS.contains(&p)
                || OTHER_TRANSPORTS.contains(&p.to_ascii_lowercase().as_str())
                || p.eq_ignore_ascii_case("smtp")
                || p.eq_ignore_ascii_case("relay")
        }
        None => SMTP_TRANSPORTS.contains(&v),
    };
    let result = if has_transport {
        parse_result(v)
    } else {
        let mut errors = Vec::new();
        let hops = parse_hops(v, &mut errors);
        if errors.is_empty() && hops.is_empty() {
            errors.push(format!("no next hop in \"{v}\""));
        }
        if errors.is_empty() {
            Ok(("smtp".to_string(), hops))
        } else {
            Err(errors)
        }
    };
    result.map_err(|e| e.join("; "))
}

/// Formats a result column canonically: `smtp:[a.example]:25, [b.example]`.
pub(crate) fn format_result(transport: &str, hops: &[NextHop]) -> String {
    let list: Vec<String> = hops.iter().map(|h| h.to_string()).collect();
    format!("{transport}:{}", list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str, port: Option<u16>, mx: bool) -> NextHop {
        NextHop {
            host: Host::Name(n.into()),
            port,
            mx_lookup: mx,
        }
    }

    #[test]
    fn hops() {
        assert_eq!(
            parse_nexthop("[Primary.Example.net]"),
            Ok(name("primary.example.net", None, false))
        );
        assert_eq!(
            parse_nexthop("[primary.example.net]:2525"),
            Ok(name("primary.example.net", Some(2525), false))
        );
        assert_eq!(
            parse_nexthop("mx.example.net:26"),
            Ok(name("mx.example.net", Some(26), true))
        );
        assert_eq!(
            parse_nexthop("[mx.example.net]:"),
            Ok(name("mx.example.net", None, false))
        );
        assert_eq!(
            parse_nexthop("[mx.example.net]:submission"),
            Ok(name("mx.example.net", Some(587), false))
        );
        let v6 = parse_nexthop("[IPv6:2001:db8::1]:25");
        assert_eq!(
            v6,
            Ok(NextHop {
                host: Host::Ip("2001:db8::1".parse().unwrap()),
                port: Some(25),
                mx_lookup: false
            })
        );
        assert_eq!(
            parse_nexthop("[2001:db8::1]").map(|h| h.to_string()),
            Ok("[ipv6:2001:db8::1]".to_string())
        );
        for bad in [
            "[a.example",
            "[a.example]x",
            "[a.example]:0",
            "[a.example]:65536",
            "[a.example]:25x",
            "a.example:",
            "192.0.2.1",
            "2001:db8::1",
            "[ipv6:zz]",
            "[192.0.2.300]",
            "[]",
            "-a.example",
            "a.example]",
        ] {
            if bad == "a.example:" {
                // `host:` = default port, as in Postfix.
                assert!(parse_nexthop(bad).is_ok());
                continue;
            }
            assert!(parse_nexthop(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn results() {
        assert_eq!(parse_result("smtp:").map(|r| r.1.len()), Ok(0));
        assert_eq!(parse_result(":").map(|r| r.0), Ok("smtp".to_string()));
        assert_eq!(parse_result("smtp").map(|r| r.1.len()), Ok(0));
        assert_eq!(
            parse_result("relay:[a.example]").map(|r| r.0),
            Ok("relay".into())
        );
        assert_eq!(
            parse_result("smtp:[a.example]:25, [b.example] c.example,,d.example")
                .map(|r| r.1.len()),
            Ok(4)
        );
        assert!(parse_result("local:").is_err());
        assert!(parse_result("SMTP:[a.example]").is_err());
        // SPEC §4: the transport is optional.
        assert_eq!(parse_result("[a.example]").map(|r| r.1.len()), Ok(1));
        assert_eq!(
            parse_result("a.example:2525").map(|r| r.1[0].port),
            Ok(Some(2525))
        );
        assert!(parse_result("lmtp:unix:private/x").is_err());
        assert!(parse_result("smtp:,").is_err());
        assert_eq!(
            parse_result("smtp:[a.example]x, [b").map_err(|e| e.len()),
            Err(2)
        );
    }

    #[test]
    fn cli_values() {
        let t = |v: &str| parse_nexthop_list(v).map(|(t, h)| format_result(&t, &h));
        assert_eq!(t("[a.example]").as_deref(), Ok("smtp:[a.example]"));
        assert_eq!(t("smtp:[a.example]").as_deref(), Ok("smtp:[a.example]"));
        assert_eq!(t("relay:a.example:26").as_deref(), Ok("relay:a.example:26"));
        assert_eq!(t("localhost:2525").as_deref(), Ok("smtp:localhost:2525"));
        assert_eq!(
            t("[ipv6:2001:DB8::1]:25,[b.example]").as_deref(),
            Ok("smtp:[ipv6:2001:db8::1]:25, [b.example]")
        );
        assert_eq!(t("smtp:").as_deref(), Ok("smtp:"));
        assert_eq!(t("smtp").as_deref(), Ok("smtp:"));
        assert_eq!(t(":[a.example]").as_deref(), Ok("smtp:[a.example]"));
        assert!(t("local:").is_err());
        assert!(t("error:5.1.1 no").is_err());
        assert!(t("").is_err());
        assert!(t(",").is_err());
        assert!(t("SMTP:[a.example]").is_err());
    }
}
