//! The one address syntax: `tcp://HOST:PORT`, `udp://HOST:PORT`,
//! `tls://HOST:PORT`, `unix:/path`, `unix:@abstract`, `unix-dgram:/path`.
//! Every command that takes an endpoint parses it here, so the grammar and
//! its error messages are the same everywhere.
//!
//! An empty host (`tcp://:8080`) means every local address when listening.
//! IPv6 literals go in brackets (`tcp://[::1]:80`), as in URLs.
//!
//! Where a command also takes a host and a port, the everyday `HOST:PORT`
//! (`[V6]:PORT`, `:PORT`) is read by [`host_and_port`] too, without a scheme:
//! it is what people type, and then the command's own flags pick the protocol.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Which protocol an internet address speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `tcp://`
    Tcp,
    /// `udp://`
    Udp,
    /// `tls://`: TCP with TLS on top.
    Tls,
}

/// A UNIX socket's name: a file, or a name in Linux's abstract namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnixName {
    /// A socket file (`unix:/run/app.sock`).
    Path(PathBuf),
    /// An abstract name (`unix:@app`): no file, gone with its last socket.
    Abstract(String),
}

/// One endpoint, in any of the forms above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// TCP, UDP or TLS to or on a host and port.
    Inet {
        /// The protocol.
        transport: Transport,
        /// A name, an IPv4 or an IPv6 address (without brackets); empty for "any".
        host: String,
        /// The port; 0 lets the system pick one when listening.
        port: u16,
    },
    /// A UNIX socket.
    Unix {
        /// Datagrams (`unix-dgram:`) rather than a stream (`unix:`).
        datagram: bool,
        /// Its file or abstract name.
        name: UnixName,
    },
}

/// A UNIX socket to send to, talk with or listen on, instead of a host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocket {
    /// Datagrams (`unix-dgram:`) rather than a stream (`unix:`).
    pub datagram: bool,
    /// Its file or abstract name.
    pub name: UnixName,
}

impl fmt::Display for UnixSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let address = Address::Unix {
            datagram: self.datagram,
            name: self.name.clone(),
        };
        address.fmt(f)
    }
}

/// Why an address was not understood: the part that is wrong, and the form expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{input}': {why}")]
pub struct AddressError {
    input: String,
    why: String,
}

const FORMS: &str =
    "tcp://HOST:PORT, udp://HOST:PORT, tls://HOST:PORT, unix:/path, unix:@name or unix-dgram:/path";

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(input: &str) -> Result<Address, AddressError> {
        let fail = |why: String| AddressError {
            input: input.to_string(),
            why,
        };
        if let Some(rest) = input.strip_prefix("unix-dgram:") {
            let name = unix_name(rest).map_err(fail)?;
            return Ok(Address::Unix {
                datagram: true,
                name,
            });
        }
        if let Some(rest) = input.strip_prefix("unix:") {
            let name = unix_name(rest).map_err(fail)?;
            return Ok(Address::Unix {
                datagram: false,
                name,
            });
        }
        let Some((scheme, rest)) = input.split_once("://") else {
            return Err(fail(format!("not an address: use {FORMS}")));
        };
        let transport = match scheme {
            "tcp" => Transport::Tcp,
            "udp" => Transport::Udp,
            "tls" => Transport::Tls,
            other => {
                return Err(fail(format!(
                    "unknown scheme '{other}': use tcp, udp, tls, unix or unix-dgram"
                )));
            }
        };
        let (host, port) = host_port(rest).map_err(fail)?;
        Ok(Address::Inet {
            transport,
            host,
            port,
        })
    }
}

/// `HOST:PORT`, `[V6]:PORT` or `:PORT` without a scheme, when `text` ends in
/// `:DIGITS` (then an error says what is wrong, e.g. a port above 65535);
/// `None` for anything else, a bare IPv6 address (`::1`, `fe80::1:80`) included.
pub fn host_and_port(text: &str) -> Option<Result<(String, u16), AddressError>> {
    let (_, port) = text.rsplit_once(':')?;
    let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    if !digits || text.parse::<std::net::Ipv6Addr>().is_ok() {
        return None;
    }
    Some(host_port(text).map_err(|why| AddressError {
        input: text.to_string(),
        why,
    }))
}

fn unix_name(rest: &str) -> Result<UnixName, String> {
    if let Some(name) = rest.strip_prefix('@') {
        return match name.is_empty() {
            true => Err("the abstract name after '@' is empty".into()),
            false => Ok(UnixName::Abstract(name.to_string())),
        };
    }
    match rest.is_empty() {
        true => Err("the socket path is empty (unix:/path/to/socket)".into()),
        false => Ok(UnixName::Path(PathBuf::from(rest))),
    }
}

/// `HOST:PORT`, `[V6]:PORT` or `:PORT`.
fn host_port(rest: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err("the '[' of an IPv6 address is not closed".into());
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err("missing ':PORT' after the IPv6 address".into());
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("'{host}' in brackets is not an IPv6 address"));
        }
        (host, port)
    } else {
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err("missing ':PORT' (e.g. tcp://127.0.0.1:8888)".into());
        };
        if host.contains(':') {
            return Err(format!("put the IPv6 address in brackets: [{host}]:{port}"));
        }
        (host, port)
    };
    if host.contains(['/', '@', '?', '#', ' ']) {
        return Err(format!("'{host}' is not a host name or address"));
    }
    match port.parse::<u16>() {
        Ok(port) => Ok((host.to_string(), port)),
        Err(_) => Err(format!("'{port}' is not a port (0-65535)")),
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet {
                transport,
                host,
                port,
            } => {
                let scheme = match transport {
                    Transport::Tcp => "tcp",
                    Transport::Udp => "udp",
                    Transport::Tls => "tls",
                };
                match host.contains(':') {
                    true => write!(f, "{scheme}://[{host}]:{port}"),
                    false => write!(f, "{scheme}://{host}:{port}"),
                }
            }
            Address::Unix { datagram, name } => {
                let scheme = if *datagram { "unix-dgram" } else { "unix" };
                match name {
                    UnixName::Path(path) => write!(f, "{scheme}:{}", path.display()),
                    UnixName::Abstract(name) => write!(f, "{scheme}:@{name}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn inet(transport: Transport, host: &str, port: u16) -> Address {
        let host = host.to_string();
        Address::Inet {
            transport,
            host,
            port,
        }
    }

    #[test]
    fn every_form_parses() {
        let parse = |text: &str| text.parse::<Address>().unwrap();
        assert_eq!(
            parse("tcp://pi.local:8888"),
            inet(Transport::Tcp, "pi.local", 8888)
        );
        assert_eq!(
            parse("udp://127.0.0.1:53"),
            inet(Transport::Udp, "127.0.0.1", 53)
        );
        assert_eq!(parse("tls://[::1]:8443"), inet(Transport::Tls, "::1", 8443));
        assert_eq!(parse("tcp://:8080"), inet(Transport::Tcp, "", 8080));
        let unix = |datagram, name| Address::Unix { datagram, name };
        assert_eq!(
            parse("unix:/run/app.sock"),
            unix(false, UnixName::Path("/run/app.sock".into()))
        );
        assert_eq!(
            parse("unix-dgram:/dev/log"),
            unix(true, UnixName::Path("/dev/log".into()))
        );
        assert_eq!(
            parse("unix:@app"),
            unix(false, UnixName::Abstract("app".into()))
        );
    }

    #[test]
    fn errors_name_the_wrong_part() {
        let error = |text: &str| text.parse::<Address>().unwrap_err().to_string();
        assert!(error("tcp://host").contains("missing ':PORT'"));
        assert!(error("tcp://host:99999").contains("'99999' is not a port"));
        assert!(error("ftp://host:21").contains("unknown scheme 'ftp'"));
        assert!(error("tcp://::1:80").contains("brackets"));
        assert!(error("tcp://[::1:80").contains("not closed"));
        assert!(error("tcp://[nope]:80").contains("not an IPv6 address"));
        assert!(error("unix:").contains("path is empty"));
        assert!(error("unix:@").contains("abstract name"));
        assert!(error("8888").contains("not an address"));
    }

    #[test]
    fn host_and_port_without_a_scheme() {
        let pair = |host: &str, port| Some(Ok((host.to_string(), port)));
        assert_eq!(host_and_port("127.0.0.1:8888"), pair("127.0.0.1", 8888));
        assert_eq!(host_and_port("pi.local:9000"), pair("pi.local", 9000));
        assert_eq!(host_and_port("[::1]:80"), pair("::1", 80));
        assert_eq!(host_and_port(":8080"), pair("", 8080));
        for not_one in [
            "::1",
            "fe80::1:80",
            "pi.local",
            "host:http",
            "host:",
            "8888",
        ] {
            assert_eq!(host_and_port(not_one), None, "{not_one}");
        }
        let wrong = |text| {
            host_and_port(text)
                .and_then(Result::err)
                .map(|e| e.to_string())
        };
        assert!(wrong("host:99999").is_some_and(|e| e.contains("'99999' is not a port")));
        assert!(wrong("a:b:80").is_some_and(|e| e.contains("brackets")));
    }

    fn any_address() -> impl Strategy<Value = Address> {
        let transport = prop_oneof![
            Just(Transport::Tcp),
            Just(Transport::Udp),
            Just(Transport::Tls)
        ];
        let host = prop_oneof![
            Just(String::new()),
            "[a-z][a-z0-9.-]{0,20}",
            any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
            any::<std::net::Ipv6Addr>().prop_map(|ip| ip.to_string()),
        ];
        let inet =
            (transport, host, any::<u16>()).prop_map(|(transport, host, port)| Address::Inet {
                transport,
                host,
                port,
            });
        let name = prop_oneof![
            "/[^\u{0}]{1,40}".prop_map(|path| UnixName::Path(path.into())),
            "[^\u{0}]{1,40}".prop_map(UnixName::Abstract),
        ];
        let unix =
            (any::<bool>(), name).prop_map(|(datagram, name)| Address::Unix { datagram, name });
        prop_oneof![inet, unix]
    }

    proptest! {
        #[test]
        fn any_text_parses_or_errs_without_panicking(text in "\\PC{0,60}") {
            let _ = text.parse::<Address>();
        }

        #[test]
        fn an_address_survives_display_and_parse(address in any_address()) {
            let shown = address.to_string();
            prop_assert_eq!(shown.parse::<Address>(), Ok(address), "{}", shown);
        }
    }
}
