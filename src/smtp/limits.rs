//! Per-client limits: who counts as one client, how many connections it
//! holds, and how often it may ask for ETRN.
//!
//! An IPv6 client usually holds a whole /64 (SLAAC, privacy addresses), so
//! counting each /128 would let one host take every slot by walking its
//! own prefix. Clients are therefore keyed by `client_key`: the IPv4
//! address, or the IPv6 address cut to `[smtp] ipv6_prefix` bits (Postfix's
//! `smtpd_client_ipv6_prefix_length` does the same for anvil).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// The address that identifies a client: IPv4 (an IPv4-mapped IPv6
/// address is IPv4), or the IPv6 network of `prefix` bits.
pub fn client_key(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u32::from(prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

/// Open connections, in total and per client key.
#[derive(Debug, Default)]
pub struct Counter {
    per_client: HashMap<IpAddr, usize>,
    total: usize,
}

impl Counter {
    /// Takes a slot for `key`, or says why not (SPEC §5 codes).
    pub fn admit(
        &mut self,
        key: IpAddr,
        max_total: usize,
        max_per_client: usize,
    ) -> Result<(), &'static str> {
        if self.total >= max_total {
            return Err("421 4.3.2 Service not available, too many connections");
        }
        let n = self.per_client.entry(key).or_insert(0);
        if *n >= max_per_client {
            if *n == 0 {
                self.per_client.remove(&key);
            }
            return Err("421 4.7.0 Error: too many connections from your address");
        }
        *n += 1;
        self.total += 1;
        Ok(())
    }

    /// Gives back a slot taken by `admit`.
    pub fn release(&mut self, key: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_client.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_client.remove(&key);
            }
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }
}

/// How often one client may run ETRN: each flush makes the relay work
/// through a domain's queue, so a client looping on ETRN would turn mx2
/// into a hammer on the primary.
pub const ETRN_INTERVAL: Duration = Duration::from_secs(10);

/// The last ETRN per client key; entries older than the interval are
/// dropped as the map grows, so it stays as small as the set of clients
/// that asked in the last 10 seconds.
#[derive(Debug, Default)]
pub struct EtrnGate {
    last: HashMap<IpAddr, Instant>,
}

impl EtrnGate {
    /// True (and the time recorded) when `key` has not run ETRN within
    /// `ETRN_INTERVAL` of `now`.
    pub fn allow(&mut self, key: IpAddr, now: Instant) -> bool {
        if let Some(t) = self.last.get(&key) {
            if now.saturating_duration_since(*t) < ETRN_INTERVAL {
                return false;
            }
        }
        if self.last.len() >= 1024 {
            self.last
                .retain(|_, t| now.saturating_duration_since(*t) < ETRN_INTERVAL);
        }
        self.last.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn keys() {
        assert_eq!(client_key(ip("192.0.2.7"), 64), ip("192.0.2.7"));
        assert_eq!(client_key(ip("::ffff:192.0.2.7"), 64), ip("192.0.2.7"));
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), 48),
            ip("2001:db8:1::")
        );
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), 128),
            ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")
        );
        assert_eq!(client_key(ip("2001:db8::1"), 0), ip("::"));
        assert_eq!(client_key(ip("::1"), 64), ip("::"));
    }

    /// Regression (issue 16): every /128 of one /64 was a client of its
    /// own, so one host could take all `max_connections` slots.
    #[test]
    fn one_ipv6_prefix_is_one_client() {
        let mut c = Counter::default();
        let prefix = 64;
        let max_per = 3;
        let mut admitted = Vec::new();
        for i in 1..=10u16 {
            let addr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, 0, i));
            let key = client_key(addr, prefix);
            if c.admit(key, 100, max_per).is_ok() {
                admitted.push(key);
            } else {
                assert_eq!(
                    c.admit(key, 100, max_per),
                    Err("421 4.7.0 Error: too many connections from your address")
                );
            }
        }
        assert_eq!(admitted.len(), max_per, "one /64, {max_per} slots");
        // Another /64 is another client.
        let other = client_key(ip("2001:db8:0:8::1"), prefix);
        assert!(c.admit(other, 100, max_per).is_ok());
        assert_eq!(c.total(), max_per + 1);
        // Slots come back.
        c.release(admitted[0]);
        let again = client_key(ip("2001:db8:0:7::99"), prefix);
        assert!(c.admit(again, 100, max_per).is_ok());
        for k in admitted.iter().skip(1).chain([&other, &again]) {
            c.release(*k);
        }
        assert_eq!(c.total(), 0);
        assert!(c.per_client.is_empty());
    }

    #[test]
    fn total_limit() {
        let mut c = Counter::default();
        assert!(c.admit(ip("192.0.2.1"), 2, 5).is_ok());
        assert!(c.admit(ip("192.0.2.2"), 2, 5).is_ok());
        assert_eq!(
            c.admit(ip("192.0.2.3"), 2, 5),
            Err("421 4.3.2 Service not available, too many connections")
        );
        assert!(!c.per_client.contains_key(&ip("192.0.2.3")));
    }

    #[test]
    fn etrn_once_per_interval_per_client() {
        let mut g = EtrnGate::default();
        let t0 = Instant::now();
        let a = client_key(ip("2001:db8::1"), 64);
        let b = client_key(ip("2001:db8::2"), 64);
        assert!(g.allow(a, t0));
        assert!(!g.allow(b, t0 + Duration::from_secs(1)), "same /64");
        assert!(g.allow(ip("192.0.2.1"), t0 + Duration::from_secs(1)));
        assert!(!g.allow(a, t0 + Duration::from_secs(9)));
        assert!(g.allow(a, t0 + ETRN_INTERVAL));
        // Old entries are dropped once the map is large.
        for i in 0..2000u32 {
            let k = IpAddr::V4(std::net::Ipv4Addr::from(i));
            assert!(g.allow(k, t0 + Duration::from_secs(20 + u64::from(i / 1000) * 11)));
        }
        assert!(g.last.len() <= 1025, "{}", g.last.len());
    }
}
