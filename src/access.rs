//! Who may talk to the server: `--allow` and `--deny` address ranges, and
//! how many connections one address may hold (`--max-per-ip`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

/// Allowed and denied ranges. A denied range wins; with any allowed range,
/// only peers inside one may talk. Empty lists let everyone in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl AccessList {
    /// Ranges allowed and denied; both empty let everyone in.
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Self {
        AccessList { allow, deny }
    }

    /// Whether it lets everyone in.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Why `ip` may not talk, or `None` if it may. An IPv4 peer seen through a
    /// dual-stack socket (`::ffff:a.b.c.d`) is matched as the IPv4 address it is.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = ip.to_canonical();
        if self.deny.iter().any(|net| net.contains(&ip)) {
            Some("matches --deny")
        } else if !self.allow.is_empty() && !self.allow.iter().any(|net| net.contains(&ip)) {
            Some("not in --allow")
        } else {
            None
        }
    }
}

/// At most so many connections from any one address at once (`--max-per-ip`,
/// the web page's own bound): one host that opens connections and holds them
/// cannot take every place a server has.
#[derive(Debug, Clone)]
pub struct PerAddress {
    limit: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerAddress {
    /// Up to `limit` connections per address.
    pub fn new(limit: usize) -> Self {
        PerAddress {
            limit,
            open: Arc::default(),
        }
    }

    /// The limit per address.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A place for a connection from `ip`, held until dropped; `None` when
    /// `ip` already has `limit` (an IPv4 peer on a dual-stack socket counts
    /// as its IPv4 address).
    pub fn take(&self, ip: IpAddr) -> Option<AddressPlace> {
        let ip = ip.to_canonical();
        let mut all = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let open = all.entry(ip).or_insert(0);
        (*open < self.limit).then(|| {
            *open += 1;
            AddressPlace {
                open: self.open.clone(),
                ip,
            }
        })
    }
}

/// One connection's place among its address's [`PerAddress`] ones.
#[derive(Debug)]
pub struct AddressPlace {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for AddressPlace {
    fn drop(&mut self) {
        let mut all = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = all.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                all.remove(&self.ip); // a map as large as the addresses connected now, no more
            }
        }
    }
}

/// A range (`192.168.1.0/24`, `::1/128`) or a single address (`10.0.0.7`).
pub fn parse_range(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text}: not an address range like 192.168.1.0/24 or ::1/128"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(allow: &[&str], deny: &[&str]) -> AccessList {
        let parse = |v: &[&str]| v.iter().map(|t| parse_range(t).unwrap()).collect();
        AccessList::new(parse(allow), parse(deny))
    }

    #[test]
    fn deny_wins_and_allow_limits() {
        let access = list(&["127.0.0.0/8", "::1"], &["127.0.0.2"]);
        assert_eq!(access.refusal("127.0.0.1".parse().unwrap()), None);
        assert_eq!(access.refusal("::1".parse().unwrap()), None);
        assert_eq!(
            access.refusal("127.0.0.2".parse().unwrap()),
            Some("matches --deny")
        );
        assert_eq!(
            access.refusal("10.0.0.1".parse().unwrap()),
            Some("not in --allow")
        );
    }

    #[test]
    fn mapped_ipv4_is_matched_as_ipv4() {
        let access = list(&["192.168.1.0/24"], &[]);
        assert_eq!(access.refusal("::ffff:192.168.1.9".parse().unwrap()), None);
    }

    #[test]
    fn nobody_is_refused_by_default() {
        assert_eq!(
            AccessList::default().refusal("203.0.113.5".parse().unwrap()),
            None
        );
    }

    #[test]
    fn bad_ranges_are_explained() {
        assert!(
            parse_range("10.0.0.0/33")
                .unwrap_err()
                .contains("not an address range")
        );
    }
}
