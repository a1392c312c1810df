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
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::echo_guard::EchoGuard;
use super::{Context, Delivery, Mode};
use crate::endpoint::{natural, take_queued};
use crate::error::describe;
use crate::exec;
use crate::message::{Addr, Event, Message, Proto, SocketKind};
use crate::sys::kernel_drops;
use crate::sys::udp_batch::{BATCH, Batch};
use tokio::runtime::Handle;

/// How often the kernel's drop counter is read while datagrams flow.
const DROP_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Under a flood, most of the cost of a datagram is the kernel waking the
/// thread for it. So while datagrams queue up (the last batch held more than
/// one but less than a full batch), the thread pauses this long before the
/// next receive, and each wake-up takes many. Never in echo mode, where a
/// client waits for each answer; meanwhile the socket buffer holds what comes
/// (4 MiB by default, [`super::DEFAULT_RECV_BUFFER`]).
const FLOOD_PAUSE: Duration = Duration::from_micros(50);

/// After shutdown, what the kernel already holds is still delivered for this
/// long; a flood can keep the queue full for ever, and SIGTERM must still win.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);
/// Then what is left is taken off the queue and counted as not read, for at most this long.
pub(super) const UNREAD_COUNT_LIMIT: Duration = Duration::from_millis(200);

/// Serves one socket until shutdown, then hands over what the kernel already
/// holds (for [`SHUTDOWN_GRACE`] at most); reads the kernel's drop counter meanwhile.
pub(super) async fn receive_loop(socket: tokio::net::UdpSocket, context: Arc<Context>) {
    let socket = match blocking(socket) {
        Ok(socket) => {
            if let Ok(copy) = socket.try_clone() {
                let sockets = context.datagram_sockets.lock();
                sockets.unwrap_or_else(|e| e.into_inner()).push(copy.into());
            }
            Arc::new(socket)
        }
        Err(e) => {
            let error = Event::Error(format!("cannot receive: {}", describe(&e)));
            context.emit(Message::new(Proto::Udp, None, error)).await;
            return;
        }
    };
    let mut receiver = tokio::task::spawn_blocking({
        let (socket, context) = (socket.clone(), context.clone());
        let runtime = tokio::runtime::Handle::current();
        move || receive(&socket, &context, &runtime)
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
/// over what it holds, then says there is no more. On an unconnected socket
/// shutdown says "not connected", yet still wakes the reader.
fn wake(socket: &UdpSocket) {
    let _ = socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Read);
}

/// The receiving thread; `runtime` runs the programs of `--exec`.
fn receive(socket: &Arc<UdpSocket>, context: &Arc<Context>, runtime: &Handle) {
    let mut batch = Batch::new();
    // Everything that answers the source address is guarded against loops.
    let answers = context.mode == Mode::Echo || context.exec.is_some();
    let mut echo = match (answers, socket.local_addr()) {
        (true, Ok(local)) => Some(EchoGuard::new(local.port(), context.echo_rate)),
        _ => None,
    };
    let mut stop_by = None;
    loop {
        if context.shutdown.is_cancelled() {
            let deadline = *stop_by.get_or_insert_with(|| Instant::now() + SHUTDOWN_GRACE);
            if Instant::now() >= deadline {
                // Taken off the queue, uncounted by anyone else: counted as not read.
                let until = Instant::now() + UNREAD_COUNT_LIMIT;
                let unread = take_queued(until, || batch.receive(socket));
                context.counters.unread.fetch_add(unread, Ordering::Relaxed);
                return;
            }
        }
        match batch.receive(socket) {
            Ok(0) => return, // shut down, and nothing left
            Ok(count) => {
                let receiver = Receiver {
                    socket,
                    context,
                    runtime,
                    echo: echo.as_mut(),
                };
                if receiver.deliver(&batch, count) == Flow::Stop {
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

/// What one batch is delivered with: the socket (for echoes), the shared
/// context and, in echo mode, the socket's echo guard.
struct Receiver<'a> {
    socket: &'a Arc<UdpSocket>,
    context: &'a Arc<Context>,
    runtime: &'a Handle,
    echo: Option<&'a mut EchoGuard>,
}

impl Receiver<'_> {
    /// Hands over the `count` datagrams of the last batch.
    fn deliver(self, batch: &Batch, count: usize) -> Flow {
        match (self.context.delivery, &self.context.stdout) {
            (Delivery::Straight, Some(stdout)) => self.deliver_straight(stdout, batch, count),
            _ => self.deliver_messages(batch, count),
        }
    }

    /// As messages for the writer, copied out together: one allocation per
    /// batch, not one per datagram.
    fn deliver_messages(mut self, batch: &Batch, count: usize) -> Flow {
        let context = self.context;
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
            let Some(peer) = self.admit(&bytes, from) else {
                continue;
            };
            if context.exec.is_some() {
                context.count_delivered(bytes.len() as u64); // the program has it, not stdout
                continue;
            }
            let data = Event::data(bytes);
            context.emit_blocking(Message::new(Proto::Udp, Some(peer.into()), data));
            if context.once == Some(SocketKind::Udp) {
                context.shutdown.cancel();
                return Flow::Stop;
            }
        }
        Flow::Go
    }

    /// Straight to stdout ([`Delivery::Straight`]): the admitted
    /// datagrams of a batch in one write, from where they were received.
    fn deliver_straight(mut self, mut stdout: &std::fs::File, batch: &Batch, count: usize) -> Flow {
        let context = self.context;
        let mut slices = [IoSlice::new(&[]); BATCH];
        let mut sources = [None; BATCH];
        let mut admitted = 0;
        let mut flow = Flow::Go;
        for (payload, from) in (0..count).filter_map(|i| batch.get(i)) {
            let Some(peer) = self.admit(payload, from) else {
                continue;
            };
            slices[admitted] = IoSlice::new(payload);
            sources[admitted] = Some(peer);
            admitted += 1;
            context.count_data(payload.len() as u64);
            if context.once == Some(SocketKind::Udp) {
                context.shutdown.cancel();
                flow = Flow::Stop;
                break;
            }
        }
        if let Some(web) = &context.web {
            web.offer_all(straight_messages(&slices[..admitted], &sources[..admitted]));
        }
        let mut pending = &mut slices[..admitted];
        while !pending.is_empty() {
            match stdout.write_vectored(pending) {
                Ok(0) => return stop_writing(context, io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    context.written.fetch_add(written as u64, Ordering::Relaxed);
                    IoSlice::advance_slices(&mut pending, written);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return stop_writing(context, e),
            }
        }
        flow
    }

    /// Checks one datagram: a refused peer is counted and ignored, an echo is
    /// sent back if the guard allows. The peer, in its natural form, when the
    /// datagram is to be delivered.
    fn admit(&mut self, payload: &[u8], from: SocketAddr) -> Option<SocketAddr> {
        let context = self.context;
        let peer = natural(from);
        if let Some(why) = context.access.refusal(peer.ip()) {
            let counter = &context.counters.refused;
            if let Some(notice) = context.turned_away(counter, SocketKind::Udp, peer.into(), why) {
                context.emit_blocking(notice);
            }
            return None;
        }
        let Some(guard) = self.echo.as_deref_mut() else {
            return Some(peer);
        };
        match guard.check(peer, Instant::now()) {
            Ok(()) if context.exec.is_some() => self.run_program(payload, from, peer),
            // Back to the address as the socket saw it (a dual-stack socket needs the mapped form).
            Ok(()) => {
                if let Err(e) = self.socket.send_to(payload, from) {
                    let error = Event::Error(format!("cannot echo: {}", describe(&e)));
                    context.emit_blocking(Message::new(Proto::Udp, Some(peer.into()), error));
                }
            }
            Err(withheld) => {
                let counter = &context.counters.echo_withheld;
                // Said once, when it first bites; the summary has the count.
                if counter.fetch_add(1, Ordering::Relaxed) == 0 {
                    let notice = format!(
                        "udp {peer}: {}; further ones are only counted (summary)",
                        withheld.describe()
                    );
                    let notice = Message::new(Proto::Udp, Some(peer.into()), Event::Notice(notice));
                    context.emit_blocking(notice);
                }
            }
        }
        Some(peer)
    }
}

impl Receiver<'_> {
    /// `--exec`: the program for one datagram, run on the runtime (at most `-m`
    /// at once, like TCP clients); its output goes back to `from`.
    fn run_program(&self, payload: &[u8], from: SocketAddr, peer: SocketAddr) {
        let context = self.context;
        let Some(program) = context.exec.clone() else {
            return;
        };
        let Ok(permit) = context.connections.clone().try_acquire_owned() else {
            let why = format!(
                "server full: {} programs running (--max-conns)",
                context.max_conns
            );
            let counter = &context.counters.over_limit;
            if let Some(notice) = context.turned_away(counter, SocketKind::Udp, peer.into(), &why) {
                context.emit_blocking(notice);
            }
            return;
        };
        let (socket, task_context) = (self.socket.clone(), context.clone());
        let datagram = payload.to_vec();
        let local = socket.local_addr().ok();
        let timeout = context
            .idle_timeout
            .unwrap_or(exec::DATAGRAM_PROGRAM_TIMEOUT);
        let max = crate::endpoint::max_datagram(peer);
        let task = async move {
            let ran = tokio::select! {
                ran = exec::answer(&program, &datagram, (peer, local), max, timeout) => ran,
                _ = task_context.shutdown.cancelled() => Err("killed: the server is stopping".into()),
            };
            drop(permit);
            let failed = match ran {
                Ok((reply, exit)) => {
                    let sent = reply.is_empty() || socket.send_to(&reply, from).is_ok();
                    match (sent, exit.as_str()) {
                        (false, _) => Some(format!("cannot send the program's answer ({exit})")),
                        (true, "exit 0") => None,
                        (true, _) => Some(format!("program: {exit}")),
                    }
                }
                Err(why) => Some(why),
            };
            if let Some(why) = failed {
                let error = Message::new(Proto::Udp, Some(peer.into()), Event::Error(why));
                task_context.emit(error).await;
            }
        };
        let _guard = self.runtime.enter();
        context.tasks.spawn(task);
    }
}

/// The datagrams of a batch written straight to stdout, as messages for the
/// web page: copied out together, one allocation per batch.
fn straight_messages<'a>(
    payloads: &'a [IoSlice<'_>],
    peers: &'a [Option<SocketAddr>],
) -> impl Iterator<Item = Message> + 'a {
    let mut copied = BytesMut::with_capacity(payloads.iter().map(|p| p.len()).sum());
    for payload in payloads {
        copied.extend_from_slice(payload);
    }
    let mut copied = copied.freeze();
    let time = std::time::SystemTime::now(); // received together
    payloads.iter().zip(peers).map(move |(payload, &peer)| {
        let bytes = copied.split_to(payload.len());
        Message {
            time,
            proto: SocketKind::Udp,
            peer: peer.map(Addr::Inet),
            subject: None,
            event: Event::data(bytes),
        }
    })
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
