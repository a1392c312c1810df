//! The stream side of the server (TCP, TLS and UNIX): one task per connection.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream, tcp, unix};
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::server::TlsStream;

use super::replies::{ClientWriter, Replies};
use super::{Context, Delivery};
use crate::access::AddressPlace;
use crate::endpoint::natural;
use crate::error::describe;
use crate::exec::{self, Program};
use crate::framing::{Frame, Framer};
use crate::message::{Addr, Event, Message, SocketKind};
use crate::tls;
use crate::unix_socket::{self, SocketFile};

/// The most one read takes.
const READ_SIZE: usize = 64 * 1024;
/// Reads smaller than this are copied out, so a queued small message does not pin a whole read buffer.
const COPY_BELOW: usize = READ_SIZE / 8;
/// Pause after running out of file descriptors, instead of spinning on accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a client refused past `--max-conns` is given to take its notice.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(1);

/// A listening stream socket; a UNIX socket's file is removed when it closes.
pub(super) enum Listener {
    Tcp(TcpListener),
    /// The file is kept only to be removed when the listener ends.
    Unix {
        listener: UnixListener,
        _file: Option<SocketFile>,
    },
}

/// A client's connection.
enum Client {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    fn kind(&self) -> SocketKind {
        match self {
            Listener::Tcp(_) => SocketKind::Tcp,
            Listener::Unix { .. } => SocketKind::Unix,
        }
    }

    /// The next client, and who it is.
    async fn accept(&self) -> io::Result<(Client, Addr)> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                Ok((Client::Tcp(stream), Addr::Inet(natural(peer))))
            }
            Listener::Unix { listener, .. } => {
                let (stream, _) = listener.accept().await?;
                let peer = unix_socket::stream_peer(&stream);
                Ok((Client::Unix(stream), peer))
            }
        }
    }
}

impl Client {
    fn kind(&self) -> SocketKind {
        match self {
            Client::Tcp(_) => SocketKind::Tcp,
            Client::Unix(_) => SocketKind::Unix,
        }
    }

    fn local(&self) -> Option<Addr> {
        match self {
            Client::Tcp(stream) => stream.local_addr().ok().map(|a| Addr::Inet(natural(a))),
            Client::Unix(stream) => stream.local_addr().ok().map(|a| unix_socket::name_of(&a)),
        }
    }
}

pub(super) async fn accept_loop(listener: Listener, context: Arc<Context>) {
    let kind = listener.kind();
    loop {
        let accepted = tokio::select! {
            _ = context.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (client, peer) = match accepted {
            Ok(accepted) => accepted,
            // A client that gave up before we took it: nothing to report.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(e) => {
                let error = format!("cannot accept a connection: {}", describe(&e));
                context
                    .emit(Message::new(kind, None, Event::Error(error)))
                    .await;
                // Out of file descriptors or memory: give closing clients time.
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // --allow and --deny name IP addresses; who may reach a UNIX socket is its file's mode.
        let refusal = peer
            .inet()
            .and_then(|addr| context.access.refusal(addr.ip()));
        if let Some(why) = refusal {
            let counter = &context.counters.refused;
            if let Some(notice) = context.turned_away(counter, kind, peer, why) {
                context.emit(notice).await;
            }
            continue; // dropping the stream closes it at once
        }
        let place = (context.per_address.as_ref().zip(peer.inet()))
            .map(|(per_address, addr)| per_address.take(addr.ip()).ok_or(per_address.limit()));
        let place = match place.transpose() {
            Ok(place) => place,
            Err(limit) => {
                let why = format!("{limit} clients from this address already (--max-per-ip)");
                let notice = "too many connections from your address, try again later";
                turn_away(client, peer, (&why, notice), &context).await;
                continue;
            }
        };
        let Ok(permit) = context.connections.clone().try_acquire_owned() else {
            let why = format!("server full: {} clients (--max-conns)", context.max_conns);
            let notice = "server full, try again later";
            turn_away(client, peer, (&why, notice), &context).await;
            continue;
        };
        let places = (permit, place);
        context
            .tasks
            .spawn(serve_connection(client, peer, context.clone(), places));
        if context.once == Some(kind) {
            return; // like the seed: one client, then the port is closed
        }
    }
}

/// Counts and (now and then) reports a client past `--max-conns` or
/// `--max-per-ip` (`why`), then tells it so in one line (`notice`) and closes.
async fn turn_away(client: Client, peer: Addr, (why, notice): (&str, &str), context: &Context) {
    let counter = &context.counters.over_limit;
    let kind = client.kind();
    if let Some(notice) = context.turned_away(counter, kind, peer, why) {
        context.emit(notice).await;
    }
    // A TLS client would take plain text for a broken handshake: just close.
    if context.tls.is_some() {
        return;
    }
    let notice = format!("portier: {notice}\n");
    match client {
        Client::Tcp(stream) => context.tasks.spawn(tell(stream, notice)),
        Client::Unix(stream) => context.tasks.spawn(tell(stream, notice)),
    };
}

/// A one-line notice for a client refused past a limit, then close.
async fn tell(mut stream: impl AsyncWrite + Unpin, notice: String) {
    let _ = tokio::time::timeout(NOTICE_TIMEOUT, stream.write_all(notice.as_bytes())).await;
}

async fn serve_connection(
    client: Client,
    peer: Addr,
    context: Arc<Context>,
    // Its -m slot, and its place among its address's (--max-per-ip), until it ends.
    _places: (OwnedSemaphorePermit, Option<AddressPlace>),
) {
    let started = Instant::now();
    let local = client.local();
    let kind = client.kind();
    let message =
        |event, subject| Message::new(kind, Some(peer.clone()), event).with_subject(subject);
    if let Client::Tcp(stream) = &client
        && let Err(e) = crate::endpoint::set_keepalive(stream, context.keepalive)
    {
        context
            .emit(message(Event::Error(e.to_string()), None))
            .await;
    }
    let (mut reader, writer, subject) = match open(client, &context).await {
        Ok(opened) => opened,
        Err(error) => {
            context.emit(message(Event::Error(error), None)).await;
            if context.once == Some(kind) {
                context.shutdown.cancel(); // the one client came and went
            }
            return;
        }
    };
    let message = |event| message(event, subject.clone());
    context.emit(message(Event::Connect)).await;
    // Ends this client only: on shutdown, or when a broker drops it as too slow.
    let kick = context.shutdown.child_token();
    let idle = context.idle_timeout;
    let (received, exit) = match &context.exec {
        Some(program) => {
            let client = (kind, &peer, local.as_ref());
            let ended = run_program(program, client, &mut reader, writer, &context, &kick).await;
            if let Some(error) = ended.cut_short {
                context.emit(message(Event::Error(error))).await;
            }
            (ended.received, Some(ended.exit))
        }
        None => {
            let mut replies = Replies::open(
                context.mode,
                &context.hub,
                writer,
                &peer,
                kick.clone(),
                idle,
            );
            let (received, ended_by) = match spliced_to_stdout(&reader, &context, &kick).await {
                Some(done) => done,
                None => read_loop(&mut reader, &context, &mut replies, &kick, &message).await,
            };
            let ended_by = match ended_by {
                None if kick.is_cancelled() && !context.shutdown.is_cancelled() => {
                    context.count_dropped_slow();
                    Some("dropped: too slow to take what the others send (queue full, or nothing taken for --idle-timeout)".to_string())
                }
                other => other,
            };
            if let Some(error) = ended_by {
                context.emit(message(Event::Error(error))).await;
            }
            replies.close(&context.hub, &peer, &kick).await;
            (received, None)
        }
    };
    let duration = started.elapsed();
    let disconnect = Event::Disconnect {
        bytes: received,
        duration,
        exit,
    };
    context.emit(message(disconnect)).await;
    if context.once == Some(kind) {
        context.shutdown.cancel();
    }
}

/// `--exec`: the client's program, fed what the client sends until the
/// program ends (or the client is dropped, or nothing moves for the idle
/// timeout).
async fn run_program(
    program: &Program,
    (kind, peer, local): (SocketKind, &Addr, Option<&Addr>),
    reader: &mut Reader,
    writer: ClientWriter,
    context: &Context,
    kick: &tokio_util::sync::CancellationToken,
) -> exec::Ended {
    let child = match program.spawn(kind, peer, local, true) {
        Ok(child) => child,
        Err(why) => {
            let exit = "not started".into();
            return exec::Ended {
                received: 0,
                exit,
                cut_short: Some(why),
            };
        }
    };
    let counted = |len: usize| context.count_delivered(len as u64);
    exec::serve(child, reader, writer, context.idle_timeout, kick, counted).await
}

/// Reads, frames and delivers until the client is done; returns the bytes
/// received and, if the session ended badly, why.
async fn read_loop(
    reader: &mut Reader,
    context: &Context,
    replies: &mut Replies,
    kick: &tokio_util::sync::CancellationToken,
    message: &impl Fn(Event) -> Message,
) -> (u64, Option<String>) {
    let mut framer = Framer::new(context.framing);
    let mut received = 0u64;
    let ended_by = loop {
        let read = tokio::select! {
            _ = kick.cancelled() => break None,
            _ = idle(context.idle_timeout) => break Some(format!(
                "closed after {} without data (--idle-timeout)",
                humantime::format_duration(context.idle_timeout.unwrap_or_default())
            )),
            read = reader.read_chunk() => read,
        };
        match read {
            Ok(Some(chunk)) => {
                received += chunk.len() as u64;
                framer.push(chunk);
                let mut stalled = None;
                while let Some(frame) = framer.next_frame() {
                    if let Err(why) = deliver(context, replies, kick, message, frame).await {
                        stalled = Some(why);
                    }
                }
                if stalled.is_some() {
                    break stalled;
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(describe(&e)),
        }
    };
    if let Some(rest) = framer.finish() {
        // The client is ending; a reply it does not take changes nothing now.
        let _ = deliver(context, replies, kick, message, rest).await;
    }
    (received, ended_by)
}

/// The zero-copy path ([`Delivery::Spliced`]): the client's bytes go from the
/// socket to stdout inside the kernel. `None` when it does not apply.
#[cfg(target_os = "linux")]
async fn spliced_to_stdout(
    reader: &Reader,
    context: &Arc<Context>,
    kick: &tokio_util::sync::CancellationToken,
) -> Option<(u64, Option<String>)> {
    let socket = match (reader, context.delivery) {
        (Reader::Plain(reader), Delivery::Spliced) => socket2::SockRef::from(reader.as_ref()),
        (Reader::Unix(reader), Delivery::Spliced) => socket2::SockRef::from(reader.as_ref()),
        _ => return None,
    };
    let from: std::os::fd::OwnedFd = socket.try_clone().ok()?.into();
    let to = context.stdout.as_ref()?.try_clone().ok()?;
    // The bytes are counted as they move, so --stats follows a long splice.
    let counting = context.clone();
    let mut moving = tokio::task::spawn_blocking(move || {
        crate::splice::splice_all(&from, &to, &counting.counters.bytes)
    });
    let moved = tokio::select! {
        moved = &mut moving => moved,
        _ = kick.cancelled() => {
            // Wakes the splicing thread: the socket reads as ended.
            let _ = socket.shutdown(std::net::Shutdown::Read);
            moving.await
        }
    };
    match moved {
        Ok(Ok(Some(bytes))) => {
            context.count_message();
            Some((bytes, None))
        }
        Ok(Ok(None)) => None, // refused before any byte moved: the ordinary path
        Ok(Err(failed)) => {
            context.count_message();
            // The reader of stdout left (`| head`): the server ends quietly, as elsewhere.
            if failed.error.kind() == std::io::ErrorKind::BrokenPipe {
                context.shutdown.cancel();
                return Some((failed.moved, None));
            }
            Some((failed.moved, Some(describe(&failed.error))))
        }
        Err(e) => Some((0, Some(e.to_string()))),
    }
}

#[cfg(not(target_os = "linux"))]
async fn spliced_to_stdout(
    _reader: &Reader,
    _context: &Arc<Context>,
    _kick: &tokio_util::sync::CancellationToken,
) -> Option<(u64, Option<String>)> {
    None
}

/// Hands one message to the sinks and to whoever the mode writes it to;
/// `Err` when the client takes no reply for the idle timeout (it is dropped).
async fn deliver(
    context: &Context,
    replies: &mut Replies,
    kick: &tokio_util::sync::CancellationToken,
    message: impl Fn(Event) -> Message,
    Frame { bytes, cut }: Frame,
) -> Result<(), String> {
    let passed_on = replies.pass_on(&context.hub, &bytes, kick).await;
    context.emit(message(Event::Data { bytes, cut })).await;
    passed_on.inspect_err(|_| context.count_dropped_slow())
}

/// Never ends without a timeout; ends after it otherwise.
async fn idle(timeout: Option<Duration>) {
    match timeout {
        Some(timeout) => tokio::time::sleep(timeout).await,
        None => std::future::pending().await,
    }
}

/// The read side of a client connection.
enum Reader {
    Plain(tcp::OwnedReadHalf),
    Unix(unix::OwnedReadHalf),
    /// With an error met while gathering records, given on the next read.
    Tls(ReadHalf<TlsStream<TcpStream>>, Option<io::Error>),
}

/// Plain reads, for `--exec`, where the bytes go to a program, not to framing.
impl tokio::io::AsyncRead for Reader {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Reader::Plain(reader) => std::pin::Pin::new(reader).poll_read(cx, buf),
            Reader::Unix(reader) => std::pin::Pin::new(reader).poll_read(cx, buf),
            Reader::Tls(reader, _) => std::pin::Pin::new(reader).poll_read(cx, buf),
        }
    }
}

impl Reader {
    /// One read, or `None` at end of stream.
    async fn read_chunk(&mut self) -> io::Result<Option<Bytes>> {
        match self {
            Reader::Plain(reader) => {
                read_chunk(|| reader.readable(), |b| reader.try_read_buf(b)).await
            }
            Reader::Unix(reader) => {
                read_chunk(|| reader.readable(), |b| reader.try_read_buf(b)).await
            }
            Reader::Tls(reader, deferred) => {
                let mut buf = BytesMut::with_capacity(READ_SIZE);
                let first = match deferred.take() {
                    Some(e) => Err(e),
                    None => reader.read_buf(&mut buf).await,
                };
                match first {
                    Ok(0) => return Ok(None),
                    Ok(_) => {}
                    Err(e) if tls::is_unannounced_close(&e) => return Ok(None),
                    Err(e) => return Err(e),
                }
                // A read gives one record (16 KiB at most): the records already
                // here join it, so bulk moves in large messages, not one per record.
                while buf.capacity() - buf.len() >= TLS_RECORD_SIZE {
                    match reader.read_buf(&mut buf).now_or_never() {
                        Some(Ok(0)) | None => break,
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            *deferred = Some(e);
                            break;
                        }
                    }
                }
                if buf.len() < COPY_BELOW {
                    return Ok(Some(Bytes::copy_from_slice(&buf)));
                }
                Ok(Some(buf.freeze()))
            }
        }
    }
}

/// The largest TLS record's payload.
const TLS_RECORD_SIZE: usize = 16 * 1024;

/// Splits a new connection, after a TLS handshake when the listener speaks TLS;
/// also returns the subject of the client's certificate, if it showed one.
async fn open(
    client: Client,
    context: &Context,
) -> Result<(Reader, ClientWriter, Option<Arc<str>>), String> {
    let stream = match (client, &context.tls) {
        (Client::Unix(stream), _) => {
            let (reader, writer) = stream.into_split();
            return Ok((Reader::Unix(reader), Box::new(writer), None));
        }
        (Client::Tcp(stream), None) => {
            let (reader, writer) = stream.into_split();
            return Ok((Reader::Plain(reader), Box::new(writer), None));
        }
        (Client::Tcp(stream), Some(_)) => stream,
    };
    let Some(acceptor) = &context.tls else {
        unreachable!("matched above")
    };
    let (tls, subject) = tls::accept(acceptor, stream).await?;
    let subject = subject.map(Arc::from);
    let (reader, writer) = tokio::io::split(tls);
    Ok((Reader::Tls(reader, None), Box::new(writer), subject))
}

/// One read, or `None` at end of stream. The buffer exists only while data is
/// there to read, so idle connections hold no buffer at all.
async fn read_chunk<Ready: Future<Output = io::Result<()>>>(
    readable: impl Fn() -> Ready,
    try_read: impl Fn(&mut BytesMut) -> io::Result<usize>,
) -> io::Result<Option<Bytes>> {
    loop {
        readable().await?;
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        match try_read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) if n < COPY_BELOW => return Ok(Some(Bytes::copy_from_slice(&buf))),
            Ok(_) => return Ok(Some(buf.freeze())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}
