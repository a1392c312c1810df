//! The UDP side of the server: every datagram is one message.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::UdpSocket;

use super::Context;
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
        match received {
            Ok((len, from)) => {
                let data = Event::Data(Bytes::copy_from_slice(&buf[..len]));
                let message = Message::new(Proto::Udp, Some(natural(from)), data);
                context.emit(message).await;
                if context.once == Some(Proto::Udp) {
                    context.shutdown.cancel();
                    return;
                }
            }
            // An ICMP error for an earlier reply; it says nothing about what we receive.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                let error = Event::Error(describe(&e));
                context.emit(Message::new(Proto::Udp, None, error)).await;
            }
        }
    }
}
