//! Datagrams and lines: a UDP FROM relayed to a TCP collector, each datagram
//! a line on one connection (syslog over UDP into a TCP log collector), and
//! a TCP FROM relayed to a UDP TO, each line a datagram, what the upstream
//! answers written back to the client as lines.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixDatagram};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::events::{Event, Limit, Relayed, tell};
use super::{QUEUED_COUNT_LIMIT, RelayConfig, Totals};
use crate::address::Address;
use crate::client::{OnFull, Reconnect, send_reconnecting};
use crate::endpoint;
use crate::error::{Error, Result};

/// How long a stopping relay gives its collector to take the last lines.
const LAST_LINES: Duration = Duration::from_millis(500);

/// Lines and datagrams are bounded by what one datagram holds.
const MAX_LINE: usize = 65_507;

/// Where datagrams come from: UDP clients, or the (often unnamed) senders
/// to a UNIX datagram socket.
pub(super) enum Datagrams {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl Datagrams {
    /// The next datagram's length and, for UDP, its sender.
    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, Option<SocketAddr>)> {
        match self {
            Datagrams::Udp(socket) => {
                let (len, from) = socket.recv_from(buf).await?;
                Ok((len, Some(endpoint::natural(from))))
            }
            Datagrams::Unix(socket) => Ok((socket.recv(buf).await?, None)),
        }
    }

    /// At the end: counts what is still queued (taken off the socket), the
    /// `held` datagrams already taken but not sent on, and what the kernel
    /// dropped (UDP), none of them relayed.
    fn count_unrelayed(&self, totals: &Totals, held: u64) {
        let socket = match self {
            Datagrams::Udp(socket) => socket2::SockRef::from(socket),
            Datagrams::Unix(socket) => {
                // Senders are refused from now on (EPIPE), so none slips in after.
                let _ = socket.shutdown(std::net::Shutdown::Read);
                socket2::SockRef::from(socket)
            }
        };
        let until = std::time::Instant::now() + QUEUED_COUNT_LIMIT;
        let queued = held + endpoint::discard_queued(&socket, until);
        Totals::add(&totals.queued_at_shutdown, queued);
        let drops = crate::sys::kernel_drops(&*socket).unwrap_or(0);
        Totals::add(&totals.kernel_drops, drops);
    }

    /// The length of the next datagram whose sender `--allow/--deny` admit
    /// (others are counted and said); `None` once the relay stops.
    async fn next_admitted(
        &self,
        buf: &mut [u8],
        config: &RelayConfig,
        totals: &Totals,
        shutdown: &CancellationToken,
    ) -> Option<usize> {
        loop {
            let (len, client) = tokio::select! {
                _ = shutdown.cancelled() => {
                    self.count_unrelayed(totals, 0);
                    return None;
                }
                received = self.recv(buf) => match received {
                    Ok(received) => received,
                    Err(_) => continue, // an ICMP error for nothing we sent: nothing to do
                },
            };
            let refusal =
                client.and_then(|client| Some((client, config.access.refusal(client.ip())?)));
            match refusal {
                Some((client, why)) => totals.refuse(config, &client.to_string(), why),
                None => return Some(len),
            }
        }
    }
}

/// Datagrams sent on one way, as they came: UNIX datagrams to UDP, or any
/// datagrams to a UNIX datagram socket (whose answers have nowhere to go).
pub(super) async fn forward_datagrams(
    source: Datagrams,
    config: &RelayConfig,
    totals: &Arc<Totals>,
    shutdown: &CancellationToken,
) -> Result<()> {
    let sink = match &config.to {
        Address::Inet { host, port, .. } => {
            let options = crate::udp_options::SendOptions::default();
            let target = (host.as_str(), *port);
            let (socket, upstream) =
                endpoint::connect_udp(target, &config.origin, None, &options).await?;
            Sink::Udp(socket, upstream)
        }
        Address::Unix { name, .. } => Sink::Unix(crate::unix_socket::connect_datagram(name)?),
    };
    let mut buf = vec![0u8; 65_536];
    while let Some(len) = source
        .next_admitted(&mut buf, config, totals, shutdown)
        .await
    {
        let sent = tokio::select! {
            sent = sink.send(&buf[..len]) => sent,
            // A UNIX receiver that does not read makes a send wait: it must
            // not hold SIGTERM up. This datagram and those queued are not relayed.
            _ = shutdown.cancelled() => {
                source.count_unrelayed(totals, 1);
                break;
            }
        };
        match sent {
            Ok(()) => {
                Totals::add(&totals.datagrams_up, 1);
                Totals::add(&totals.bytes_up, len as u64);
            }
            Err(error) => {
                Totals::add(&totals.upstream_failed, 1);
                tell(config, Event::Failed(None, error));
            }
        }
    }
    Ok(())
}

/// Where one-way datagrams go.
enum Sink {
    Udp(UdpSocket, SocketAddr),
    Unix(UnixDatagram),
}

impl Sink {
    async fn send(&self, datagram: &[u8]) -> std::result::Result<(), String> {
        match self {
            Sink::Udp(socket, upstream) => socket
                .send(datagram)
                .await
                .map(drop)
                .map_err(|e| endpoint::udp_send_error(*upstream, e).to_string()),
            Sink::Unix(socket) => socket
                .send(datagram)
                .await
                .map(drop)
                .map_err(|e| crate::error::describe(&e)),
        }
    }
}

/// Datagrams (UDP, UNIX) FROM, TCP TO: every datagram a line on one
/// connection, which is made again whenever it breaks (lines wait
/// meanwhile, and overflow is counted).
pub(super) async fn datagrams_to_lines(
    source: Datagrams,
    config: &RelayConfig,
    totals: &Arc<Totals>,
    shutdown: &CancellationToken,
) -> Result<()> {
    let Address::Inet { host, port, .. } = &config.to else {
        return Err(Error::Usage("datagrams go as lines to a tcp:// TO".into()));
    };
    let (mut lines_in, lines_out) = tokio::io::duplex(256 << 10);
    let reconnect = Reconnect {
        on_full: OnFull::Drop, // waiting would only move the loss into the kernel, uncounted
        ..Reconnect::default()
    };
    // Stopped by the end of the lines instead, so the last ones are still sent.
    let never = CancellationToken::new();
    let target = (host.as_str(), *port);
    let collector = send_reconnecting(lines_out, target, &config.origin, None, &reconnect, &never);
    let mut collector = std::pin::pin!(collector);
    let mut buf = vec![0u8; 65_536];
    let mut line = Vec::new();
    // Ok(true) when stopped while the collector takes nothing (a write waits).
    let forwarding = async {
        while let Some(len) = source
            .next_admitted(&mut buf, config, totals, shutdown)
            .await
        {
            let datagram = &buf[..len];
            line.clear();
            line.extend_from_slice(datagram.strip_suffix(b"\n").unwrap_or(datagram));
            line.push(b'\n');
            tokio::select! {
                written = lines_in.write_all(&line) => written.map_err(lost_collector)?,
                // A collector that does not read must not hold SIGTERM up:
                // this datagram and those queued are not relayed.
                _ = shutdown.cancelled() => {
                    source.count_unrelayed(totals, 1);
                    return Ok(true);
                }
            }
            Totals::add(&totals.datagrams_up, 1);
            Totals::add(&totals.bytes_up, len as u64);
        }
        Ok::<_, Error>(false)
    };
    let stuck = tokio::select! {
        forwarded = forwarding => forwarded?,
        sent = &mut collector => return sent,
    };
    drop(lines_in); // the end of the lines: the collector's connection is closed after them
    // A write cut off may have left half a line: then no wait, so it is never sent.
    let waited = match stuck {
        false => tokio::time::timeout(LAST_LINES, collector).await.ok(),
        true => None,
    };
    waited.unwrap_or_else(|| {
        let late = "the collector did not take the last lines in time".to_string();
        tell(config, Event::Notice(late));
        Ok(())
    })
}

fn lost_collector(e: std::io::Error) -> Error {
    Error::io("the lines to the collector stopped", e)
}

/// TCP FROM, UDP TO: each client's lines are datagrams from a socket of its
/// own, and the upstream's datagrams come back to it as lines.
pub(super) async fn lines_to_datagrams(
    listener: TcpListener,
    config: &RelayConfig,
    totals: &Arc<Totals>,
    shutdown: &CancellationToken,
) -> Result<()> {
    let Address::Inet { host, port, .. } = &config.to else {
        return Err(Error::Usage("lines go as datagrams to a udp:// TO".into()));
    };
    let upstream = endpoint::resolve(host, *port).await?[0];
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_conns.max(1)));
    let mut clients = JoinSet::new();
    loop {
        let (stream, client) = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = clients.join_next(), if !clients.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await; // out of descriptors
                    continue;
                }
            },
        };
        let client = endpoint::natural(client);
        if let Some(why) = config.access.refusal(client.ip()) {
            totals.refuse(config, &client.to_string(), why);
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            totals.turn_away(
                config,
                &client.to_string(),
                Limit::Clients(config.max_conns),
            );
            continue;
        };
        Totals::add(&totals.connections, 1);
        let (totals, shutdown) = (totals.clone(), shutdown.clone());
        let config = config.clone();
        clients.spawn(async move {
            let client = client.to_string();
            tell(&config, Event::Connected(&client, Relayed::Lines));
            let why = client_lines(stream, upstream, &totals, &shutdown)
                .await
                .err();
            let why = why.map(|e| e.to_string());
            let bytes = None; // counted for the relay as a whole
            let why = why.as_deref();
            tell(
                &config,
                Event::Disconnected {
                    client: &client,
                    bytes,
                    why,
                },
            );
            drop(slot);
        });
    }
    while clients.join_next().await.is_some() {}
    Ok(())
}

async fn client_lines(
    stream: TcpStream,
    upstream: SocketAddr,
    totals: &Totals,
    shutdown: &CancellationToken,
) -> Result<()> {
    let socket = super::udp::open_upstream(upstream).await?;
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader);
    let up = async {
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = (&mut lines)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .await
                .map_err(|e| Error::io("the client's lines stopped", e))?;
            if read == 0 {
                return Ok(());
            }
            let datagram = line.strip_suffix(b"\n").unwrap_or(&line);
            if datagram.len() > MAX_LINE {
                return Err(Error::Usage(format!(
                    "a line over {MAX_LINE} bytes does not fit in one datagram"
                )));
            }
            match socket.send(datagram).await {
                Ok(_) => {
                    Totals::add(&totals.datagrams_up, 1);
                    Totals::add(&totals.bytes_up, datagram.len() as u64);
                }
                // ICMP port unreachable from an earlier datagram: counted, and on we go.
                Err(_) => Totals::add(&totals.upstream_failed, 1),
            }
        }
    };
    // Ends only when the client can no longer be written to: why.
    let down = async {
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok(len) = socket.recv(&mut buf).await else {
                Totals::add(&totals.upstream_failed, 1);
                continue;
            };
            let answer = buf[..len].strip_suffix(b"\n").unwrap_or(&buf[..len]);
            let written = async {
                writer.write_all(answer).await?;
                writer.write_all(b"\n").await
            };
            if let Err(e) = written.await {
                return e;
            }
            Totals::add(&totals.datagrams_down, 1);
            Totals::add(&totals.bytes_down, len as u64);
        }
    };
    tokio::select! {
        sent = up => sent,
        gone = down => Err(Error::io("the client went away", gone)),
        _ = shutdown.cancelled() => Ok(()),
    }
}
