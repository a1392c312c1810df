//! The UDP side of the server: every datagram is one message.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::UdpSocket;

use super::{Context, Mode};
use crate::endpoint::natural;
use crate::error::describe;
use crate::message::{Event, Message, Proto};

/// Large enough for any UDP datagram, so none is ever cut.
const MAX_DATAGRAM: usize = 65_536;

pub(super) async fn receive_loop(socket: UdpSocket, context: Arc<Context>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            _ = context.shutdown.cancelled() => return,
            received = socket.recv_from(&mut buf) => received,
        };
        let (len, from) = match received {
            Ok(received) => received,
            // An ICMP error for an earlier reply; it says nothing about what we receive.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => {
                let error = Event::Error(describe(&e));
                context.emit(Message::new(Proto::Udp, None, error)).await;
                continue;
            }
        };
        let peer = natural(from);
        if let Some(why) = context.access.refusal(peer.ip()) {
            let counter = &context.counters.refused;
            context.turn_away(counter, Proto::Udp, peer, why).await;
            continue;
        }
        let bytes = Bytes::copy_from_slice(&buf[..len]);
        if context.mode == Mode::Echo {
            // Back to the address as the socket saw it (a dual-stack socket needs the mapped form).
            if let Err(e) = socket.send_to(&bytes, from).await {
                let error = Event::Error(format!("cannot echo: {}", describe(&e)));
                context
                    .emit(Message::new(Proto::Udp, Some(peer), error))
                    .await;
            }
        }
        context
            .emit(Message::new(Proto::Udp, Some(peer), Event::data(bytes)))
            .await;
        if context.once == Some(Proto::Udp) {
            context.shutdown.cancel();
            return;
        }
    }
}
