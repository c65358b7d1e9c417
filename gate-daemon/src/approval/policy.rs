//! Which addresses an approval may open: the client-reported IPv4 and IPv6 (signed inside the
//! payload) and the source the front observed. A reported address that no one could route to a
//! single client (unspecified, loopback, multicast, link-local, broadcast, IPv4-mapped IPv6) is
//! refused; an unusable observed source (a client on the host itself) is left out.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::approval::Rejection;

/// A reported address that could be opened: [`gate_maps::lease::openable`], and not written as
/// IPv4-mapped IPv6 (a client reports its IPv4 as IPv4).
fn usable(addr: IpAddr) -> bool {
    gate_maps::lease::openable(addr) && !matches!(addr, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

/// The addresses to open, without duplicates: at most three by construction.
///
/// # Errors
/// [`Rejection::ForbiddenAddress`] for an unusable reported address; [`Rejection::NoAddress`]
/// when nothing is left to open.
pub fn addresses(
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
    observed: Option<IpAddr>,
) -> Result<Vec<IpAddr>, Rejection> {
    let reported = ipv4.map(IpAddr::V4).into_iter().chain(ipv6.map(IpAddr::V6));
    let mut open = Vec::with_capacity(3);
    for addr in reported {
        if !usable(addr) {
            return Err(Rejection::ForbiddenAddress);
        }
        open.push(addr);
    }
    if let Some(observed) = observed.map(|a| a.to_canonical())
        && usable(observed)
        && !open.contains(&observed)
    {
        open.push(observed);
    }
    if open.is_empty() { Err(Rejection::NoAddress) } else { Ok(open) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Option<Ipv4Addr> {
        Some(s.parse().unwrap())
    }

    fn v6(s: &str) -> Option<Ipv6Addr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn reported_and_observed_are_opened_once_each() {
        let observed = Some("198.51.100.1".parse().unwrap());
        assert_eq!(
            addresses(v4("198.51.100.1"), v6("2001:db8::1"), observed).unwrap(),
            ["198.51.100.1".parse::<IpAddr>().unwrap(), "2001:db8::1".parse().unwrap()]
        );
    }

    #[test]
    fn forbidden_reported_addresses_refuse_the_request() {
        for bad in ["0.0.0.0", "127.0.0.1", "224.0.0.1", "169.254.1.1", "255.255.255.255"] {
            assert_eq!(addresses(v4(bad), None, None), Err(Rejection::ForbiddenAddress), "{bad}");
        }
        for bad in ["::", "::1", "ff02::1", "fe80::1", "::ffff:192.0.2.1"] {
            assert_eq!(addresses(None, v6(bad), None), Err(Rejection::ForbiddenAddress), "{bad}");
        }
    }

    #[test]
    fn an_unusable_observed_source_is_left_out() {
        let local = Some("127.0.0.1".parse().unwrap());
        assert_eq!(addresses(None, None, local), Err(Rejection::NoAddress));
        assert_eq!(addresses(v4("192.0.2.9"), None, local).unwrap(), ["192.0.2.9".parse::<IpAddr>().unwrap()]);
        let mapped = Some("::ffff:192.0.2.9".parse().unwrap());
        assert_eq!(addresses(None, None, mapped).unwrap(), ["192.0.2.9".parse::<IpAddr>().unwrap()]);
    }
}
