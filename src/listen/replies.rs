//! Writing back to TCP clients: `--echo` to the sender, `--broker` and
//! `--chat` to every other client.
//!
//! Each client that is written to gets a bounded queue and a writer task, so
//! one slow reader never stalls the others: in a broker its queue overflows
//! and it is dropped; an echo client only slows itself down. With
//! `--idle-timeout`, a client that takes nothing written to it for that long
//! is dropped too, so a peer that never reads cannot hold its slot.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::message::Addr;

/// Messages waiting to be written to one client.
pub const CLIENT_QUEUE_LEN: usize = 128;

/// What the server does with what a client sends, besides printing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Print only.
    #[default]
    Print,
    /// Send every message back to its sender.
    Echo,
    /// Relay every TCP client's data to all the other clients.
    Broker,
    /// Like broker, line by line, each line prefixed by its sender.
    Chat,
}

/// The connected clients of a broker or chat.
#[derive(Default)]
pub(super) struct Hub {
    members: Mutex<HashMap<u64, Member>>,
    next_id: AtomicU64,
}

struct Member {
    queue: mpsc::Sender<Bytes>,
    kick: CancellationToken,
}

impl Hub {
    fn join(&self, queue: mpsc::Sender<Bytes>, kick: CancellationToken) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Member { queue, kick });
        id
    }

    fn leave(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Queues `bytes` for every member but `from`, without waiting: a member
    /// whose queue is full is kicked out (its own task reports it).
    fn relay(&self, from: u64, bytes: &Bytes) {
        self.lock().retain(|&id, member| {
            id == from
                || match member.queue.try_send(bytes.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        member.kick.cancel();
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Member>> {
        // A panic while holding the lock cannot leave the map half-changed.
        self.members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The write side of a client connection, plain or TLS.
pub(super) type ClientWriter = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// Writes all of `bytes`; with `idle`, fails when the peer takes none of
/// them for that long (it does not read), instead of waiting for ever.
async fn write_all_or_stall(
    socket: &mut ClientWriter,
    bytes: &[u8],
    idle: Option<Duration>,
) -> io::Result<()> {
    let Some(idle) = idle else {
        return socket.write_all(bytes).await;
    };
    let mut at = 0;
    while at < bytes.len() {
        match tokio::time::timeout(idle, socket.write(&bytes[at..])).await {
            Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Ok(written)) => at += written,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(stalled(idle)),
        }
    }
    Ok(())
}

fn stalled(idle: Duration) -> io::Error {
    let idle = humantime::format_duration(idle);
    let why = format!("closed: took nothing written to it for {idle} (--idle-timeout)");
    io::Error::new(io::ErrorKind::TimedOut, why)
}

/// The write side of one client connection, as the mode needs it; `idle`
/// bounds how long one write may wait for the client to read.
pub(super) enum Replies {
    /// Print mode: only closed, cleanly, when the client is done.
    PrintOnly {
        socket: ClientWriter,
        idle: Option<Duration>,
    },
    /// Written to straight from the connection's task: a client that does
    /// not read its echo slows down only itself, and no task hop adds latency.
    Echo {
        socket: ClientWriter,
        idle: Option<Duration>,
    },
    Relay {
        hub_id: u64,
        chat_prefix: Option<String>,
        writer: JoinHandle<()>,
    },
}

impl Replies {
    /// Sets up the write side of a client; `kick` ends the client's session.
    pub(super) fn open(
        mode: Mode,
        hub: &Hub,
        socket: ClientWriter,
        peer: &Addr,
        kick: CancellationToken,
        idle: Option<Duration>,
    ) -> Replies {
        match mode {
            Mode::Print => Replies::PrintOnly { socket, idle },
            Mode::Echo => Replies::Echo { socket, idle },
            Mode::Broker | Mode::Chat => {
                let (queue, pending) = mpsc::channel(CLIENT_QUEUE_LEN);
                let writer = tokio::spawn(write_queue(socket, pending, idle, kick.clone()));
                let hub_id = hub.join(queue, kick);
                let chat_prefix = (mode == Mode::Chat).then(|| format!("{peer}: "));
                if chat_prefix.is_some() {
                    hub.relay(hub_id, &Bytes::from(format!("*** {peer} joined\n")));
                }
                Replies::Relay {
                    hub_id,
                    chat_prefix,
                    writer,
                }
            }
        }
    }

    /// Passes on one message from this client; an echo waits while the client
    /// does not read (until `kick`, or the idle timeout, which ends the
    /// client: `Err` says why), a relay never waits.
    pub(super) async fn pass_on(
        &mut self,
        hub: &Hub,
        bytes: &Bytes,
        kick: &CancellationToken,
    ) -> Result<(), String> {
        match self {
            Replies::PrintOnly { .. } => {}
            Replies::Echo { socket, idle } => {
                tokio::select! {
                    written = write_all_or_stall(socket, bytes, *idle) => match written {
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(e.to_string()),
                        // A client that left: its read side tells.
                        _ => {}
                    },
                    _ = kick.cancelled() => {}
                }
            }
            Replies::Relay {
                hub_id,
                chat_prefix: None,
                ..
            } => hub.relay(*hub_id, bytes),
            Replies::Relay {
                hub_id,
                chat_prefix: Some(prefix),
                ..
            } => {
                let mut line = BytesMut::with_capacity(prefix.len() + bytes.len() + 1);
                line.extend_from_slice(prefix.as_bytes());
                line.extend_from_slice(bytes);
                // A last line without its newline (or a piece of a long one)
                // still ends a line, so the next announcement starts its own.
                if !bytes.ends_with(b"\n") {
                    line.extend_from_slice(b"\n");
                }
                hub.relay(*hub_id, &line.freeze());
            }
        }
        Ok(())
    }

    /// Leaves the hub and lets the writer finish what is queued, unless `kick` says to stop.
    pub(super) async fn close(self, hub: &Hub, peer: &Addr, kick: &CancellationToken) {
        let mut writer = match self {
            Replies::PrintOnly { mut socket, idle } | Replies::Echo { mut socket, idle } => {
                // A clean close: TCP's FIN, and TLS's close_notify before it,
                // which a client that does not read may never take.
                let close = socket.shutdown();
                tokio::select! {
                    _ = tokio::time::timeout(idle.unwrap_or(Duration::MAX), close) => {}
                    _ = kick.cancelled() => {}
                }
                return;
            }
            Replies::Relay {
                hub_id,
                chat_prefix,
                writer,
            } => {
                // Leaving drops the hub's end of the queue: the writer drains it and ends.
                hub.leave(hub_id);
                if chat_prefix.is_some() {
                    hub.relay(hub_id, &Bytes::from(format!("*** {peer} left\n")));
                }
                writer
            }
        };
        tokio::select! {
            _ = &mut writer => {}
            _ = kick.cancelled() => writer.abort(),
        }
    }
}

/// Writes what the others send to one client; a client that takes nothing
/// for `idle` is kicked out, as one whose queue overflows is.
async fn write_queue(
    mut socket: ClientWriter,
    mut pending: mpsc::Receiver<Bytes>,
    idle: Option<Duration>,
    kick: CancellationToken,
) {
    while let Some(bytes) = pending.recv().await {
        match write_all_or_stall(&mut socket, &bytes, idle).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return kick.cancel(),
            Err(_) => return,
        }
    }
    let _ = tokio::time::timeout(idle.unwrap_or(Duration::MAX), socket.shutdown()).await;
}
