//! UDP relayed: a session per client address, each with its own connected
//! upstream socket whose replies go back to that client; idle sessions end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::events::{Event, Limit, Relayed, tell};
use super::{QUEUED_COUNT_LIMIT, RelayConfig, Totals, UDP_SESSION_IDLE};
use crate::address::Address;
use crate::endpoint;
use crate::error::{Error, IoContext, Result};
use crate::listen::Budget;
use crate::sys::udp_batch::{Batch, send_batch};

/// One UDP client's session: its own socket to the upstream.
struct Session {
    upstream: Arc<UdpSocket>,
    last: Arc<AtomicU64>,
    replies: tokio::task::AbortHandle,
    /// A reply has gone back to the client.
    answered: Arc<AtomicBool>,
    /// The client spoke again after an answer: a real exchange, which a
    /// spoofed source (it never sees the answers) cannot hold up. Sessions
    /// that are not are ended first to make room (as conntrack does).
    assured: bool,
    /// Its start was said (so its end is too); a session that took another's
    /// place is said only with that, as often as the paced count allows.
    told: bool,
}

/// UDP: a session per client address, each with a connected upstream socket
/// whose replies go back to that client; idle sessions end. Datagrams are
/// taken off the socket in batches (recvmmsg on Linux), as `listen` does.
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
    let upstream = endpoint::resolve(host, *port).await?[0];
    // The same socket, for recvmmsg, which takes a standard one.
    let receiving: std::net::UdpSocket = socket2::SockRef::from(&socket)
        .try_clone()
        .context(|| "cannot relay udp".to_string())?
        .into();
    let own_port = socket.local_addr().map_or(0, |local| local.port());
    let idle = config.idle_timeout.unwrap_or(UDP_SESSION_IDLE);
    let mut relay = Relay {
        socket: Arc::new(socket),
        upstream,
        own_port,
        config,
        totals,
        sessions: HashMap::new(),
        replies: JoinSet::new(),
        started: Instant::now(),
        last_eviction: None,
    };
    let mut batch = Batch::new();
    let mut sweep = tokio::time::interval(idle.min(Duration::from_secs(1)));
    loop {
        let count = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sweep.tick() => {
                relay.end_idle_sessions(idle);
                continue;
            }
            Some(_) = relay.replies.join_next(), if !relay.replies.is_empty() => continue,
            received = relay.socket.async_io(Interest::READABLE, || batch.receive(&receiving)) => {
                match received {
                    Ok(count) => count,
                    Err(_) => continue, // an ICMP error for an earlier reply: nothing to do here
                }
            }
        };
        // A run of datagrams from one client goes upstream in one call.
        let mut start = 0;
        while start < count {
            let source = batch.source(start);
            let end = (start + 1..count)
                .find(|&i| batch.source(i) != source)
                .unwrap_or(count);
            if let Some(client) = source {
                let payloads: Vec<&[u8]> = (start..end).map(|i| batch.payload(i)).collect();
                relay.forward(&payloads, endpoint::natural(client)).await;
            }
            start = end;
        }
    }
    relay.replies.abort_all();
    // What is still queued, either way, is not relayed: taken off and
    // counted, within one time limit for all the sockets.
    let until = std::time::Instant::now() + QUEUED_COUNT_LIMIT;
    let mut queued = endpoint::take_queued(until, || batch.receive(&receiving));
    for session in relay.sessions.values() {
        let upstream = socket2::SockRef::from(session.upstream.as_ref());
        queued += endpoint::discard_queued(&upstream, until);
        session.close(totals);
    }
    Totals::add(&totals.queued_at_shutdown, queued);
    let drops = crate::sys::kernel_drops(relay.socket.as_ref()).unwrap_or(0);
    Totals::add(&totals.kernel_drops, drops);
    Ok(())
}

/// The UDP relay's state: its socket, the upstream, and a session per client.
struct Relay<'a> {
    socket: Arc<UdpSocket>,
    upstream: SocketAddr,
    own_port: u16,
    config: &'a RelayConfig,
    totals: &'a Arc<Totals>,
    sessions: HashMap<SocketAddr, Session>,
    replies: JoinSet<()>,
    started: Instant,
    /// When a session was last ended to make room (see [`EVICTION_GAP`]).
    last_eviction: Option<Instant>,
}

/// At most one session is ended to make room per this gap: a flood of
/// made-up sources then costs a session (a socket, a task) a millisecond at
/// most, and is otherwise turned away as cheaply as before.
const EVICTION_GAP: Duration = Duration::from_millis(1);

impl Relay<'_> {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Ends the sessions quiet for `idle`, counting what their sockets dropped.
    fn end_idle_sessions(&mut self, idle: Duration) {
        let now = self.now_ms();
        let (config, totals) = (self.config, self.totals);
        self.sessions.retain(|client, session| {
            let quiet = now.saturating_sub(session.last.load(Ordering::Relaxed));
            let alive = quiet < idle.as_millis() as u64;
            if !alive {
                session.close(totals);
                if session.told {
                    tell(config, Event::SessionEnded(&client.to_string()));
                }
            }
            alive
        });
    }

    /// Ends the unassured session quiet the longest, to make room for
    /// `newcomer`; false if every session is assured, or one was ended less
    /// than [`EVICTION_GAP`] ago.
    fn evict_for(&mut self, newcomer: SocketAddr) -> bool {
        let now = Instant::now();
        if self
            .last_eviction
            .is_some_and(|last| now.duration_since(last) < EVICTION_GAP)
        {
            return false;
        }
        let quietest = self
            .sessions
            .iter()
            .filter(|(_, session)| !session.assured)
            .min_by_key(|(_, session)| session.last.load(Ordering::Relaxed))
            .map(|(client, _)| *client);
        let Some(session) = quietest.and_then(|client| self.sessions.remove_entry(&client)) else {
            return false;
        };
        let (client, session) = session;
        self.last_eviction = Some(now);
        session.close(self.totals);
        if let Some(count) = crate::sink::count_paced(&self.totals.evicted) {
            let (client, newcomer) = (client.to_string(), newcomer.to_string());
            tell(self.config, Event::Evicted(&client, &newcomer, count));
        }
        true
    }

    /// Datagrams from `client` on to the upstream, through its session
    /// (opened now if it is new and may be).
    async fn forward(&mut self, payloads: &[&[u8]], client: SocketAddr) {
        let (config, totals) = (self.config, self.totals);
        if let Some(why) = config.access.refusal(client.ip()) {
            for _ in payloads {
                totals.refuse(config, &client.to_string(), why);
            }
            return;
        }
        let mut rest = payloads;
        // Each datagram of a new client tries to open its session, and is
        // counted where that fails, as if it had come alone.
        while !self.sessions.contains_key(&client) {
            if rest.is_empty() {
                return;
            }
            if !self.open_session(client).await {
                rest = &rest[1..];
            }
        }
        let now = self.now_ms();
        let Some(session) = self.sessions.get_mut(&client) else {
            return;
        };
        session.last.store(now, Ordering::Relaxed);
        session.assured |= session.answered.load(Ordering::Relaxed);
        let socket = session.upstream.as_ref();
        while !rest.is_empty() {
            let sending = || send_batch(socket2::SockRef::from(socket), rest);
            let sent = match socket.async_io(Interest::WRITABLE, sending).await {
                Ok(sent) => {
                    let bytes = rest.iter().take(sent).map(|p| p.len() as u64).sum();
                    Totals::add(&totals.datagrams_up, sent as u64);
                    Totals::add(&totals.bytes_up, bytes);
                    sent
                }
                Err(e) => {
                    Totals::add(&totals.upstream_failed, 1);
                    let error = endpoint::udp_send_error(self.upstream, e).to_string();
                    tell(config, Event::Failed(Some(&client.to_string()), error));
                    1
                }
            };
            rest = rest.get(sent.max(1)..).unwrap_or_default();
        }
    }

    /// A session for a new client, unless it would loop, the relay is full
    /// (`-m`), or the upstream cannot be reached; false then, said and counted.
    async fn open_session(&mut self, client: SocketAddr) -> bool {
        let (config, totals) = (self.config, self.totals);
        // A spoofed source naming this relay or an echo service would
        // have the upstream's replies come back as new requests, forever.
        if crate::listen::loops_back(client, self.own_port) {
            // Said once, the first time; the summary has the count.
            if totals.looping.fetch_add(1, Ordering::Relaxed) == 0 {
                let why =
                    "its source is this relay's port or an echo-like service's (a spoofed loop)";
                tell(config, Event::Refused(&client.to_string(), why, 1));
            }
            return false;
        }
        let full = self.sessions.len() >= config.max_conns.max(1);
        if full && !self.evict_for(client) {
            totals.turn_away(
                config,
                &client.to_string(),
                Limit::Clients(config.max_conns),
            );
            return false;
        }
        let upstream = match open_upstream(self.upstream).await {
            Ok(upstream) => Arc::new(upstream),
            Err(e) => {
                Totals::add(&totals.upstream_failed, 1);
                let error = e.to_string();
                tell(config, Event::Failed(Some(&client.to_string()), error));
                return false;
            }
        };
        Totals::add(&totals.connections, 1);
        if !full {
            tell(
                config,
                Event::Connected(&client.to_string(), Relayed::Session),
            );
        }
        let last = Arc::new(AtomicU64::new(self.now_ms()));
        let answered = Arc::new(AtomicBool::new(false));
        let back = send_back(
            upstream.clone(),
            self.socket.clone(),
            client,
            Activity {
                last: last.clone(),
                answered: answered.clone(),
                started: self.started,
                budget: config.reply_rate.map(|rate| {
                    let rate = f64::from(rate);
                    (rate, Budget::full(rate, std::time::Instant::now()))
                }),
            },
            totals.clone(),
        );
        let replies = self.replies.spawn(back);
        let session = Session {
            upstream,
            last,
            replies,
            answered,
            assured: false,
            told: !full,
        };
        self.sessions.insert(client, session);
        true
    }
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

impl Session {
    /// Stops its replies, counting what its socket dropped.
    fn close(&self, totals: &Totals) {
        self.replies.abort();
        let drops = crate::sys::kernel_drops(self.upstream.as_ref());
        Totals::add(&totals.kernel_drops, drops.unwrap_or(0));
    }
}

/// What a session's replies tell it: when it was last active, and that it
/// was answered; and what they may spend (`--reply-rate`).
struct Activity {
    last: Arc<AtomicU64>,
    answered: Arc<AtomicBool>,
    started: Instant,
    budget: Option<(f64, Budget)>,
}

/// The upstream's replies to one session, back to its client.
async fn send_back(
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    mut activity: Activity,
    totals: Arc<Totals>,
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
        let now = activity.started.elapsed().as_millis() as u64;
        activity.last.store(now, Ordering::Relaxed);
        if let Some((rate, budget)) = &mut activity.budget
            && !budget.take(*rate, std::time::Instant::now())
        {
            Totals::add(&totals.replies_limited, 1);
            continue;
        }
        match socket.send_to(&buf[..len], client).await {
            Ok(_) => {
                activity.answered.store(true, Ordering::Relaxed);
                Totals::add(&totals.datagrams_down, 1);
                Totals::add(&totals.bytes_down, len as u64);
            }
            // The client's address refused (a firewall, a broadcast) or buffers full: counted.
            Err(_) => Totals::add(&totals.replies_failed, 1),
        }
    }
}
