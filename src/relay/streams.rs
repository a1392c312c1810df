//! Streams joined: TCP, TLS and UNIX clients, each with its own connection
//! to the upstream. One side's end of stream becomes a half-close on the
//! other (so request/response protocols still work) and a reset becomes a
//! reset. Between two plain sockets on Linux the bytes stay in the kernel.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::events::{Event, Limit, Relayed, tell};
use super::{RelayConfig, Totals};
use crate::access::PerAddress;
use crate::address::{Address, Transport};
use crate::endpoint::{self, Origin};
use crate::error::Result;
use crate::tls::{self, ServerTls};

/// How long the upstream may take to accept a relayed client.
const UPSTREAM_CONNECT: Duration = Duration::from_secs(30);

/// Where stream clients come from.
pub(super) enum Incoming {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Incoming {
    /// The next client, and how it is named in events.
    async fn accept(&self) -> io::Result<(Conn, String, Option<SocketAddr>)> {
        match self {
            Incoming::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                let peer = endpoint::natural(peer);
                Ok((Conn::Tcp(stream), peer.to_string(), Some(peer)))
            }
            Incoming::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                let name = crate::unix_socket::stream_peer(&stream).to_string();
                Ok((Conn::Unix(stream), name, None))
            }
        }
    }
}

pub(super) async fn serve_streams(
    incoming: Incoming,
    config: &RelayConfig,
    totals: &Arc<Totals>,
    shutdown: &CancellationToken,
) -> Result<()> {
    let server_tls = config.server_tls.as_ref().map(ServerTls::new).transpose()?;
    if let Some(fingerprint) = server_tls.as_ref().and_then(|tls| tls.self_signed.as_ref()) {
        let made = format!("self-signed certificate, SHA-256 {fingerprint}");
        tell(config, Event::Notice(made));
    }
    let acceptor = server_tls.map(|tls| tls.acceptor);
    let connector = match &config.to {
        Address::Inet {
            transport: Transport::Tls,
            ..
        } => Some(tls::connector(&config.client_tls)?),
        _ => None,
    };
    let slots = Arc::new(Semaphore::new(config.max_conns.max(1)));
    let per_address = config.max_per_ip.map(PerAddress::new);
    let mut clients = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = incoming.accept() => accepted,
            Some(_) = clients.join_next(), if !clients.is_empty() => continue,
        };
        let (conn, name, ip_peer) = match accepted {
            Ok((Conn::Tcp(stream), name, peer)) => {
                if let Err(e) = endpoint::set_keepalive(&stream, config.origin.keepalive) {
                    tell(config, Event::Failed(Some(&name), e.to_string()));
                }
                (Conn::Tcp(stream), name, peer)
            }
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(e) => {
                let error = format!("cannot accept a client: {}", crate::error::describe(&e));
                tell(config, Event::Failed(None, error));
                tokio::time::sleep(Duration::from_millis(100)).await; // out of descriptors: let clients close
                continue;
            }
        };
        if let Some(why) = ip_peer.and_then(|peer| config.access.refusal(peer.ip())) {
            totals.refuse(config, &name, why);
            continue;
        }
        let place = (per_address.as_ref().zip(ip_peer))
            .map(|(per_address, peer)| per_address.take(peer.ip()).ok_or(per_address.limit()));
        let place = match place.transpose() {
            Ok(place) => place,
            Err(limit) => {
                totals.turn_away(config, &name, Limit::PerAddress(limit));
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            totals.turn_away(config, &name, Limit::Clients(config.max_conns));
            continue;
        };
        Totals::add(&totals.connections, 1);
        let (config, totals) = (config.clone(), totals.clone());
        let (acceptor, connector) = (acceptor.clone(), connector.clone());
        let shutdown = shutdown.clone();
        clients.spawn(async move {
            // The handshake and the upstream's connect end with the relay too:
            // a silent client or a black-holed upstream must not hold up SIGTERM.
            let opening = async {
                let client = match (conn, acceptor) {
                    (Conn::Tcp(stream), Some(acceptor)) => {
                        match tls::accept(&acceptor, stream).await {
                            Ok((stream, _)) => Conn::TlsServer(Box::new(stream)),
                            Err(e) => return Err((e, false)),
                        }
                    }
                    (conn, _) => conn,
                };
                let reaching = connect_upstream(&config.to, &config.origin, connector.as_ref());
                match tokio::time::timeout(UPSTREAM_CONNECT, reaching).await {
                    Ok(Ok(upstream)) => Ok((client, upstream)),
                    Ok(Err(e)) => Err((format!("{e}; client closed"), true)),
                    Err(_) => Err((
                        format!(
                            "{} did not answer within {}s; client closed",
                            config.to,
                            UPSTREAM_CONNECT.as_secs()
                        ),
                        true,
                    )),
                }
            };
            let opened = tokio::select! {
                opened = opening => opened,
                _ = shutdown.cancelled() => return,
            };
            let (client, upstream) = match opened {
                Ok(pair) => pair,
                Err((error, upstream_failed)) => {
                    if upstream_failed {
                        Totals::add(&totals.upstream_failed, 1);
                    }
                    return tell(&config, Event::Failed(Some(&name), error));
                }
            };
            tell(&config, Event::Connected(&name, Relayed::Stream));
            let ended = join(client, upstream, config.idle_timeout, &shutdown).await;
            Totals::add(&totals.bytes_up, ended.up);
            Totals::add(&totals.bytes_down, ended.down);
            let bytes = Some((ended.up, ended.down));
            let why = ended.why.as_deref();
            tell(
                &config,
                Event::Disconnected {
                    client: &name,
                    bytes,
                    why,
                },
            );
            drop((slot, place));
        });
    }
    // Each connection sees the token and ends; wait for their last events.
    while clients.join_next().await.is_some() {}
    Ok(())
}

async fn connect_upstream(
    to: &Address,
    origin: &Origin,
    connector: Option<&tokio_rustls::TlsConnector>,
) -> Result<Conn> {
    match to {
        Address::Inet { host, port, .. } => {
            let (stream, _) = endpoint::connect_plain_tcp((host, *port), origin, None).await?;
            match connector {
                None => Ok(Conn::Tcp(stream)),
                Some(connector) => {
                    let stream = tls::connect(connector, stream, host).await?;
                    Ok(Conn::TlsClient(Box::new(stream)))
                }
            }
        }
        Address::Unix { name, .. } => {
            let stream = crate::unix_socket::connect_stream(name).await?;
            Ok(Conn::Unix(stream))
        }
    }
}

/// One side of a relayed stream.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
    TlsServer(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Conn {
    /// Closes with a reset where the transport has one, to pass a peer's reset on.
    fn reset(self) {
        let tcp = match &self {
            Conn::Tcp(stream) => Some(stream),
            Conn::TlsServer(stream) => Some(stream.get_ref().0),
            Conn::TlsClient(stream) => Some(stream.get_ref().0),
            Conn::Unix(_) => None,
        };
        if let Some(stream) = tcp {
            let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
        }
    }
}

/// A socket without TLS, that a splice can move bytes through.
#[cfg(target_os = "linux")]
enum Plain<'a> {
    Tcp(&'a TcpStream),
    Unix(&'a UnixStream),
}

#[cfg(target_os = "linux")]
impl Conn {
    fn plain(&self) -> Option<Plain<'_>> {
        match self {
            Conn::Tcp(stream) => Some(Plain::Tcp(stream)),
            Conn::Unix(stream) => Some(Plain::Unix(stream)),
            Conn::TlsServer(_) | Conn::TlsClient(_) => None,
        }
    }
}

#[cfg(target_os = "linux")]
impl std::os::fd::AsFd for Plain<'_> {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Plain::Tcp(stream) => stream.as_fd(),
            Plain::Unix(stream) => stream.as_fd(),
        }
    }
}

#[cfg(target_os = "linux")]
impl crate::splice::ReadySocket for Plain<'_> {
    async fn ready_for(&self, interest: tokio::io::Interest) -> io::Result<()> {
        match self {
            Plain::Tcp(stream) => stream.ready_for(interest).await,
            Plain::Unix(stream) => stream.ready_for(interest).await,
        }
    }
    fn try_io_for<R>(
        &self,
        interest: tokio::io::Interest,
        io: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        match self {
            Plain::Tcp(stream) => stream.try_io_for(interest, io),
            Plain::Unix(stream) => stream.try_io_for(interest, io),
        }
    }
}

macro_rules! each_conn {
    ($self:ident, $stream:ident => $body:expr) => {
        match $self.get_mut() {
            Conn::Tcp($stream) => $body,
            Conn::Unix($stream) => $body,
            Conn::TlsServer($stream) => $body,
            Conn::TlsClient($stream) => $body,
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each_conn!(self, stream => Pin::new(stream).poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each_conn!(self, stream => Pin::new(stream).poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_conn!(self, stream => Pin::new(stream).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_conn!(self, stream => Pin::new(stream).poll_shutdown(cx))
    }
}

/// How a relayed connection ended.
struct Ended {
    up: u64,
    down: u64,
    why: Option<String>,
}

/// Moves bytes both ways until both directions have ended, a side fails
/// (a reset, passed on to the other as a reset), nothing moves for `idle`,
/// or the relay stops. Between two plain sockets on Linux the bytes stay in
/// the kernel (splice); TLS goes through a buffer here.
async fn join(
    client: Conn,
    upstream: Conn,
    idle: Option<Duration>,
    shutdown: &CancellationToken,
) -> Ended {
    let activity = Activity::default();
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    #[cfg(target_os = "linux")]
    if let (Some(from), Some(to)) = (client.plain(), upstream.plain()) {
        let touch = || activity.touch();
        let to_upstream = crate::splice::splice_sockets(&from, &to, &up, touch);
        let to_client = crate::splice::splice_sockets(&to, &from, &down, touch);
        let why = drive(to_upstream, to_client, idle, &activity, shutdown).await;
        return ended(client, upstream, &up, &down, why);
    }
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let to_upstream = pump(&mut client_read, &mut upstream_write, &up, &activity);
    let to_client = pump(&mut upstream_read, &mut client_write, &down, &activity);
    let why = drive(to_upstream, to_client, idle, &activity, shutdown).await;
    let (client, upstream) = (
        client_read.unsplit(client_write),
        upstream_read.unsplit(upstream_write),
    );
    ended(client, upstream, &up, &down, why)
}

/// Runs both directions until they are done, one fails, `idle` passes with
/// nothing moving, or the relay stops; why, if not both done.
async fn drive(
    to_upstream: impl Future<Output = io::Result<()>>,
    to_client: impl Future<Output = io::Result<()>>,
    idle: Option<Duration>,
    activity: &Activity,
    shutdown: &CancellationToken,
) -> Option<String> {
    let (mut to_upstream, mut to_client) = (std::pin::pin!(to_upstream), std::pin::pin!(to_client));
    let (mut up_done, mut down_done) = (false, false);
    loop {
        let deadline = idle.map(|idle| activity.last() + idle);
        tokio::select! {
            ended = &mut to_upstream, if !up_done => match ended {
                Ok(()) => up_done = true,
                Err(e) => return Some(format!("reset: {}", crate::error::describe(&e))),
            },
            ended = &mut to_client, if !down_done => match ended {
                Ok(()) => down_done = true,
                Err(e) => return Some(format!("reset: {}", crate::error::describe(&e))),
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                if idle.is_some_and(|idle| activity.last() + idle <= Instant::now()) {
                    return Some("idle timeout".to_string());
                }
            }
            _ = shutdown.cancelled() => return Some("relay stopped".to_string()),
        }
        if up_done && down_done {
            return None;
        }
    }
}

/// The connection's account; a failure on one side is passed on as a reset.
fn ended(
    client: Conn,
    upstream: Conn,
    up: &AtomicU64,
    down: &AtomicU64,
    why: Option<String>,
) -> Ended {
    if why.as_deref().is_some_and(|why| why.starts_with("reset")) {
        client.reset();
        upstream.reset();
    }
    let (up, down) = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
    Ended { up, down, why }
}

/// When bytes last moved either way.
struct Activity {
    start: Instant,
    millis: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            start: Instant::now(),
            millis: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let millis = self.start.elapsed().as_millis() as u64;
        self.millis.store(millis, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.millis.load(Ordering::Relaxed))
    }
}

/// Copies one direction; at its end of stream, half-closes the other side.
async fn pump(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    moved: &AtomicU64,
    activity: &Activity,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Err(e) if tls::is_unannounced_close(&e) => 0,
            read => read?,
        };
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        moved.fetch_add(n as u64, Ordering::Relaxed);
        activity.touch();
    }
}
