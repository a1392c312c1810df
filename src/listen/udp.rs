//! The UDP side of the server: every datagram is one message, and datagrams
//! the kernel had to drop are counted and reported, never silently lost.
//!
//! Each UDP socket is served by a thread of its own, blocked in the receive
//! call: a datagram costs one system call to take and shares one write with
//! the others of its batch, with no event loop in between.

use std::io::{self, IoSlice, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;

use super::batch::{BATCH, Batch};
use super::{Context, Mode};
use crate::datagram::kernel_drops;
use crate::endpoint::natural;
use crate::error::describe;
use crate::message::{Event, Message, Proto};

/// How often the kernel's drop counter is read while datagrams flow.
const DROP_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Under a flood, most of the cost of a datagram is the kernel waking the
/// thread for it. So while datagrams queue up (the last batch held more than
/// one but less than a full batch), the thread pauses this long before the
/// next receive, and each wake-up takes many. Never in echo mode, where a
/// client waits for each answer; meanwhile the socket buffer holds what comes
/// (4 MiB by default, [`super::DEFAULT_RECV_BUFFER`]).
const FLOOD_PAUSE: Duration = Duration::from_micros(50);

/// Serves one socket until shutdown, then until what the kernel already
/// holds is handed over; reads the kernel's drop counter meanwhile.
pub(super) async fn receive_loop(socket: tokio::net::UdpSocket, context: Arc<Context>) {
    let socket = match blocking(socket) {
        Ok(socket) => Arc::new(socket),
        Err(e) => {
            let error = Event::Error(format!("cannot receive: {}", describe(&e)));
            context.emit(Message::new(Proto::Udp, None, error)).await;
            return;
        }
    };
    let mut receiver = tokio::task::spawn_blocking({
        let (socket, context) = (socket.clone(), context.clone());
        move || receive(&socket, &context)
    });
    let mut drops = DropCount::default();
    let mut drop_check = tokio::time::interval(DROP_CHECK_EVERY);
    drop_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut woken = false;
    loop {
        tokio::select! {
            _ = &mut receiver => break,
            _ = context.shutdown.cancelled(), if !woken => {
                wake(&socket);
                woken = true;
            }
            _ = drop_check.tick() => drops.report(&socket, &context).await,
        }
    }
    // Read at the end, the counter also has the drops after the last datagram.
    drops.report(&socket, &context).await;
}

fn blocking(socket: tokio::net::UdpSocket) -> io::Result<UdpSocket> {
    let socket = socket.into_std()?;
    socket.set_nonblocking(false)?;
    // Where shutting the socket does not wake its reader, it looks up now and then.
    #[cfg(not(target_os = "linux"))]
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(socket)
}

/// Makes the receiving thread finish: shut for reading, a Linux socket hands
/// over what it holds, then says there is no more.
fn wake(socket: &UdpSocket) {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: shutdown only changes the state of a descriptor we own. On an
        // unconnected socket it says ENOTCONN, yet still wakes the reader.
        unsafe { libc::shutdown(socket.as_raw_fd(), libc::SHUT_RD) };
    }
    #[cfg(not(unix))]
    let _ = socket;
}

/// The receiving thread.
fn receive(socket: &UdpSocket, context: &Context) {
    let mut batch = Batch::new();
    loop {
        match batch.receive(socket) {
            Ok(0) => return, // shut down, and nothing left
            Ok(count) => {
                if deliver(socket, context, &batch, count) == Flow::Stop {
                    return;
                }
                if count > 1 && count < BATCH && context.mode != Mode::Echo {
                    std::thread::sleep(FLOOD_PAUSE);
                }
            }
            // An ICMP error for an earlier reply; it says nothing about what we receive.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            // A signal, or the wake-up timeout where there is one.
            Err(e) if is_retry(&e) => {}
            Err(e) => {
                let error = Event::Error(format!("cannot receive: {}", describe(&e)));
                context.emit_blocking(Message::new(Proto::Udp, None, error));
                context.shutdown.cancel();
                return;
            }
        }
        if cfg!(not(target_os = "linux")) && context.shutdown.is_cancelled() {
            return;
        }
    }
}

fn is_retry(e: &io::Error) -> bool {
    use io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
    matches!(e.kind(), Interrupted | TimedOut | WouldBlock)
}

#[derive(PartialEq, Eq)]
enum Flow {
    Go,
    Stop,
}

/// Hands over the `count` datagrams of the last batch.
fn deliver(socket: &UdpSocket, context: &Context, batch: &Batch, count: usize) -> Flow {
    match &context.stdout {
        Some(stdout) => deliver_straight(socket, context, stdout, batch, count),
        None => deliver_messages(socket, context, batch, count),
    }
}

/// As messages for the writer, copied out together: one allocation per
/// batch, not one per datagram.
fn deliver_messages(socket: &UdpSocket, context: &Context, batch: &Batch, count: usize) -> Flow {
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
        let Some(peer) = admit(socket, context, &bytes, from) else {
            continue;
        };
        let data = Event::data(bytes);
        context.emit_blocking(Message::new(Proto::Udp, Some(peer), data));
        if context.once == Some(Proto::Udp) {
            context.shutdown.cancel();
            return Flow::Stop;
        }
    }
    Flow::Go
}

/// Straight to stdout (`ListenConfig::straight_to_stdout`): the admitted
/// datagrams of a batch in one write, from where they were received.
fn deliver_straight(
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
        if admit(socket, context, payload, from).is_none() {
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
            Ok(0) => return stop_writing(context, io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut pending, written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return stop_writing(context, e),
        }
    }
    flow
}

/// stdout failed: a reader that left (`| head`) ends the server quietly, anything else is said.
fn stop_writing(context: &Context, err: io::Error) -> Flow {
    if err.kind() != io::ErrorKind::BrokenPipe {
        let error = Event::Error(format!("cannot write output: {}", describe(&err)));
        context.emit_blocking(Message::new(Proto::Udp, None, error));
    }
    context.shutdown.cancel();
    Flow::Stop
}

/// Checks one datagram: a refused peer is counted and ignored, an echo is
/// sent back. The peer, in its natural form, when the datagram is to be delivered.
fn admit(
    socket: &UdpSocket,
    context: &Context,
    payload: &[u8],
    from: SocketAddr,
) -> Option<SocketAddr> {
    let peer = natural(from);
    if let Some(why) = context.access.refusal(peer.ip()) {
        let counter = &context.counters.refused;
        if let Some(notice) = context.turned_away(counter, Proto::Udp, peer, why) {
            context.emit_blocking(notice);
        }
        return None;
    }
    if context.mode == Mode::Echo {
        // Back to the address as the socket saw it (a dual-stack socket needs the mapped form).
        if let Err(e) = socket.send_to(payload, from) {
            let error = Event::Error(format!("cannot echo: {}", describe(&e)));
            context.emit_blocking(Message::new(Proto::Udp, Some(peer), error));
        }
    }
    Some(peer)
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
