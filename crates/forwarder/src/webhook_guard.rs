//! Where webhooks may go. A session's `callback_url` is the submitter's to choose, and
//! the forwarder sits inside the service's network: a URL that leads to loopback,
//! link-local (cloud metadata), private or otherwise internal addresses is refused
//! unless the operator allows those networks (`FERRY_WEBHOOK_ALLOW`, CIDRs).
//!
//! The check is on the addresses actually connected to: names are resolved by
//! [`GuardedResolver`], which drops refused addresses (so a name that re-resolves to an
//! internal address between a check and the connection gains nothing), and a URL with
//! an IP literal (`http://127.0.0.1/`, `http://2130706433/`, `http://[::1]/`) is checked
//! as it is. Redirects are not followed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// An IPv4 or IPv6 network, `addr/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `::1/128`, or a bare address (a /32 or /128).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP network (write 10.0.0.0/8 or 127.0.0.1)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(Self { addr, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.len),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.len),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let (whole, rest) = ((len / 8) as usize, len % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0
}

/// Parses `FERRY_WEBHOOK_ALLOW` (comma-separated CIDRs; empty allows nothing extra).
pub fn parse_allow(text: &str) -> Result<Vec<Cidr>, String> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Cidr::parse)
        .collect()
}

/// Why `ip` may not be called, if it may not: internal unless `allow` covers it.
pub fn refused(ip: IpAddr, allow: &[Cidr]) -> Option<&'static str> {
    let ip = match ip {
        // An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is judged as IPv4.
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if allow.iter().any(|c| c.contains(ip)) {
        return None;
    }
    let why = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                "loopback"
            } else if v4.is_private() {
                "private"
            } else if v4.is_link_local() {
                "link-local (cloud metadata lives here)"
            } else if v4.is_unspecified() || o[0] == 0 {
                "unspecified"
            } else if v4.is_broadcast() || v4.is_multicast() {
                "broadcast or multicast"
            } else if o[0] == 100 && (64..128).contains(&o[1]) {
                "shared (carrier-grade NAT)"
            } else if o[0] >= 240 {
                "reserved"
            } else {
                return None;
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_loopback() {
                "loopback"
            } else if v6.is_unspecified() {
                "unspecified"
            } else if v6.is_multicast() {
                "multicast"
            } else if s[0] & 0xffc0 == 0xfe80 {
                "link-local"
            } else if s[0] & 0xfe00 == 0xfc00 {
                "private (unique local)"
            } else {
                return None;
            }
        }
    };
    Some(why)
}

/// A resolver that hands reqwest only the addresses a webhook may go to.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub allow: Arc<Vec<Cidr>>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut why = None;
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match refused(a.ip(), &allow) {
                    Some(reason) => {
                        why = Some(format!("{host} resolves to {} ({reason})", a.ip()));
                        false
                    }
                    None => true,
                })
                .collect();
            if kept.is_empty() {
                let why = why.unwrap_or_else(|| format!("{host} has no address"));
                return Err(
                    format!("webhook refused: {why}; FERRY_WEBHOOK_ALLOW lets an operator allow it").into(),
                );
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Checks a URL before it is called: its scheme, and its host when it is an IP
/// literal (names are checked by the resolver).
pub fn check_url(url: &str, allow: &[Cidr]) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?} is not an http(s) URL"));
    }
    let ip = match parsed.host() {
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        Some(url::Host::Domain(_)) => None,
        None => return Err(format!("{url:?} has no host")),
    };
    if let Some(ip) = ip
        && let Some(reason) = refused(ip, allow)
    {
        return Err(format!(
            "webhook refused: {ip} is {reason}; FERRY_WEBHOOK_ALLOW lets an operator allow it"
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_in_every_spelling() {
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.1.2.3/",
            "http://192.168.0.1:8080/",
            "http://0.0.0.0/",
            "http://[fd00::1]/",
            "http://100.64.0.1/",
        ] {
            assert!(check_url(url, &[]).is_err(), "{url} was allowed");
        }
        assert!(check_url("https://93.184.216.34/hook", &[]).is_ok());
        assert!(check_url("ftp://example.org/", &[]).is_err());
    }

    #[test]
    fn an_operator_may_allow_networks() {
        let allow = parse_allow("127.0.0.0/8, 10.0.0.0/8").unwrap();
        assert!(check_url("http://127.0.0.1:9000/", &allow).is_ok());
        assert!(check_url("http://10.9.9.9/", &allow).is_ok());
        assert!(check_url("http://192.168.1.1/", &allow).is_err());
        assert!(parse_allow("10.0.0.0/33").is_err());
        assert!(parse_allow("not-a-net").is_err());
    }

    #[test]
    fn cidrs_match_on_their_prefix() {
        let c = Cidr::parse("172.16.0.0/12").unwrap();
        assert!(c.contains("172.31.255.255".parse().unwrap()));
        assert!(!c.contains("172.32.0.0".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_by_the_resolver() {
        use reqwest::dns::Resolve;
        let resolver = GuardedResolver {
            allow: Arc::new(Vec::new()),
        };
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let err = match resolver.resolve(name).await {
            Ok(_) => panic!("localhost resolved"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("loopback"), "{err}");
    }
}
