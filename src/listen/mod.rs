//! The server: serves TCP, UDP and UNIX sockets, bound here or handed in, and turns
//! what arrives into [`Message`]s for the sinks.
//!
//! - `config.rs`: what it is asked to do; `delivery.rs`: the one choice of
//!   how bytes reach stdout; `stats.rs`: what it counts and reports.
//! - `stream.rs` (TCP and UNIX streams), `udp.rs` and `unix_dgram.rs`: the
//!   socket loops; `replies.rs`: writing back to clients (echo, broker, chat);
//!   `echo_guard.rs`: what stops UDP echo loops.
//! - `activation.rs`: sockets handed in through `LISTEN_FDS`.

mod activation;
mod config;
mod delivery;
mod echo_guard;
mod replies;
mod stats;
mod stream;
mod udp;
mod unix_dgram;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::endpoint::Socket;
pub use crate::exec::Program;
pub use activation::sockets_from_env;
pub use config::{DEFAULT_MAX_CONNS, DEFAULT_RECV_BUFFER, ListenConfig, Protocols};
use delivery::{Delivery, Surroundings, stdout_spliceable};
pub use echo_guard::DEFAULT_ECHO_RATE;
pub(crate) use echo_guard::{Budget, loops_back};
pub use replies::{CLIENT_QUEUE_LEN, Mode};
pub use stats::Summary;

use crate::access::{AccessList, PerAddress};
use crate::address::UnixSocket;
use crate::endpoint::{self, Bound};
use crate::error::{Error, IoContext, Result};
use crate::framing::Framing;
use crate::message::{Addr, Event, Message, Proto, SocketKind};
use crate::sink::web::WebTap;
use crate::sink::{Output, OutputConfig, Taps};
use crate::tls::{Fingerprint, ServerTls};
use crate::udp_options;
use crate::unix_socket;
use stats::Counters;

/// How often a port-0 bind of several sockets is retried when the port the
/// first socket got is taken for another protocol.
const FREE_PORT_ATTEMPTS: usize = 16;

/// Bound sockets, ready to serve: bound here ([`Listener::bind`]) or handed
/// in ([`Listener::from_sockets`]: systemd, a parent process, a test).
pub struct Listener {
    sockets: Vec<Bound>,
    tls: Option<ServerTls>,
}

impl Listener {
    /// Binds every socket `config` asks for, all on one port. Must run inside a tokio runtime.
    pub fn bind(config: &ListenConfig) -> Result<Listener> {
        // Certificates and keys are read before any socket is opened.
        if config.tls.is_some() && config.protocols != Protocols::Tcp {
            return Err(Error::Usage(
                "TLS is for TCP: add -t (UDP cannot do TLS)".into(),
            ));
        }
        if let Some(unix) = &config.unix {
            return Self::bind_unix(unix, config);
        }
        let tls = server_tls(config)?;
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

    /// A UNIX socket: a stream served as TCP clients are, or datagrams printed as they come.
    fn bind_unix(unix: &UnixSocket, config: &ListenConfig) -> Result<Listener> {
        if config.tls.is_some() {
            return Err(Error::Usage(format!(
                "TLS is for TCP; {unix} is already private to this machine"
            )));
        }
        if !config.join.is_empty() {
            return Err(Error::Usage("--join is for UDP".into()));
        }
        let socket = match unix.datagram {
            false => {
                let (listener, file) = unix_socket::bind_stream(&unix.name, config.unix_file)?;
                Bound::Unix(listener, file)
            }
            true if config.mode != Mode::Print => {
                return Err(Error::Usage(format!(
                    "{unix} prints what arrives; --echo, --exec, --chat and --broker are for streams (unix:) and UDP"
                )));
            }
            true => {
                let (socket, file) = unix_socket::bind_datagram(&unix.name, config.unix_file)?;
                Bound::UnixDgram(socket, file)
            }
        };
        Ok(Listener {
            sockets: vec![socket],
            tls: None,
        })
    }

    /// Serves sockets bound elsewhere (systemd socket activation, a parent
    /// process, a test that bound port 0 itself), with `config`'s settings
    /// for everything but the addresses. Must run inside a tokio runtime.
    pub fn from_sockets(sockets: Vec<Socket>, config: &ListenConfig) -> Result<Listener> {
        let has_udp = sockets.iter().any(|s| matches!(s, Socket::Udp(_)));
        if config.tls.is_some() && has_udp {
            return Err(Error::Usage(
                "TLS is for TCP: a UDP socket was handed in (UDP cannot do TLS)".into(),
            ));
        }
        // What was asked for and what was handed in must agree, rather than
        // the flag being ignored.
        let has_stream = sockets.iter().any(|s| !matches!(s, Socket::Udp(_)));
        match config.protocols {
            Protocols::Tcp if has_udp => {
                return Err(Error::Usage(
                    "a UDP socket was handed in (LISTEN_FDS), but this listener takes streams only (-t, --broker or --chat)".into(),
                ));
            }
            Protocols::Udp if has_stream => {
                return Err(Error::Usage(
                    "a stream socket was handed in (LISTEN_FDS), but -u asks for UDP only".into(),
                ));
            }
            _ => {}
        }
        let tls = server_tls(config)?;
        let sockets = sockets
            .into_iter()
            .map(endpoint::Bound::from_std)
            .collect::<Result<Vec<_>>>()?;
        let listener = Listener { sockets, tls };
        listener.set_up_udp(config)?;
        Ok(listener)
    }

    /// The fingerprint of the certificate the listener made itself (`--tls-self-signed`).
    pub fn self_signed_fingerprint(&self) -> Option<Fingerprint> {
        self.tls.as_ref().and_then(|tls| tls.self_signed)
    }

    /// Receive buffer and multicast groups, on every UDP socket.
    fn set_up_udp(&self, config: &ListenConfig) -> Result<()> {
        let no_udp = self.sockets.iter().all(|s| s.kind() != SocketKind::Udp);
        if !config.join.is_empty() && no_udp {
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
                let Some(local) = socket.local_addr() else {
                    return Err(Error::Usage(format!(
                        "cannot listen on {proto} {ip}: no local address"
                    )));
                };
                port = local.port();
                sockets.push(socket);
            }
        }
        Ok(Listener { sockets, tls: None })
    }

    /// The kind and local address of every socket.
    pub fn local_addrs(&self) -> Vec<(SocketKind, Addr)> {
        self.sockets
            .iter()
            .filter_map(|s| Some((s.kind(), s.local()?)))
            .collect()
    }

    /// Serves until `shutdown` is cancelled (or `--once` is satisfied), every
    /// message to `events`, then waits until every connection has handed over
    /// what it received.
    pub async fn serve(
        self,
        config: &ListenConfig,
        events: mpsc::Sender<Message>,
        shutdown: CancellationToken,
    ) -> Summary {
        let context = self
            .start(
                config,
                Delivery::Formatted,
                events,
                Taps::default(),
                shutdown,
            )
            .await;
        finish(&context).await
    }

    /// How received bytes would best reach this process's stdout.
    fn delivery(&self, config: &ListenConfig, output: &OutputConfig) -> Delivery {
        let around = Surroundings {
            sockets: self.sockets.len(),
            stdout_spliceable: stdout_spliceable(),
        };
        Delivery::choose(config, output, around)
    }

    /// Starts serving, as [`Listener::serve`] does, with the data delivered
    /// by `delivery`, as [`Listener::delivery`] chose it (events still go to
    /// `events`), `--stats` saying what the `--to` brokers took, and the web
    /// page fed by the paths that skip the writer. [`finish`] waits for it.
    async fn start(
        self,
        config: &ListenConfig,
        delivery: Delivery,
        events: mpsc::Sender<Message>,
        taps: Taps,
        shutdown: CancellationToken,
    ) -> Arc<Context> {
        // With --once, the first client of the listener's main protocol (a
        // stream, if it has one) ends it.
        let kinds = self.sockets.iter().map(Bound::kind);
        let once_proto = kinds.clone().find(|k| k.is_stream()).or(kinds.last());
        let stdout = match delivery {
            Delivery::Formatted => None,
            Delivery::Straight | Delivery::Spliced => crate::sink::own_stdout(),
        };
        let delivery = if stdout.is_some() {
            delivery
        } else {
            Delivery::Formatted
        };
        let context = Arc::new(Context {
            events,
            framing: config.framing,
            once: once_proto.filter(|_| config.once),
            mode: config.mode,
            access: config.access.clone(),
            max_conns: config.max_conns,
            connections: Arc::new(Semaphore::new(config.max_conns)),
            per_address: config.max_per_ip.map(PerAddress::new),
            idle_timeout: config.idle_timeout,
            keepalive: config.keepalive,
            echo_rate: config.echo_rate,
            exec: config.exec.clone(),
            hub: replies::Hub::default(),
            tls: self.tls.map(|tls| tls.acceptor),
            delivery,
            stdout,
            web: taps.web,
            written: taps.written,
            datagram_sockets: Arc::default(),
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
            if let Some(local) = socket.local() {
                let listening = Event::Listening { local, note };
                context
                    .emit(Message::new(socket.kind(), None, listening))
                    .await;
            }
            let context = context.clone();
            match socket {
                Bound::Tcp(listener) => {
                    let listener = stream::Listener::Tcp(listener);
                    context
                        .tasks
                        .spawn(stream::accept_loop(listener, context.clone()))
                }
                Bound::Unix(listener, file) => {
                    let listener = stream::Listener::Unix {
                        listener,
                        _file: file,
                    };
                    context
                        .tasks
                        .spawn(stream::accept_loop(listener, context.clone()))
                }
                Bound::Udp(socket) => context
                    .tasks
                    .spawn(udp::receive_loop(socket, context.clone())),
                Bound::UnixDgram(socket, file) => {
                    context
                        .tasks
                        .spawn(unix_dgram::receive_loop(socket, file, context.clone()))
                }
            };
        }
        if let Some(every) = config.stats {
            context
                .tasks
                .spawn(stats::report_stats(context.clone(), every, taps.brokers));
        }
        context.tasks.close();
        context
    }
}

/// Waits until every socket loop and connection has stopped and handed over
/// what it received; what they counted.
async fn finish(context: &Context) -> Summary {
    context.tasks.wait().await;
    context.counters.summary()
}

/// The TLS side of a listener, made before any socket is opened.
fn server_tls(config: &ListenConfig) -> Result<Option<ServerTls>> {
    config.tls.as_ref().map(ServerTls::new).transpose()
}

/// What every socket loop and connection task shares.
struct Context {
    events: mpsc::Sender<Message>,
    framing: Framing,
    /// With `--once`, the kind of socket whose first client ends the server.
    once: Option<SocketKind>,
    mode: Mode,
    access: AccessList,
    max_conns: usize,
    /// One permit per TCP client being served.
    connections: Arc<Semaphore>,
    /// `--max-per-ip`: the clients each address has.
    per_address: Option<PerAddress>,
    idle_timeout: Option<Duration>,
    keepalive: Option<Duration>,
    echo_rate: u32,
    /// `--exec`: the program each TCP client talks to.
    exec: Option<Program>,
    hub: replies::Hub,
    tls: Option<TlsAcceptor>,
    /// How received bytes reach stdout.
    delivery: Delivery,
    /// stdout, for the paths that write or splice to it straight.
    stdout: Option<std::fs::File>,
    /// The `--web` page, for the path that writes to stdout straight.
    web: Option<WebTap>,
    /// Data bytes that reached stdout ([`Taps::written`]).
    written: Arc<AtomicU64>,
    /// The UDP sockets, for counting what they still hold if stdout stalls
    /// the stop ([`stdout_stalled`]) and their receivers cannot.
    datagram_sockets: Arc<std::sync::Mutex<Vec<std::os::fd::OwnedFd>>>,
    counters: Counters,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Context {
    /// Counts one message of `len` bytes for `--stats`.
    fn count_data(&self, len: u64) {
        self.count_message();
        self.counters.bytes.fetch_add(len, Ordering::Relaxed);
    }

    /// Counts one message of `len` bytes that a program took, not stdout
    /// (`--exec`): none of it waits for stdout.
    fn count_delivered(&self, len: u64) {
        self.count_data(len);
        self.written.fetch_add(len, Ordering::Relaxed);
    }

    /// Counts one message whose bytes were counted as they came (spliced).
    fn count_message(&self) {
        self.counters.messages.fetch_add(1, Ordering::Relaxed);
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

    /// Counts one peer turned away; the notice to report, in a flood only now
    /// and then ([`crate::sink::count_paced`]; the summary has the total).
    fn turned_away(
        &self,
        counter: &AtomicU64,
        proto: SocketKind,
        peer: Addr,
        why: &str,
    ) -> Option<Message> {
        crate::sink::count_paced(counter).map(|count| {
            let error = Event::Error(format!("{why} (#{count})"));
            Message::new(proto, Some(peer), error)
        })
    }
}

/// Runs `portier listen`: binds (or serves `handed_in`, when there are any),
/// serves until `shutdown` is cancelled (Ctrl-C, SIGTERM) or `--once` is
/// satisfied, flushes everything received, then says what it turned away.
pub async fn run(
    config: ListenConfig,
    output: OutputConfig,
    handed_in: Vec<Socket>,
    shutdown: CancellationToken,
) -> Result<()> {
    endpoint::raise_open_file_limit();
    let quiet = output.quiet;
    // Every input (the -o file, certificates) is checked before a socket opens.
    let writer_output = output.clone();
    let writer = Output::to_stdio(writer_output, shutdown.clone())?;
    let listener = match handed_in.is_empty() {
        true => Listener::bind(&config)?,
        false => Listener::from_sockets(handed_in, &config)?,
    };
    let delivery = listener.delivery(&config, &output);
    let say = |text: String| Message::new(Proto::Tcp, None, Event::Notice(text));
    let events = writer.sender();
    if let Some(fingerprint) = listener.self_signed_fingerprint() {
        // A notice, so shown even with -q: clients need it to trust this listener.
        let made = format!("TLS certificate made for this run, SHA-256 fingerprint {fingerprint}");
        let pin = format!("clients: portier send --tls --pin {fingerprint} HOST PORT");
        for text in [made, pin] {
            let _ = events.send(say(text)).await;
        }
    }
    let started = std::time::Instant::now();
    let taps = writer.taps();
    let written = taps.written.clone();
    let context = listener
        .start(&config, delivery, events.clone(), taps, shutdown.clone())
        .await;
    let received = context.counters.bytes.clone();
    let datagram_sockets = context.datagram_sockets.clone();
    let stopping = async {
        let summary = finish(&context).await;
        drop(context); // with it, its sender of events: the writer can end
        if let Some(line) = summary.line().filter(|_| !quiet) {
            let _ = events.send(say(line)).await;
        }
        if config.stats.is_some() {
            let _ = events.send(say(summary.totals(started.elapsed()))).await;
        }
        drop(events);
        // The writer waits for the brokers, whose connections run on this runtime.
        tokio::task::spawn_blocking(move || writer.finish())
            .await
            .unwrap_or_else(|e| Err(Error::io("cannot write output", std::io::Error::other(e))))
    };
    tokio::select! {
        stopped = stopping => stopped,
        // The threads still stuck in a write end with the process.
        unwritten = stdout_stalled(&shutdown, &written, &received) => {
            let (unread, kernel_drops) = unread_datagrams(&datagram_sockets);
            Err(Error::OutputStalled {
                // Spliced bytes are counted once they reach stdout: none wait.
                unwritten: Some(unwritten).filter(|n| *n > 0 && delivery != Delivery::Spliced),
                unread,
                kernel_drops,
                after: STDOUT_STALL,
            })
        }
    }
}

/// How long stdout may take nothing once the listener is stopping, before it
/// exits without what stdout did not take: a reader that stopped reading
/// (`portier listen | stuck`) must not keep SIGTERM from ending it. Longer
/// than the last steps that write nothing (UDP's grace, 0.5 s at most; the
/// brokers' 0.5 s after a signal); with the count of what the UDP sockets
/// still hold ([`udp::UNREAD_COUNT_LIMIT`]), under a second.
const STDOUT_STALL: Duration = Duration::from_millis(600);

/// Datagrams the UDP sockets still hold, taken off and counted (their
/// receivers are stuck writing to stdout), for [`udp::UNREAD_COUNT_LIMIT`] at
/// most; and those the kernel dropped on them, in all.
fn unread_datagrams(sockets: &std::sync::Mutex<Vec<std::os::fd::OwnedFd>>) -> (u64, u64) {
    let deadline = std::time::Instant::now() + udp::UNREAD_COUNT_LIMIT;
    let sockets = sockets.lock().unwrap_or_else(|e| e.into_inner());
    let (mut unread, mut dropped) = (0, 0);
    for fd in sockets.iter() {
        unread += endpoint::discard_queued(&socket2::SockRef::from(fd), deadline);
        dropped += crate::sys::kernel_drops(fd).unwrap_or(0);
    }
    (unread, dropped)
}

/// Ends when the listener is stopping and nothing has reached stdout, nor
/// been received, for [`STDOUT_STALL`]: what was received and not written.
async fn stdout_stalled(
    shutdown: &CancellationToken,
    written: &AtomicU64,
    received: &AtomicU64,
) -> u64 {
    shutdown.cancelled().await;
    let progress = || written.load(Ordering::Relaxed) + received.load(Ordering::Relaxed);
    let (mut last, mut since) = (progress(), tokio::time::Instant::now());
    loop {
        tokio::time::sleep(STDOUT_STALL / 7).await;
        let now = progress();
        if now != last {
            (last, since) = (now, tokio::time::Instant::now());
        } else if since.elapsed() >= STDOUT_STALL {
            let received = received.load(Ordering::Relaxed);
            return received.saturating_sub(written.load(Ordering::Relaxed));
        }
    }
}
