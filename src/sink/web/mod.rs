//! `--web`: a live page of what arrives, served from the binary (axum).
//!
//! The writer thread hands every message to a [`Feed`]: a bounded history, so
//! a browser opened late sees the recent past, and a broadcast channel, so
//! each browser gets what comes next. Nothing is rendered for a browser that
//! is not there, and a browser too slow to keep up is dropped (it reconnects
//! and starts from the history) rather than slowing reception.
//!
//! The page, its script and its style are embedded (`page/`), served under a
//! strict Content-Security-Policy; the script inserts peer text as text only.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use tokio::sync::broadcast;

use super::broker::BrokerStats;
use super::{Parse, timestamp, write_json};
use crate::access::{AccessList, AddressPlace, PerAddress};
use crate::error::{Error, Result};
use crate::message::{Addr, Event, Message, SocketKind};
use crate::tls::{ServerTls, ServerTlsConfig};

/// Messages a browser opened late is shown unless told otherwise.
pub const DEFAULT_HISTORY: usize = 1000;
/// Messages a browser may fall behind before it is dropped.
const BROWSER_LAG: usize = 8192;
/// How often the counters are sent to each browser.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// Event streams at once: each has its copy of the history and a task; more
/// are refused (503) until one closes.
const MAX_BROWSERS: usize = 32;
/// Connections to the page at once, handshakes included: the page shares the
/// process's descriptors with the listener it shows, so whoever can reach it
/// must not be able to take them all. Further ones wait in the kernel's queue.
const MAX_CONNECTIONS: usize = 128;
/// Connections from any one address at once, of the [`MAX_CONNECTIONS`]: a
/// browser opens a handful, so one host cannot hold every place (further
/// ones are closed at once).
const MAX_PER_PEER: usize = 48;
/// How long a request's headers may take, and a connection may sit idle
/// between requests: one that trickles its headers (slowloris) or says
/// nothing gives its place back after this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/app.css");
/// Nothing but the page's own script, style and event stream: peer text that
/// slipped into HTML still could not run or load anything.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Where and for whom the page is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// The address to serve on.
    pub addr: SocketAddr,
    /// Only these peers may open the page (`--web-allow`); empty: any.
    pub allow: AccessList,
    /// Messages kept for a browser opened late.
    pub history: usize,
    /// Serve HTTPS with this identity (the listener's own `--cert`/`--key`).
    pub tls: Option<ServerTlsConfig>,
}

/// Peers shown on the page, at most; past it the least recently seen half is forgotten.
const MAX_PEERS: usize = 4096;
/// Peers sent to the page, the most recently seen first.
const PEERS_SHOWN: usize = 100;
/// The chart's span, and a peer's rate's.
const CHART_SECONDS: u64 = 300;
const RATE_SECONDS: u64 = 10;

/// What the writer thread feeds and every browser reads.
struct Feed {
    /// The history and the tallies, under one lock taken once per message.
    kept: Mutex<Kept>,
    capacity: usize,
    live: broadcast::Sender<Entry>,
    browsers_dropped: AtomicU64,
    brokers: BrokerStats,
    parse: Option<Parse>,
}

/// Counted on the server, so the page's numbers are exact even for a browser
/// that fell behind and missed messages.
#[derive(Default)]
struct Kept {
    /// The number of the last message kept.
    seq: u64,
    history: VecDeque<Entry>,
    messages: u64,
    bytes: u64,
    kernel_drops: u64,
    peers: HashMap<(SocketKind, Addr), PeerTally>,
    /// (unix second, messages), the last `CHART_SECONDS`.
    per_second: VecDeque<(u64, u64)>,
}

/// Messages from one peer in one second, not yet added to its tally.
struct Run {
    key: (SocketKind, Addr),
    second: u64,
    messages: u64,
    bytes: u64,
    last: SystemTime,
}

#[derive(Clone)]
struct PeerTally {
    messages: u64,
    bytes: u64,
    last: SystemTime,
    /// Messages in each of the last `RATE_SECONDS` seconds: (second, count).
    recent: [(u64, u64); RATE_SECONDS as usize],
}

impl Kept {
    /// Counts one data message. A run of messages from one peer (a batch of
    /// datagrams, a flood) is added up in `run` and looked up once.
    fn count(&mut self, message: &Message, len: usize, run: &mut Option<Run>) {
        self.messages += 1;
        self.bytes += len as u64;
        let second = unix_second(message.time);
        match self.per_second.back_mut() {
            Some((s, n)) if *s == second => *n += 1,
            _ => self.per_second.push_back((second, 1)),
        }
        while self
            .per_second
            .front()
            .is_some_and(|(s, _)| *s + CHART_SECONDS <= second)
        {
            self.per_second.pop_front();
        }
        let Some(peer) = message.peer.clone() else {
            return;
        };
        let key = (message.proto, peer);
        match run {
            Some(run) if run.key == key && run.second == second => {
                run.messages += 1;
                run.bytes += len as u64;
                run.last = message.time;
            }
            _ => {
                if let Some(done) = run.take() {
                    self.add(done);
                }
                *run = Some(Run {
                    key,
                    second,
                    messages: 1,
                    bytes: len as u64,
                    last: message.time,
                });
            }
        }
    }

    /// Adds a run of messages to its peer's tally.
    fn add(&mut self, run: Run) {
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&run.key) {
            self.forget_older_half();
        }
        let tally = self.peers.entry(run.key).or_insert(PeerTally {
            messages: 0,
            bytes: 0,
            last: run.last,
            recent: [(0, 0); RATE_SECONDS as usize],
        });
        tally.messages += run.messages;
        tally.bytes += run.bytes;
        tally.last = run.last;
        let slot = &mut tally.recent[(run.second % RATE_SECONDS) as usize];
        match slot.0 == run.second {
            true => slot.1 += run.messages,
            false => *slot = (run.second, run.messages),
        }
    }

    fn forget_older_half(&mut self) {
        let mut lasts: Vec<SystemTime> = self.peers.values().map(|t| t.last).collect();
        lasts.sort_unstable();
        let cut = lasts[lasts.len() / 2];
        self.peers.retain(|_, tally| tally.last > cut);
    }
}

fn unix_second(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One message, numbered so a browser never shows it twice.
#[derive(Clone)]
struct Entry {
    seq: u64,
    message: Message,
}

/// The page's feed, for the receivers whose bytes do not pass through the
/// writer thread (one UDP socket written straight to stdout).
#[derive(Clone)]
pub struct WebTap(Arc<Feed>);

impl WebTap {
    /// Keeps `messages` for the page, under one lock.
    pub fn offer_all(&self, messages: impl IntoIterator<Item = Message>) {
        self.0.offer_all(messages);
    }

    /// Keeps `message` for the page; cheap when no browser is open.
    pub(super) fn offer(&self, message: &Message) {
        self.0.offer_all(std::iter::once(message.clone()));
    }
}

impl Feed {
    fn offer_all(&self, messages: impl IntoIterator<Item = Message>) {
        let live = self.live.receiver_count() > 0;
        let mut kept = self.kept();
        let mut run = None;
        for message in messages {
            match &message.event {
                Event::Data { bytes, .. } => kept.count(&message, bytes.len(), &mut run),
                Event::Drops { total, .. } => kept.kernel_drops = *total,
                _ => {}
            }
            kept.seq += 1;
            let entry = Entry {
                seq: kept.seq,
                message,
            };
            if live {
                let _ = self.live.send(entry.clone());
            }
            if kept.history.len() == self.capacity {
                kept.history.pop_front();
            }
            if self.capacity > 0 {
                kept.history.push_back(entry);
            }
        }
        if let Some(run) = run {
            kept.add(run);
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters, the peers most recently seen and the messages per second, as JSON.
    fn stats(&self) -> String {
        let kept = self.kept();
        let now = unix_second(SystemTime::now());
        let mut peers: Vec<(&(SocketKind, Addr), &PeerTally)> = kept.peers.iter().collect();
        peers.sort_unstable_by_key(|(_, tally)| std::cmp::Reverse(tally.last));
        let peers: Vec<serde_json::Value> = peers
            .into_iter()
            .take(PEERS_SHOWN)
            .map(|((proto, peer), tally)| {
                let recent: u64 = (tally.recent.iter())
                    .filter(|(second, _)| *second + RATE_SECONDS > now)
                    .map(|(_, n)| n)
                    .sum();
                serde_json::json!({
                    "peer": peer.to_string(),
                    "proto": proto.as_str(),
                    "messages": tally.messages,
                    "bytes": tally.bytes,
                    "last": timestamp(tally.last),
                    "rate": recent as f64 / RATE_SECONDS as f64,
                })
            })
            .collect();
        serde_json::json!({
            "messages": kept.messages,
            "bytes": kept.bytes,
            "kernel_drops": kept.kernel_drops,
            "queue_drops": self.brokers.dropped(),
            "browsers_dropped": self.browsers_dropped.load(Ordering::Relaxed),
            "now": now,
            "per_second": kept.per_second,
            "peers": peers,
        })
        .to_string()
    }

    fn record(&self, entry: &Entry) -> SseEvent {
        let mut json = Vec::new();
        let ts = timestamp(entry.message.time);
        let _ = write_json(&mut json, &mut Vec::new(), &ts, &entry.message, self.parse);
        let json = String::from_utf8_lossy(json.strip_suffix(b"\n").unwrap_or(&json)).into_owned();
        SseEvent::default()
            .event("record")
            .id(entry.seq.to_string())
            .data(json)
    }
}

struct Guard {
    feed: Arc<Feed>,
    token: Option<String>,
    /// One place per open event stream ([`MAX_BROWSERS`]).
    browsers: Arc<tokio::sync::Semaphore>,
}

impl WebTap {
    /// Binds `config.addr` and serves the page on the current tokio runtime;
    /// the tap is what the page shows. Beyond loopback without `--web-allow`,
    /// a token is made and the URL with it is said on stderr (shown even with
    /// `-q`): only who has it gets in.
    pub(super) fn start(
        config: &WebConfig,
        parse: Option<Parse>,
        brokers: BrokerStats,
    ) -> Result<WebTap> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Usage("--web needs a tokio runtime".into()))?;
        let tls = config.tls.as_ref().map(ServerTls::new).transpose()?;
        let cannot = |e| Error::io(format!("cannot serve the web view on {}", config.addr), e);
        let listener = std::net::TcpListener::bind(config.addr).map_err(cannot)?;
        listener.set_nonblocking(true).map_err(cannot)?;
        let local = listener.local_addr().map_err(cannot)?;
        let open = config.allow.is_empty() && !config.addr.ip().is_loopback();
        let token = open.then(make_token).transpose()?;
        let (live, _) = broadcast::channel(BROWSER_LAG);
        let feed = Arc::new(Feed {
            kept: Mutex::default(),
            capacity: config.history,
            live,
            browsers_dropped: AtomicU64::new(0),
            brokers,
            parse,
        });
        let guard = Arc::new(Guard {
            feed: feed.clone(),
            token: token.clone(),
            browsers: Arc::new(tokio::sync::Semaphore::new(MAX_BROWSERS)),
        });
        let app = Router::new()
            .route(
                "/",
                get(|| async { asset("text/html; charset=utf-8", PAGE) }),
            )
            .route(
                "/app.js",
                get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
            )
            .route(
                "/app.css",
                get(|| async { asset("text/css; charset=utf-8", STYLE) }),
            )
            .route("/events", get(events))
            .layer(axum::middleware::from_fn_with_state(guard.clone(), guarded))
            .with_state(guard);
        let host = match local.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
            IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        let query = token.map(|t| format!("?token={t}")).unwrap_or_default();
        let scheme = if tls.is_some() { "https" } else { "http" };
        crate::sink::say(&format!(
            "web view: {scheme}://{host}:{}/{query}",
            local.port()
        ));
        if let Some(fingerprint) = tls.as_ref().and_then(|tls| tls.self_signed) {
            crate::sink::say(&format!(
                "web view certificate made for this run, SHA-256 fingerprint {fingerprint}"
            ));
        }
        let _enter = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener).map_err(cannot)?;
        let acceptor = tls.map(|tls| tls.acceptor);
        let listener = WebListener::start(listener, acceptor, config.allow.clone());
        runtime.spawn(serve_page(listener, app));
        Ok(WebTap(feed))
    }
}

/// Serves each connection the listener hands over with `app`, through
/// hyper with [`HEADER_TIMEOUT`] (`axum::serve` sets no timeout at all).
async fn serve_page(mut listener: WebListener, app: Router) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    while let Some(stream) = listener.ready.recv().await {
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _ = connection.await; // a peer gone or too slow: nothing to report
        });
    }
}

/// How long a browser may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type WebStream = Held<
    tokio_util::either::Either<
        tokio::net::TcpStream,
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    >,
>;

/// A connection to the page, holding one of its [`MAX_CONNECTIONS`] places,
/// and one of its peer's [`MAX_PER_PEER`], until it closes.
struct Held<S> {
    stream: S,
    _place: tokio::sync::OwnedSemaphorePermit,
    _peer: AddressPlace,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Held<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Held<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The page's connections, plain or TLS, from peers `--web-allow` lets in
/// (others are closed at once). Handshakes run in tasks of their own, so one
/// peer that stalls in its handshake holds up no one else.
struct WebListener {
    ready: tokio::sync::mpsc::Receiver<WebStream>,
}

impl WebListener {
    fn start(
        tcp: tokio::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        allow: AccessList,
    ) -> WebListener {
        let (sender, ready) = tokio::sync::mpsc::channel(64);
        let places = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let peers = PerAddress::new(MAX_PER_PEER);
        tokio::spawn(async move {
            loop {
                let Ok(place) = places.clone().acquire_owned().await else {
                    return; // never closed
                };
                let Ok((stream, peer)) = tcp.accept().await else {
                    // Out of descriptors, or the like: wait rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if allow.refusal(peer.ip()).is_some() {
                    continue;
                }
                let Some(peer_place) = peers.take(peer.ip()) else {
                    continue;
                };
                let sender = sender.clone();
                match &tls {
                    None => {
                        let stream = tokio_util::either::Either::Left(stream);
                        let held = Held {
                            stream,
                            _place: place,
                            _peer: peer_place,
                        };
                        if sender.send(held).await.is_err() {
                            return;
                        }
                    }
                    Some(acceptor) => {
                        let handshake = acceptor.accept(stream);
                        tokio::spawn(async move {
                            let done = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await;
                            if let Ok(Ok(stream)) = done {
                                let stream = tokio_util::either::Either::Right(stream);
                                let held = Held {
                                    stream,
                                    _place: place,
                                    _peer: peer_place,
                                };
                                let _ = sender.send(held).await;
                            }
                        });
                    }
                }
            }
        });
        WebListener { ready }
    }
}

/// 128 random bits, in hex.
fn make_token() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Usage("cannot make a token for --web".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

type Asked = Query<HashMap<String, String>>;

impl Guard {
    /// Refuses requests without the token (peers outside `--web-allow`
    /// never get this far: [`WebListener`] closes their connections).
    fn check(&self, asked: &Asked) -> std::result::Result<(), StatusCode> {
        match (&self.token, asked.get("token")) {
            (None, _) => Ok(()),
            (Some(token), Some(given)) if same(token.as_bytes(), given.as_bytes()) => Ok(()),
            _ => Err(StatusCode::UNAUTHORIZED),
        }
    }
}

/// Compares in time that does not depend on where the two differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A response with the headers every answer carries.
fn with_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Every request: refused outside `--web-allow` or without the token, and
/// every answer (a refusal too) with the headers of [`with_headers`].
async fn guarded(
    State(guard): State<Arc<Guard>>,
    asked: Asked,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = match guard.check(&asked) {
        Ok(()) => next.run(request).await,
        Err(status) => status.into_response(),
    };
    with_headers(response)
}

/// One of the embedded files.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The event stream: the history, then every new message as it comes, and
/// the counters every second. Ends when the browser falls too far behind.
/// Past [`MAX_BROWSERS`], refused (503) until one closes.
async fn events(State(guard): State<Arc<Guard>>) -> Response {
    let Ok(place) = guard.browsers.clone().try_acquire_owned() else {
        let busy = "too many browsers on this page: close one and reload\n";
        return (StatusCode::SERVICE_UNAVAILABLE, busy).into_response();
    };
    let feed = guard.feed.clone();
    // Subscribed before the history is copied: nothing falls between the two.
    let live = feed.live.subscribe();
    let backlog = feed.kept().history.clone();
    let stream = browser_stream(feed, backlog, live, place);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

struct Browser {
    feed: Arc<Feed>,
    backlog: VecDeque<Entry>,
    live: broadcast::Receiver<Entry>,
    last: u64,
    ticker: tokio::time::Interval,
    done: bool,
    /// Its place among [`MAX_BROWSERS`], given back when the stream is dropped.
    _place: tokio::sync::OwnedSemaphorePermit,
}

fn browser_stream(
    feed: Arc<Feed>,
    backlog: VecDeque<Entry>,
    live: broadcast::Receiver<Entry>,
    place: tokio::sync::OwnedSemaphorePermit,
) -> impl Stream<Item = std::result::Result<SseEvent, Infallible>> {
    let browser = Browser {
        feed,
        backlog,
        live,
        last: 0,
        ticker: tokio::time::interval(STATS_EVERY),
        done: false,
        _place: place,
    };
    futures_util::stream::unfold(browser, |mut browser| async move {
        if browser.done {
            return None;
        }
        if let Some(entry) = browser.backlog.pop_front() {
            browser.last = entry.seq;
            let event = browser.feed.record(&entry);
            return Some((Ok(event), browser));
        }
        loop {
            tokio::select! {
                next = browser.live.recv() => match next {
                    Ok(entry) if entry.seq <= browser.last => continue,
                    Ok(entry) => {
                        browser.last = entry.seq;
                        let event = browser.feed.record(&entry);
                        return Some((Ok(event), browser));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        browser.feed.browsers_dropped.fetch_add(1, Ordering::Relaxed);
                        browser.done = true;
                        let event = SseEvent::default().event("dropped").data("too slow: reconnecting");
                        return Some((Ok(event), browser));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = browser.ticker.tick() => {
                    let event = SseEvent::default().event("stats").data(browser.feed.stats());
                    return Some((Ok(event), browser));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        let token = make_token().unwrap();
        assert_eq!(token.len(), 32);
        assert_ne!(token, make_token().unwrap());
    }
}
