//! Reaching a TCP peer through a proxy: SOCKS5 (RFC 1928, with RFC 1929
//! username/password) or HTTP CONNECT (with basic auth), named the way curl
//! names them: `--proxy socks5h://user:pass@host:1080`, `http://host:3128`,
//! or `ALL_PROXY` unless `NO_PROXY` lists the host.
//!
//! Both handshakes are a few fixed messages, written here: what a proxy
//! answers is turned into an error that names the proxy (never its
//! credentials), and the handshake is bounded in time, so a proxy that
//! refuses, asks for a password or dies mid-way never hangs a client.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// How long a proxy may take to connect and answer its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which protocol the proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// SOCKS5; `remote_dns` (`socks5h://`) lets the proxy resolve the host.
    Socks5 {
        /// The proxy resolves names (`socks5h://`), not this machine (`socks5://`).
        remote_dns: bool,
    },
    /// An HTTP proxy's CONNECT method (`http://`).
    HttpConnect,
}

/// A proxy to reach peers through.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// Its protocol.
    pub kind: ProxyKind,
    /// Its host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// A user name and password, if it asks for them.
    credentials: Option<(String, String)>,
}

/// Shown without the credentials, wherever it is shown.
impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.kind {
            ProxyKind::Socks5 { remote_dns: true } => "socks5h",
            ProxyKind::Socks5 { remote_dns: false } => "socks5",
            ProxyKind::HttpConnect => "http",
        };
        match self.host.contains(':') {
            true => write!(f, "{scheme}://[{}]:{}", self.host, self.port),
            false => write!(f, "{scheme}://{}:{}", self.host, self.port),
        }
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proxy({self})")
    }
}

impl FromStr for Proxy {
    type Err = String;

    /// `socks5://`, `socks5h://` or `http://`, then `[user:pass@]host[:port]`
    /// (ports 1080 and 3128 by default, as curl has them).
    fn from_str(text: &str) -> std::result::Result<Proxy, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("a proxy is socks5://HOST:PORT, socks5h://HOST:PORT or http://HOST:PORT")?;
        let (kind, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "socks5" => (ProxyKind::Socks5 { remote_dns: false }, 1080),
            "socks5h" => (ProxyKind::Socks5 { remote_dns: true }, 1080),
            "http" => (ProxyKind::HttpConnect, 3128),
            other => {
                return Err(format!(
                    "unknown proxy scheme '{other}': use socks5, socks5h or http"
                ));
            }
        };
        let rest = rest.trim_end_matches('/');
        let (credentials, place) = match rest.rsplit_once('@') {
            Some((user_pass, place)) => {
                let (user, pass) = user_pass.split_once(':').unwrap_or((user_pass, ""));
                (Some((user.to_string(), pass.to_string())), place)
            }
            None => (None, rest),
        };
        let (host, port) = match place.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) = bracketed
                    .split_once(']')
                    .ok_or("the '[' of the proxy's IPv6 address is not closed")?;
                (host, after.strip_prefix(':'))
            }
            None => match place.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (place, None),
            },
        };
        if host.is_empty() {
            return Err("the proxy has no host".into());
        }
        let port = match port {
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or("the proxy's port is not a port (1-65535)")?,
            None => default_port,
        };
        Ok(Proxy {
            kind,
            host: host.to_string(),
            port,
            credentials,
        })
    }
}

/// The proxy `ALL_PROXY` (or `all_proxy`) names for `host`, unless `NO_PROXY`
/// (or `no_proxy`) exempts it: `*`, a domain and its subdomains
/// (`example.com`, `.example.com`), an address or a CIDR range.
pub fn from_env(host: &str) -> Result<Option<Proxy>> {
    let var = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|name| std::env::var(name).ok())
            .filter(|v| !v.is_empty())
    };
    let Some(all) = var(["ALL_PROXY", "all_proxy"]) else {
        return Ok(None);
    };
    if var(["NO_PROXY", "no_proxy"]).is_some_and(|list| exempt(&list, host)) {
        return Ok(None);
    }
    all.parse()
        .map(Some)
        .map_err(|e| Error::Usage(format!("ALL_PROXY: {e}")))
}

/// True when `host` is in the NO_PROXY `list`.
fn exempt(list: &str, host: &str) -> bool {
    let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
    let ip = host.parse::<IpAddr>().ok();
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            if let (Some(ip), Ok(range)) = (ip, entry.parse::<IpNet>()) {
                return range.contains(&ip);
            }
            let domain = entry.trim_start_matches('.').to_ascii_lowercase();
            host == domain || host.ends_with(&format!(".{domain}"))
        })
}

/// A TCP connection to `host:port` through `proxy`. For `socks5://` (no
/// remote DNS) the caller gives `host` already resolved to an address.
pub(crate) async fn connect(proxy: &Proxy, host: &str, port: u16) -> Result<TcpStream> {
    let failed = |why: String| Error::Proxy {
        proxy: proxy.to_string(),
        why,
    };
    let handshake = async {
        let mut stream = TcpStream::connect((proxy.host.as_str(), proxy.port))
            .await
            .map_err(|e| failed(format!("cannot reach it: {}", crate::error::describe(&e))))?;
        let answer = match proxy.kind {
            ProxyKind::Socks5 { .. } => socks5(&mut stream, proxy, host, port).await,
            ProxyKind::HttpConnect => http_connect(&mut stream, proxy, host, port).await,
        };
        match answer {
            Ok(()) => Ok(stream),
            Err(Handshake::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(failed(
                "it closed the connection during the handshake".into(),
            )),
            Err(Handshake::Io(e)) => Err(failed(crate::error::describe(&e))),
            Err(Handshake::Refused(why)) => Err(failed(why)),
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| {
            failed(format!(
                "no answer to the handshake within {}s",
                HANDSHAKE_TIMEOUT.as_secs()
            ))
        })?
}

/// Why a handshake failed: the connection, or the proxy's answer.
enum Handshake {
    Io(std::io::Error),
    Refused(String),
}

impl From<std::io::Error> for Handshake {
    fn from(e: std::io::Error) -> Handshake {
        Handshake::Io(e)
    }
}

async fn socks5(
    stream: &mut TcpStream,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> std::result::Result<(), Handshake> {
    let refused = |why: &str| Err(Handshake::Refused(why.to_string()));
    // Greeting: no authentication, and username/password when we have them.
    let methods: &[u8] = if proxy.credentials.is_some() {
        &[0x00, 0x02]
    } else {
        &[0x00]
    };
    let mut greeting = vec![0x05, methods.len() as u8];
    greeting.extend_from_slice(methods);
    stream.write_all(&greeting).await?;
    let mut chosen = [0u8; 2];
    stream.read_exact(&mut chosen).await?;
    match (chosen, &proxy.credentials) {
        ([0x05, 0x00], _) => {}
        ([0x05, 0x02], Some((user, pass))) => {
            if user.len() > 255 || pass.len() > 255 {
                return refused("the user name or password is over 255 bytes");
            }
            let mut login = vec![0x01, user.len() as u8];
            login.extend_from_slice(user.as_bytes());
            login.push(pass.len() as u8);
            login.extend_from_slice(pass.as_bytes());
            stream.write_all(&login).await?;
            let mut status = [0u8; 2];
            stream.read_exact(&mut status).await?;
            if status[1] != 0x00 {
                return refused("it refused the user name and password");
            }
        }
        ([0x05, 0xff], None) => {
            return refused("it asks for a user name and password (socks5h://user:pass@host:port)");
        }
        ([0x05, 0xff], Some(_)) => return refused("it accepts none of our ways to log in"),
        _ => return refused("it does not speak SOCKS5"),
    }
    // The request: the host by name (the proxy resolves it) or by address.
    let mut request = vec![0x05, 0x01, 0x00];
    // A name goes to the proxy as a name: `connect`'s caller resolved it
    // already where the proxy is not to (`socks5://`).
    let ip = host.trim_matches(['[', ']']).parse::<IpAddr>().ok();
    match ip {
        Some(IpAddr::V4(v4)) => {
            request.push(0x01);
            request.extend_from_slice(&v4.octets());
        }
        Some(IpAddr::V6(v6)) => {
            request.push(0x04);
            request.extend_from_slice(&v6.octets());
        }
        None if host.len() > 255 => return refused("the host name is over 255 bytes"),
        None => {
            request.push(0x03);
            request.push(host.len() as u8);
            request.extend_from_slice(host.as_bytes());
        }
    }
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).await?;
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).await?;
    if reply[0] != 0x05 {
        return refused("it does not speak SOCKS5");
    }
    if reply[1] != 0x00 {
        let why = match reply[1] {
            0x02 => "its rules do not allow this connection",
            0x03 => "network unreachable, it says",
            0x04 => "host unreachable, it says",
            0x05 => "connection refused by the destination, it says",
            0x06 => "the destination did not answer in time, it says",
            0x08 => "it cannot reach this kind of address",
            _ => "it could not connect to the destination",
        };
        return Err(Handshake::Refused(format!("{why} ({host}:{port})")));
    }
    // The address it bound for us, which we do not need.
    let skip = match reply[3] {
        0x01 => 4,
        0x04 => 16,
        0x03 => stream.read_u8().await? as usize,
        _ => return refused("its answer is not SOCKS5"),
    };
    let mut bound = vec![0u8; skip + 2];
    stream.read_exact(&mut bound).await?;
    Ok(())
}

/// The most of a CONNECT answer's head we read: a proxy is not given more memory than this.
const MAX_HTTP_HEAD: usize = 16 * 1024;

async fn http_connect(
    stream: &mut TcpStream,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> std::result::Result<(), Handshake> {
    let target = match host.contains(':') && !host.starts_with('[') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    };
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some((user, pass)) = &proxy.credentials {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        request += &format!("Proxy-Authorization: Basic {token}\r\n");
    }
    request += "\r\n";
    stream.write_all(request.as_bytes()).await?;
    // Byte by byte up to the blank line, so nothing of the tunnel is read here.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HTTP_HEAD {
            return Err(Handshake::Refused("its answer never ends".into()));
        }
        head.push(stream.read_u8().await?);
    }
    let status_line =
        String::from_utf8_lossy(head.split(|&b| b == b'\r').next().unwrap_or_default())
            .into_owned();
    let mut words = status_line.split_whitespace();
    let (version, code) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if !version.starts_with("HTTP/") {
        return Err(Handshake::Refused("it does not speak HTTP".into()));
    }
    let shown: String = status_line
        .chars()
        .filter(|c| !c.is_control())
        .take(80)
        .collect();
    match code {
        "200" => Ok(()),
        "407" if proxy.credentials.is_none() => Err(Handshake::Refused(format!(
            "it asks for a user name and password (http://user:pass@host:port): {shown}"
        ))),
        "407" => Err(Handshake::Refused(format!(
            "it refused the user name and password: {shown}"
        ))),
        _ => Err(Handshake::Refused(format!(
            "it refused the tunnel to {target}: {shown}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_parse_as_curl_writes_them() {
        let proxy: Proxy = "socks5h://ann:s3cret@127.0.0.1:1080".parse().unwrap();
        assert_eq!(proxy.kind, ProxyKind::Socks5 { remote_dns: true });
        assert_eq!((proxy.host.as_str(), proxy.port), ("127.0.0.1", 1080));
        assert_eq!(proxy.credentials, Some(("ann".into(), "s3cret".into())));
        let http: Proxy = "http://[::1]".parse().unwrap();
        assert_eq!(
            (http.kind, http.host.as_str(), http.port),
            (ProxyKind::HttpConnect, "::1", 3128)
        );
        for bad in [
            "ftp://h:1",
            "socks5://",
            "socks5://h:0",
            "h:1080",
            "http://[::1:80",
        ] {
            assert!(bad.parse::<Proxy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_are_never_shown() {
        let proxy: Proxy = "http://ann:s3cret@proxy.lan:3128".parse().unwrap();
        for shown in [proxy.to_string(), format!("{proxy:?}")] {
            assert!(
                !shown.contains("s3cret") && !shown.contains("ann"),
                "{shown}"
            );
        }
        assert_eq!(proxy.to_string(), "http://proxy.lan:3128");
    }

    #[test]
    fn no_proxy_exempts_domains_addresses_and_ranges() {
        let list = "localhost, .internal.lan,example.com,10.0.0.0/8,::1";
        for host in [
            "localhost",
            "db.internal.lan",
            "example.com",
            "www.example.com",
            "10.1.2.3",
            "[::1]",
        ] {
            assert!(exempt(list, host), "{host}");
        }
        for host in [
            "notexample.com",
            "internal.lan.evil",
            "11.0.0.1",
            "pi.local",
        ] {
            assert!(!exempt(list, host), "{host}");
        }
        assert!(exempt("*", "anything"));
    }
}
