//! The server: binds TCP and UDP sockets and turns what arrives into
//! [`Message`]s for the sinks. TCP and UDP differ only in their loops
//! ([`tcp`], [`udp`]); everything after the socket is shared.

mod tcp;
mod udp;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::endpoint::{self, Bound};
use crate::error::{Error, IoContext, Result};
use crate::framing::Framing;
use crate::message::{Event, Message, Proto};
use crate::shutdown;
use crate::sink::{Output, OutputConfig};

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
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            port: 8888,
            bind: None,
            protocols: Protocols::Both,
            once: false,
            framing: Framing::Raw,
        }
    }
}

/// How often a port-0 bind of several sockets is retried when the port the
/// first socket got is taken for another protocol.
const FREE_PORT_ATTEMPTS: usize = 16;

/// Bound sockets, ready to serve.
#[derive(Debug)]
pub struct Listener {
    sockets: Vec<Bound>,
}

impl Listener {
    /// Binds every socket `config` asks for, all on one port. Must run inside a tokio runtime.
    pub fn bind(config: &ListenConfig) -> Result<Listener> {
        let ips = endpoint::listen_ips(config.bind.as_deref())?;
        if ips.is_empty() {
            return Err(Error::Usage(format!(
                "no address to listen on for {:?}",
                config.bind
            )));
        }
        let mut attempt = 1;
        loop {
            match Self::bind_on_one_port(&ips, config.protocols.list(), config.port) {
                Err(Error::AddrInUse { .. })
                    if config.port == 0 && attempt < FREE_PORT_ATTEMPTS =>
                {
                    attempt += 1
                }
                other => return other,
            }
        }
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
        Ok(Listener { sockets })
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
    ) {
        let context = Arc::new(Context {
            events,
            framing: config.framing,
            once: config.once.then_some(match config.protocols {
                Protocols::Udp => Proto::Udp,
                _ => Proto::Tcp,
            }),
            shutdown,
            tasks: TaskTracker::new(),
        });
        for socket in self.sockets {
            if let Ok(local) = socket.local_addr() {
                let listening = Event::Listening { local };
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
        context.tasks.close();
        context.tasks.wait().await;
    }
}

/// What every socket loop and connection task shares.
struct Context {
    events: mpsc::Sender<Message>,
    framing: Framing,
    /// With `--once`, the protocol whose first client ends the server.
    once: Option<Proto>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Context {
    /// Hands a message to the sinks, waiting while they are busy (backpressure).
    async fn emit(&self, message: Message) {
        // Fails only once the writer is gone, and then it has cancelled `shutdown`.
        let _ = self.events.send(message).await;
    }
}

/// Runs `portier listen`: binds, serves until Ctrl-C, SIGTERM or `--once`,
/// and flushes everything received before returning.
pub async fn run(config: ListenConfig, output: OutputConfig) -> Result<()> {
    let listener = Listener::bind(&config)?;
    let shutdown = CancellationToken::new();
    shutdown::cancel_on_signal(shutdown.clone());
    let output = Output::to_stdio(output, shutdown.clone());
    listener.serve(&config, output.sender(), shutdown).await;
    output.finish()
}
