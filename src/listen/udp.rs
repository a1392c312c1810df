//! The UDP side of the server: every datagram is one message, and datagrams
//! the kernel had to drop are counted and reported, never silently lost.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;

use super::{Context, Mode};
use crate::datagram::kernel_drops;
use crate::endpoint::natural;
use crate::error::describe;
use crate::message::{Event, Message, Proto};

/// Large enough for any UDP datagram, so none is ever cut.
const MAX_DATAGRAM: usize = 65_536;
/// How often the kernel's drop counter is read while datagrams flow.
const DROP_CHECK_EVERY: Duration = Duration::from_secs(1);

pub(super) async fn receive_loop(socket: UdpSocket, context: Arc<Context>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut drops = DropCount::default();
    let mut drop_check = tokio::time::interval(DROP_CHECK_EVERY);
    drop_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let received = tokio::select! {
            _ = context.shutdown.cancelled() => break,
            _ = drop_check.tick() => {
                drops.report(&socket, &context).await;
                continue;
            }
            received = socket.recv_from(&mut buf) => received,
        };
        if handle(&socket, &context, received, &buf).await == Flow::Stop {
            return;
        }
    }
    // What the kernel already holds was received: hand it over too.
    while let Ok(received) = socket.try_recv_from(&mut buf) {
        if handle(&socket, &context, Ok(received), &buf).await == Flow::Stop {
            break;
        }
    }
    // Read at the end, the counter also has the drops after the last datagram.
    drops.report(&socket, &context).await;
}

#[derive(PartialEq, Eq)]
enum Flow {
    Go,
    Stop,
}

async fn handle(
    socket: &UdpSocket,
    context: &Context,
    received: io::Result<(usize, SocketAddr)>,
    buf: &[u8],
) -> Flow {
    let (len, from) = match received {
        Ok(received) => received,
        // An ICMP error for an earlier reply; it says nothing about what we receive.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Flow::Go,
        Err(e) => {
            let error = Event::Error(describe(&e));
            context.emit(Message::new(Proto::Udp, None, error)).await;
            return Flow::Go;
        }
    };
    let peer = natural(from);
    if let Some(why) = context.access.refusal(peer.ip()) {
        let counter = &context.counters.refused;
        context.turn_away(counter, Proto::Udp, peer, why).await;
        return Flow::Go;
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
        return Flow::Stop;
    }
    Flow::Go
}

/// The kernel's drop counter for one socket, as last reported.
#[derive(Default)]
struct DropCount {
    total: u64,
}

impl DropCount {
    async fn report(&mut self, socket: &UdpSocket, context: &Context) {
        let Some(total) = kernel_drops(socket) else {
            return;
        };
        if total > self.total {
            let new = total - self.total;
            self.total = total;
            context
                .counters
                .kernel_drops
                .fetch_add(new, Ordering::Relaxed);
            let drops = Event::Drops { new, total };
            context.emit(Message::new(Proto::Udp, None, drops)).await;
        }
    }
}
