//! UDP socket options: broadcast, multicast groups and interfaces, TTL, the
//! receive buffer, and the kernel's count of datagrams it dropped.
//!
//! socket2 sets the options; the drop counter (`SO_MEMINFO`) and interface
//! names come from `sys`, which socket2 does not offer.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use socket2::SockRef;
use tokio::net::UdpSocket;

use crate::error::{Error, Result};

/// A network interface, by name (`eth0`, `wlan0`) or by one of its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interface {
    /// By name (`eth0`).
    Name(String),
    /// By one of its addresses.
    Addr(IpAddr),
}

impl Interface {
    /// An address if `text` is one, a name otherwise.
    pub fn parse(text: &str) -> Interface {
        match text.parse() {
            Ok(addr) => Interface::Addr(addr),
            Err(_) => Interface::Name(text.to_string()),
        }
    }

    /// The interface index, which IPv6 multicast needs.
    fn index(&self) -> Result<u32> {
        match self {
            Interface::Name(name) => index_of(name),
            Interface::Addr(addr) => Err(Error::Usage(format!(
                "give the interface by name (e.g. eth0), not by address ({addr}), for IPv6 multicast"
            ))),
        }
    }
}

fn index_of(name: &str) -> Result<u32> {
    crate::sys::interface_index(name)
        .ok_or_else(|| Error::Usage(format!("no network interface named '{name}'")))
}

/// How a sending UDP socket is set up before it connects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendOptions {
    /// Allow broadcast destinations (`SO_BROADCAST`).
    pub broadcast: bool,
    /// Hop limit: multicast TTL for a multicast destination, unicast TTL otherwise.
    pub ttl: Option<u32>,
    /// The interface multicast (or everything, when given by name) leaves by.
    pub iface: Option<Interface>,
}

/// Applies `options` to a socket that is about to send to `dest`.
pub fn prepare_sender(socket: &UdpSocket, dest: SocketAddr, options: &SendOptions) -> Result<()> {
    let sock = SockRef::from(socket);
    let failed = |what: &str, e: io::Error| Error::io(format!("cannot set {what}"), e);
    if options.broadcast {
        sock.set_broadcast(true)
            .map_err(|e| failed("broadcast", e))?;
    }
    let multicast = dest.ip().is_multicast();
    if let Some(ttl) = options.ttl {
        match (dest.ip(), multicast) {
            (IpAddr::V4(_), true) => sock.set_multicast_ttl_v4(ttl),
            (IpAddr::V4(_), false) => sock.set_ttl_v4(ttl),
            (IpAddr::V6(_), true) => sock.set_multicast_hops_v6(ttl),
            (IpAddr::V6(_), false) => sock.set_unicast_hops_v6(ttl),
        }
        .map_err(|e| failed("the TTL", e))?;
    }
    match (&options.iface, dest.ip()) {
        (None, _) => {}
        (Some(Interface::Addr(IpAddr::V4(addr))), IpAddr::V4(_)) => sock
            .set_multicast_if_v4(addr)
            .map_err(|e| failed("the interface", e))?,
        (Some(iface @ Interface::Name(_)), IpAddr::V6(_)) if multicast => sock
            .set_multicast_if_v6(iface.index()?)
            .map_err(|e| failed("the interface", e))?,
        (Some(Interface::Name(name)), _) => bind_to_device(&sock, name)?,
        (Some(Interface::Addr(addr)), _) => {
            return Err(Error::Usage(format!(
                "--iface {addr} does not fit a destination of the other IP version; give a name"
            )));
        }
    }
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn bind_to_device(sock: &SockRef<'_>, name: &str) -> Result<()> {
    sock.bind_device(Some(name.as_bytes()))
        .map_err(|e| Error::io(format!("cannot send by interface {name}"), e))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn bind_to_device(_sock: &SockRef<'_>, name: &str) -> Result<()> {
    Err(Error::Usage(format!(
        "choosing the interface by name ({name}) is not supported here; give its address"
    )))
}

/// Joins `group` on `socket` (bound to `local`), on `iface` or the default interface.
pub fn join(
    socket: &UdpSocket,
    local: SocketAddr,
    group: IpAddr,
    iface: Option<&Interface>,
) -> Result<()> {
    let sock = SockRef::from(socket);
    let failed = |e: io::Error| Error::io(format!("cannot join multicast group {group}"), e);
    match group {
        IpAddr::V4(group) => {
            if local.is_ipv6() && !local.ip().is_unspecified() {
                return Err(Error::Usage(format!(
                    "cannot join IPv4 group {group} on {local}; listen on an IPv4 or the default address"
                )));
            }
            let interface = match iface {
                None => Ipv4Addr::UNSPECIFIED,
                Some(Interface::Addr(IpAddr::V4(addr))) => *addr,
                Some(other) => {
                    return join_v4_by_index(&sock, group, other.index()?).map_err(failed);
                }
            };
            sock.join_multicast_v4(&group, &interface).map_err(failed)?;
        }
        IpAddr::V6(group) => {
            if local.is_ipv4() {
                return Err(Error::Usage(format!(
                    "cannot join IPv6 group {group} on IPv4 address {local}"
                )));
            }
            let index = iface.map(Interface::index).transpose()?.unwrap_or(0);
            sock.join_multicast_v6(&group, index).map_err(failed)?;
        }
    }
    // Only members get the group's datagrams, not every socket on the port (Linux's default).
    #[cfg(target_os = "linux")]
    {
        let _ = sock.set_multicast_all_v4(false);
        let _ = sock.set_multicast_all_v6(false);
    }
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn join_v4_by_index(sock: &SockRef<'_>, group: Ipv4Addr, index: u32) -> io::Result<()> {
    let interface = socket2::InterfaceIndexOrAddress::Index(index);
    sock.join_multicast_v4_n(&group, &interface)
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn join_v4_by_index(_sock: &SockRef<'_>, _group: Ipv4Addr, _index: u32) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "joining by interface name is not supported here; give its address",
    ))
}

/// Sets the receive buffer (`SO_RCVBUF`); the kernel may cap it (Linux: `net.core.rmem_max`).
/// Returns the size the kernel granted.
pub fn set_receive_buffer(socket: &UdpSocket, bytes: usize) -> Result<usize> {
    let sock = SockRef::from(socket);
    let failed = |e| Error::io("cannot set the receive buffer", e);
    sock.set_recv_buffer_size(bytes).map_err(failed)?;
    sock.recv_buffer_size().map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_are_names_or_addresses() {
        assert_eq!(Interface::parse("eth0"), Interface::Name("eth0".into()));
        assert_eq!(
            Interface::parse("192.168.1.2"),
            Interface::Addr("192.168.1.2".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn the_kernel_counts_drops_from_zero() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        if let Some(drops) = crate::sys::kernel_drops(&socket) {
            assert_eq!(drops, 0);
        }
    }

    #[test]
    fn unknown_interfaces_are_named() {
        let error = index_of("no-such-if0").unwrap_err().to_string();
        assert!(
            error.contains("no network interface named 'no-such-if0'"),
            "{error}"
        );
    }
}
