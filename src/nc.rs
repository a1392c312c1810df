//! `portier nc`: OpenBSD nc's model, on portier's pieces. One peer at a
//! time, stdin to it and what it sends to stdout, ended by one set of
//! end-of-file rules (the README's table, "Coming from nc"):
//!
//! - stdin ends: nothing more is sent. The connection stays open both ways
//!   (some servers hang up on a half-close) unless `-N` sends a FIN;
//!   `-q SECS` quits SECS later, `-w SECS` once the peer is silent that long.
//! - the peer ends (TCP): quit once its bytes are written, whether stdin has
//!   ended or not. OpenBSD nc as a client waits for stdin there: at a
//!   terminal, a hang until the next line typed.
//! - `-d`: stdin is never read, as if it were empty.
//! - UDP has no end on the wire: `-q`, `-w` or a signal ends the session.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::{CheckConfig, PortState, check_ports, program_session};
use crate::client::{Family, Origin};
use crate::client::{PeerOutput, lost};
use crate::endpoint;
use crate::error::{Error, IoContext, Result};
use crate::exec::Program;
use crate::message::Proto;
use crate::sink::say;
use crate::udp_options::SendOptions;

/// What `portier nc` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NcConfig {
    /// Connect, listen or scan.
    pub mode: NcMode,
    /// TCP or UDP (`-u`).
    pub proto: Proto,
    /// The family and source address (`-4`, `-6`, `-s`, and `-p` for a client).
    pub origin: Origin,
    /// When a session ends.
    pub ending: Ending,
    /// Turn each LF of stdin into CRLF (`-C`).
    pub crlf: bool,
    /// A program talks to the peer instead of stdin and stdout (`-e`, `-c`).
    pub program: Option<Program>,
    /// Say on stderr what happens (`-v`); quiet otherwise, as nc is.
    pub verbose: bool,
}

/// The three things nc does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NcMode {
    /// `nc HOST PORT`.
    Connect {
        /// A name or an address.
        host: String,
        /// The peer's port.
        port: u16,
    },
    /// `nc -l [HOST] PORT`: one client, or one after another with `keep`.
    Listen {
        /// The address to listen on (a name or an address); by default `-s`'s, or all.
        host: Option<String>,
        /// The port to listen on.
        port: u16,
        /// After a client leaves, wait for the next (`-k`).
        keep: bool,
    },
    /// `nc -z HOST PORTS`: which ports answer.
    Scan {
        /// A name or an address.
        host: String,
        /// The ports, in order.
        ports: Vec<u16>,
    },
}

/// The end-of-file rules of a session (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// Read stdin (`-d` and `--recv-only` turn this off).
    pub read_stdin: bool,
    /// Write what the peer sends to stdout (`--send-only` turns this off,
    /// and ends the session with stdin).
    pub write_stdout: bool,
    /// Send a FIN once stdin has ended (`-N`).
    pub half_close: bool,
    /// Quit this long after stdin has ended (`-q`).
    pub quit_after_stdin: Option<Duration>,
    /// Give up connecting after this long; once stdin has ended, quit when
    /// the peer has been silent this long (`-w`).
    pub idle: Option<Duration>,
}

impl Default for Ending {
    fn default() -> Self {
        Ending {
            read_stdin: true,
            write_stdout: true,
            half_close: false,
            quit_after_stdin: None,
            idle: None,
        }
    }
}

/// Runs `portier nc` until its session ends or `shutdown` is cancelled.
pub async fn nc(config: &NcConfig, shutdown: CancellationToken) -> Result<()> {
    let mut local = Local {
        stdin: StdinFeed::start(config.ending.read_stdin, config.crlf),
        shutdown: shutdown.clone(),
    };
    let local = &mut local;
    let run = async {
        match (&config.mode, config.proto) {
            (NcMode::Scan { host, ports }, proto) => scan(config, host, ports, proto).await,
            (NcMode::Connect { host, port }, Proto::Tcp) => {
                connect_tcp(config, (host, *port), local).await
            }
            (NcMode::Connect { host, port }, Proto::Udp) => {
                connect_udp(config, (host, *port), local).await
            }
            (NcMode::Listen { host, port, keep }, proto) => {
                let addr = listen_addr(config, host.as_deref(), *port)?;
                match proto {
                    Proto::Tcp => listen_tcp(config, addr, *keep, local).await,
                    Proto::Udp => listen_udp(config, addr, *keep, local).await,
                }
            }
        }
    };
    // A session stops on the token itself, so that it can still report;
    // this covers the waits before one (connect, accept, the first datagram).
    tokio::select! {
        biased;
        ended = run => ended,
        _ = shutdown.cancelled() => Ok(()),
    }
}

/// nc's `-v` lines, which scripts grep for (`succeeded`).
fn tell(config: &NcConfig, line: impl FnOnce() -> String) {
    if config.verbose {
        say(&line());
    }
}

async fn connect_tcp(config: &NcConfig, target: (&str, u16), local: &mut Local) -> Result<()> {
    let timeout = config.ending.idle;
    let (stream, peer) = endpoint::connect_plain_tcp(target, &config.origin, timeout).await?;
    tell(config, || {
        format!(
            "Connection to {} {} port [tcp/*] succeeded!",
            target.0, target.1
        )
    });
    tcp_session(config, stream, peer, local).await
}

/// One TCP peer: its program, or stdin and stdout.
async fn tcp_session(
    config: &NcConfig,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    local: &mut Local,
) -> Result<()> {
    if let Some(program) = &config.program {
        let local = stream.local_addr().ok();
        return program_session(stream, program, peer, local).await;
    }
    let (reader, writer) = stream.into_split();
    let incoming = TcpIncoming { reader, peer };
    let outgoing = TcpOutgoing { writer, peer };
    session(&config.ending, incoming, outgoing, local).await
}

async fn listen_tcp(
    config: &NcConfig,
    addr: SocketAddr,
    keep: bool,
    local: &mut Local,
) -> Result<()> {
    let listener = endpoint::bind_tcp(addr)?;
    tell(config, || listening(&listener.local_addr()));
    loop {
        let (stream, peer) = listener
            .accept()
            .await
            .context(|| "cannot accept a connection".into())?;
        let peer = endpoint::natural(peer);
        tell(config, || {
            format!("Connection received on {} {}", peer.ip(), peer.port())
        });
        let ended = tcp_session(config, stream, peer, local).await;
        match (ended, keep) {
            (ended, false) => return ended,
            (Err(e), true) => say(&e.to_string()), // one client's trouble, not the server's
            (Ok(()), true) => {}
        }
    }
}

fn listening(local: &io::Result<SocketAddr>) -> String {
    match local {
        Ok(addr) => format!("Listening on {} {}", addr.ip(), addr.port()),
        Err(_) => "Listening".into(),
    }
}

/// The host, `-s`, `-4` or `-6` pick the address; by default both IPv4 and IPv6.
fn listen_addr(config: &NcConfig, host: Option<&str>, port: u16) -> Result<SocketAddr> {
    let named = match host {
        Some(host) => {
            let ips = endpoint::listen_ips(Some(host))?;
            let ip = ips.into_iter().find(|ip| config.origin.admits_ip(*ip));
            Some(ip.ok_or_else(|| Error::Resolve {
                host: host.into(),
                reason: "no address of the family asked (-4/-6, -s)".into(),
            })?)
        }
        None => config.origin.ip,
    };
    let ip = match (named, config.origin.family) {
        (Some(ip), _) => ip,
        (None, Some(Family::V4)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (None, _) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    Ok(SocketAddr::new(ip, port))
}

async fn connect_udp(config: &NcConfig, target: (&str, u16), local: &mut Local) -> Result<()> {
    let options = SendOptions::default();
    let timeout = config.ending.idle;
    let (socket, peer) = endpoint::connect_udp(target, &config.origin, timeout, &options).await?;
    let incoming = UdpIncoming::connected(&socket, peer);
    let outgoing = UdpOutgoing {
        socket: &socket,
        peer: &incoming.peer,
    };
    session(&config.ending, &incoming, outgoing, local).await
}

/// `nc -u -l`: the first sender is the peer; with `-k`, the latest one.
async fn listen_udp(
    config: &NcConfig,
    addr: SocketAddr,
    keep: bool,
    local: &mut Local,
) -> Result<()> {
    let socket = endpoint::bind_udp(addr)?;
    tell(config, || listening(&socket.local_addr()));
    let mut first = vec![0u8; 65_536];
    let (len, peer) = socket
        .recv_from(&mut first)
        .await
        .context(|| "cannot receive".into())?;
    let peer = endpoint::natural(peer);
    tell(config, || {
        format!("Connection received on {} {}", peer.ip(), peer.port())
    });
    let mut output = PeerOutput::default();
    if config.ending.write_stdout && !output.write(&first[..len]).await? {
        return Ok(());
    }
    let incoming = UdpIncoming {
        socket: &socket,
        peer: Cell::new(peer),
        follow: keep,
        others: Cell::new(0),
    };
    let outgoing = UdpOutgoing {
        socket: &socket,
        peer: &incoming.peer,
    };
    let ended = session(&config.ending, &incoming, outgoing, local).await;
    incoming.report_others();
    ended
}

/// `nc -z`: the ports that answer. As with nc, success when any does; a UDP
/// port counts unless it refused (nc's `-zu` cannot tell open from silent).
async fn scan(config: &NcConfig, host: &str, ports: &[u16], proto: Proto) -> Result<()> {
    let check = CheckConfig {
        host: host.to_string(),
        ports: ports.to_vec(),
        proto,
        timeout: config.ending.idle.unwrap_or(SCAN_TIMEOUT),
        concurrency: 512,
        payload: Bytes::new(),
        wait: None,
    };
    let mut answered = 0;
    for report in check_ports(&check).await? {
        let port = report.addr.port();
        let answers = match (proto, report.state) {
            (_, PortState::Open) | (Proto::Udp, PortState::OpenFiltered) => true,
            (_, PortState::Closed | PortState::Filtered | PortState::OpenFiltered) => false,
        };
        // nc's words, which scripts grep for.
        let state = match (report.state, proto) {
            (PortState::Open, _) => "",
            (PortState::OpenFiltered, _) => " (no answer: open|filtered)",
            (PortState::Closed, Proto::Tcp) => " Connection refused",
            (PortState::Closed, Proto::Udp) => " port unreachable",
            (PortState::Filtered, _) => " timed out",
        };
        if answers {
            answered += 1;
            tell(config, || {
                format!("Connection to {host} {port} port [{proto}/*] succeeded!{state}")
            });
        } else {
            tell(config, || {
                format!("connect to {host} port {port} ({proto}) failed:{state}")
            });
        }
    }
    match answered {
        0 => Err(Error::NotAllOpen {
            open: 0,
            asked: ports.len(),
        }),
        _ => Ok(()),
    }
}

/// How long `-z` waits for each port without `-w`.
const SCAN_TIMEOUT: Duration = Duration::from_secs(5);

/// This end of a session: stdin, and the token that stops it.
struct Local {
    stdin: StdinFeed,
    shutdown: CancellationToken,
}

/// Stdin, read by a task in chunks: the sessions of `-lk` take turns on
/// it, and none loses what was read for the one before.
struct StdinFeed {
    chunks: Option<mpsc::Receiver<io::Result<Bytes>>>,
}

impl StdinFeed {
    fn start(read: bool, crlf: bool) -> StdinFeed {
        if !read {
            return StdinFeed { chunks: None };
        }
        let (sender, chunks) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut last = 0u8;
            loop {
                let mut buf = BytesMut::with_capacity(64 * 1024);
                let chunk = match stdin.read_buf(&mut buf).await {
                    Ok(0) => return,
                    Ok(_) if crlf => Ok(with_crlf(&buf, &mut last)),
                    Ok(_) => Ok(buf.freeze()),
                    Err(e) => Err(e),
                };
                let failed = chunk.is_err();
                if sender.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        });
        StdinFeed {
            chunks: Some(chunks),
        }
    }

    /// The next chunk, or `None` once stdin has ended (for good).
    async fn next(&mut self) -> Result<Option<Bytes>> {
        let Some(chunks) = &mut self.chunks else {
            return Ok(None);
        };
        match chunks.recv().await {
            Some(chunk) => chunk.map(Some).context(|| "cannot read stdin".into()),
            None => {
                self.chunks = None;
                Ok(None)
            }
        }
    }
}

/// `-C`: each LF not already after a CR becomes CRLF; `last` carries the
/// previous chunk's last byte across reads.
fn with_crlf(chunk: &[u8], last: &mut u8) -> Bytes {
    let mut out = Vec::with_capacity(chunk.len() + chunk.len() / 16);
    for &byte in chunk {
        if byte == b'\n' && *last != b'\r' {
            out.push(b'\r');
        }
        out.push(byte);
        *last = byte;
    }
    Bytes::from(out)
}

/// What the peer sends; `Ok(0)` when it has ended.
trait Incoming {
    async fn receive(&mut self, buf: &mut [u8]) -> Result<usize>;
}

/// Where stdin goes.
trait Outgoing {
    async fn send(&mut self, bytes: &[u8]) -> Result<()>;
    /// `-N`: tell the peer nothing more comes.
    async fn finish(&mut self) -> Result<()>;
}

struct TcpIncoming {
    reader: tokio::net::tcp::OwnedReadHalf,
    peer: SocketAddr,
}

impl Incoming for TcpIncoming {
    async fn receive(&mut self, buf: &mut [u8]) -> Result<usize> {
        let peer = self.peer;
        self.reader
            .read(buf)
            .await
            .context(|| format!("connection to {peer} failed"))
    }
}

struct TcpOutgoing {
    writer: tokio::net::tcp::OwnedWriteHalf,
    peer: SocketAddr,
}

impl Outgoing for TcpOutgoing {
    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let peer = self.peer;
        self.writer.write_all(bytes).await.context(|| lost(peer))
    }
    async fn finish(&mut self) -> Result<()> {
        let peer = self.peer;
        self.writer.shutdown().await.context(|| lost(peer))
    }
}

/// Datagrams from the peer; others are counted, and told at the end.
struct UdpIncoming<'a> {
    socket: &'a UdpSocket,
    peer: Cell<SocketAddr>,
    /// `-k`: the latest sender becomes the peer.
    follow: bool,
    others: Cell<u64>,
}

impl<'a> UdpIncoming<'a> {
    /// For a connected socket, where the kernel lets only the peer in.
    fn connected(socket: &'a UdpSocket, peer: SocketAddr) -> Self {
        UdpIncoming {
            socket,
            peer: Cell::new(peer),
            follow: false,
            others: Cell::new(0),
        }
    }

    fn report_others(&self) {
        let (others, peer) = (self.others.get(), self.peer.get());
        if others > 0 {
            say(&format!(
                "{others} datagrams from others than {peer} were not written (-k takes every sender)"
            ));
        }
    }
}

impl Incoming for &UdpIncoming<'_> {
    async fn receive(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            let peer = self.peer.get();
            let (len, from) = self
                .socket
                .recv_from(buf)
                .await
                .map_err(|e| endpoint::udp_send_error(peer, e))?;
            let from = endpoint::natural(from);
            if from == peer || self.follow {
                self.peer.set(from);
                // An empty datagram is not the end: nothing on the wire is.
                if len > 0 {
                    return Ok(len);
                }
            } else {
                self.others.set(self.others.get() + 1);
            }
        }
    }
}

struct UdpOutgoing<'a> {
    socket: &'a UdpSocket,
    peer: &'a Cell<SocketAddr>,
}

impl Outgoing for UdpOutgoing<'_> {
    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let peer = self.peer.get();
        crate::client::check_size(peer, bytes, || "a read of stdin".into())?;
        crate::client::send_datagram(self.socket, peer, bytes).await
    }
    async fn finish(&mut self) -> Result<()> {
        Ok(()) // UDP has no end to send
    }
}

/// Stdin to the peer and the peer to stdout, both at once, until the
/// ending's rules say stop.
async fn session(
    ending: &Ending,
    mut incoming: impl Incoming,
    mut outgoing: impl Outgoing,
    local: &mut Local,
) -> Result<()> {
    let heard = Cell::new(Instant::now());
    let mut download = std::pin::pin!(async {
        let mut output = PeerOutput::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = incoming.receive(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            heard.set(Instant::now());
            if ending.write_stdout && !output.write(&buf[..n]).await? {
                return Ok(()); // nobody reads stdout any more
            }
        }
    });
    let mut upload = std::pin::pin!(async {
        while let Some(chunk) = local.stdin.next().await? {
            outgoing.send(&chunk).await?;
        }
        if ending.half_close {
            outgoing.finish().await?;
        }
        Ok::<_, Error>(())
    });
    let mut stdin_ended: Option<Instant> = None;
    // When the rules end the session, once stdin has ended: -q counts from
    // then, -w from the last thing heard.
    let deadline = |stdin_ended: Option<Instant>| {
        let ended = stdin_ended?;
        let quit = ending.quit_after_stdin.map(|after| ended + after);
        let idle = ending.idle.map(|idle| heard.get().max(ended) + idle);
        quit.into_iter().chain(idle).min()
    };
    loop {
        let wake = deadline(stdin_ended);
        tokio::select! {
            downloaded = &mut download => return downloaded,
            _ = local.shutdown.cancelled() => return Ok(()),
            uploaded = &mut upload, if stdin_ended.is_none() => {
                uploaded?;
                stdin_ended = Some(Instant::now());
                if !ending.write_stdout {
                    return Ok(()); // --send-only: done once everything is sent
                }
            }
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                // -w may have moved on since this sleep began.
                if deadline(stdin_ended).is_some_and(|at| at <= Instant::now()) {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_turns_each_bare_lf_into_crlf_across_reads() {
        let mut last = 0;
        assert_eq!(&with_crlf(b"a\nb\r\n", &mut last)[..], b"a\r\nb\r\n");
        assert_eq!(&with_crlf(b"x\r", &mut last)[..], b"x\r");
        assert_eq!(&with_crlf(b"\ny\n", &mut last)[..], b"\ny\r\n");
    }

    #[test]
    fn a_listener_keeps_to_the_family_asked() {
        let try_addr = |family, host| {
            let origin = Origin {
                family,
                ..Origin::default()
            };
            listen_addr(&config_with(origin), host, 7).ok()
        };
        let addr = |family, host| try_addr(family, host).unwrap();
        assert!(try_addr(Some(Family::V4), Some("::1")).is_none());
        assert_eq!(addr(None, None), "[::]:7".parse().unwrap());
        assert_eq!(addr(Some(Family::V4), None), "0.0.0.0:7".parse().unwrap());
        assert_eq!(addr(Some(Family::V6), None), "[::]:7".parse().unwrap());
        assert_eq!(
            addr(None, Some("127.0.0.1")),
            "127.0.0.1:7".parse().unwrap()
        );
        assert_eq!(
            addr(Some(Family::V6), Some("::1")),
            "[::1]:7".parse().unwrap()
        );
    }

    fn config_with(origin: Origin) -> NcConfig {
        NcConfig {
            mode: NcMode::Scan {
                host: "localhost".into(),
                ports: vec![7],
            },
            proto: Proto::Tcp,
            origin,
            ending: Ending::default(),
            crlf: false,
            program: None,
            verbose: false,
        }
    }
}
