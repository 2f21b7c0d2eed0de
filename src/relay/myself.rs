//! This host's own SMTP addresses, for the loops-back-to-myself rule by
//! address (Postfix's `smtp_find_self`).
//!
//! An MX host name can differ from `hostname` and still be this machine
//! (a CNAME, a second name, a DNS mistake); delivering to it would send
//! mail round in a circle until the hop count stops it. So, like Postfix,
//! an MX answer whose address is one mx2 listens on is "myself" too.
//! Listening on a wildcard (`0.0.0.0`, `[::]`) means every interface
//! address (getifaddrs). Unlike Postfix, the port counts as well: the test
//! sinks, content filters and second MTAs that run beside mx2 on the same
//! address but another port are other services, not this one.

use std::net::{IpAddr, SocketAddr};

/// The addresses (with ports) mail to this host arrives at.
#[derive(Debug, Clone, Default)]
pub struct Myself {
    addrs: Vec<SocketAddr>,
}

impl Myself {
    /// From the `[smtp] listen` addresses (unparsable ones are skipped:
    /// binding them already failed or will).
    pub fn from_listen(listen: &[String]) -> Myself {
        let mut addrs = Vec::new();
        let mut interfaces: Option<Vec<IpAddr>> = None;
        for l in listen {
            let Ok(sa) = l.parse::<SocketAddr>() else {
                continue;
            };
            if sa.ip().is_unspecified() {
                let ifs = interfaces.get_or_insert_with(interface_addresses);
                let v6 = sa.is_ipv6();
                // A `[::]` socket also takes IPv4 on Linux (v6only off).
                addrs.extend(
                    ifs.iter()
                        .filter(|ip| v6 || ip.is_ipv4())
                        .map(|ip| SocketAddr::new(*ip, sa.port())),
                );
            } else {
                addrs.push(sa);
            }
        }
        Myself { addrs }
    }

    /// Whether `addr` reaches this mx2.
    pub fn is(&self, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        self.addrs
            .iter()
            .any(|a| a.port() == addr.port() && canonical(a.ip()) == ip)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Every address configured on this host's interfaces.
fn interface_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we only read and then
    // free exactly once with freeifaddrs; each sockaddr is read according
    // to its sa_family.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            tracing::warn!(
                "relay: cannot list this host's addresses ({}); loop detection by address uses the listen addresses only",
                std::io::Error::last_os_error()
            );
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let sa = (*cur).ifa_addr;
            if !sa.is_null() {
                match i32::from((*sa).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(sa as *const libc::sockaddr_in);
                        out.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(sa as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_and_wildcards_with_their_ports() {
        let me = Myself::from_listen(&["127.0.0.1:2525".into(), "0.0.0.0:2626".into()]);
        assert!(me.is("127.0.0.1:2525".parse().unwrap()));
        assert!(
            !me.is("127.0.0.1:25".parse().unwrap()),
            "another port is another service"
        );
        assert!(!me.is("127.0.0.2:2525".parse().unwrap()));
        // The wildcard covers every interface address, loopback included.
        assert!(me.is("127.0.0.1:2626".parse().unwrap()));
        assert!(me.is("[::ffff:127.0.0.1]:2626".parse().unwrap()));
    }
}
