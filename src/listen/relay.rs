//! Writing back to TCP clients: `--echo` to the sender, `--broker` and
//! `--chat` to every other client.
//!
//! Each client that is written to gets a bounded queue and a writer task, so
//! one slow reader never stalls the others: in a broker its queue overflows
//! and it is dropped; an echo client only slows itself down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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

/// The write side of one client connection, as the mode needs it.
pub(super) enum Replies {
    /// Print mode: only closed, cleanly, when the client is done.
    PrintOnly { socket: ClientWriter },
    /// Written to straight from the connection's task: a client that does
    /// not read its echo slows down only itself, and no task hop adds latency.
    Echo { socket: ClientWriter },
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
        peer: SocketAddr,
        kick: CancellationToken,
    ) -> Replies {
        match mode {
            Mode::Print => Replies::PrintOnly { socket },
            Mode::Echo => Replies::Echo { socket },
            Mode::Broker | Mode::Chat => {
                let (queue, pending) = mpsc::channel(CLIENT_QUEUE_LEN);
                let writer = tokio::spawn(write_queue(socket, pending));
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
    /// does not read (until `kick`), a relay never waits.
    pub(super) async fn pass_on(&mut self, hub: &Hub, bytes: &Bytes, kick: &CancellationToken) {
        match self {
            Replies::PrintOnly { .. } => {}
            Replies::Echo { socket } => {
                tokio::select! {
                    _ = socket.write_all(bytes) => {}
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
                let mut line = BytesMut::with_capacity(prefix.len() + bytes.len());
                line.extend_from_slice(prefix.as_bytes());
                line.extend_from_slice(bytes);
                hub.relay(*hub_id, &line.freeze());
            }
        }
    }

    /// Leaves the hub and lets the writer finish what is queued, unless `kick` says to stop.
    pub(super) async fn close(self, hub: &Hub, peer: SocketAddr, kick: &CancellationToken) {
        let mut writer = match self {
            Replies::PrintOnly { mut socket } | Replies::Echo { mut socket } => {
                // A clean close: TCP's FIN, and TLS's close_notify before it.
                tokio::select! {
                    _ = socket.shutdown() => {}
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

async fn write_queue(mut socket: ClientWriter, mut pending: mpsc::Receiver<Bytes>) {
    while let Some(bytes) = pending.recv().await {
        if socket.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = socket.shutdown().await;
}
