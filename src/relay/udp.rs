//! UDP relayed: a session per client address, each with its own connected
//! upstream socket whose replies go back to that client; idle sessions end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::events::{Event, Relayed, tell};
use super::{RelayConfig, Totals, UDP_SESSION_IDLE};
use crate::address::Address;
use crate::endpoint;
use crate::error::{Error, IoContext, Result};

/// One UDP client's session: its own socket to the upstream.
struct Session {
    upstream: Arc<UdpSocket>,
    last: Arc<AtomicU64>,
    replies: tokio::task::AbortHandle,
}

/// UDP: a session per client address, each with a connected upstream socket
/// whose replies go back to that client; idle sessions end.
pub(super) async fn relay_udp(
    socket: UdpSocket,
    config: &RelayConfig,
    totals: &Arc<Totals>,
    shutdown: &CancellationToken,
) -> Result<()> {
    let Address::Inet { host, port, .. } = &config.to else {
        return Err(Error::Usage(
            "a UDP relay forwards to udp://HOST:PORT".into(),
        ));
    };
    let upstream_addr = endpoint::resolve(host, *port).await?[0];
    let socket = Arc::new(socket);
    let idle = config.idle_timeout.unwrap_or(UDP_SESSION_IDLE);
    let started = Instant::now();
    let now_ms = move || started.elapsed().as_millis() as u64;
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let mut replies = JoinSet::new();
    let mut buf = vec![0u8; 65_536];
    let mut sweep = tokio::time::interval(idle.min(Duration::from_secs(1)));
    let own_port = socket.local_addr().map_or(0, |local| local.port());
    loop {
        let (len, client) = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sweep.tick() => {
                sessions.retain(|client, session| {
                    let quiet = now_ms().saturating_sub(session.last.load(Ordering::Relaxed));
                    let alive = quiet < idle.as_millis() as u64;
                    if !alive {
                        session.replies.abort();
                        let drops = crate::sys::kernel_drops(session.upstream.as_ref());
                        Totals::add(&totals.kernel_drops, drops.unwrap_or(0));
                        tell(config, Event::SessionEnded(&client.to_string()));
                    }
                    alive
                });
                continue;
            }
            Some(_) = replies.join_next(), if !replies.is_empty() => continue,
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, client)) => (len, endpoint::natural(client)),
                Err(_) => continue, // an ICMP error for an earlier reply: nothing to do here
            },
        };
        if let Some(why) = config.access.refusal(client.ip()) {
            totals.refuse(config, &client.to_string(), why);
            continue;
        }
        if !sessions.contains_key(&client) {
            // A spoofed source naming this relay or an echo service would
            // have the upstream's replies come back as new requests, forever.
            if crate::listen::loops_back(client, own_port) {
                // Said once, the first time; the summary has the count.
                if totals.looping.fetch_add(1, Ordering::Relaxed) == 0 {
                    let why = "its source is this relay's port or an echo-like service's (a spoofed loop)";
                    tell(config, Event::Refused(&client.to_string(), why, 1));
                }
                continue;
            }
            if sessions.len() >= config.max_conns.max(1) {
                totals.turn_away(config, &client.to_string());
                continue;
            }
            let upstream = match open_upstream(upstream_addr).await {
                Ok(upstream) => Arc::new(upstream),
                Err(e) => {
                    Totals::add(&totals.upstream_failed, 1);
                    tell(
                        config,
                        Event::Failed(Some(&client.to_string()), e.to_string()),
                    );
                    continue;
                }
            };
            Totals::add(&totals.connections, 1);
            tell(
                config,
                Event::Connected(&client.to_string(), Relayed::Session),
            );
            let last = Arc::new(AtomicU64::new(now_ms()));
            let back = send_back(
                upstream.clone(),
                socket.clone(),
                client,
                last.clone(),
                totals.clone(),
                started,
            );
            let handle = replies.spawn(back);
            sessions.insert(
                client,
                Session {
                    upstream,
                    last,
                    replies: handle,
                },
            );
        }
        let Some(session) = sessions.get(&client) else {
            continue;
        };
        session.last.store(now_ms(), Ordering::Relaxed);
        match session.upstream.send(&buf[..len]).await {
            Ok(_) => {
                Totals::add(&totals.datagrams_up, 1);
                Totals::add(&totals.bytes_up, len as u64);
            }
            Err(e) => {
                Totals::add(&totals.upstream_failed, 1);
                let error = endpoint::udp_send_error(upstream_addr, e).to_string();
                tell(config, Event::Failed(Some(&client.to_string()), error));
            }
        }
    }
    replies.abort_all();
    let upstreams = sessions.values().map(|session| session.upstream.as_ref());
    let drops = std::iter::once(socket.as_ref())
        .chain(upstreams)
        .filter_map(crate::sys::kernel_drops)
        .sum();
    Totals::add(&totals.kernel_drops, drops);
    Ok(())
}

/// A UDP socket of its own, connected to `upstream` (so ICMP errors come back to it).
pub(super) async fn open_upstream(upstream: SocketAddr) -> Result<UdpSocket> {
    let any: SocketAddr = match upstream {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any)
        .await
        .context(|| format!("cannot open a socket to udp {upstream}"))?;
    socket
        .connect(upstream)
        .await
        .map_err(|e| endpoint::udp_send_error(upstream, e))?;
    Ok(socket)
}

/// The upstream's replies to one session, back to its client.
async fn send_back(
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    last: Arc<AtomicU64>,
    totals: Arc<Totals>,
    started: Instant,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let len = match upstream.recv(&mut buf).await {
            Ok(len) => len,
            Err(_) => {
                // ICMP port unreachable from the upstream: counted; the session stays.
                Totals::add(&totals.upstream_failed, 1);
                continue;
            }
        };
        last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        if socket.send_to(&buf[..len], client).await.is_ok() {
            Totals::add(&totals.datagrams_down, 1);
            Totals::add(&totals.bytes_down, len as u64);
        }
    }
}
