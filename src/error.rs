//! Error kinds with one-line, actionable messages.
//!
//! Every failure a user can cause or meet on the network maps to one of these,
//! so `main` prints a single line and picks the exit code without guessing.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::message::Proto;

/// A result whose error is one of portier's [`Error`]s.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, each with its one-line message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line asked for something impossible (exit code 2).
    #[error("{0}")]
    Usage(String),

    #[error(
        "cannot listen on {proto} {addr}: port {port} is already in use (is another server running?); try another port, e.g. `portier listen {suggest}`",
        port = addr.port(),
        suggest = addr.port().wrapping_add(1).max(1024)
    )]
    /// Another socket holds the port.
    AddrInUse {
        /// The protocol of the socket asked for.
        proto: Proto,
        /// Where it was to listen.
        addr: SocketAddr,
    },

    #[error(
        "cannot listen on {proto} {addr}: permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE, try a port above 1023, e.g. `portier listen 8888`"
    )]
    /// A port below 1024 without the right to bind it.
    PermissionDenied {
        /// The protocol of the socket asked for.
        proto: Proto,
        /// Where it was to listen.
        addr: SocketAddr,
    },

    #[error("cannot resolve host '{host}': {reason}")]
    /// A host name that does not resolve.
    Resolve {
        /// The name as given.
        host: String,
        /// What the resolver said.
        reason: String,
    },

    #[error("connection refused by {addr}: is a server listening on {addr}?")]
    /// Nothing listens there (TCP).
    Refused {
        /// The address that refused.
        addr: SocketAddr,
    },

    #[error("timed out after {} connecting to {target}", humantime::format_duration(*.after))]
    /// Connecting took longer than allowed.
    Timeout {
        /// The host and port tried.
        target: String,
        /// The time allowed.
        after: Duration,
    },

    #[error(
        "{addr} answered 'port unreachable': no UDP server is listening there (the datagram was lost)"
    )]
    /// Nothing listens there (UDP, said by ICMP).
    PortUnreachable {
        /// The address that answered so.
        addr: SocketAddr,
    },

    #[error(
        "cannot send to {addr}: it is a broadcast address (or sending there is not permitted); add --broadcast to send to every host on the network"
    )]
    /// A broadcast address without `--broadcast`.
    NeedsBroadcast {
        /// The broadcast address.
        addr: SocketAddr,
    },

    #[error("no reply from {addr} within {}", humantime::format_duration(*.after))]
    /// No answer to a UDP request.
    NoReply {
        /// Who was asked.
        addr: SocketAddr,
        /// How long portier waited.
        after: Duration,
    },

    #[error(
        "{what} is over the UDP limit of {max} bytes for one datagram to {addr}; split it, or send it over TCP"
    )]
    /// A message too large for one datagram: never cut silently.
    DatagramTooLarge {
        /// Which message or line.
        what: String,
        /// The largest datagram to `addr`.
        max: usize,
        /// Where it was to go.
        addr: SocketAddr,
    },

    /// `check`: not every port asked is open (the list on stdout says which).
    #[error("{open} of {asked} ports open")]
    NotAllOpen {
        /// Ports found open.
        open: usize,
        /// Ports checked.
        asked: usize,
    },

    /// A program run with `--exec` could not start, or did not succeed.
    #[error("{0}")]
    Program(String),

    /// A proxy could not be used; it is named without its credentials.
    #[error("proxy {proxy}: {why}")]
    Proxy {
        /// The proxy, as shown (no user name, no password).
        proxy: String,
        /// What went wrong.
        why: String,
    },

    /// Stopping, the listener gave up on a stdout that took nothing (its
    /// reader stopped reading): what was received and not written is said.
    #[error(
        "stdout took nothing for {} (its reader stopped reading?): exiting{}{}{}",
        humantime::format_duration(*.after),
        unwritten.map(|n| format!(" without the last {n} bytes received")).unwrap_or_default(),
        match unread { 0 => String::new(), n => format!("; {n} datagrams not read (still queued)") },
        match kernel_drops { 0 => String::new(), n => format!("; {n} dropped by the kernel in all (receive buffer full)") }
    )]
    OutputStalled {
        /// Data bytes received and never written (`None`: spliced, none waited).
        unwritten: Option<u64>,
        /// UDP datagrams still queued in the kernel, taken off and counted.
        unread: u64,
        /// UDP datagrams the kernel dropped (receive buffer full) since the start.
        kernel_drops: u64,
        /// How long stdout took nothing.
        after: Duration,
    },

    /// TLS set-up or verification failed; the text says which check.
    #[error("{0}")]
    Tls(String),

    #[error("{context}: {}", describe(.source))]
    /// A system call failed while doing `context`.
    Io {
        /// What was being done.
        context: String,
        /// What the system said.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The process exit code: 2 for usage errors, 1 for everything that failed at run time.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// An OS error in words, without the "(os error N)" tail that only helps programmers.
pub fn describe(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(cut) => text[..cut].to_lowercase(),
        None => text,
    }
}

/// Adds context to `io::Result`s.
pub trait IoContext<T> {
    /// Wraps the error with what was being done.
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::io(context(), source))
    }
}
