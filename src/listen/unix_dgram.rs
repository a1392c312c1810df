//! UNIX datagrams (a syslog socket, say): each one a message, named by its
//! sender's socket when it has one. A full queue makes senders wait (the
//! kernel does not drop UNIX datagrams), and what is still queued at
//! shutdown is counted as not read, so nothing is lost here unseen.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::Interest;
use tokio::net::UnixDatagram;

use super::Context;
use crate::error::describe;
use crate::message::{Event, Message, SocketKind};
use crate::unix_socket::{self, SocketFile};

/// The largest datagram taken whole: above what Linux lets a sender send
/// with its default buffer limits (`net.core.wmem_max`, 208 KiB).
const MAX_DATAGRAM: usize = 256 * 1024;

/// Receives until shutdown; the socket file goes when this ends.
pub(super) async fn receive_loop(
    socket: UnixDatagram,
    _file: Option<SocketFile>,
    context: Arc<Context>,
) {
    let kind = SocketKind::UnixDgram;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            _ = context.shutdown.cancelled() => {
                // Shut for reading first, so that senders are refused from
                // now on (EPIPE); what is still queued is taken off and
                // counted as not read.
                let socket = socket2::SockRef::from(&socket);
                let _ = socket.shutdown(std::net::Shutdown::Read);
                let until = std::time::Instant::now() + super::udp::UNREAD_COUNT_LIMIT;
                let unread = crate::endpoint::discard_queued(&socket, until);
                context.counters.unread.fetch_add(unread, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            received = socket.async_io(Interest::READABLE, || {
                crate::sys::recv_from_whole(&socket, &mut buf)
            }) => received,
        };
        let (len, cut, from) = match received {
            Ok(received) => received,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let error = format!("cannot receive: {}", describe(&e));
                context
                    .emit(Message::new(kind, None, Event::Error(error)))
                    .await;
                return;
            }
        };
        let peer = unix_socket::sender_of(&from);
        let bytes = Bytes::copy_from_slice(&buf[..len]);
        context
            .emit(Message::new(kind, Some(peer.clone()), Event::data(bytes)))
            .await;
        if cut {
            let error = format!("a datagram over {MAX_DATAGRAM} bytes: the rest of it was lost");
            context
                .emit(Message::new(kind, Some(peer), Event::Error(error)))
                .await;
        }
        if context.once == Some(kind) {
            context.shutdown.cancel();
            return;
        }
    }
}
