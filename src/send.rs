//! One-shot sending: a message, stdin or a file, over TCP or UDP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UdpSocket;

use crate::endpoint;
use crate::error::{Error, IoContext, Result};
use crate::message::Proto;
use crate::sink::PeerOutput;

/// What to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// These bytes (the joined message words).
    Message(Bytes),
    /// Standard input, streamed to its end.
    Stdin,
    /// A file, streamed to its end.
    File(PathBuf),
}

/// What `portier send` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendConfig {
    pub host: String,
    pub port: u16,
    pub proto: Proto,
    pub source: Source,
    /// End a message with `\n` (the seed's "abcdefg!\n"); for UDP lines,
    /// keep each line's `\n` in its datagram.
    pub newline: bool,
    /// Bounds name resolution and the connection attempt.
    pub timeout: Option<Duration>,
}

impl SendConfig {
    /// Sends `message` plus a newline to `host:port` over `proto`.
    pub fn message(proto: Proto, host: &str, port: u16, message: &str) -> Self {
        SendConfig {
            host: host.to_string(),
            port,
            proto,
            source: Source::Message(Bytes::copy_from_slice(message.as_bytes())),
            newline: true,
            timeout: None,
        }
    }
}

/// Runs `portier send`. Over TCP it then waits until the peer closes,
/// copying whatever the peer answers to stdout.
pub async fn send(config: &SendConfig) -> Result<()> {
    match config.proto {
        Proto::Tcp => send_tcp(config).await,
        Proto::Udp => send_udp(config).await,
    }
}

async fn send_tcp(config: &SendConfig) -> Result<()> {
    let input = config.open().await?; // a missing file is reported before any connection
    let mut stream = endpoint::connect_tcp(&config.host, config.port, config.timeout).await?;
    let peer = peer_of(stream.peer_addr(), &config.host)?;
    let (reader, mut writer) = stream.split();
    let upload = async {
        upload(input, &mut writer, peer).await?;
        writer.shutdown().await.context(|| lost(peer))
    };
    let download = PeerOutput::default().copy_from(reader, peer);
    tokio::try_join!(upload, download)?;
    Ok(())
}

/// Streams `input` to `socket` in constant memory; returns the bytes sent.
pub(crate) async fn upload(
    mut input: impl AsyncRead + Unpin,
    socket: &mut (impl AsyncWrite + Unpin),
    peer: SocketAddr,
) -> Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0;
    loop {
        let n = input
            .read(&mut buf)
            .await
            .context(|| "cannot read input".into())?;
        if n == 0 {
            return Ok(sent);
        }
        socket.write_all(&buf[..n]).await.context(|| lost(peer))?;
        sent += n as u64;
    }
}

fn lost(peer: SocketAddr) -> String {
    format!("connection to {peer} lost while sending")
}

fn peer_of(addr: std::io::Result<SocketAddr>, host: &str) -> Result<SocketAddr> {
    addr.context(|| format!("connection to {host} lost"))
}

fn with_newline(message: &[u8], newline: bool) -> Vec<u8> {
    let mut data = message.to_vec();
    if newline {
        data.push(b'\n');
    }
    data
}

impl SendConfig {
    /// The source as a byte stream; a message gets its newline here.
    async fn open(&self) -> Result<Box<dyn AsyncRead + Unpin + Send>> {
        Ok(match &self.source {
            Source::Message(message) => {
                Box::new(std::io::Cursor::new(with_newline(message, self.newline)))
            }
            Source::Stdin => Box::new(tokio::io::stdin()),
            Source::File(path) => Box::new(
                tokio::fs::File::open(path)
                    .await
                    .context(|| format!("cannot read {}", path.display()))?,
            ),
        })
    }
}

async fn send_udp(config: &SendConfig) -> Result<()> {
    let input = config.open().await?;
    let socket = endpoint::connect_udp(&config.host, config.port, config.timeout).await?;
    let peer = peer_of(socket.peer_addr(), &config.host)?;
    match &config.source {
        Source::Message(message) => {
            let datagram = with_newline(message, config.newline);
            send_datagram(&socket, peer, &datagram, || "the message".into()).await?;
        }
        _ => send_lines(&socket, peer, input, config.newline).await?,
    }
    check_unreachable(&socket, peer)
}

/// Sends `input` one datagram per line, never holding more than one datagram in memory.
pub(crate) async fn send_lines(
    socket: &UdpSocket,
    peer: SocketAddr,
    input: impl AsyncRead + Unpin,
    newline: bool,
) -> Result<()> {
    let max = endpoint::max_datagram(peer);
    let mut input = BufReader::new(input);
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        // One byte over the limit, plus the newline, tells a too-long line apart.
        let mut limited = (&mut input).take(max as u64 + 2);
        let read = limited
            .read_until(b'\n', &mut line)
            .await
            .context(|| "cannot read input".into())?;
        if read == 0 {
            break;
        }
        if !newline && line.last() == Some(&b'\n') {
            line.pop();
        }
        send_datagram(socket, peer, &line, || format!("line {number}")).await?;
    }
    Ok(())
}

async fn send_datagram(
    socket: &UdpSocket,
    peer: SocketAddr,
    datagram: &[u8],
    what: impl FnOnce() -> String,
) -> Result<()> {
    let max = endpoint::max_datagram(peer);
    if datagram.len() > max {
        return Err(Error::DatagramTooLarge {
            what: what(),
            max,
            addr: peer,
        });
    }
    match socket.send(datagram).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(Error::PortUnreachable { addr: peer })
        }
        Err(e) => Err(Error::io(format!("cannot send to udp {peer}"), e)),
    }
}

/// Reports an ICMP "port unreachable" the kernel has already received for this socket.
pub(crate) fn check_unreachable(socket: &UdpSocket, peer: SocketAddr) -> Result<()> {
    match socket.take_error() {
        Ok(Some(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(Error::PortUnreachable { addr: peer })
        }
        Ok(Some(e)) => Err(Error::io(format!("cannot send to udp {peer}"), e)),
        _ => Ok(()),
    }
}
