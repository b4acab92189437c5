//! Addresses: blocks such as `10.0.0.0/8`, and the table of destinations off limits to tunnels
//! and forwards (loopback, private, link-local, reserved), with their numeric disguises.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address block such as `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `address/prefix` (a lone address is a /32 or /128).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an address block like 10.0.0.0/8"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a prefix length outside 0..={max}"))?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }

    /// Whether `ip` is in the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Whether a destination is off limits unless `proxy.allow_private_destinations` is set:
/// unspecified, loopback, private (RFC 1918, unique local), shared (CGNAT), link-local,
/// multicast, broadcast and reserved addresses.
pub fn is_private(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => is_private_v6(v6),
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0.0/24
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18.0.0/15
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || ip == Ipv4Addr::new(168, 63, 129, 16) // Azure's host endpoint (wireserver)
        || a >= 240 // reserved
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let first = segments[0];
    let embedded_v4 = || Ipv4Addr::from(u32::try_from(u128::from(ip) & 0xffff_ffff).unwrap_or(0));
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated, still routed by some)
        || first == 0x2002 // 6to4 2002::/16: relays reach whatever IPv4 address it embeds
        || (first == 0x2001 && segments[1] == 0x0db8) // documentation 2001:db8::/32
        || segments[..4] == [0x100, 0, 0, 0] // discard-only 100::/64
        || segments[..3] == [0x64, 0xff9b, 1] // local-use NAT64 64:ff9b:1::/48
        || segments[..6] == [0; 6] // IPv4-compatible ::/96 (deprecated)
        // NAT64 64:ff9b::/96 embeds an IPv4 address: judge that one.
        || (segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && is_private_v4(embedded_v4()))
}

/// Whether `host` would be read as an IPv4 address by the C resolver (`inet_aton`) without being
/// one in the dotted-quad form hoard checks: `127.1`, `2130706433`, `0x7f.0.0.1`, `0177.0.0.1`.
/// Such a host reaches an address the guard never saw when someone else resolves it.
pub fn is_noncanonical_numeric(host: &str) -> bool {
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    let Some(last) = trimmed.rsplit('.').next() else {
        return false;
    };
    // As the URL standard has it: a host whose last label is a number is an IPv4 address.
    let numeric = |label: &str| {
        let hex = label
            .strip_prefix("0x")
            .or_else(|| label.strip_prefix("0X"));
        match hex {
            Some(digits) => digits.bytes().all(|b| b.is_ascii_hexdigit()),
            None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
        }
    };
    numeric(last) && host.parse::<Ipv4Addr>().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn private_destinations_are_recognised() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "198.18.0.1",
            "198.19.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "168.63.129.16",
            "64:ff9b:1::a00:1",
            "fec0::1",
            "2002:7f00:1::1",
            "2001:db8::1",
            "100::1",
            "::127.0.0.1",
        ] {
            assert!(is_private(ip(private)), "{private}");
        }
        for public in [
            "8.8.8.8",
            "142.250.0.1",
            "2001:4860::8888",
            "64:ff9b::808:808",
            "198.17.255.255",
            "198.20.0.1",
            "168.63.129.17",
            "192.0.3.1",
        ] {
            assert!(!is_private(ip(public)), "{public}");
        }
    }

    #[test]
    fn noncanonical_numeric_hosts_are_recognised() {
        for odd in [
            "127.1",
            "2130706433",
            "0x7f.0.0.1",
            "0177.0.0.1",
            "127.0.0.01",
            "0x7f000001",
            "10.0.0.1.",
            "1.2.3.4.5",
        ] {
            assert!(is_noncanonical_numeric(odd), "{odd}");
        }
        for fine in ["127.0.0.1", "gcr.io", "1.2.3.4x", "example.com.", "x1.io"] {
            assert!(!is_noncanonical_numeric(fine), "{fine}");
        }
    }

    #[test]
    fn cidrs_parse_and_match() {
        let block = Cidr::parse("10.0.0.0/8").unwrap_or(Cidr {
            network: ip("255.255.255.255"),
            prefix: 32,
        });
        assert!(block.contains(ip("10.200.0.1")));
        assert!(block.contains(ip("::ffff:10.0.0.1")));
        assert!(!block.contains(ip("11.0.0.1")));
        assert!(Cidr::parse("0.0.0.0/0").is_ok_and(|c| c.contains(ip("1.2.3.4"))));
        assert!(Cidr::parse("fd00::/8").is_ok_and(|c| c.contains(ip("fd12::1"))));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("ten/8").is_err());
        assert!(Cidr::parse("127.0.0.1").is_ok_and(|c| c.contains(ip("127.0.0.1"))));
    }
}
