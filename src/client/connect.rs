//! `portier connect`: a two-way session like `nc HOST PORT`, with stdin and
//! stdout, or with a program (`--exec`, like `ncat --exec`).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::datagram::{check_unreachable, send_lines};
use super::output::PeerOutput;
use super::stream::upload;
use crate::endpoint::{self, Origin, Stream};
use crate::error::{Error, IoContext, Result};
use crate::exec::{self, Program};
use crate::message::{Addr, Proto, SocketKind};
use crate::tls::ClientTlsConfig;
use crate::udp_options::SendOptions;

/// How long a UDP session waits for more replies once stdin has ended, unless told otherwise.
pub const UDP_LINGER: Duration = Duration::from_secs(2);

/// What `portier connect` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectConfig {
    /// A name, an IPv4 or an IPv6 address.
    pub host: String,
    /// The peer's port.
    pub port: u16,
    /// TCP or UDP.
    pub proto: Proto,
    /// Bounds the connection attempt; for UDP also how long to wait for
    /// replies after stdin ends (default [`UDP_LINGER`]).
    pub timeout: Option<Duration>,
    /// TCP: speak TLS.
    pub tls: Option<ClientTlsConfig>,
    /// TCP: a program talks to the peer instead of stdin and stdout.
    pub exec: Option<Program>,
    /// Talk with this UNIX stream socket instead of `host` and `port`.
    pub unix: Option<crate::address::UnixSocket>,
    /// TCP: stdin line by line, connecting again whenever the connection breaks.
    pub reconnect: Option<super::Reconnect>,
    /// TCP: how the connection leaves (a proxy, keepalive).
    pub origin: Origin,
}

/// Copies stdin to the peer and the peer to stdout. Over TCP the session ends
/// when the peer closes; the end of stdin only half-closes it, so the peer can still answer.
pub async fn connect(config: &ConnectConfig) -> Result<()> {
    connect_until(config, &CancellationToken::new()).await
}

/// [`connect`], which `stop` ends early with `--reconnect`; without it, `stop` is not looked at.
pub async fn connect_until(config: &ConnectConfig, stop: &CancellationToken) -> Result<()> {
    if let Some(unix) = &config.unix {
        if unix.datagram {
            return Err(Error::Usage(format!(
                "connect talks with streams; to send datagrams to {unix}, use send"
            )));
        }
        let stream = crate::unix_socket::connect_stream(&unix.name).await?;
        return session(stream, PeerOutput::default(), unix).await;
    }
    match config.proto {
        Proto::Tcp => connect_tcp(config, stop).await,
        Proto::Udp => connect_udp(config).await,
    }
}

async fn connect_tcp(config: &ConnectConfig, stop: &CancellationToken) -> Result<()> {
    let (host, port) = (&config.host, config.port);
    if let Some(reconnect) = &config.reconnect {
        let (target, stdin) = ((host.as_str(), port), tokio::io::stdin());
        let origin = &config.origin;
        return super::send_reconnecting(stdin, target, origin, config.timeout, reconnect, stop)
            .await;
    }
    let stream = endpoint::connect_tcp(
        (host, port),
        &config.origin,
        config.timeout,
        config.tls.as_ref(),
    )
    .await?;
    match (stream, &config.exec) {
        (Stream::Plain(stream, peer), Some(program)) => {
            let local = stream.local_addr().ok();
            program_session(stream, program, peer, local).await
        }
        (Stream::Tls(stream, peer), Some(program)) => {
            let local = stream.get_ref().0.local_addr().ok();
            program_session(*stream, program, peer, local).await
        }
        (Stream::Plain(stream, peer), None) => session(stream, PeerOutput::plain_tcp(), peer).await,
        (Stream::Tls(stream, peer), None) => session(*stream, PeerOutput::default(), peer).await,
    }
}

/// `--exec`: the program talks to the peer until it ends; its failure is ours.
pub(crate) async fn program_session(
    stream: impl AsyncRead + AsyncWrite,
    program: &Program,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Result<()> {
    let (peer, local) = (Addr::Inet(peer), local.map(Addr::Inet));
    let child = program
        .spawn(SocketKind::Tcp, &peer, local.as_ref(), false)
        .map_err(Error::Program)?;
    let (reader, writer) = tokio::io::split(stream);
    let never = CancellationToken::new(); // Ctrl-C ends the process, and with it the pipes
    let ended = exec::serve(child, reader, writer, None, &never, |_| {}).await;
    match (ended.exit.as_str(), ended.cut_short) {
        ("exit 0", None) => Ok(()),
        (exit, why) => Err(Error::Program(format!(
            "the program ended: {exit}{}",
            why.map(|why| format!(" ({why})")).unwrap_or_default()
        ))),
    }
}

async fn session(
    stream: impl AsyncRead + AsyncWrite,
    output: PeerOutput,
    peer: impl std::fmt::Display + Copy,
) -> Result<()> {
    let (reader, mut writer) = tokio::io::split(stream);
    let mut download = std::pin::pin!(output.copy_from(reader, peer));
    let mut upload = std::pin::pin!(async {
        upload(tokio::io::stdin(), &mut writer, peer).await?;
        writer
            .shutdown()
            .await
            .context(|| format!("connection to {peer} lost"))
    });
    let mut uploading = true;
    loop {
        tokio::select! {
            downloaded = &mut download => return downloaded.map(drop),
            uploaded = &mut upload, if uploading => {
                uploaded?;
                uploading = false;
            }
        }
    }
}

async fn connect_udp(config: &ConnectConfig) -> Result<()> {
    let options = SendOptions::default();
    let (host, port) = (&config.host, config.port);
    let (socket, peer) =
        endpoint::connect_udp((host, port), &Origin::default(), config.timeout, &options).await?;
    tokio::select! {
        received = receive(&socket, peer, None) => received,
        sent = send_lines(&socket, peer, tokio::io::stdin(), true) => {
            sent?;
            check_unreachable(&socket, peer)?;
            receive(&socket, peer, Some(config.timeout.unwrap_or(UDP_LINGER))).await
        }
    }
}

/// Writes every datagram that arrives to stdout; with `idle`, stops after that long without one.
async fn receive(socket: &UdpSocket, peer: SocketAddr, idle: Option<Duration>) -> Result<()> {
    let mut output = PeerOutput::default();
    let mut buf = vec![0u8; 65_536];
    loop {
        let received = match idle {
            Some(idle) => match tokio::time::timeout(idle, socket.recv(&mut buf)).await {
                Ok(received) => received,
                Err(_) => return Ok(()),
            },
            None => socket.recv(&mut buf).await,
        };
        let len = received.map_err(|e| endpoint::udp_send_error(peer, e))?;
        if !output.write(&buf[..len]).await? {
            return Ok(());
        }
    }
}
