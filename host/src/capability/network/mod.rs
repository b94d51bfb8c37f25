//! `[sandbox] allow`: the TCP destinations a guest may connect to, as
//! `host:port` (names resolved by the host, when the configuration is read)
//! or `address/prefix:port`. Nothing else is reachable: no other port, no
//! UDP, no listening socket ([`grant`], through WASI); and the guest may look
//! up those names, and the ones of `[sandbox] lookup`, alone ([`lookup`]).
//! The worker's seccomp filter and Landlock rules hold the same line from
//! outside (`worker/hardening.rs`).

mod lookup;

use std::net::SocketAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::sockets::SocketAddrUse;

pub use lookup::{HasNameLookup, NameLookup, add_to_linker};

/// Lets the guest's WASI sockets reach `rules` alone. The check is
/// installed even with no rule, so that every denied attempt is logged.
pub fn grant(builder: &mut WasiCtxBuilder, rules: &[NetRule]) {
    let rules = rules.to_vec();
    builder
        .allow_tcp(true)
        .allow_ip_name_lookup(!rules.is_empty());
    builder.socket_addr_check(move |addr, usage| {
        let allowed = match usage {
            // Every connect first binds the wildcard address implicitly.
            SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
            SocketAddrUse::TcpConnect => rules.iter().any(|r| r.allows(addr)),
            _ => false,
        };
        if !allowed && !matches!(usage, SocketAddrUse::TcpBind) {
            tracing::warn!(%addr, ?usage, "network access denied by [sandbox] allow");
        }
        Box::pin(async move { allowed })
    });
}

/// One allowed TCP destination: an address range and a port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetRule {
    pub network: IpNet,
    pub port: u16,
}

impl NetRule {
    pub fn allows(&self, addr: SocketAddr) -> bool {
        addr.port() == self.port && self.network.contains(&addr.ip())
    }
}

/// Every entry of `[sandbox] allow` as rules, or the first one that is wrong.
pub fn rules(allow: &[String]) -> anyhow::Result<Vec<NetRule>> {
    let mut rules = Vec::new();
    for entry in allow {
        rules.extend(parse_allow(entry).map_err(|e| anyhow::anyhow!("[sandbox] allow: {e}"))?);
    }
    Ok(rules)
}

/// The names the guest may look up, lower case: the host names of `allow`
/// entries (not addresses), and those of `[sandbox] lookup`.
pub fn names(allow: &[String], lookup: &[String]) -> Vec<String> {
    allow
        .iter()
        .filter_map(|entry| entry.rsplit_once(':').map(|(host, _)| host))
        .filter(|host| !host.contains('/') && !host.starts_with('['))
        .filter(|host| host.parse::<std::net::IpAddr>().is_err())
        .chain(lookup.iter().map(String::as_str))
        .map(|host| host.trim_end_matches('.').to_ascii_lowercase())
        .collect()
}

/// Parses `host:port` (names resolved here, by the host) or
/// `address/prefix:port`.
fn parse_allow(entry: &str) -> Result<Vec<NetRule>, String> {
    let (host, port) = entry.rsplit_once(':').ok_or_else(|| {
        format!("{entry:?} has no port; write host:port, e.g. \"mqtt.local:1883\"")
    })?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{entry:?}: {port:?} is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.contains('/') {
        let network: IpNet = host.parse().map_err(|_| {
            format!(
                "{entry:?}: {host:?} is not an address range with a prefix length, e.g. 10.0.0.0/8"
            )
        })?;
        return Ok(vec![NetRule { network, port }]);
    }
    use std::net::ToSocketAddrs;
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?;
    Ok(addrs
        .map(|a| NetRule {
            network: IpNet::from(a.ip()),
            port,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_entries_parse_and_explain_mistakes() {
        let rules = parse_allow("10.0.0.0/8:5432").unwrap();
        assert_eq!(rules.len(), 1);
        assert!(rules[0].allows("10.20.30.40:5432".parse().unwrap()));
        assert!(!rules[0].allows("10.20.30.40:5433".parse().unwrap()));
        assert!(!rules[0].allows("11.0.0.1:5432".parse().unwrap()));
        let local = parse_allow("127.0.0.1:1883").unwrap();
        assert!(local[0].allows("127.0.0.1:1883".parse().unwrap()));
        assert!(!local[0].allows("127.0.0.2:1883".parse().unwrap()));
        assert!(
            parse_allow("mqtt.local")
                .unwrap_err()
                .contains("has no port")
        );
        assert_eq!(
            names(
                &[
                    "MQTT.local:1883".into(),
                    "10.0.0.0/8:5432".into(),
                    "127.0.0.1:1".into(),
                    "[::1]:2".into()
                ],
                &["Postgres".into()]
            ),
            ["mqtt.local", "postgres"]
        );
        assert!(
            parse_allow("10.0.0.0/40:1")
                .unwrap_err()
                .contains("prefix length")
        );
    }
}
