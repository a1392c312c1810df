//! Who may talk to the server: `--allow` and `--deny` address ranges.

use std::net::IpAddr;

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
