//! The one `Received:` header mx2 adds (RFC 5321 §4.4, protocol names per RFC 3848).

use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;

/// What the trace line says about the session.
pub struct Trace<'a> {
    pub helo: &'a str,
    pub client_ip: std::net::IpAddr,
    pub hostname: &'a str,
    pub esmtp: bool,
    pub tls: bool,
    pub smtputf8: bool,
    pub queue_id: &'a str,
    /// Named in a `for` clause only when there is exactly one recipient (privacy, as Postfix).
    pub single_rcpt: Option<&'a str>,
}

/// RFC 3848 `with` keyword.
fn protocol(t: &Trace<'_>) -> &'static str {
    match (t.smtputf8, t.esmtp, t.tls) {
        (true, _, false) => "UTF8SMTP",
        (true, _, true) => "UTF8SMTPS",
        (false, true, false) => "ESMTP",
        (false, true, true) => "ESMTPS",
        (false, false, false) => "SMTP",
        (false, false, true) => "SMTPS",
    }
}

/// The header, folded like Postfix's, CRLF-terminated.
pub fn header(t: &Trace<'_>) -> Vec<u8> {
    let now = OffsetDateTime::now_utc();
    let date = now
        .format(&Rfc2822)
        .unwrap_or_else(|_| now.unix_timestamp().to_string());
    let helo = sanitize(t.helo);
    let ip = match t.client_ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("IPv6:{v6}"),
        },
    };
    let mut h = format!(
        "Received: from {helo} (unknown [{ip}])\r\n\tby {} (mx2) with {} id {}",
        t.hostname,
        protocol(t),
        t.queue_id
    );
    if let Some(r) = t.single_rcpt {
        h.push_str(&format!("\r\n\tfor <{}>", sanitize(r)));
    }
    h.push_str(&format!("; {date}\r\n"));
    h.into_bytes()
}

/// Keeps a client-supplied word from breaking the header's structure.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || c == '(' || c == ')' {
                '_'
            } else {
                c
            }
        })
        .take(255)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let h = header(&Trace {
            helo: "client.example",
            client_ip: "127.0.0.1".parse().unwrap(),
            hostname: "mx2.example.net",
            esmtp: true,
            tls: true,
            smtputf8: false,
            queue_id: "0123456789AB",
            single_rcpt: Some("alice@example.jp"),
        });
        let s = String::from_utf8(h).unwrap();
        assert!(s.starts_with("Received: from client.example (unknown [127.0.0.1])\r\n\tby mx2.example.net (mx2) with ESMTPS id 0123456789AB\r\n\tfor <alice@example.jp>; "), "{s}");
        assert!(s.ends_with("\r\n"));
        assert_eq!(s.matches("\r\n").count(), 3);
    }
}
