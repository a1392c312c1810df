//! The UDP side of the server: every datagram is one message, and datagrams
//! the kernel had to drop are counted and reported, never silently lost.

use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::UdpSocket;

use super::batch::{BATCH, Batch};
use super::{Context, Mode};
use crate::datagram::kernel_drops;
use crate::endpoint::natural;
use crate::error::describe;
use crate::message::{Event, Message, Proto};

/// How often the kernel's drop counter is read while datagrams flow.
const DROP_CHECK_EVERY: Duration = Duration::from_secs(1);

pub(super) async fn receive_loop(socket: UdpSocket, context: Arc<Context>) {
    let mut batch = Batch::new();
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
            received = batch.receive(&socket) => received,
        };
        match received {
            Ok(count) => {
                if deliver(&socket, &context, &batch, count).await == Flow::Stop {
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
    // What the kernel already holds was received: hand it over too.
    while let Ok(count @ 1..) = batch.try_receive(&socket) {
        if deliver(&socket, &context, &batch, count).await == Flow::Stop {
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

/// Hands over the `count` datagrams of the last batch.
async fn deliver(socket: &UdpSocket, context: &Context, batch: &Batch, count: usize) -> Flow {
    match &context.stdout {
        Some(stdout) => deliver_straight(socket, context, stdout, batch, count).await,
        None => deliver_messages(socket, context, batch, count).await,
    }
}

/// As messages for the writer, copied out together: one allocation per
/// batch, not one per datagram.
async fn deliver_messages(
    socket: &UdpSocket,
    context: &Context,
    batch: &Batch,
    count: usize,
) -> Flow {
    let size = (0..count).map(|i| batch.payload(i).len()).sum();
    let mut copied = BytesMut::with_capacity(size);
    for i in 0..count {
        copied.extend_from_slice(batch.payload(i));
    }
    let mut copied = copied.freeze();
    for i in 0..count {
        let bytes = copied.split_to(batch.payload(i).len());
        let Some(from) = batch.source(i) else {
            continue; // not an IP address: cannot happen on an IP socket
        };
        if !admit(socket, context, &bytes, from).await {
            continue;
        }
        let data = Event::data(bytes);
        context
            .emit(Message::new(Proto::Udp, Some(natural(from)), data))
            .await;
        if context.once == Some(Proto::Udp) {
            context.shutdown.cancel();
            return Flow::Stop;
        }
    }
    Flow::Go
}

/// Straight to stdout (`ListenConfig::straight_to_stdout`): the admitted
/// datagrams of a batch in one write, from where they were received.
async fn deliver_straight(
    socket: &UdpSocket,
    context: &Context,
    mut stdout: &std::fs::File,
    batch: &Batch,
    count: usize,
) -> Flow {
    let mut slices = [IoSlice::new(&[]); BATCH];
    let mut admitted = 0;
    let mut flow = Flow::Go;
    for (payload, from) in (0..count).filter_map(|i| batch.get(i)) {
        if !admit(socket, context, payload, from).await {
            continue;
        }
        slices[admitted] = IoSlice::new(payload);
        admitted += 1;
        context.count_data(payload.len() as u64);
        if context.once == Some(Proto::Udp) {
            context.shutdown.cancel();
            flow = Flow::Stop;
            break;
        }
    }
    let mut pending = &mut slices[..admitted];
    while !pending.is_empty() {
        match stdout.write_vectored(pending) {
            Ok(0) => return stop_writing(context, io::ErrorKind::WriteZero.into()).await,
            Ok(written) => IoSlice::advance_slices(&mut pending, written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return stop_writing(context, e).await,
        }
    }
    flow
}

/// stdout failed: a reader that left (`| head`) ends the server quietly, anything else is said.
async fn stop_writing(context: &Context, err: io::Error) -> Flow {
    if err.kind() != io::ErrorKind::BrokenPipe {
        let error = Event::Error(format!("cannot write output: {}", describe(&err)));
        context.emit(Message::new(Proto::Udp, None, error)).await;
    }
    context.shutdown.cancel();
    Flow::Stop
}

/// Checks one datagram: a refused peer is counted and ignored, an echo is
/// sent back. True when the datagram is to be delivered.
async fn admit(socket: &UdpSocket, context: &Context, payload: &[u8], from: SocketAddr) -> bool {
    let peer = natural(from);
    if let Some(why) = context.access.refusal(peer.ip()) {
        let counter = &context.counters.refused;
        context.turn_away(counter, Proto::Udp, peer, why).await;
        return false;
    }
    if context.mode == Mode::Echo {
        // Back to the address as the socket saw it (a dual-stack socket needs the mapped form).
        if let Err(e) = socket.send_to(payload, from).await {
            let error = Event::Error(format!("cannot echo: {}", describe(&e)));
            context
                .emit(Message::new(Proto::Udp, Some(peer), error))
                .await;
        }
    }
    true
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
