//! The TCP side of the server: one task per connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;

use super::Context;
use super::relay::Replies;
use crate::endpoint::natural;
use crate::error::describe;
use crate::framing::{Frame, Framer};
use crate::message::{Event, Message, Proto};

/// The most one read takes.
const READ_SIZE: usize = 64 * 1024;
/// Reads smaller than this are copied out, so a queued small message does not pin a whole read buffer.
const COPY_BELOW: usize = READ_SIZE / 8;
/// Pause after running out of file descriptors, instead of spinning on accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a client refused past `--max-conns` is given to take its notice.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) async fn accept_loop(listener: TcpListener, context: Arc<Context>) {
    loop {
        let accepted = tokio::select! {
            _ = context.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok((stream, peer)) => (stream, natural(peer)),
            Err(e) => {
                let error = format!("cannot accept a connection: {}", describe(&e));
                context
                    .emit(Message::new(Proto::Tcp, None, Event::Error(error)))
                    .await;
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if let Some(why) = context.access.refusal(peer.ip()) {
            let counter = &context.counters.refused;
            context.turn_away(counter, Proto::Tcp, peer, why).await;
            continue; // dropping the stream closes it at once
        }
        let Ok(permit) = context.connections.clone().try_acquire_owned() else {
            let why = format!("server full: {} clients (--max-conns)", context.max_conns);
            let counter = &context.counters.over_limit;
            context.turn_away(counter, Proto::Tcp, peer, &why).await;
            context.tasks.spawn(tell_full(stream));
            continue;
        };
        context
            .tasks
            .spawn(serve_connection(stream, peer, context.clone(), permit));
        if context.once == Some(Proto::Tcp) {
            return; // like the seed: one client, then the port is closed
        }
    }
}

/// A one-line notice for a client refused past `--max-conns`, then close.
async fn tell_full(mut stream: TcpStream) {
    let notice = b"portier: server full, try again later\n";
    let _ = tokio::time::timeout(NOTICE_TIMEOUT, stream.write_all(notice)).await;
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    context: Arc<Context>,
    _permit: OwnedSemaphorePermit,
) {
    let message = |event| Message::new(Proto::Tcp, Some(peer), event);
    let started = Instant::now();
    context.emit(message(Event::Connect)).await;
    let (reader, writer) = stream.into_split();
    // Ends this client only: on shutdown, or when a broker drops it as too slow.
    let kick = context.shutdown.child_token();
    let replies = Replies::open(context.mode, &context.hub, writer, peer, kick.clone());
    let mut framer = Framer::new(context.framing);
    let mut received = 0u64;
    let ended_by = loop {
        let read = tokio::select! {
            _ = kick.cancelled() => break None,
            _ = idle(context.idle_timeout) => break Some(format!(
                "closed after {} without data (--idle-timeout)",
                humantime::format_duration(context.idle_timeout.unwrap_or_default())
            )),
            read = read_chunk(&reader) => read,
        };
        match read {
            Ok(Some(chunk)) => {
                received += chunk.len() as u64;
                framer.push(chunk);
                while let Some(frame) = framer.next_frame() {
                    deliver(&context, &replies, &kick, peer, frame).await;
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(describe(&e)),
        }
    };
    if let Some(rest) = framer.finish() {
        deliver(&context, &replies, &kick, peer, rest).await;
    }
    let ended_by = match ended_by {
        None if kick.is_cancelled() && !context.shutdown.is_cancelled() => {
            context
                .counters
                .dropped_slow
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Some("dropped: too slow to take what the others send (queue full)".to_string())
        }
        other => other,
    };
    if let Some(error) = ended_by {
        context.emit(message(Event::Error(error))).await;
    }
    replies.close(&context.hub, peer, &kick).await;
    let duration = started.elapsed();
    let disconnect = Event::Disconnect {
        bytes: received,
        duration,
    };
    context.emit(message(disconnect)).await;
    if context.once == Some(Proto::Tcp) {
        context.shutdown.cancel();
    }
}

/// Hands one message to the sinks and to whoever the mode writes it to.
async fn deliver(
    context: &Context,
    replies: &Replies,
    kick: &tokio_util::sync::CancellationToken,
    peer: SocketAddr,
    Frame { bytes, cut }: Frame,
) {
    replies.pass_on(&context.hub, &bytes, kick).await;
    let data = Event::Data { bytes, cut };
    context
        .emit(Message::new(Proto::Tcp, Some(peer), data))
        .await;
}

/// Never ends without a timeout; ends after it otherwise.
async fn idle(timeout: Option<Duration>) {
    match timeout {
        Some(timeout) => tokio::time::sleep(timeout).await,
        None => std::future::pending().await,
    }
}

/// One read, or `None` at end of stream. The buffer exists only while data is
/// there to read, so idle connections hold no buffer at all.
async fn read_chunk(stream: &OwnedReadHalf) -> io::Result<Option<Bytes>> {
    loop {
        stream.readable().await?;
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        match stream.try_read_buf(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) if n < COPY_BELOW => return Ok(Some(Bytes::copy_from_slice(&buf))),
            Ok(_) => return Ok(Some(buf.freeze())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}
