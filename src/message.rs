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

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A socket is bound and waiting, on this local address; `note` says
    /// what the mode changes about it (e.g. a chat is TCP only).
    Listening {
        /// The bound address.
        local: SocketAddr,
        /// A remark on the mode.
        note: Option<&'static str>,
    },
    /// A TCP peer connected.
    Connect,
    /// Bytes arrived: one read (raw), one line (lines/json) or one datagram.
    /// `cut`: a piece of a line longer than `--max-line`; the rest follows.
    Data {
        /// What came.
        bytes: Bytes,
        /// Part of a longer line.
        cut: bool,
    },
    /// A TCP peer went away after sending `bytes` over `duration`.
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
    /// The transport.
    pub proto: Proto,
    /// The remote end in its natural form (`127.0.0.1:40312`, never
    /// `[::ffff:127.0.0.1]:40312`); `None` for events of the listener itself.
    pub peer: Option<SocketAddr>,
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
    pub fn new(proto: Proto, peer: Option<SocketAddr>, event: Event) -> Self {
        Message {
            time: SystemTime::now(),
            proto,
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
