//! What every sink sees: one [`Message`] per event, whatever protocol fed it.
//!
//! Keeping TCP and UDP differences out of this type is what lets a new sink
//! (a file, an echo, a broker) or a new transport plug in at one place.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// The transport a message came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// A TCP connection (plain or TLS).
    Tcp,
    /// UDP datagrams.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`, as written in every output.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of socket a message came over: [`Proto`]'s two, and UNIX sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// A TCP connection (plain or TLS).
    Tcp,
    /// UDP datagrams.
    Udp,
    /// A UNIX stream connection.
    Unix,
    /// UNIX datagrams.
    UnixDgram,
}

impl SocketKind {
    /// `tcp`, `udp`, `unix` or `unix-dgram`, as written in every output.
    pub fn as_str(self) -> &'static str {
        match self {
            SocketKind::Tcp => "tcp",
            SocketKind::Udp => "udp",
            SocketKind::Unix => "unix",
            SocketKind::UnixDgram => "unix-dgram",
        }
    }

    /// Streams: TCP or UNIX.
    pub fn is_stream(self) -> bool {
        matches!(self, SocketKind::Tcp | SocketKind::Unix)
    }
}

impl From<Proto> for SocketKind {
    fn from(proto: Proto) -> Self {
        match proto {
            Proto::Tcp => SocketKind::Tcp,
            Proto::Udp => SocketKind::Udp,
        }
    }
}

impl fmt::Display for SocketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A socket's address: a peer's, or the listener's own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addr {
    /// An IP address and port, in its natural form (`127.0.0.1:40312`,
    /// never `[::ffff:127.0.0.1]:40312`).
    Inet(SocketAddr),
    /// A UNIX socket.
    Unix(UnixAddr),
}

/// A UNIX socket's name, and for a connected peer, who it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct UnixAddr {
    /// Its file (`/run/app.sock`) or abstract name (`@app`); clients most
    /// often have none. A datagram sender names its own: it may hold any byte.
    pub name: Option<Arc<str>>,
    /// The peer's process and user, as the kernel tells them (SO_PEERCRED).
    pub credentials: Option<Credentials>,
}

/// The process and user at the other end of a UNIX stream, from the kernel:
/// a peer cannot forge them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// The process id, where the system tells it.
    pub pid: Option<i32>,
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
}

impl From<SocketAddr> for Addr {
    fn from(addr: SocketAddr) -> Self {
        Addr::Inet(addr)
    }
}

impl Addr {
    /// The IP address and port, for an internet socket.
    pub fn inet(&self) -> Option<SocketAddr> {
        match self {
            Addr::Inet(addr) => Some(*addr),
            Addr::Unix(_) => None,
        }
    }

    /// The peer's credentials, for a UNIX stream peer.
    pub fn credentials(&self) -> Option<Credentials> {
        match self {
            Addr::Inet(_) => None,
            Addr::Unix(unix) => unix.credentials,
        }
    }
}

/// `127.0.0.1:40312`; `/run/app.sock`; `pid=812,uid=1000,gid=1000` for an
/// unnamed UNIX client; `unnamed` when nothing is known. One word, for the
/// `lines` format. A name is the peer's own text: shown escaped by the sinks.
impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Inet(addr) => addr.fmt(f),
            Addr::Unix(UnixAddr {
                name: Some(name), ..
            }) => f.write_str(name),
            Addr::Unix(UnixAddr {
                credentials: Some(c),
                ..
            }) => {
                if let Some(pid) = c.pid {
                    write!(f, "pid={pid},")?;
                }
                write!(f, "uid={},gid={}", c.uid, c.gid)
            }
            Addr::Unix(_) => f.write_str("unnamed"),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A socket is bound and waiting, on this local address; `note` says
    /// what the mode changes about it (e.g. a chat is TCP only).
    Listening {
        /// The bound address.
        local: Addr,
        /// A remark on the mode.
        note: Option<&'static str>,
    },
    /// A stream peer (TCP, UNIX) connected.
    Connect,
    /// Bytes arrived: one read (raw), one line (lines/json) or one datagram.
    /// `cut`: a piece of a line longer than `--max-line`; the rest follows.
    Data {
        /// What came.
        bytes: Bytes,
        /// Part of a longer line.
        cut: bool,
    },
    /// A stream peer went away after sending `bytes` over `duration`.
    Disconnect {
        /// The bytes received in all.
        bytes: u64,
        /// How long the connection lasted.
        duration: Duration,
        /// With `--exec`: how the client's program ended (`exit 0`, `killed by signal 9`).
        exit: Option<String>,
    },
    /// The kernel dropped `new` more datagrams on a UDP socket (its receive
    /// buffer was full), `total` since it was opened.
    Drops {
        /// Dropped since the last report.
        new: u64,
        /// Dropped in all.
        total: u64,
    },
    /// Something failed; the server goes on.
    Error(String),
    /// Something the operator asked for or must see (statistics, the
    /// summary, a certificate fingerprint): shown on stderr even with `-q`.
    Notice(String),
}

impl Event {
    /// The name used in JSON output and event lines.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Listening { .. } => "listening",
            Event::Connect => "connect",
            Event::Data { .. } => "data",
            Event::Disconnect { .. } => "disconnect",
            Event::Drops { .. } => "drops",
            Event::Error(_) => "error",
            Event::Notice(_) => "notice",
        }
    }
}

/// One event, stamped with when, over what, and from whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// When it happened.
    pub time: SystemTime,
    /// The kind of socket.
    pub proto: SocketKind,
    /// The remote end; `None` for events of the listener itself.
    pub peer: Option<Addr>,
    /// The subject of the peer's TLS client certificate, when one was required.
    pub subject: Option<Arc<str>>,
    /// What happened.
    pub event: Event,
}

impl Event {
    /// Whole received bytes (a read, a line or a datagram).
    pub fn data(bytes: Bytes) -> Event {
        Event::Data { bytes, cut: false }
    }
}

impl Message {
    /// A message stamped now.
    pub fn new(proto: impl Into<SocketKind>, peer: Option<Addr>, event: Event) -> Self {
        Message {
            time: SystemTime::now(),
            proto: proto.into(),
            peer,
            subject: None,
            event,
        }
    }

    /// The same message, naming the peer's certificate subject too.
    pub fn with_subject(mut self, subject: Option<Arc<str>>) -> Self {
        self.subject = subject;
        self
    }
}
