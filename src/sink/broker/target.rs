//! `--to` addresses: `mqtt://[user:pass@]host[:port]/topic`, `mqtts://…` and
//! `nats://[user:pass@]host[:port]/subject`, with the topic a template filled
//! from each message (`sensors/{proto}/{peer_ip}`).
//!
//! Only the listener's own facts go into a topic (protocol, peer address and
//! port), never bytes a peer sent: a peer cannot steer where its messages go.

use std::fmt;

use crate::error::{Error, Result};
use crate::message::Message;

/// The broker protocol of a `--to` address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// MQTT 3.1.1 (`mqtt://`, or `mqtts://` with `tls`).
    Mqtt {
        /// Over TLS.
        tls: bool,
    },
    /// Core NATS, or JetStream with `--to-ack` (`nats://`).
    Nats,
}

/// One `--to` address, checked.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerTarget {
    /// Which broker protocol.
    pub kind: BrokerKind,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (1883, 8883 or 4222 unless given).
    pub port: u16,
    /// User name and password, if given.
    pub login: Option<(String, String)>,
    /// Where each message is published.
    pub topic: Topic,
}

impl fmt::Debug for BrokerTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Shown in events and reports: the password never is.
impl fmt::Display for BrokerTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.kind {
            BrokerKind::Mqtt { tls: false } => "mqtt",
            BrokerKind::Mqtt { tls: true } => "mqtts",
            BrokerKind::Nats => "nats",
        };
        let user = match &self.login {
            Some((user, _)) => format!("{user}:***@"),
            None => String::new(),
        };
        write!(f, "{scheme}://{user}{}/{}", self.host_port(), self.topic)
    }
}

impl BrokerTarget {
    /// `host:port`, an IPv6 address in brackets.
    pub fn host_port(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }

    /// Parses a `--to` address.
    pub fn parse(text: &str) -> Result<BrokerTarget> {
        let bad = |why: &str| Error::Usage(format!("--to {}: {why}", redacted(text)));
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("expected mqtt://HOST/TOPIC or nats://HOST/SUBJECT"))?;
        let (kind, default_port) = match scheme {
            "mqtt" => (BrokerKind::Mqtt { tls: false }, 1883),
            "mqtts" => (BrokerKind::Mqtt { tls: true }, 8883),
            "nats" => (BrokerKind::Nats, 4222),
            _ => return Err(bad("the scheme is mqtt://, mqtts:// or nats://")),
        };
        let (authority, topic) = rest
            .split_once('/')
            .ok_or_else(|| bad("no topic: add /TOPIC after the host"))?;
        let (login, hostport) = match authority.rsplit_once('@') {
            Some((login, hostport)) => {
                let (user, pass) = login.split_once(':').unwrap_or((login, ""));
                (Some((user.to_string(), pass.to_string())), hostport)
            }
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport).ok_or_else(|| bad("bad HOST[:PORT]"))?;
        let topic = Topic::parse(topic, kind).map_err(|why| bad(&why))?;
        Ok(BrokerTarget {
            kind,
            host,
            port: port.unwrap_or(default_port),
            login,
            topic,
        })
    }
}

/// `text` with any password replaced, for error messages.
fn redacted(text: &str) -> String {
    match (text.split_once("://"), text.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://***@{host}/{path}")
        }
        _ => text.to_string(),
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        },
    };
    if host.is_empty() {
        return None;
    }
    let port = port.map(|p| p.parse::<u16>().ok().filter(|&p| p > 0));
    match port {
        Some(None) => None,
        Some(port) => Some((host.to_string(), port)),
        None => Some((host.to_string(), None)),
    }
}

/// A topic (MQTT) or subject (NATS), with `{proto}`, `{peer_ip}` and `{peer_port}` filled per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    parts: Vec<Part>,
    /// NATS: dots in a filled-in value become `_`, so one field stays one subject token.
    nats: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Proto,
    PeerIp,
    PeerPort,
}

impl Topic {
    fn parse(text: &str, kind: BrokerKind) -> std::result::Result<Topic, String> {
        if text.is_empty() {
            return Err("no topic after the host".into());
        }
        let nats = kind == BrokerKind::Nats;
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').ok_or("an unclosed { in the topic")?;
            parts.push(Part::Text(rest[..open].to_string()));
            parts.push(match &rest[open + 1..open + close] {
                "proto" => Part::Proto,
                "peer_ip" => Part::PeerIp,
                "peer_port" => Part::PeerPort,
                other => {
                    return Err(format!(
                        "unknown field {{{other}}} in the topic; there are {{proto}}, {{peer_ip}} and {{peer_port}}"
                    ));
                }
            });
            rest = &rest[open + close + 1..];
        }
        parts.push(Part::Text(rest.to_string()));
        parts.retain(|part| !matches!(part, Part::Text(text) if text.is_empty()));
        for part in &parts {
            let Part::Text(text) = part else { continue };
            let wildcard = match nats {
                true => text.split('.').any(|token| token == "*" || token == ">"),
                false => text.contains(['+', '#']),
            };
            if wildcard {
                return Err("a topic to publish to cannot hold wildcards".into());
            }
            if text
                .chars()
                .any(|c| c.is_control() || (nats && c.is_whitespace()))
            {
                return Err("the topic holds control characters or spaces".into());
            }
        }
        Ok(Topic { parts, nats })
    }

    /// The topic for `message`.
    pub fn fill(&self, message: &Message) -> String {
        let mut topic = String::new();
        let peer = message.peer.as_ref().and_then(|p| p.inet());
        for part in &self.parts {
            let value = match part {
                Part::Text(text) => {
                    topic.push_str(text);
                    continue;
                }
                Part::Proto => message.proto.as_str().to_string(),
                Part::PeerIp => peer.map_or("unknown".into(), |p| p.ip().to_string()),
                Part::PeerPort => peer.map_or("0".into(), |p| p.port().to_string()),
            };
            match self.nats {
                true => topic.push_str(&value.replace('.', "_")),
                false => topic.push_str(&value),
            }
        }
        topic
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Text(text) => f.write_str(text)?,
                Part::Proto => f.write_str("{proto}")?,
                Part::PeerIp => f.write_str("{peer_ip}")?,
                Part::PeerPort => f.write_str("{peer_port}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Event, Proto};
    use bytes::Bytes;

    fn message(peer: &str) -> Message {
        let data = Event::data(Bytes::from_static(b"x"));
        Message::new(
            Proto::Udp,
            peer.parse::<std::net::SocketAddr>().ok().map(Into::into),
            data,
        )
    }

    #[test]
    fn addresses_parse_with_defaults_and_logins() {
        let t = BrokerTarget::parse("mqtt://127.0.0.1/sensors/{proto}/{peer_ip}").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.login.clone()),
            ("127.0.0.1", 1883, None)
        );
        assert_eq!(
            t.topic.fill(&message("10.0.0.7:5000")),
            "sensors/udp/10.0.0.7"
        );
        let t = BrokerTarget::parse("mqtts://ann:pw@broker:9883/a").unwrap();
        assert_eq!(t.kind, BrokerKind::Mqtt { tls: true });
        assert_eq!(t.login, Some(("ann".into(), "pw".into())));
        assert_eq!(t.to_string(), "mqtts://ann:***@broker:9883/a");
        let t = BrokerTarget::parse("nats://[::1]/in.{peer_ip}.{peer_port}").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 4222));
        assert_eq!(t.topic.fill(&message("10.0.0.7:5000")), "in.10_0_0_7.5000");
    }

    #[test]
    fn mistakes_are_refused_without_showing_the_password() {
        for bad in [
            "mqtt://host",
            "http://host/a",
            "mqtt://host:0/a",
            "mqtt://host:x/a",
            "mqtt://host/a/{nope}",
            "mqtt://host/a/{proto",
            "mqtt://host/a/+",
            "nats://host/a.>",
            "nats://host/a b",
            "mqtt:///a",
        ] {
            assert!(BrokerTarget::parse(bad).is_err(), "{bad}");
        }
        let error = BrokerTarget::parse("mqtt://ann:secret@host/{x}").unwrap_err();
        assert!(!error.to_string().contains("secret"), "{error}");
    }
}
