//! IP networks as the node's trust lists take them (`--trusted-proxies`, `spec.trustedProxies`):
//! parsed strictly, so a typo never trusts more than was written.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP network, `ADDR/PREFIX` (a bare address is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_v4(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask_v4(ip: u32, prefix: u8) -> u32 {
    ip & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(ip: u128, prefix: u8) -> u128 {
    ip & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    /// Strict: host bits set after the prefix (`10.1.2.3/8`) are refused rather than masked, since
    /// a typo in a trust list would otherwise silently trust a whole network.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network = IpAddr::from_str(addr)
            .map_err(|_| format!("{s:?} is not an IP address or CIDR (e.g. 10.0.0.0/8)"))?
            .to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0-{max}"))?,
        };
        let masked = match network {
            IpAddr::V4(ip) => IpAddr::V4(mask_v4(u32::from(ip), prefix).into()),
            IpAddr::V6(ip) => IpAddr::V6(mask_v6(u128::from(ip), prefix).into()),
        };
        if masked != network {
            return Err(format!(
                "{s:?} has bits set after its /{prefix} prefix; did you mean {masked}/{prefix}?"
            ));
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A comma-separated list of [`Cidr`]s, as `--trusted-proxies` takes it. Empty items are skipped,
/// so an empty value (`CRASHFLEET_TRUSTED_PROXIES=`) means none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrList(pub Vec<Cidr>);

impl FromStr for CidrList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .filter(|c| !c.trim().is_empty())
            .map(Cidr::from_str)
            .collect::<Result<Vec<_>, _>>()
            .map(CidrList)
    }
}

/// A table's public URL as players reach it (`--public-url`): `http://` or `https://`, a host,
/// an optional port and path, no query, fragment, credentials or whitespace. Returned with a
/// trailing `/`, so pages resolve `ws`, `api/v1/…` and the page itself relative to it.
pub fn public_url(raw: &str) -> Result<String, String> {
    let bad = |why: &str| Err(format!("--public-url {raw:?}: {why}"));
    let rest = match raw.split_once("://") {
        Some(("http" | "https", rest)) => rest,
        _ => return bad("must start with http:// or https://"),
    };
    if raw.len() > 512 {
        return bad("longer than 512 characters");
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains whitespace or control characters");
    }
    if raw.contains(['?', '#']) {
        return bad("must not carry a query or a fragment");
    }
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return bad("must not carry credentials");
    }
    // `host`, `host:port`, `[v6]` or `[v6]:port`.
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, after)) => (h, after.strip_prefix(':')),
            None => return bad("has an unclosed '['"),
        },
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return bad("has an invalid port");
    }
    if host.is_empty() {
        return bad("names no host");
    }
    Ok(if raw.ends_with('/') {
        raw.to_string()
    } else {
        format!("{raw}/")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn cidrs_parse_strictly_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(c.contains(ip("10.255.1.2")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(!c.contains(ip("::1")));
        // An IPv4-mapped IPv6 peer (a dual-stack listener) is its IPv4 address.
        assert!(c.contains(ip("::ffff:10.1.2.3")));
        let host: Cidr = "127.0.0.1".parse().expect("host");
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(host.contains(ip("127.0.0.1")) && !host.contains(ip("127.0.0.2")));
        let v6: Cidr = "fd00::/8".parse().expect("v6");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let all: Cidr = "0.0.0.0/0".parse().expect("all");
        assert!(all.contains(ip("203.0.113.9")));
        for bad in [
            "10.1.2.3/8",
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "10.0.0.0/x",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn public_urls_are_http_with_a_host_and_end_in_a_slash() {
        assert_eq!(
            public_url("https://eu.example.com").as_deref(),
            Ok("https://eu.example.com/")
        );
        assert_eq!(
            public_url("http://127.0.0.1:8080/crash").as_deref(),
            Ok("http://127.0.0.1:8080/crash/")
        );
        assert_eq!(
            public_url("http://[::1]:9/").as_deref(),
            Ok("http://[::1]:9/")
        );
        for bad in [
            "eu.example.com",
            "ftp://x/",
            "https://",
            "https:///path",
            "https://a b/",
            "https://x/?q=1",
            "https://x/#f",
            "https://user:pw@x/",
            "https://x:port/",
        ] {
            assert!(public_url(bad).is_err(), "{bad}");
        }
    }
}
