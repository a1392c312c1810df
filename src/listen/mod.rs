//! The server: binds TCP and UDP sockets and turns what arrives into
//! [`Message`]s for the sinks. TCP and UDP differ only in their loops
//! (`tcp.rs`, `udp.rs`, with `batch.rs` for batch receive); writing back to
//! clients (echo, broker, chat) is in `relay.rs`; everything after the socket
//! is shared.

mod echo_guard;
mod relay;
mod tcp;
mod udp;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use echo_guard::DEFAULT_ECHO_RATE;
pub use relay::{CLIENT_QUEUE_LEN, Mode};

use crate::access::AccessList;
use crate::endpoint::{self, Bound};
use crate::error::{Error, IoContext, Result};
use crate::framing::Framing;
use crate::message::{Event, Message, Proto};
use crate::sink::{Format, Output, OutputConfig};
use crate::tls::{Fingerprint, ServerTls, ServerTlsConfig};
use crate::udp_options::{self, Interface};
use tokio_rustls::TlsAcceptor;

/// TCP clients served at once unless told otherwise.
pub const DEFAULT_MAX_CONNS: usize = 1024;

/// Which protocols to listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocols {
    #[default]
    Both,
    Tcp,
    Udp,
}

impl Protocols {
    fn list(self) -> &'static [Proto] {
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
    pub protocols: Protocols,
    /// Stop after the first TCP client leaves (or, UDP only, the first datagram).
    pub once: bool,
    pub framing: Framing,
    pub mode: Mode,
    pub access: AccessList,
    /// TCP clients served at once; more are told the server is full.
    pub max_conns: usize,
    /// Close TCP clients that send nothing, or take nothing written to
    /// them (echo, broker, chat), for this long.
    pub idle_timeout: Option<Duration>,
    /// UDP echo: replies per second to any one peer, at most.
    pub echo_rate: u32,
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
    /// Received bytes go straight to stdout, skipping framing, formatting and
    /// the writer thread: a single TCP client (`--once`) is spliced inside the
    /// kernel (Linux), a single UDP socket writes each batch with one call.
    /// [`run`] turns it on where the output is the bytes as received (raw, to
    /// a pipe or file, nothing else done with them) and one reader feeds it.
    pub straight_to_stdout: bool,
}

/// The UDP receive buffer asked for unless told otherwise: room for bursts
/// (the kernel caps it at `net.core.rmem_max`).
pub const DEFAULT_RECV_BUFFER: usize = 4 << 20;

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            port: 8888,
            bind: None,
            protocols: Protocols::Both,
            once: false,
            framing: Framing::Raw,
            mode: Mode::Print,
            access: AccessList::default(),
            max_conns: DEFAULT_MAX_CONNS,
            idle_timeout: None,
            echo_rate: DEFAULT_ECHO_RATE,
            join: Vec::new(),
            iface: None,
            recv_buffer: DEFAULT_RECV_BUFFER,
            tls: None,
            stats: None,
            straight_to_stdout: false,
        }
    }
}

/// What the server received and turned away, reported when it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Data messages handed to the sinks, and their bytes.
    pub messages: u64,
    pub bytes: u64,
    /// Peers refused by `--allow` / `--deny` (TCP connections and UDP datagrams).
    pub refused: u64,
    /// TCP connections refused past `--max-conns`.
    pub over_limit: u64,
    /// Broker or chat clients dropped because they did not read fast enough.
    pub dropped_slow: u64,
    /// Datagrams the kernel dropped because a receive buffer was full.
    pub kernel_drops: u64,
    /// UDP echo replies not sent: to a looping source, or over a peer's budget.
    pub echo_withheld: u64,
    /// Datagrams still queued in the kernel at shutdown, taken off and not read.
    pub unread: u64,
}

impl Summary {
    /// The `--stats` line at exit.
    pub fn totals(&self, elapsed: Duration) -> String {
        format!(
            "total: {} messages, {} in {:.1}s, {} drops",
            self.messages,
            indicatif::HumanBytes(self.bytes),
            elapsed.as_secs_f64(),
            self.kernel_drops
        )
    }

    /// One line for stderr, or `None` when nothing was turned away.
    pub fn line(&self) -> Option<String> {
        let parts: Vec<String> = [
            (self.refused, "refused by --allow/--deny"),
            (self.over_limit, "refused over --max-conns"),
            (self.dropped_slow, "slow clients dropped"),
            (
                self.kernel_drops,
                "datagrams dropped by the kernel (receive buffer full)",
            ),
            (
                self.echo_withheld,
                "echo replies not sent (looping source or over --echo-rate)",
            ),
            (self.unread, "datagrams not read (still queued at shutdown)"),
        ]
        .iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, what)| format!("{count} {what}"))
        .collect();
        (!parts.is_empty()).then(|| format!("summary: {}", parts.join(", ")))
    }
}

/// How often a port-0 bind of several sockets is retried when the port the
/// first socket got is taken for another protocol.
const FREE_PORT_ATTEMPTS: usize = 16;

/// Bound sockets, ready to serve.
pub struct Listener {
    sockets: Vec<Bound>,
    tls: Option<ServerTls>,
}

impl Listener {
    /// Binds every socket `config` asks for, all on one port. Must run inside a tokio runtime.
    pub fn bind(config: &ListenConfig) -> Result<Listener> {
        // Certificates and keys are read before any socket is opened.
        let tls = match &config.tls {
            Some(_) if config.protocols != Protocols::Tcp => {
                return Err(Error::Usage(
                    "TLS is for TCP: add -t (UDP cannot do TLS)".into(),
                ));
            }
            Some(tls) => Some(ServerTls::new(tls)?),
            None => None,
        };
        let ips = endpoint::listen_ips(config.bind.as_deref())?;
        if ips.is_empty() {
            return Err(Error::Usage(format!(
                "no address to listen on for {:?}",
                config.bind
            )));
        }
        let mut attempt = 1;
        let mut listener = loop {
            match Self::bind_on_one_port(&ips, config.protocols.list(), config.port) {
                Err(Error::AddrInUse { .. })
                    if config.port == 0 && attempt < FREE_PORT_ATTEMPTS =>
                {
                    attempt += 1
                }
                other => break other?,
            }
        };
        listener.set_up_udp(config)?;
        listener.tls = tls;
        Ok(listener)
    }

    /// The fingerprint of the certificate the listener made itself (`--tls-self-signed`).
    pub fn self_signed_fingerprint(&self) -> Option<Fingerprint> {
        self.tls.as_ref().and_then(|tls| tls.self_signed)
    }

    /// Receive buffer and multicast groups, on every UDP socket.
    fn set_up_udp(&self, config: &ListenConfig) -> Result<()> {
        if !config.join.is_empty() && config.protocols == Protocols::Tcp {
            return Err(Error::Usage("--join is for UDP; drop -t".into()));
        }
        for socket in &self.sockets {
            let Bound::Udp(socket) = socket else { continue };
            udp_options::set_receive_buffer(socket, config.recv_buffer)?;
            let local = socket
                .local_addr()
                .context(|| "cannot listen on udp".into())?;
            for &group in &config.join {
                if !group.is_multicast() {
                    return Err(Error::Usage(format!(
                        "--join {group}: not a multicast group"
                    )));
                }
                udp_options::join(socket, local, group, config.iface.as_ref())?;
            }
        }
        Ok(())
    }

    fn bind_on_one_port(ips: &[IpAddr], protos: &[Proto], mut port: u16) -> Result<Listener> {
        let mut sockets = Vec::new();
        for &ip in ips {
            for &proto in protos {
                let socket = endpoint::bind(proto, SocketAddr::new(ip, port))?;
                port = socket
                    .local_addr()
                    .context(|| format!("cannot listen on {proto} {ip}"))?
                    .port();
                sockets.push(socket);
            }
        }
        Ok(Listener { sockets, tls: None })
    }

    /// The protocol and local address of every socket.
    pub fn local_addrs(&self) -> Vec<(Proto, SocketAddr)> {
        self.sockets
            .iter()
            .filter_map(|s| Some((s.proto(), s.local_addr().ok()?)))
            .collect()
    }

    /// Serves until `shutdown` is cancelled (or `--once` is satisfied), then
    /// waits until every connection has handed over what it received.
    pub async fn serve(
        self,
        config: &ListenConfig,
        events: mpsc::Sender<Message>,
        shutdown: CancellationToken,
    ) -> Summary {
        let udp_sockets = self.sockets.iter().filter(|s| s.proto() == Proto::Udp);
        let single_udp = udp_sockets.count() == 1 && self.sockets.len() == 1;
        let context = Arc::new(Context {
            events,
            framing: config.framing,
            once: config.once.then_some(match config.protocols {
                Protocols::Udp => Proto::Udp,
                _ => Proto::Tcp,
            }),
            mode: config.mode,
            access: config.access.clone(),
            max_conns: config.max_conns,
            connections: Arc::new(Semaphore::new(config.max_conns)),
            idle_timeout: config.idle_timeout,
            echo_rate: config.echo_rate,
            hub: relay::Hub::default(),
            tls: self.tls.map(|tls| tls.acceptor),
            straight_to_stdout: config.straight_to_stdout,
            stdout: single_udp
                .then(straight_stdout)
                .flatten()
                .filter(|_| config.straight_to_stdout),
            counters: Counters::default(),
            shutdown,
            tasks: TaskTracker::new(),
        });
        let note = match config.mode {
            Mode::Broker | Mode::Chat => {
                Some("TCP only: broker and chat relay between TCP clients")
            }
            _ => None,
        };
        for socket in self.sockets {
            if let Ok(local) = socket.local_addr() {
                let listening = Event::Listening { local, note };
                context
                    .emit(Message::new(socket.proto(), None, listening))
                    .await;
            }
            match socket {
                Bound::Tcp(listener) => context
                    .tasks
                    .spawn(tcp::accept_loop(listener, context.clone())),
                Bound::Udp(socket) => context
                    .tasks
                    .spawn(udp::receive_loop(socket, context.clone())),
            };
        }
        if let Some(every) = config.stats {
            context.tasks.spawn(report_stats(context.clone(), every));
        }
        context.tasks.close();
        context.tasks.wait().await;
        context.counters.summary()
    }
}

#[derive(Default)]
struct Counters {
    messages: AtomicU64,
    bytes: AtomicU64,
    refused: AtomicU64,
    over_limit: AtomicU64,
    dropped_slow: AtomicU64,
    kernel_drops: AtomicU64,
    echo_withheld: AtomicU64,
    unread: AtomicU64,
}

impl Counters {
    fn summary(&self) -> Summary {
        Summary {
            messages: self.messages.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            over_limit: self.over_limit.load(Ordering::Relaxed),
            dropped_slow: self.dropped_slow.load(Ordering::Relaxed),
            kernel_drops: self.kernel_drops.load(Ordering::Relaxed),
            echo_withheld: self.echo_withheld.load(Ordering::Relaxed),
            unread: self.unread.load(Ordering::Relaxed),
        }
    }
}

/// `--stats`: a line on stderr every `every`, until shutdown.
async fn report_stats(context: Arc<Context>, every: Duration) {
    let mut last_bytes = 0;
    loop {
        tokio::select! {
            _ = context.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = context.counters.summary();
        let clients = context.max_conns - context.connections.available_permits();
        let rate = (now.bytes - last_bytes) as f64 / every.as_secs_f64();
        last_bytes = now.bytes;
        let stats = format!(
            "stats: {clients} clients, {} messages, {}, {}/s, {} drops",
            now.messages,
            indicatif::HumanBytes(now.bytes),
            indicatif::HumanBytes(rate as u64),
            now.kernel_drops
        );
        context.notice(stats).await;
    }
}

/// What every socket loop and connection task shares.
struct Context {
    events: mpsc::Sender<Message>,
    framing: Framing,
    /// With `--once`, the protocol whose first client ends the server.
    once: Option<Proto>,
    mode: Mode,
    access: AccessList,
    max_conns: usize,
    /// One permit per TCP client being served.
    connections: Arc<Semaphore>,
    idle_timeout: Option<Duration>,
    echo_rate: u32,
    hub: relay::Hub,
    tls: Option<TlsAcceptor>,
    straight_to_stdout: bool,
    /// stdout, for the one UDP socket that writes to it straight.
    stdout: Option<std::fs::File>,
    counters: Counters,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Context {
    /// Counts one message of `len` bytes for `--stats`.
    fn count_data(&self, len: u64) {
        self.counters.messages.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes.fetch_add(len, Ordering::Relaxed);
    }

    /// Hands a message to the sinks, waiting while they are busy (backpressure).
    async fn emit(&self, message: Message) {
        self.count(&message);
        // Fails only once the writer is gone, and then it has cancelled `shutdown`.
        let _ = self.events.send(message).await;
    }

    /// Counts a client dropped because it does not take what is written to it.
    fn count_dropped_slow(&self) {
        self.counters.dropped_slow.fetch_add(1, Ordering::Relaxed);
    }

    /// Says something on stderr, even with `-q`.
    async fn notice(&self, text: String) {
        let notice = Message::new(Proto::Tcp, None, Event::Notice(text));
        self.emit(notice).await;
    }

    /// [`Context::emit`] for the UDP receivers, which run on threads of their own.
    fn emit_blocking(&self, message: Message) {
        self.count(&message);
        let _ = self.events.blocking_send(message);
    }

    fn count(&self, message: &Message) {
        if let Event::Data { bytes, .. } = &message.event {
            self.count_data(bytes.len() as u64);
        }
    }

    /// Counts one peer turned away; the notice to report, in a flood only for
    /// the first ten and then every power of two, so stderr keeps up (the
    /// summary has the total).
    fn turned_away(
        &self,
        counter: &AtomicU64,
        proto: Proto,
        peer: SocketAddr,
        why: &str,
    ) -> Option<Message> {
        let count = counter.fetch_add(1, Ordering::Relaxed) + 1;
        (count <= 10 || count.is_power_of_two()).then(|| {
            let error = Event::Error(format!("{why} (#{count})"));
            Message::new(proto, Some(peer), error)
        })
    }
}

/// Runs `portier listen`: binds, serves until Ctrl-C, SIGTERM or `--once`,
/// flushes everything received, then says what it turned away.
pub async fn run(
    mut config: ListenConfig,
    output: OutputConfig,
    shutdown: CancellationToken,
) -> Result<()> {
    raise_open_file_limit();
    config.straight_to_stdout = straight_to_stdout_fits(&config, &output);
    let quiet = output.quiet;
    // Every input (the -o file, certificates) is checked before a socket opens.
    let output = Output::to_stdio(output, shutdown.clone())?;
    let listener = Listener::bind(&config)?;
    let say = |text: String| Message::new(Proto::Tcp, None, Event::Notice(text));
    let events = output.sender();
    if let Some(fingerprint) = listener.self_signed_fingerprint() {
        // A notice, so shown even with -q: clients need it to trust this listener.
        let made = format!("TLS certificate made for this run, SHA-256 fingerprint {fingerprint}");
        let pin = format!("clients: portier send --tls --pin {fingerprint} HOST PORT");
        for text in [made, pin] {
            let _ = events.send(say(text)).await;
        }
    }
    let started = std::time::Instant::now();
    let summary = listener.serve(&config, events.clone(), shutdown).await;
    if let Some(line) = summary.line().filter(|_| !quiet) {
        let _ = events.send(say(line)).await;
    }
    if config.stats.is_some() {
        let _ = events.send(say(summary.totals(started.elapsed()))).await;
    }
    drop(events);
    output.finish()
}

/// True when every received byte goes to stdout as is, nowhere else, from one reader.
fn straight_to_stdout_fits(config: &ListenConfig, output: &OutputConfig) -> bool {
    let bytes_as_received = output.format == Format::Raw && !output.terminal;
    let only_stdout = output.file.is_none() && config.tls.is_none();
    let one_reader = match config.protocols {
        Protocols::Tcp => config.once && config.mode == Mode::Print,
        Protocols::Udp => matches!(config.mode, Mode::Print | Mode::Echo),
        Protocols::Both => false,
    };
    bytes_as_received && only_stdout && one_reader && stdout_spliceable()
}

/// A descriptor of its own for stdout, for the paths that write or splice to it straight.
#[cfg(unix)]
fn straight_stdout() -> Option<std::fs::File> {
    use std::os::fd::AsFd;
    let fd = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
    Some(std::fs::File::from(fd))
}

#[cfg(not(unix))]
fn straight_stdout() -> Option<std::fs::File> {
    None
}

#[cfg(target_os = "linux")]
fn stdout_spliceable() -> bool {
    use std::os::fd::AsFd;
    crate::splice::spliceable(std::io::stdout().as_fd())
}

#[cfg(not(target_os = "linux"))]
fn stdout_spliceable() -> bool {
    false
}

/// Each TCP client is a file descriptor; the usual soft limit (1024) is far
/// below what the hard limit allows, so take what is allowed.
fn raise_open_file_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}
