//! `portier relay FROM TO`: forwarding. Each client of FROM gets its own
//! connection to TO (streams: TCP, TLS, UNIX), or its own upstream socket
//! (UDP), and bytes go both ways until either end is done.
//!
//! - `streams.rs`: TCP, TLS and UNIX streams joined, spliced on Linux; one
//!   side's end of stream becomes a half-close on the other, a reset a reset.
//! - `udp.rs`: a session (its own upstream socket) per UDP client.
//! - `lines.rs`: datagrams (UDP, UNIX) to a TCP collector, a datagram a
//!   line, and TCP lines to UDP.
//!
//! Every byte is counted, both ways, in the disconnect events and the summary.

mod events;
mod lines;
mod streams;
mod udp;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::access::AccessList;
use crate::address::{Address, Transport};
use crate::endpoint::{self, Origin, Socket};
use crate::error::{Error, IoContext, Result};
use crate::tls::{ClientTlsConfig, ServerTlsConfig};
use crate::unix_socket::{self, FileAccess, SocketFile};
pub use events::EventFormat;
use events::{Event, tell};
use streams::{Incoming, serve_streams};
use udp::relay_udp;

/// What `portier relay` does.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Where clients come in.
    pub from: Address,
    /// Where each client is forwarded.
    pub to: Address,
    /// Which peers may use the relay (IP clients only).
    pub access: AccessList,
    /// Clients (stream) or sessions (UDP) at once; more are refused and counted.
    pub max_conns: usize,
    /// Stream clients at once from any one address (`--max-per-ip`); UDP
    /// sources can be spoofed, so sessions are bounded by `max_conns` only.
    pub max_per_ip: Option<usize>,
    /// Close a connection, or end a UDP session, after this long with no byte either way.
    pub idle_timeout: Option<Duration>,
    /// UDP: at most this many replies a second to each client (`--reply-rate`).
    pub reply_rate: Option<u32>,
    /// FROM is `tls://`: the certificate to present.
    pub server_tls: Option<ServerTlsConfig>,
    /// TO is `tls://`: how to check the server.
    pub client_tls: ClientTlsConfig,
    /// FROM is a UNIX socket file: its permissions and group.
    pub unix_file: FileAccess,
    /// Say the totals so far this often (`--stats`).
    pub stats: Option<Duration>,
    /// Events as lines on stderr, or JSON on stdout (`-f json`).
    pub events: EventFormat,
    /// How connections to TO leave (a proxy, keepalive); keepalive applies to clients too.
    pub origin: Origin,
}

/// How long a UDP session lives without traffic, unless `--idle-timeout` says otherwise.
pub const UDP_SESSION_IDLE: Duration = Duration::from_secs(60);

/// At shutdown, datagrams still queued are taken off and counted for this long at most.
const QUEUED_COUNT_LIMIT: Duration = Duration::from_millis(200);

/// FROM, bound: its socket, and the socket file removed when it is dropped.
enum Bound {
    Udp(tokio::net::UdpSocket),
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, Option<SocketFile>),
    UnixDatagram(tokio::net::UnixDatagram, Option<SocketFile>),
}

/// Binds FROM, or takes the socket handed in for it (systemd socket
/// activation): then its file, if any, is systemd's to keep.
fn bind_from(config: &RelayConfig, handed_in: Vec<Socket>) -> Result<Bound> {
    let mut handed_in = handed_in.into_iter();
    let (Some(socket), None) = (handed_in.next(), handed_in.next()) else {
        return bind_here(config);
    };
    let cannot = || "cannot serve the socket handed in".to_string();
    let bound = match (socket, &config.from) {
        (
            Socket::Udp(socket),
            Address::Inet {
                transport: Transport::Udp,
                ..
            },
        ) => {
            socket.set_nonblocking(true).context(cannot)?;
            Bound::Udp(tokio::net::UdpSocket::from_std(socket).context(cannot)?)
        }
        (
            Socket::Tcp(listener),
            Address::Inet {
                transport: Transport::Tcp | Transport::Tls,
                ..
            },
        ) => {
            listener.set_nonblocking(true).context(cannot)?;
            Bound::Tcp(tokio::net::TcpListener::from_std(listener).context(cannot)?)
        }
        (
            Socket::Unix(listener),
            Address::Unix {
                datagram: false, ..
            },
        ) => {
            listener.set_nonblocking(true).context(cannot)?;
            Bound::Unix(
                tokio::net::UnixListener::from_std(listener).context(cannot)?,
                None,
            )
        }
        (socket, from) => {
            let kind = match socket {
                Socket::Tcp(_) => "a TCP listener",
                Socket::Udp(_) => "a UDP socket",
                Socket::Unix(_) => "a UNIX stream listener",
            };
            return Err(Error::Usage(format!(
                "the socket handed in (LISTEN_FDS) is {kind}, which does not serve {from}"
            )));
        }
    };
    Ok(bound)
}

fn bind_here(config: &RelayConfig) -> Result<Bound> {
    Ok(match &config.from {
        Address::Inet {
            transport: Transport::Udp,
            host,
            port,
        } => Bound::Udp(endpoint::bind_udp(listen_addr(host, *port)?)?),
        Address::Inet { host, port, .. } => {
            Bound::Tcp(endpoint::bind_tcp(listen_addr(host, *port)?)?)
        }
        Address::Unix {
            datagram: true,
            name,
        } => {
            let (socket, file) = unix_socket::bind_datagram(name, config.unix_file)?;
            Bound::UnixDatagram(socket, file)
        }
        Address::Unix { name, .. } => {
            let (listener, file) = unix_socket::bind_stream(name, config.unix_file)?;
            Bound::Unix(listener, file)
        }
    })
}

/// Runs the relay until `shutdown` is cancelled, then says what it moved.
/// `handed_in`: FROM's socket when systemd (or a parent) bound it.
pub async fn relay(
    config: &RelayConfig,
    handed_in: Vec<Socket>,
    shutdown: CancellationToken,
) -> Result<()> {
    check_pair(config)?;
    endpoint::raise_open_file_limit(); // two sockets a client, and a pipe each way that is busy
    let totals = Arc::new(Totals::default());
    let bound = bind_from(config, handed_in)?;
    refuse_own_port(config, &bound).await?;
    let to_tcp = matches!(
        config.to,
        Address::Inet {
            transport: Transport::Tcp,
            ..
        }
    );
    let to_udp = matches!(
        config.to,
        Address::Inet {
            transport: Transport::Udp,
            ..
        }
    );
    let serving = async {
        match bound {
            Bound::Udp(socket) => {
                // A burst waits in the kernel while the relay forwards; what still
                // overflows is counted there, and reported.
                let buffer = crate::listen::DEFAULT_RECV_BUFFER;
                crate::udp_options::set_receive_buffer(&socket, buffer)?;
                tell(config, Event::Listening(socket.local_addr().ok()));
                match (to_tcp, to_udp) {
                    (true, _) => {
                        let source = lines::Datagrams::Udp(socket);
                        lines::datagrams_to_lines(source, config, &totals, &shutdown).await
                    }
                    (_, true) => relay_udp(socket, config, &totals, &shutdown).await,
                    _ => {
                        let source = lines::Datagrams::Udp(socket);
                        lines::forward_datagrams(source, config, &totals, &shutdown).await
                    }
                }
            }
            Bound::Tcp(listener) => {
                tell(config, Event::Listening(listener.local_addr().ok()));
                match to_udp {
                    true => lines::lines_to_datagrams(listener, config, &totals, &shutdown).await,
                    false => {
                        serve_streams(Incoming::Tcp(listener), config, &totals, &shutdown).await
                    }
                }
            }
            Bound::UnixDatagram(socket, _file) => {
                tell(config, Event::Listening(None));
                let source = lines::Datagrams::Unix(socket);
                match to_tcp {
                    true => lines::datagrams_to_lines(source, config, &totals, &shutdown).await,
                    false => lines::forward_datagrams(source, config, &totals, &shutdown).await,
                }
            }
            Bound::Unix(listener, _file) => {
                tell(config, Event::Listening(None));
                serve_streams(Incoming::Unix(listener), config, &totals, &shutdown).await
            }
        }
    };
    let served = tokio::select! {
        served = serving => served,
        never = report_every(config, &totals) => match never {},
    };
    tell(config, Event::Totals(&totals, false));
    served
}

/// `--stats`: the totals so far, every `config.stats` (never without it).
async fn report_every(config: &RelayConfig, totals: &Totals) -> std::convert::Infallible {
    let Some(every) = config.stats else {
        return std::future::pending().await;
    };
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await; // the first tick is at once
    loop {
        ticks.tick().await;
        tell(config, Event::Totals(totals, true));
    }
}

/// Combinations that are refused before any socket opens.
fn check_pair(config: &RelayConfig) -> Result<()> {
    let datagram = |address: &Address| match address {
        Address::Inet { transport, .. } => *transport == Transport::Udp,
        Address::Unix { datagram, .. } => *datagram,
    };
    let (from, to) = (&config.from, &config.to);
    // A UNIX datagram socket feeds UDP or a TCP collector; its senders are
    // often unnamed (logger), so nothing can be answered back to them.
    let unix_datagram = |address: &Address| matches!(address, Address::Unix { datagram: true, .. });
    let tcp_or_udp = |address: &Address| {
        matches!(
            address,
            Address::Inet {
                transport: Transport::Tcp | Transport::Udp,
                ..
            }
        )
    };
    // A UNIX datagram socket as TO takes datagrams (UDP, UNIX) one way.
    if unix_datagram(to) && !datagram(from) {
        return Err(Error::Usage(format!(
            "relay from {from} to {to}: a unix-dgram: TO takes datagrams, from udp:// or unix-dgram:"
        )));
    }
    if unix_datagram(from) && !(tcp_or_udp(to) || unix_datagram(to)) {
        return Err(Error::Usage(format!(
            "relay from {from} to {to}: unix-dgram: goes on to tcp://, udp:// or unix-dgram:"
        )));
    }
    // Datagrams and lines: UDP to plain TCP, plain TCP to UDP.
    let plain_tcp = |address: &Address| {
        matches!(
            address,
            Address::Inet {
                transport: Transport::Tcp,
                ..
            }
        )
    };
    if datagram(from) != datagram(to) && !(plain_tcp(from) || plain_tcp(to)) && !unix_datagram(from)
    {
        return Err(Error::Usage(format!(
            "relay from {from} to {to}: datagrams and lines are joined between udp:// and tcp:// only"
        )));
    }
    if matches!(
        from,
        Address::Inet {
            transport: Transport::Tls,
            ..
        }
    ) && config.server_tls.is_none()
    {
        return Err(Error::Usage(format!(
            "{from} needs a certificate: --cert FILE --key FILE, or --self-signed"
        )));
    }
    if from == to {
        return Err(Error::Usage(format!(
            "relay from {from} to itself would loop"
        )));
    }
    Ok(())
}

/// Refuses a TO that is this relay itself under another name
/// (`tcp://:9000` to `tcp://localhost:9000`): each client would open a
/// connection (a UDP session) to the relay, which opens another, until `-m`
/// is reached and the relay serves no one. [`check_pair`] catches the same
/// address written twice; this resolves TO and compares it with the socket
/// bound. A name that does not resolve yet is left to the first client.
async fn refuse_own_port(config: &RelayConfig, bound: &Bound) -> Result<()> {
    let Address::Inet {
        transport,
        host,
        port,
    } = &config.to
    else {
        return Ok(());
    };
    let local = match bound {
        Bound::Tcp(listener) if *transport != Transport::Udp => listener.local_addr(),
        Bound::Udp(socket) if *transport == Transport::Udp => socket.local_addr(),
        _ => return Ok(()), // another protocol: another port, even with the same number
    };
    let (Ok(local), None) = (local, &config.origin.proxy) else {
        return Ok(());
    };
    let Ok(targets) = endpoint::resolve(host, *port).await else {
        return Ok(());
    };
    let covered = |target: SocketAddr| match local.ip() {
        IpAddr::V6(any) if any.is_unspecified() => true, // dual-stack
        IpAddr::V4(any) if any.is_unspecified() => target.is_ipv4(),
        ip => ip == target.ip(),
    };
    // Binding an address succeeds only where it is one of this host's.
    let this_host = |ip: IpAddr| ip.is_loopback() || std::net::UdpSocket::bind((ip, 0)).is_ok();
    let target = targets
        .into_iter()
        .map(endpoint::natural)
        .find(|target| target.port() == local.port() && covered(*target) && this_host(target.ip()));
    match target {
        Some(target) => Err(Error::Usage(format!(
            "relay from {} to {}: {target} is this relay's own port, it would loop",
            config.from, config.to
        ))),
        None => Ok(()),
    }
}

/// An empty host listens on every address, IPv4 and IPv6.
fn listen_addr(host: &str, port: u16) -> Result<SocketAddr> {
    let host = (!host.is_empty()).then_some(host);
    let ip = endpoint::listen_ips(host)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Resolve {
            host: host.unwrap_or_default().to_string(),
            reason: "no addresses found".into(),
        })?;
    Ok(SocketAddr::new(ip, port))
}

/// The counters behind the summary.
#[derive(Default)]
pub(super) struct Totals {
    connections: AtomicU64,
    refused: AtomicU64,
    over_limit: AtomicU64,
    /// UDP sessions closed to make room for new clients (-m reached).
    evicted: AtomicU64,
    /// UDP datagrams whose source would loop the replies back (spoofed).
    looping: AtomicU64,
    upstream_failed: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    datagrams_up: AtomicU64,
    datagrams_down: AtomicU64,
    /// Datagrams the kernel dropped before the relay read them (buffers full).
    kernel_drops: AtomicU64,
    /// UDP replies the upstream sent that could not be sent on to their client.
    replies_failed: AtomicU64,
    /// UDP datagrams, either way, still queued when the relay stopped.
    queued_at_shutdown: AtomicU64,
    /// UDP replies not sent: over the client's `--reply-rate`.
    replies_limited: AtomicU64,
}

impl Totals {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a client refused by --allow/--deny, and says so now and then
    /// ([`crate::sink::count_paced`]: spoofed datagrams cost nothing).
    fn refuse(&self, config: &RelayConfig, client: &str, why: &str) {
        if let Some(count) = crate::sink::count_paced(&self.refused) {
            events::tell(config, events::Event::Refused(client, why, count));
        }
    }

    /// Counts a client past `limit`, and says so now and then, as [`Totals::refuse`].
    fn turn_away(&self, config: &RelayConfig, client: &str, limit: events::Limit) {
        if let Some(count) = crate::sink::count_paced(&self.over_limit) {
            events::tell(config, events::Event::TurnedAway(client, limit, count));
        }
    }

    fn summary(&self) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut line = format!(
            "relay summary: {} clients, {} bytes to the upstream, {} bytes back",
            get(&self.connections),
            get(&self.bytes_up),
            get(&self.bytes_down)
        );
        let datagrams = (get(&self.datagrams_up), get(&self.datagrams_down));
        if datagrams != (0, 0) {
            line += &format!(" ({} datagrams up, {} back)", datagrams.0, datagrams.1);
        }
        for (counter, what) in [
            (
                &self.kernel_drops,
                "datagrams dropped by the kernel, buffers full",
            ),
            (&self.refused, "refused (--allow/--deny)"),
            (&self.over_limit, "turned away (-m, --max-per-ip)"),
            (
                &self.evicted,
                "unanswered sessions ended for new clients (-m)",
            ),
            (&self.looping, "from a looping source (not answered)"),
            (&self.upstream_failed, "upstream failures"),
            (
                &self.replies_failed,
                "replies not sent back (the send failed)",
            ),
            (
                &self.replies_limited,
                "replies not sent back (over --reply-rate)",
            ),
            (
                &self.queued_at_shutdown,
                "datagrams not relayed (still queued at shutdown)",
            ),
        ] {
            if get(counter) > 0 {
                line += &format!(", {} {what}", get(counter));
            }
        }
        line
    }
}
