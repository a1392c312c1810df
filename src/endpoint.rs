//! Addresses: name resolution, dual-stack binding and the natural form of a peer.
//!
//! socket2 is used for binding because std and tokio cannot clear
//! `IPV6_V6ONLY` or pick the listen backlog before `bind`/`listen`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use socket2::{Domain, Protocol, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket, UnixDatagram, UnixListener};

use crate::error::{Error, IoContext, Result};
use crate::message::{Addr, Proto, SocketKind};
use crate::tls::{self, ClientTlsConfig};
use crate::udp_options::{self, SendOptions};
use crate::unix_socket::SocketFile;
use tokio_rustls::client::TlsStream;

/// Backlog of pending TCP connections: large, so that a burst of thousands
/// of clients is queued by the kernel instead of silently lost.
const LISTEN_BACKLOG: i32 = 4096;

/// The address as people write it: an IPv4 peer seen through a dual-stack
/// socket is `127.0.0.1:PORT`, not `[::ffff:127.0.0.1]:PORT`.
pub fn natural(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// Strips the brackets people put around IPv6 literals (`[::1]`).
fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Resolves `host` (a name, an IPv4 or an IPv6 literal) to socket addresses.
pub async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    let host = unbracket(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let resolve_error = |reason: String| Error::Resolve {
        host: host.to_string(),
        reason,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| resolve_error(crate::error::describe(&e)))?
        .collect();
    if addrs.is_empty() {
        return Err(no_addresses(host));
    }
    Ok(addrs)
}

fn no_addresses(host: &str) -> Error {
    Error::Resolve {
        host: host.to_string(),
        reason: "no addresses found".into(),
    }
}

/// The local addresses to listen on: `bind` resolved, or dual-stack `[::]`.
///
/// Names are resolved here, before any socket exists, so `-b localhost`
/// listens on both 127.0.0.1 and ::1.
pub fn listen_ips(bind: Option<&str>) -> Result<Vec<IpAddr>> {
    let Some(bind) = bind else {
        return Ok(vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED)]);
    };
    let host = unbracket(bind);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let mut ips: Vec<IpAddr> = (host, 0)
        .to_socket_addrs()
        .map_err(|e| Error::Resolve {
            host: host.to_string(),
            reason: crate::error::describe(&e),
        })?
        .map(|a| a.ip())
        .collect();
    ips.sort();
    ips.dedup();
    Ok(ips)
}

/// True when binding `[::]` failed because this host has no IPv6, so `0.0.0.0` should be used.
fn ipv6_unavailable(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::AddrNotAvailable | io::ErrorKind::Unsupported
    ) || err.raw_os_error() == Some(97) // EAFNOSUPPORT on Linux
}

/// Creates and binds a non-blocking socket; `[::]` is made dual-stack.
fn bound_socket(proto: Proto, addr: SocketAddr) -> io::Result<socket2::Socket> {
    let (ty, protocol) = match proto {
        Proto::Tcp => (Type::STREAM, Protocol::TCP),
        Proto::Udp => (Type::DGRAM, Protocol::UDP),
    };
    let socket = socket2::Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    // Lets a restarted server rebind at once while old connections sit in TIME_WAIT.
    // (On Windows the same option would allow port stealing, so it is unix only.)
    #[cfg(unix)]
    if proto == Proto::Tcp {
        socket.set_reuse_address(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    if proto == Proto::Tcp {
        socket.listen(LISTEN_BACKLOG)?;
    }
    Ok(socket)
}

fn bind_error(proto: Proto, addr: SocketAddr, err: io::Error) -> Error {
    match err.kind() {
        io::ErrorKind::AddrInUse => Error::AddrInUse { proto, addr },
        io::ErrorKind::PermissionDenied => Error::PermissionDenied { proto, addr },
        _ => Error::io(format!("cannot listen on {proto} {addr}"), err),
    }
}

/// Each socket is a file descriptor (a TCP client, a port checked); the usual
/// soft limit (1024) is far below what the hard limit allows, so take what is allowed.
pub fn raise_open_file_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

/// A socket bound by someone else (systemd, a parent, a test), for
/// [`crate::listen::Listener::from_sockets`] and [`crate::relay::relay`].
#[derive(Debug)]
pub enum Socket {
    /// A listening TCP socket.
    Tcp(std::net::TcpListener),
    /// A bound UDP socket.
    Udp(std::net::UdpSocket),
    /// A listening UNIX stream socket.
    Unix(std::os::unix::net::UnixListener),
}

/// A bound socket to serve, and for a UNIX socket file, the file (removed when dropped).
#[derive(Debug)]
pub enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
    Unix(UnixListener, Option<SocketFile>),
    UnixDgram(UnixDatagram, Option<SocketFile>),
}

impl Bound {
    /// A socket bound elsewhere, made non-blocking for tokio. Must run inside a tokio runtime.
    pub fn from_std(socket: Socket) -> Result<Bound> {
        let cannot = || "cannot serve a socket handed in".to_string();
        Ok(match socket {
            Socket::Tcp(listener) => {
                listener.set_nonblocking(true).context(cannot)?;
                Bound::Tcp(TcpListener::from_std(listener).context(cannot)?)
            }
            Socket::Udp(socket) => {
                socket.set_nonblocking(true).context(cannot)?;
                Bound::Udp(UdpSocket::from_std(socket).context(cannot)?)
            }
            // Its file, if any, is the one who bound it to keep or remove.
            Socket::Unix(listener) => {
                listener.set_nonblocking(true).context(cannot)?;
                Bound::Unix(UnixListener::from_std(listener).context(cannot)?, None)
            }
        })
    }

    /// The IP address and port, for an internet socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Bound::Tcp(l) => l.local_addr().ok(),
            Bound::Udp(s) => s.local_addr().ok(),
            Bound::Unix(..) | Bound::UnixDgram(..) => None,
        }
    }

    /// Its address, in events.
    pub fn local(&self) -> Option<Addr> {
        match self {
            Bound::Tcp(_) | Bound::Udp(_) => self.local_addr().map(Addr::Inet),
            Bound::Unix(l, _) => l.local_addr().ok().map(|a| crate::unix_socket::name_of(&a)),
            Bound::UnixDgram(s, _) => s.local_addr().ok().map(|a| crate::unix_socket::name_of(&a)),
        }
    }

    pub fn kind(&self) -> SocketKind {
        match self {
            Bound::Tcp(_) => SocketKind::Tcp,
            Bound::Udp(_) => SocketKind::Udp,
            Bound::Unix(..) => SocketKind::Unix,
            Bound::UnixDgram(..) => SocketKind::UnixDgram,
        }
    }
}

/// Binds one socket; an unspecified IPv6 address falls back to `0.0.0.0` where IPv6 is off.
/// Must run inside a tokio runtime.
pub fn bind(proto: Proto, addr: SocketAddr) -> Result<Bound> {
    Ok(match proto {
        Proto::Tcp => Bound::Tcp(bind_tcp(addr)?),
        Proto::Udp => Bound::Udp(bind_udp(addr)?),
    })
}

/// [`bind`] for TCP.
pub fn bind_tcp(addr: SocketAddr) -> Result<TcpListener> {
    let socket = bind_with_fallback(Proto::Tcp, addr)?;
    TcpListener::from_std(socket.into()).context(|| format!("cannot listen on tcp {addr}"))
}

/// [`bind`] for UDP.
pub fn bind_udp(addr: SocketAddr) -> Result<UdpSocket> {
    let socket = bind_with_fallback(Proto::Udp, addr)?;
    UdpSocket::from_std(socket.into()).context(|| format!("cannot listen on udp {addr}"))
}

fn bind_with_fallback(proto: Proto, addr: SocketAddr) -> Result<socket2::Socket> {
    match bound_socket(proto, addr) {
        Err(e) if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) && ipv6_unavailable(&e) => {
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port());
            bound_socket(proto, v4).map_err(|e| bind_error(proto, v4, e))
        }
        other => other.map_err(|e| bind_error(proto, addr, e)),
    }
}

/// An IP version, to keep a client to (nc's `-4` and `-6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
}

/// How a client's traffic leaves: a family to keep to, a source address or
/// port to bind (nc's `-4`/`-6`, `-s` and `-p`), or a proxy to go through
/// (TCP). The default is straight out, from any address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// TCP goes through this proxy, which resolves and connects (family and source do not apply).
    pub proxy: Option<crate::proxy::Proxy>,
    /// TCP: probe an idle connection this often, so a peer that vanished is noticed.
    pub keepalive: Option<Duration>,
    /// Only peers of this family.
    pub family: Option<Family>,
    /// The local address to send from.
    pub ip: Option<IpAddr>,
    /// The local port to send from.
    pub port: Option<u16>,
}

impl Origin {
    /// True when `peer` can be reached from here: the family asked, and the source's.
    fn admits(&self, peer: &SocketAddr) -> bool {
        self.admits_ip(peer.ip())
    }

    /// True when `ip` is of the family asked, and of the source's.
    pub(crate) fn admits_ip(&self, ip: IpAddr) -> bool {
        let family_of = |ip: IpAddr| if ip.is_ipv4() { Family::V4 } else { Family::V6 };
        self.family.is_none_or(|family| family == family_of(ip))
            && self
                .ip
                .is_none_or(|source| family_of(source) == family_of(ip))
    }

    /// The local address to bind before reaching `peer`.
    fn local_for(&self, peer: SocketAddr) -> SocketAddr {
        let any = match peer {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        SocketAddr::new(self.ip.unwrap_or(any), self.port.unwrap_or(0))
    }

    /// `host`'s addresses that this origin can reach.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = resolve(host, port)
            .await?
            .into_iter()
            .filter(|addr| self.admits(addr))
            .collect();
        match addrs.is_empty() {
            true => Err(Error::Resolve {
                host: host.to_string(),
                reason: "no address of the family asked (-4/-6, -s)".into(),
            }),
            false => Ok(addrs),
        }
    }

    /// A TCP connection to `peer` from this origin.
    async fn connect_tcp(&self, peer: SocketAddr) -> io::Result<TcpStream> {
        if self.ip.is_none() && self.port.is_none() {
            return TcpStream::connect(peer).await;
        }
        let socket = match peer {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(self.local_for(peer))?;
        socket.connect(peer).await
    }
}

/// TCP keepalive (`--keepalive`): after `every` without traffic, a probe
/// every third of that; a peer that answers none of three is given up on.
pub fn set_keepalive(stream: &TcpStream, every: Option<Duration>) -> Result<()> {
    let Some(every) = every else {
        return Ok(());
    };
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(every)
        .with_interval((every / 3).max(Duration::from_secs(1)));
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let keepalive = keepalive.with_retries(3);
    socket2::SockRef::from(stream)
        .set_tcp_keepalive(&keepalive)
        .context(|| "cannot turn on TCP keepalive".into())
}

/// A connected TCP stream, in clear or TLS, and the peer it reached.
pub enum Stream {
    Plain(TcpStream, SocketAddr),
    Tls(Box<TlsStream<TcpStream>>, SocketAddr),
}

/// Connects over TCP to the first address of `host` that accepts, from
/// `origin`, then starts TLS if asked; `timeout` bounds all of it.
pub async fn connect_tcp(
    (host, port): (&str, u16),
    origin: &Origin,
    timeout: Option<Duration>,
    tls: Option<&ClientTlsConfig>,
) -> Result<Stream> {
    // A bad CA file or pin is reported before anything is sent.
    let connector = tls.map(tls::connector).transpose()?;
    let attempt = async {
        let (stream, peer) = reach_tcp((host, port), origin).await?;
        Ok(match &connector {
            None => Stream::Plain(stream, peer),
            Some(connector) => {
                let stream = tls::connect(connector, stream, host).await?;
                Stream::Tls(Box::new(stream), peer)
            }
        })
    };
    with_timeout(timeout, format!("{host}:{port}"), attempt).await
}

/// [`connect_tcp`] in clear: the stream and the peer it reached.
pub async fn connect_plain_tcp(
    (host, port): (&str, u16),
    origin: &Origin,
    timeout: Option<Duration>,
) -> Result<(TcpStream, SocketAddr)> {
    let attempt = reach_tcp((host, port), origin);
    with_timeout(timeout, format!("{host}:{port}"), attempt).await
}

/// The first address of `host` that accepts a connection from `origin`.
async fn reach_tcp((host, port): (&str, u16), origin: &Origin) -> Result<(TcpStream, SocketAddr)> {
    if let Some(proxy) = &origin.proxy {
        let host = match proxy.kind {
            // socks5:// resolves here, socks5h:// and http:// at the proxy.
            crate::proxy::ProxyKind::Socks5 { remote_dns: false } => {
                resolve(host, port).await?[0].ip().to_string()
            }
            _ => host.to_string(),
        };
        let stream = crate::proxy::connect(proxy, &host, port).await?;
        let via = stream.peer_addr().context(|| format!("proxy {proxy}"))?;
        set_keepalive(&stream, origin.keepalive)?;
        return Ok((stream, natural(via)));
    }
    let mut last = None;
    for addr in origin.resolve(host, port).await? {
        match origin.connect_tcp(addr).await {
            Ok(stream) => {
                set_keepalive(&stream, origin.keepalive)?;
                return Ok((stream, natural(addr)));
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                last = Some(Error::Refused { addr });
            }
            Err(e) => last = Some(Error::io(format!("cannot connect to {addr}"), e)),
        }
    }
    Err(last.unwrap_or_else(|| no_addresses(host)))
}

/// A UDP socket set up to send to `host`, and the address it sends to.
///
/// A unicast destination is connected, so the kernel reports ICMP errors on
/// the socket; a broadcast or multicast one is not, since its answers come
/// from other addresses. IPv4 addresses are preferred: UDP has no handshake to
/// fall back on, and a name like `localhost` most often means the IPv4
/// listener nc and friends open.
pub async fn connect_udp(
    (host, port): (&str, u16),
    origin: &Origin,
    timeout: Option<Duration>,
    options: &SendOptions,
) -> Result<(UdpSocket, SocketAddr)> {
    let attempt = async {
        let addrs = origin.resolve(host, port).await?;
        let addr = addrs
            .into_iter()
            .min_by_key(|a| a.is_ipv6())
            .ok_or_else(|| no_addresses(host))?;
        let local = origin.local_for(addr);
        let context = || format!("cannot send to udp {addr} from {local}");
        let socket = UdpSocket::bind(local).await.context(context)?;
        udp_options::prepare_sender(&socket, addr, options)?;
        if !options.broadcast && !addr.ip().is_multicast() {
            socket
                .connect(addr)
                .await
                .map_err(|e| udp_send_error(addr, e))?;
        }
        Ok((socket, addr))
    };
    with_timeout(timeout, format!("{host}:{port}"), attempt).await
}

/// The error for a failed UDP connect or send to `addr`.
pub fn udp_send_error(addr: SocketAddr, err: io::Error) -> Error {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => Error::PortUnreachable { addr },
        // Linux refuses a broadcast destination on a socket without SO_BROADCAST.
        io::ErrorKind::PermissionDenied if addr.is_ipv4() => Error::NeedsBroadcast { addr },
        _ => Error::io(format!("cannot send to udp {addr}"), err),
    }
}

async fn with_timeout<T>(
    timeout: Option<Duration>,
    target: String,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match timeout {
        Some(after) => tokio::time::timeout(after, work)
            .await
            .map_err(|_| Error::Timeout { target, after })?,
        None => work.await,
    }
}

/// The datagrams still queued on `socket`, taken off and dropped until
/// `deadline` at most ([`take_queued`]): how many. Each is taken with a
/// direct call, cut to one byte: tokio's `try_recv` answers from the
/// readiness it last saw, and says "would block" on a full queue if its
/// reactor has not looked since. It never waits, on a blocking socket too.
pub(crate) fn discard_queued(socket: &socket2::SockRef<'_>, deadline: std::time::Instant) -> u64 {
    let mut byte = [std::mem::MaybeUninit::uninit()];
    take_queued(deadline, || {
        let taken = socket.recv_with_flags(&mut byte, libc::MSG_DONTWAIT);
        taken.map(|_| 1)
    })
}

/// Datagrams still queued on a socket when a server stops, taken off with
/// `take` (non-blocking: how many it took, 0 or an error once none is left)
/// until `deadline` at most, since a flood does not stop for us: how many,
/// to be counted as not delivered rather than lost unseen.
pub(crate) fn take_queued(
    deadline: std::time::Instant,
    mut take: impl FnMut() -> io::Result<usize>,
) -> u64 {
    let mut taken = 0;
    while std::time::Instant::now() < deadline {
        match take() {
            Ok(0) | Err(_) => break,
            Ok(count) => taken += count as u64,
        }
    }
    taken
}

/// The largest UDP payload that fits one datagram to `addr`.
pub fn max_datagram(addr: SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 65_507,
        SocketAddr::V6(_) => 65_527,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv4_is_shown_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:40312".parse().unwrap();
        assert_eq!(natural(mapped).to_string(), "127.0.0.1:40312");
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        assert_eq!(natural(v6), v6);
    }

    #[test]
    fn brackets_are_optional_around_ipv6() {
        assert_eq!(unbracket("[::1]"), "::1");
        assert_eq!(unbracket("::1"), "::1");
        assert_eq!(unbracket("pi.local"), "pi.local");
    }
}
