//! What `portier listen` is asked to do, checked once by the CLI (or built
//! by a library user) and never re-checked below.

use std::net::IpAddr;
use std::time::Duration;

use super::echo_guard::DEFAULT_ECHO_RATE;
use super::replies::Mode;
use crate::access::AccessList;
use crate::address::UnixSocket;
use crate::framing::Framing;
use crate::message::Proto;
use crate::tls::ServerTlsConfig;
use crate::udp_options::Interface;
use crate::unix_socket::FileAccess;

/// TCP clients served at once unless told otherwise.
pub const DEFAULT_MAX_CONNS: usize = 1024;

/// Which protocols to listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocols {
    /// TCP and UDP on the same port.
    #[default]
    Both,
    /// TCP only.
    Tcp,
    /// UDP only.
    Udp,
}

impl Protocols {
    pub(super) fn list(self) -> &'static [Proto] {
        match self {
            Protocols::Both => &[Proto::Tcp, Proto::Udp],
            Protocols::Tcp => &[Proto::Tcp],
            Protocols::Udp => &[Proto::Udp],
        }
    }
}

/// What `portier listen` does, checked and ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenConfig {
    /// 0 picks a free port (the same one for TCP and UDP).
    pub port: u16,
    /// The local address or name; `None` is dual-stack `[::]`.
    pub bind: Option<String>,
    /// A UNIX socket to listen on instead of the port (and `bind`, `protocols`).
    pub unix: Option<UnixSocket>,
    /// Who may use the UNIX socket's file.
    pub unix_file: FileAccess,
    /// TCP, UDP or both.
    pub protocols: Protocols,
    /// Stop after the first TCP client leaves (or, UDP only, the first datagram).
    pub once: bool,
    /// How a TCP stream is cut into messages.
    pub framing: Framing,
    /// What is written back to clients, besides printing.
    pub mode: Mode,
    /// `--allow` and `--deny`.
    pub access: AccessList,
    /// TCP clients served at once; more are told the server is full.
    pub max_conns: usize,
    /// TCP clients served at once from any one address (`--max-per-ip`);
    /// `None`: as many as `max_conns` (behind a load balancer, every client
    /// has its address).
    pub max_per_ip: Option<usize>,
    /// Close TCP clients that send nothing, or take nothing written to
    /// them (echo, broker, chat), for this long.
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive on every client: probe one idle this long, so a vanished peer frees its slot.
    pub keepalive: Option<Duration>,
    /// UDP echo: replies per second to any one address (all its ports), at most.
    pub echo_rate: u32,
    /// TCP: run this program for each client, the connection on its stdin and stdout.
    pub exec: Option<crate::exec::Program>,
    /// UDP: multicast groups to join.
    pub join: Vec<IpAddr>,
    /// UDP: the interface to join them on.
    pub iface: Option<Interface>,
    /// UDP: the receive buffer to ask for (`SO_RCVBUF`).
    pub recv_buffer: usize,
    /// TCP: speak TLS.
    pub tls: Option<ServerTlsConfig>,
    /// Print a summary line on stderr this often, and totals at exit.
    pub stats: Option<Duration>,
}

/// The UDP receive buffer asked for unless told otherwise: room for bursts
/// (the kernel caps it at `net.core.rmem_max`).
pub const DEFAULT_RECV_BUFFER: usize = 4 << 20;

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            port: 8888,
            bind: None,
            unix: None,
            unix_file: FileAccess::default(),
            protocols: Protocols::Both,
            once: false,
            framing: Framing::Raw,
            mode: Mode::Print,
            access: AccessList::default(),
            max_conns: DEFAULT_MAX_CONNS,
            max_per_ip: None,
            idle_timeout: None,
            keepalive: None,
            echo_rate: DEFAULT_ECHO_RATE,
            exec: None,
            join: Vec::new(),
            iface: None,
            recv_buffer: DEFAULT_RECV_BUFFER,
            tls: None,
            stats: None,
        }
    }
}
