//! Sockets handed in by systemd socket activation (`LISTEN_FDS`), or by any
//! parent that follows the same protocol (`systemd-socket-activate`): the
//! listener serves them instead of binding its own.

use std::net::TcpListener;

use crate::endpoint::Socket;
use crate::error::{Error, Result};

/// The sockets passed in `LISTEN_FDS`, if any were (none: bind as usual).
///
/// Call it once, before any thread starts: it takes the descriptors and
/// clears `LISTEN_FDS` and `LISTEN_PID`, so a child does not take them too.
pub fn sockets_from_env() -> Result<Vec<Socket>> {
    let mut passed = listenfd::ListenFd::from_env();
    (0..passed.len())
        .map(|index| {
            if let Ok(Some(listener)) = passed.take_tcp_listener(index) {
                return check_listening(listener, index);
            }
            if let Ok(Some(listener)) = passed.take_unix_listener(index) {
                return Ok(Socket::Unix(listener));
            }
            match passed.take_udp_socket(index) {
                Ok(Some(socket)) => Ok(Socket::Udp(socket)),
                _ => Err(not_usable(index, "not a TCP, UDP or UNIX stream socket")),
            }
        })
        .collect()
}

/// A stream socket that is bound but not listening cannot be served.
#[cfg(target_os = "linux")]
fn check_listening(listener: TcpListener, index: usize) -> Result<Socket> {
    match socket2::SockRef::from(&listener).is_listener() {
        Ok(false) => Err(not_usable(index, "a TCP socket that is not listening")),
        _ => Ok(Socket::Tcp(listener)),
    }
}

/// Where the system does not say, accept it; accepting will fail if it is not listening.
#[cfg(not(target_os = "linux"))]
fn check_listening(listener: TcpListener, _index: usize) -> Result<Socket> {
    Ok(Socket::Tcp(listener))
}

fn not_usable(index: usize, what: &str) -> Error {
    Error::Usage(format!(
        "socket {} passed in LISTEN_FDS is {what}; pass TCP listeners, UDP sockets or UNIX listeners",
        3 + index
    ))
}
