//! Where a recipient's mail goes: transport map → destination → the
//! addresses to try, in order.
//!
//! Two steps, because they have different costs. `destination()` is a pure
//! table lookup done while scheduling; its `key` names the destination for
//! concurrency limits, dead-host tracking and backlog release (like
//! Postfix's per-nexthop queues). `Resolver::candidates()` does the DNS work
//! just before connecting.
//!
//! DNS rules (Postfix smtp(8), RFC 5321 §5.1):
//! - `[host]` → A/AAAA of host; `[ip]` → that address; `host` → MX of host.
//! - MX hosts by preference (equal preferences shuffled); every address of
//!   a host is tried before the next host.
//! - This host (`hostname`) and every MX of equal or worse preference are
//!   dropped ("loops back to myself"); if that leaves nothing, the mail
//!   bounces with 5.4.6, as in Postfix.
//! - No MX records: the domain's own A/AAAA (implicit MX).
//! - A null MX (RFC 7505) bounces with 5.1.10.
//! - A domain that does not exist bounces (5.4.4) only when it is the
//!   recipient's own domain; a name the administrator wrote in the
//!   transport map that fails to resolve defers instead: a typo in a table
//!   must not bounce a secondary's whole backlog.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use rand::seq::SliceRandom;
use transport::{Host, TransportMap};

use super::myself::Myself;
use super::outcome::{Class, RcptResult};

/// Default SMTP port.
const SMTP_PORT: u16 = 25;
/// Most addresses tried for one delivery (Postfix's smtp_mx_address_limit
/// is 5; a few more for routes with several next hops).
const MAX_CANDIDATES: usize = 10;

/// One next hop, ready to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hop {
    pub host: Host,
    pub port: u16,
    /// Look up MX records of `host` (unbracketed form).
    pub mx: bool,
    /// `host` is the recipient's own domain (empty nexthop in the table, or
    /// no table entry for a bounce): DNS "no such domain" is then final.
    pub implicit: bool,
    /// Mail mx2 made, to a place the transport map does not name: internal
    /// addresses are skipped (`internal::screen`).
    pub public_only: bool,
}

/// A destination: the ordered next hops for a set of domains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// `[primary.example]:2525,backup.example` — the scheduling key.
    pub key: String,
    pub hops: Vec<Hop>,
}

/// The destination for mail to `domain`. Received mail (`origin` `smtp`)
/// goes only where the table routes it (not via `*`); mail mx2 made itself
/// (bounces) may use `*`, and without any entry goes to the domain's MX.
pub fn destination(map: &TransportMap, domain: &str, origin: &str) -> Result<Destination, String> {
    let bounce = origin == "bounce";
    if bounce {
        if let Some(ip) = crate::domain::literal_ip(domain) {
            return Ok(make(vec![Hop {
                host: Host::Ip(ip),
                port: SMTP_PORT,
                mx: false,
                implicit: true,
                public_only: !super::internal::named_in_map(map, ip),
            }]));
        }
    }
    let route = if bounce || map.is_relay_domain(domain) {
        map.lookup(domain)
    } else {
        None
    };
    let hops = match route {
        Some(r) if !r.nexthops.is_empty() => r
            .nexthops
            .iter()
            .map(|h| Hop {
                host: h.host.clone(),
                port: h.port.unwrap_or(SMTP_PORT),
                mx: h.mx_lookup,
                implicit: false,
                public_only: false,
            })
            .collect(),
        Some(_) => vec![own_domain(domain, bounce)],
        None if bounce => vec![own_domain(domain, bounce)],
        None => {
            return Err(format!(
                "no transport map entry for domain {domain} (it is no longer relayed)"
            ))
        }
    };
    Ok(make(hops))
}

fn own_domain(domain: &str, bounce: bool) -> Hop {
    Hop {
        host: Host::Name(domain.to_string()),
        port: SMTP_PORT,
        mx: true,
        implicit: true,
        public_only: bounce,
    }
}

fn make(hops: Vec<Hop>) -> Destination {
    let key = hops
        .iter()
        .map(|h| {
            let host = match (&h.host, h.mx) {
                (Host::Name(n), true) => n.clone(),
                (Host::Name(n), false) => format!("[{n}]"),
                (Host::Ip(ip), _) => format!("[{ip}]"),
            };
            if h.port == SMTP_PORT {
                host
            } else {
                format!("{host}:{}", h.port)
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    Destination { key, hops }
}

/// One address to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Host name (for logs, `host[ip]`, and TLS), or the address itself.
    pub name: String,
    pub addr: SocketAddr,
    /// The next hop it was found for: the domain whose MX it is, or the
    /// transport map's `[host]`. `tls = "verify"` checks the certificate
    /// against this (a name from DNS alone is not trusted).
    pub nexthop: String,
}

/// Resolves destinations with hickory (system resolv.conf, or the
/// `relay.resolver` address).
pub struct Resolver {
    inner: TokioResolver,
    /// This host's name, lower-case, without a final dot.
    myname: String,
    /// This host's SMTP addresses (the same rule by address).
    me: Myself,
}

impl Resolver {
    /// A resolver that cannot be set up (no usable /etc/resolv.conf, a bad
    /// `relay.resolver`) is a start-up error: a daemon that accepts mail it
    /// can never route would only find out one deferral at a time.
    pub fn new(server: Option<&str>, myname: &str, me: Myself) -> anyhow::Result<Resolver> {
        let inner =
            build(server).map_err(|e| anyhow::anyhow!("cannot set up the DNS resolver: {e}"))?;
        Ok(Resolver {
            inner,
            myname: myname.trim_end_matches('.').to_ascii_lowercase(),
            me,
        })
    }

    /// Every address to try for `dest`, in order; or why there is none
    /// (a temporary or permanent `RcptResult`).
    pub async fn candidates(&self, dest: &Destination) -> Result<Vec<Candidate>, RcptResult> {
        let mut out: Vec<Candidate> = Vec::new();
        let mut temp: Option<RcptResult> = None;
        let mut perm: Option<RcptResult> = None;
        for hop in &dest.hops {
            match self
                .hop(hop)
                .await
                .and_then(|l| super::internal::screen(hop, l))
            {
                Ok(list) => {
                    for c in list {
                        if out.len() < MAX_CANDIDATES && !out.iter().any(|o| o.addr == c.addr) {
                            out.push(c);
                        }
                    }
                }
                Err(e) if e.class == Class::Perm => perm = perm.or(Some(e)),
                Err(e) => temp = temp.or(Some(e)),
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
        // Any temporary trouble means trying again may help.
        Err(temp
            .or(perm)
            .unwrap_or_else(|| RcptResult::local(Class::Temp, "4.4.3", "no next hop")))
    }

    async fn hop(&self, hop: &Hop) -> Result<Vec<Candidate>, RcptResult> {
        let name = match &hop.host {
            Host::Ip(ip) => {
                return Ok(vec![Candidate {
                    name: ip.to_string(),
                    addr: SocketAddr::new(*ip, hop.port),
                    nexthop: ip.to_string(),
                }])
            }
            Host::Name(n) => n.as_str(),
        };
        if !hop.mx {
            let ips = self.addresses(name, hop.implicit).await?;
            return Ok(ips
                .into_iter()
                .map(|ip| Candidate {
                    name: name.to_string(),
                    addr: SocketAddr::new(ip, hop.port),
                    nexthop: name.to_string(),
                })
                .collect());
        }
        let hosts = self.mx_hosts(name, hop.implicit).await?;
        let best_pref = hosts.first().map(|h| h.0);
        let mut found: Vec<(u16, Candidate)> = Vec::new();
        let mut first_err = None;
        for (pref, host) in hosts {
            match self.addresses(&host, false).await {
                Ok(ips) => found.extend(ips.into_iter().map(|ip| {
                    let c = Candidate {
                        name: host.clone(),
                        addr: SocketAddr::new(ip, hop.port),
                        nexthop: name.to_string(),
                    };
                    (pref, c)
                })),
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        if found.is_empty() {
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        drop_myself(name, found, best_pref, &self.me)
    }

    /// The MX host names of `domain` to try with their preferences, best
    /// first, after the loops-back-to-myself rule by name; the domain
    /// itself when it has no MX.
    async fn mx_hosts(
        &self,
        domain: &str,
        implicit: bool,
    ) -> Result<Vec<(u16, String)>, RcptResult> {
        let r = &self.inner;
        let records = match r.mx_lookup(fqdn(domain)).await {
            Ok(l) => l
                .answers()
                .iter()
                .filter_map(|rec| match &rec.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            Err(e) if e.is_no_records_found() && !e.is_nx_domain() => Vec::new(),
            Err(e) => return Err(dns_error(domain, "MX", &e, implicit)),
        };
        if records.is_empty() {
            // RFC 5321 §5.1: no MX, the domain is its own mail exchanger.
            return Ok(vec![(0, domain.to_string())]);
        }
        let records: Vec<(u16, String)> = records
            .into_iter()
            .map(|(p, n)| (p, n.trim_end_matches('.').to_ascii_lowercase()))
            .collect();
        select_mx(domain, records, &self.myname)
    }

    async fn addresses(&self, host: &str, implicit: bool) -> Result<Vec<IpAddr>, RcptResult> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let r = &self.inner;
        match r.lookup_ip(fqdn(host)).await {
            Ok(l) => {
                let ips: Vec<IpAddr> = l.iter().collect();
                if ips.is_empty() {
                    Err(not_found(host, "A", implicit))
                } else {
                    Ok(ips)
                }
            }
            Err(e) => Err(dns_error(host, "A", &e, implicit)),
        }
    }
}

/// The loops-back-to-myself rule by address (`myself`): an MX address
/// that is this mx2 drops it and every MX of equal or worse preference, as
/// Postfix's smtp_find_self does. With nothing left: `5.4.6 mail for D
/// loops back to myself` when this host is the best MX found, else `4.4.4
/// unable to find primary relay for D` (better MX hosts had no address).
fn drop_myself(
    domain: &str,
    mut found: Vec<(u16, Candidate)>,
    best_pref: Option<u16>,
    me: &Myself,
) -> Result<Vec<Candidate>, RcptResult> {
    let best_found = found.first().map(|f| f.0);
    if let Some(mine) = found
        .iter()
        .filter(|(_, c)| me.is(c.addr))
        .map(|(p, _)| *p)
        .min()
    {
        found.retain(|(p, _)| *p < mine);
        if found.is_empty() {
            return Err(if best_pref == best_found {
                RcptResult::local(
                    Class::Perm,
                    "5.4.6",
                    format!("mail for {domain} loops back to myself"),
                )
            } else {
                RcptResult::local(
                    Class::Temp,
                    "4.4.4",
                    format!("unable to find primary relay for {domain}"),
                )
            });
        }
    }
    Ok(found.into_iter().map(|(_, c)| c).collect())
}

/// Applies preference order, the loops-back-to-myself rule and null MX.
pub fn select_mx(
    domain: &str,
    mut records: Vec<(u16, String)>,
    myname: &str,
) -> Result<Vec<(u16, String)>, RcptResult> {
    if records.len() == 1 && (records[0].1.is_empty() || records[0].1 == ".") {
        return Err(RcptResult::local(
            Class::Perm,
            "5.1.10",
            format!("mail for {domain} is not accepted (null MX, RFC 7505)"),
        ));
    }
    records.retain(|(_, n)| !n.is_empty() && n != ".");
    // Shuffle first so that the stable sort keeps equal preferences random.
    records.shuffle(&mut rand::thread_rng());
    records.sort_by_key(|(p, _)| *p);
    if let Some(mine) = records
        .iter()
        .filter(|(_, n)| n == myname)
        .map(|(p, _)| *p)
        .min()
    {
        records.retain(|(p, _)| *p < mine);
        if records.is_empty() {
            return Err(RcptResult::local(
                Class::Perm,
                "5.4.6",
                format!("mail for {domain} loops back to myself"),
            ));
        }
    }
    let mut hosts: Vec<(u16, String)> = Vec::new();
    for (p, n) in records {
        if !hosts.iter().any(|(_, h)| *h == n) {
            hosts.push((p, n));
        }
    }
    Ok(hosts)
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

fn not_found(name: &str, rtype: &str, implicit: bool) -> RcptResult {
    let text = format!(
        "Host or domain name not found. Name service error for name={name} type={rtype}: Host not found"
    );
    if implicit {
        RcptResult::local(Class::Perm, "5.4.4", text)
    } else {
        RcptResult::local(Class::Temp, "4.4.4", text)
    }
}

fn dns_error(name: &str, rtype: &str, e: &NetError, implicit: bool) -> RcptResult {
    if e.is_nx_domain() || e.is_no_records_found() {
        return not_found(name, rtype, implicit);
    }
    RcptResult::local(
        Class::Temp,
        "4.4.3",
        format!(
            "Host or domain name not found. Name service error for name={name} type={rtype}: Host not found, try again ({e})"
        ),
    )
}

fn build(server: Option<&str>) -> Result<TokioResolver, String> {
    let mut builder = match server {
        Some(s) => {
            let addr: SocketAddr = s
                .parse()
                .map_err(|_| format!("bad resolver address {s:?}"))?;
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio().map_err(|e| e.to_string())?,
    };
    let opts = builder.options_mut();
    opts.timeout = Duration::from_secs(5);
    opts.attempts = 2;
    builder.build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(text: &str) -> TransportMap {
        TransportMap::parse(text, "t").unwrap()
    }

    #[test]
    fn destinations_from_the_table() {
        let m = map("example.jp smtp:[primary.example.net]:2525, backup.example.net\nother.jp smtp:\n* smtp:[fallback.example]\n");
        let d = destination(&m, "example.jp", "smtp").unwrap();
        assert_eq!(d.key, "[primary.example.net]:2525,backup.example.net");
        assert_eq!(d.hops.len(), 2);
        assert!(!d.hops[0].mx && d.hops[1].mx);
        let d = destination(&m, "other.jp", "smtp").unwrap();
        assert_eq!(d.key, "other.jp");
        assert!(d.hops[0].implicit);
        // Received mail never takes the `*` route.
        assert!(destination(&m, "elsewhere.example", "smtp").is_err());
        // Bounces do.
        assert_eq!(
            destination(&m, "elsewhere.example", "bounce").unwrap().key,
            "[fallback.example]"
        );
        let m = map("example.jp smtp:[192.0.2.1]\n");
        assert_eq!(
            destination(&m, "sender.example", "bounce").unwrap().key,
            "sender.example"
        );
        assert_eq!(
            destination(&m, "[192.0.2.7]", "bounce").unwrap().key,
            "[192.0.2.7]"
        );
    }

    #[test]
    fn mx_selection_drops_myself_and_worse() {
        let recs = vec![
            (20, "backup2.example".to_string()),
            (10, "mx2.example".to_string()),
            (5, "primary.example".to_string()),
        ];
        assert_eq!(
            select_mx("d.example", recs, "mx2.example").unwrap(),
            vec![(5, "primary.example".to_string())]
        );
        let recs = vec![
            (10, "mx2.example".to_string()),
            (10, "peer.example".to_string()),
        ];
        let e = select_mx("d.example", recs, "mx2.example").unwrap_err();
        assert_eq!(e.dsn, "5.4.6");
        assert_eq!(e.class, Class::Perm);
        assert!(e.text.contains("loops back to myself"), "{}", e.text);
        let recs = vec![(20, "b.example".to_string()), (10, "a.example".to_string())];
        assert_eq!(
            select_mx("d.example", recs, "mx2.example").unwrap(),
            vec![(10, "a.example".to_string()), (20, "b.example".to_string())]
        );
        let e = select_mx("d.example", vec![(0, String::new())], "mx2.example").unwrap_err();
        assert_eq!(e.dsn, "5.1.10");
    }

    fn cand(pref: u16, name: &str, addr: &str) -> (u16, Candidate) {
        let c = Candidate {
            name: name.into(),
            addr: addr.parse().unwrap(),
            nexthop: "d.example".into(),
        };
        (pref, c)
    }

    #[test]
    fn an_mx_address_that_is_this_host_drops_it_and_worse() {
        let me = Myself::from_listen(&["192.0.2.9:25".into()]);
        // An alias of this host at preference 10: only the better one stays.
        let found = vec![
            cand(5, "primary.example", "192.0.2.1:25"),
            cand(10, "alias.example", "192.0.2.9:25"),
            cand(20, "other.example", "192.0.2.3:25"),
        ];
        let got = drop_myself("d.example", found, Some(5), &me).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, "primary.example");
        // This host is the best MX: loops back to myself (5.4.6, bounced).
        let found = vec![
            cand(10, "alias.example", "192.0.2.9:25"),
            cand(20, "other.example", "192.0.2.3:25"),
        ];
        let e = drop_myself("d.example", found, Some(10), &me).unwrap_err();
        assert_eq!((e.class, e.dsn.as_str()), (Class::Perm, "5.4.6"));
        assert_eq!(e.text, "mail for d.example loops back to myself");
        // A better MX had no address: not a loop, try again later.
        let found = vec![cand(10, "alias.example", "192.0.2.9:25")];
        let e = drop_myself("d.example", found, Some(5), &me).unwrap_err();
        assert_eq!((e.class, e.dsn.as_str()), (Class::Temp, "4.4.4"));
        // The same address on another port is another service.
        let found = vec![cand(10, "sink.example", "192.0.2.9:2526")];
        assert_eq!(
            drop_myself("d.example", found, Some(10), &me)
                .unwrap()
                .len(),
            1
        );
    }
}
