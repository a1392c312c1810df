//! One-shot sending: a message, stdin or a file, over TCP or UDP.

use std::net::SocketAddr;
#[cfg(target_os = "linux")]
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::datagram::{check_size, check_unreachable, send_datagram, send_lines};
use super::output::PeerOutput;
use super::ping::{self, Repeat};
use super::progress::Progress;
use super::stream::{RegularFile, lost, upload};
use crate::address::UnixSocket;
use crate::endpoint::{self, Origin, Stream};
use crate::error::{Error, IoContext, Result};
use crate::message::Proto;
use crate::tls::ClientTlsConfig;
use crate::udp_options::SendOptions;

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
    /// A name, an IPv4 or an IPv6 address.
    pub host: String,
    /// The peer's port.
    pub port: u16,
    /// TCP or UDP.
    pub proto: Proto,
    /// What to send.
    pub source: Source,
    /// End a message with `\n` (the seed's "abcdefg!\n"); for UDP lines,
    /// keep each line's `\n` in its datagram.
    pub newline: bool,
    /// Bounds name resolution and the connection attempt.
    pub timeout: Option<Duration>,
    /// UDP: broadcast, TTL, interface.
    pub udp: SendOptions,
    /// UDP: send the message this many times, `interval` apart.
    pub repeat: Repeat,
    /// UDP: wait this long for answers and print them (a ping with `repeat`).
    pub reply_timeout: Option<Duration>,
    /// TCP: speak TLS.
    pub tls: Option<ClientTlsConfig>,
    /// TCP: how the connection leaves (a proxy, keepalive).
    pub origin: Origin,
    /// TCP: send line by line, connecting again whenever the connection breaks.
    pub reconnect: Option<super::Reconnect>,
    /// Send to this UNIX socket instead of `host` and `port`.
    pub unix: Option<UnixSocket>,
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
            udp: SendOptions::default(),
            repeat: Repeat::default(),
            reply_timeout: None,
            tls: None,
            origin: Origin::default(),
            reconnect: None,
            unix: None,
        }
    }
}

/// Runs `portier send`. Over TCP it then waits until the peer closes,
/// copying whatever the peer answers to stdout.
pub async fn send(config: &SendConfig) -> Result<()> {
    send_until(config, &CancellationToken::new()).await
}

/// [`send`], which `stop` ends early with `--reconnect` (the lines read and
/// not sent are counted and said); without it, `stop` is not looked at.
pub async fn send_until(config: &SendConfig, stop: &CancellationToken) -> Result<()> {
    if let Some(unix) = &config.unix {
        return send_unix(config, unix).await;
    }
    match config.proto {
        Proto::Tcp => send_tcp(config, stop).await,
        Proto::Udp => send_udp(config).await,
    }
}

async fn send_tcp(config: &SendConfig, stop: &CancellationToken) -> Result<()> {
    let input = config.open().await?; // a missing file is reported before any connection
    let (host, port) = (&config.host, config.port);
    if let Some(reconnect) = &config.reconnect {
        let target = (host.as_str(), port);
        return super::reconnect::send_reconnecting(
            input.reader,
            target,
            &config.origin,
            config.timeout,
            reconnect,
            stop,
        )
        .await;
    }
    let stream = endpoint::connect_tcp(
        (host, port),
        &config.origin,
        config.timeout,
        config.tls.as_ref(),
    )
    .await?;
    match stream {
        #[cfg(target_os = "linux")]
        Stream::Plain(stream, peer) => {
            exchange_spliced(stream, input.reader, input.spliceable, peer).await?
        }
        #[cfg(not(target_os = "linux"))]
        Stream::Plain(stream, peer) => {
            exchange(stream, input.reader, PeerOutput::plain_tcp(), peer).await?
        }
        Stream::Tls(stream, peer) => {
            exchange(*stream, input.reader, PeerOutput::default(), peer).await?
        }
    }
    if let Some(progress) = input.progress {
        progress.finish();
    }
    Ok(())
}

/// To a UNIX socket: a stream like TCP's (the answer printed until the peer
/// closes), or one datagram per message or line (a syslog socket takes those).
async fn send_unix(config: &SendConfig, unix: &UnixSocket) -> Result<()> {
    let input = config.open().await?;
    if !unix.datagram {
        let stream = crate::unix_socket::connect_stream(&unix.name).await?;
        return exchange(stream, input.reader, PeerOutput::default(), unix).await;
    }
    let socket = crate::unix_socket::connect_datagram(&unix.name)?;
    let mut lines = tokio::io::BufReader::new(input.reader);
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        let read = tokio::io::AsyncBufReadExt::read_until(&mut lines, b'\n', &mut line)
            .await
            .context(|| "cannot read input".into())?;
        if read == 0 {
            return Ok(());
        }
        if !config.newline && line.last() == Some(&b'\n') {
            line.pop();
        }
        socket
            .send(&line)
            .await
            .map_err(|e| match e.raw_os_error() {
                Some(code) if code == libc::EMSGSIZE => Error::Usage(format!(
                    "line {number} ({} bytes) is too large for one datagram to {unix}",
                    line.len()
                )),
                _ => Error::io(format!("cannot send to {unix}"), e),
            })?;
    }
    Ok(())
}

/// `exchange`, with the upload spliced from stdin or the file to the socket
/// inside the kernel (bulk sends), on a thread of its own, when `from` is given.
#[cfg(target_os = "linux")]
async fn exchange_spliced(
    mut stream: tokio::net::TcpStream,
    fallback: Box<dyn AsyncRead + Unpin + Send>,
    from: Option<std::os::fd::OwnedFd>,
    peer: SocketAddr,
) -> Result<()> {
    let Some(from) = from else {
        return exchange(stream, fallback, PeerOutput::plain_tcp(), peer).await;
    };
    let socket = stream.as_fd().try_clone_to_owned().context(|| lost(peer))?;
    let (reader, mut writer) = stream.split();
    let upload = async {
        let moved = tokio::task::spawn_blocking(move || {
            crate::splice::splice_all(&from, &socket, &Default::default())
        })
        .await
        .map_err(|e| Error::io(lost(peer), std::io::Error::other(e)))?
        .map_err(std::io::Error::from)
        .context(|| lost(peer))?;
        if moved.is_none() {
            // The kernel would not splice these: nothing moved, send the ordinary way.
            upload(fallback, &mut writer, peer).await?;
        }
        writer.shutdown().await.context(|| lost(peer))
    };
    let download = PeerOutput::plain_tcp().copy_from(reader, peer);
    tokio::try_join!(upload, download)?;
    Ok(())
}

/// Sends `input`, half-closes, and copies the answer to `output` until the peer closes.
async fn exchange(
    stream: impl AsyncRead + AsyncWrite,
    input: impl AsyncRead + Unpin,
    output: PeerOutput,
    peer: impl std::fmt::Display + Copy,
) -> Result<()> {
    let (reader, mut writer) = tokio::io::split(stream);
    let upload = async {
        upload(input, &mut writer, peer).await?;
        writer.shutdown().await.context(|| lost(peer))
    };
    let download = output.copy_from(reader, peer);
    tokio::try_join!(upload, download)?;
    Ok(())
}

fn with_newline(message: &[u8], newline: bool) -> Vec<u8> {
    let mut data = message.to_vec();
    if newline {
        data.push(b'\n');
    }
    data
}

/// What is being sent, as a byte stream, with its progress when someone watches.
struct Input {
    reader: Box<dyn AsyncRead + Unpin + Send>,
    progress: Option<Progress>,
    /// The same stream as a descriptor the kernel can splice to a socket
    /// (stdin or a file, nobody watching a progress bar).
    #[cfg(target_os = "linux")]
    spliceable: Option<std::os::fd::OwnedFd>,
}

impl SendConfig {
    /// The source as a byte stream; a message gets its newline here. Streams
    /// (stdin, a file) show progress on a terminal.
    async fn open(&self) -> Result<Input> {
        // The stream's own descriptor, kept to splice from (Linux).
        #[cfg(target_os = "linux")]
        let descriptor: Option<std::os::fd::OwnedFd>;
        let (reader, size): (Box<dyn AsyncRead + Unpin + Send>, Option<u64>) = match &self.source {
            Source::Message(message) => {
                let message = with_newline(message, self.newline);
                let reader = Box::new(std::io::Cursor::new(message));
                return Ok(Input {
                    reader,
                    progress: None,
                    #[cfg(target_os = "linux")]
                    spliceable: None,
                });
            }
            Source::Stdin => {
                // One duplicate of stdin: for its size, then (Linux) to splice
                // from or, a regular file, to read in place.
                let stdin = duplicate_stdin();
                let size = stdin.as_ref().and_then(regular_file_size);
                #[cfg(target_os = "linux")]
                {
                    descriptor = stdin
                        .as_ref()
                        .and_then(|file| file.as_fd().try_clone_to_owned().ok());
                }
                match stdin.filter(|_| size.is_some()) {
                    Some(file) => (Box::new(RegularFile::from(file)), size),
                    None => (Box::new(tokio::io::stdin()), size),
                }
            }
            Source::File(path) => {
                let cannot = || format!("cannot read {}", path.display());
                let file = tokio::fs::File::open(path).await.context(cannot)?;
                let metadata = file.metadata().await.context(cannot)?;
                // Opening a directory works; reading it fails, once connected: say it now.
                if metadata.is_dir() {
                    return Err(Error::io(cannot(), std::io::ErrorKind::IsADirectory.into()));
                }
                let size = metadata.len();
                #[cfg(target_os = "linux")]
                {
                    descriptor = file.as_fd().try_clone_to_owned().ok();
                }
                let reader: Box<dyn AsyncRead + Unpin + Send> = match metadata.is_file() {
                    true => Box::new(RegularFile::from(file.into_std().await)),
                    false => Box::new(file), // a FIFO or a device: reads may wait
                };
                (reader, Some(size))
            }
        };
        let progress = Progress::on_terminal(size);
        // Splicing would bypass the progress bar: only when nobody watches one.
        #[cfg(target_os = "linux")]
        let spliceable =
            descriptor.filter(|fd| progress.is_none() && crate::splice::spliceable(fd.as_fd()));
        let reader = match &progress {
            Some(progress) => progress.wrap(reader),
            None => reader,
        };
        Ok(Input {
            reader,
            progress,
            #[cfg(target_os = "linux")]
            spliceable,
        })
    }
}

/// stdin's descriptor, duplicated (tokio's stdin keeps the original).
#[cfg(unix)]
fn duplicate_stdin() -> Option<std::fs::File> {
    use std::os::fd::AsFd;
    let stdin = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    Some(std::fs::File::from(stdin))
}

#[cfg(not(unix))]
fn duplicate_stdin() -> Option<std::fs::File> {
    None
}

/// The size of a regular file (`portier send < photo.jpg`); none for a pipe or a terminal.
fn regular_file_size(file: &std::fs::File) -> Option<u64> {
    let metadata = file.metadata().ok()?;
    metadata.is_file().then_some(metadata.len())
}

async fn send_udp(config: &SendConfig) -> Result<()> {
    let input = config.open().await?;
    let (host, port) = (&config.host, config.port);
    let (socket, peer) = endpoint::connect_udp(
        (host, port),
        &Origin::default(),
        config.timeout,
        &config.udp,
    )
    .await?;
    let Source::Message(message) = &config.source else {
        send_lines(&socket, peer, input.reader, config.newline).await?;
        if let Some(progress) = input.progress {
            progress.finish();
        }
        return check_unreachable(&socket, peer);
    };
    let datagram = with_newline(message, config.newline);
    check_size(peer, &datagram, || "the message".into())?;
    if let Some(reply_timeout) = config.reply_timeout {
        return ping::run(&socket, peer, &datagram, config.repeat, reply_timeout).await;
    }
    for sent in 1..=config.repeat.count {
        if sent > 1 {
            tokio::time::sleep(config.repeat.interval).await;
        }
        send_datagram(&socket, peer, &datagram).await?;
    }
    check_unreachable(&socket, peer)
}
