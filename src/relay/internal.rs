//! No bounces to internal hosts.
//!
//! A bounce goes wherever the (forged) sender says: `<x@[127.0.0.77]>`, or a
//! domain whose MX or A record an attacker points at `10.0.0.5` or
//! `127.0.0.1`, would make mx2 carry a DSN — with the whole original
//! message under `RET=FULL` — into the network it sits in (SSRF through
//! the mail system). So for mail mx2 generates, an address that comes from
//! DNS or from the sender's address literal is skipped when it is
//! loopback, private (RFC 1918, RFC 6598, IPv6 ULA), link-local,
//! multicast, broadcast or unspecified, with a log line. What the transport
//! map names itself (`[10.0.0.5]`, or a host name there that resolves to
//! one) is the admin's choice and always used: that is how LANs and tests
//! route. With no usable address left the recipient fails as having no
//! route (5.4.4): retrying cannot make a forged sender's DNS honest.
//!
//! Received mail is not screened: it goes only where the transport map
//! routes its domain, which is the admin's own routing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use transport::{Host, TransportMap};

use super::outcome::{Class, RcptResult};
use super::route::{Candidate, Hop};

/// Whether `ip` is an address mail mx2 generates must not go to unless the
/// transport map names it.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => v4_internal(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => v4_internal(v4),
            None => v6_internal(a),
        },
    }
}

fn v4_internal(a: Ipv4Addr) -> bool {
    let o = a.octets();
    a.is_unspecified()
        || o[0] == 0 // "this network"
        || a.is_loopback()
        || a.is_private()
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10, RFC 6598
        || a.is_link_local()
        || a.is_multicast()
        || a.is_broadcast()
}

fn v6_internal(a: Ipv6Addr) -> bool {
    let s = a.segments();
    a.is_unspecified()
        || a.is_loopback()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        || a.is_multicast()
}

/// Whether some transport-map next hop is `[ip]` (any port).
pub fn named_in_map(map: &TransportMap, ip: IpAddr) -> bool {
    map.entries()
        .iter()
        .flat_map(|r| r.nexthops.iter())
        .any(|h| h.host == Host::Ip(ip))
}

/// The candidates of `hop` that may be used: all of them unless the hop is
/// screened (`Hop::public_only`), else the non-internal ones, each skipped
/// one logged; none left is a permanent "no route".
pub fn screen(hop: &Hop, list: Vec<Candidate>) -> Result<Vec<Candidate>, RcptResult> {
    if !hop.public_only {
        return Ok(list);
    }
    let before = list.len();
    let kept: Vec<Candidate> = list
        .into_iter()
        .filter(|c| {
            let internal = is_internal(c.addr.ip());
            if internal {
                tracing::warn!(
                    "{}[{}]: internal address skipped: mail mx2 generates goes there only if the transport map names it",
                    c.name,
                    c.addr.ip()
                );
            }
            !internal
        })
        .collect();
    if kept.is_empty() && before > 0 {
        return Err(RcptResult::local(
            Class::Perm,
            "5.4.4",
            format!(
                "no route to {}: its only addresses are internal (loopback, private, link-local, multicast or unspecified)",
                hop.host
            ),
        ));
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses() {
        for a in [
            "127.0.0.1",
            "127.0.0.77",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(a.parse().unwrap()), "{a}");
        }
        for a in [
            "192.0.2.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2001:db8::1",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn the_map_names_addresses() {
        let m = TransportMap::parse(
            "example.jp smtp:[127.0.0.1]:2526\nlan.example smtp:[ipv6:fd00::5], relay.example\n",
            "t",
        )
        .unwrap();
        assert!(named_in_map(&m, "127.0.0.1".parse().unwrap()));
        assert!(named_in_map(&m, "fd00::5".parse().unwrap()));
        assert!(!named_in_map(&m, "127.0.0.77".parse().unwrap()));
    }

    #[test]
    fn screening() {
        let c = |name: &str, ip: &str| Candidate {
            name: name.into(),
            addr: std::net::SocketAddr::new(ip.parse().unwrap(), 25),
            nexthop: "evil.test".into(),
        };
        let mut hop = Hop {
            host: Host::Name("evil.test".into()),
            port: 25,
            mx: true,
            implicit: true,
            public_only: true,
        };
        let kept = screen(&hop, vec![c("a", "127.0.0.1"), c("b", "192.0.2.1")]).unwrap();
        assert_eq!(kept, vec![c("b", "192.0.2.1")]);
        let e = screen(&hop, vec![c("a", "10.0.0.1")]).unwrap_err();
        assert_eq!((e.class, e.dsn.as_str()), (Class::Perm, "5.4.4"));
        hop.public_only = false;
        assert_eq!(screen(&hop, vec![c("a", "10.0.0.1")]).unwrap().len(), 1);
    }
}
