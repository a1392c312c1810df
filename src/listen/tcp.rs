//! The TCP side of the server: one task per connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::net::{TcpListener, TcpStream};

use super::Context;
use crate::endpoint::natural;
use crate::error::describe;
use crate::framing::Framer;
use crate::message::{Event, Message, Proto};

/// The most one read takes.
const READ_SIZE: usize = 64 * 1024;
/// Reads smaller than this are copied out, so a queued small message does not pin a whole read buffer.
const COPY_BELOW: usize = READ_SIZE / 8;
/// Pause after running out of file descriptors, instead of spinning on accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub(super) async fn accept_loop(listener: TcpListener, context: Arc<Context>) {
    loop {
        let accepted = tokio::select! {
            _ = context.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                context
                    .tasks
                    .spawn(serve_connection(stream, natural(peer), context.clone()));
                if context.once == Some(Proto::Tcp) {
                    return; // like the seed: one client, then the port is closed
                }
            }
            Err(e) => {
                let error = format!("cannot accept a connection: {}", describe(&e));
                context
                    .emit(Message::new(Proto::Tcp, None, Event::Error(error)))
                    .await;
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, context: Arc<Context>) {
    let message = |event| Message::new(Proto::Tcp, Some(peer), event);
    let started = Instant::now();
    context.emit(message(Event::Connect)).await;
    let mut framer = Framer::new(context.framing);
    let mut received = 0u64;
    loop {
        let read = tokio::select! {
            _ = context.shutdown.cancelled() => break,
            read = read_chunk(&stream) => read,
        };
        match read {
            Ok(Some(chunk)) => {
                received += chunk.len() as u64;
                framer.push(chunk);
                while let Some(frame) = framer.next_frame() {
                    context.emit(message(Event::Data(frame))).await;
                }
            }
            Ok(None) => break,
            Err(e) => {
                context.emit(message(Event::Error(describe(&e)))).await;
                break;
            }
        }
    }
    if let Some(rest) = framer.finish() {
        context.emit(message(Event::Data(rest))).await;
    }
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

/// One read, or `None` at end of stream. The buffer exists only while data is
/// there to read, so idle connections hold no buffer at all.
async fn read_chunk(stream: &TcpStream) -> io::Result<Option<Bytes>> {
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
