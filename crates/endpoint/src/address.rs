//! The address managers use to reach the endpoint: `address`, else the first IPv4
//! address of `address_interface`, else the IP the endpoint listens on, else (listening
//! on every interface) this machine's host name.

use std::net::{IpAddr, SocketAddr};

use crate::config::EndpointConfig;

/// `host:port` for the managers of `config`'s endpoint, listening at `bound`.
pub fn for_managers(config: &EndpointConfig, bound: SocketAddr) -> anyhow::Result<String> {
    let host = if let Some(address) = &config.address {
        address.clone()
    } else if let Some(name) = &config.address_interface {
        interface_ip(name)?.to_string()
    } else if !bound.ip().is_unspecified() {
        bound.ip().to_string()
    } else {
        hostname()
    };
    Ok(match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{}", bound.port()),
        _ => format!("{host}:{}", bound.port()),
    })
}

/// The first IPv4 address of interface `name` (an IPv6 one when it has no IPv4).
pub fn interface_ip(name: &str) -> anyhow::Result<IpAddr> {
    let mut found: Vec<IpAddr> = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for ifaddr in nix::ifaddrs::getifaddrs()? {
        names.insert(ifaddr.interface_name.clone());
        if ifaddr.interface_name != name {
            continue;
        }
        let Some(addr) = ifaddr.address else { continue };
        if let Some(v4) = addr.as_sockaddr_in() {
            found.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            found.push(IpAddr::V6(v6.ip()));
        }
    }
    found.sort_by_key(|ip| ip.is_ipv6());
    found.into_iter().next().ok_or_else(|| {
        anyhow::anyhow!(
            "address_interface {name:?}: no such interface with an IP address here (interfaces: {})",
            names.into_iter().collect::<Vec<_>>().join(", ")
        )
    })
}

/// This machine's host name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> EndpointConfig {
        EndpointConfig::parse(&format!("url = \"http://x\"\n{extra}")).unwrap()
    }

    #[test]
    fn an_explicit_address_wins() {
        let bound: SocketAddr = "0.0.0.0:5000".parse().unwrap();
        assert_eq!(
            for_managers(&config("address = \"login1\""), bound).unwrap(),
            "login1:5000"
        );
    }

    #[test]
    fn the_loopback_interface_has_its_address() {
        let bound: SocketAddr = "0.0.0.0:5000".parse().unwrap();
        assert_eq!(
            for_managers(&config("address_interface = \"lo\""), bound).unwrap(),
            "127.0.0.1:5000"
        );
    }

    #[test]
    fn an_unknown_interface_is_named_with_the_ones_there_are() {
        let err = interface_ip("ib7").unwrap_err().to_string();
        assert!(err.contains("ib7") && err.contains("lo"), "{err}");
    }

    #[test]
    fn a_specific_listen_address_is_what_managers_use() {
        let bound: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(for_managers(&config(""), bound).unwrap(), "127.0.0.1:5000");
    }
}
