//! `send --reconnect`: a stream of lines that outlives its collector. When
//! the connection breaks, portier connects again (exponential backoff with
//! jitter) and goes on from the first line the peer's system had not
//! acknowledged (`SIOCOUTQ` says how many bytes that is): lines are whole on
//! each connection, never split across two. Lines read while disconnected
//! wait in a bounded buffer; past it, `--on-full block` stops reading stdin
//! and `--on-full drop` drops lines, counted and reported. While connected,
//! a full buffer always waits for the connection (TCP's own back-pressure).
//!
//! What the peer's system acknowledged but the collector never read (it was
//! killed with unread data) is beyond any sender's reach without an
//! acknowledgement from the collector itself; the loss is then reported as
//! a reset, with the lines it resends.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::output::PeerOutput;
use crate::endpoint::{self, Origin};
use crate::error::{Error, Result};
use crate::sink::say;

/// What to do with a line when the buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Stop reading input until there is room (nothing is lost).
    Block,
    /// Drop the line, count it, and say so.
    Drop,
}

/// How `send --reconnect` behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnect {
    /// The first wait before connecting again.
    pub backoff_min: Duration,
    /// The longest wait.
    pub backoff_max: Duration,
    /// Bytes of lines kept while disconnected.
    pub buffer: usize,
    /// What a full buffer does.
    pub on_full: OnFull,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            buffer: 10 << 20,
            on_full: OnFull::Block,
        }
    }
}

/// The lines between input and connection.
#[derive(Default)]
struct Queue {
    lines: VecDeque<Bytes>,
    bytes: usize,
    input_ended: bool,
    /// While connected, a full buffer waits for the connection whatever `OnFull` says.
    connected: bool,
    dropped: u64,
}

struct Shared {
    queue: Mutex<Queue>,
    /// A line was queued, or the input ended.
    filled: Notify,
    /// A line was taken: room for more.
    drained: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Streams `input` line by line to `host:port`, reconnecting as told, and
/// what the peer says to stdout; ends when the input has ended, every line
/// has been handed to a connection, and the peer has closed it.
/// `stop` ends it early (SIGTERM), saying how many lines read were not sent.
pub async fn send_reconnecting(
    input: impl AsyncRead + Unpin,
    (host, port): (&str, u16),
    origin: &Origin,
    timeout: Option<Duration>,
    reconnect: &Reconnect,
    stop: &CancellationToken,
) -> Result<()> {
    let shared = Shared {
        // Taken as connected until a connect fails: no line is dropped while the first is made.
        queue: Mutex::new(Queue {
            connected: true,
            ..Queue::default()
        }),
        filled: Notify::new(),
        drained: Notify::new(),
    };
    let reading = read_lines(input, &shared, reconnect);
    let sending = send_lines(&shared, (host, port), origin, timeout, reconnect);
    let both = async { tokio::join!(reading, sending) };
    let (read, sent) = tokio::select! {
        both = both => both,
        _ = stop.cancelled() => {
            let unsent = shared.lock().lines.len();
            if unsent > 0 {
                say(&format!("stopped: {unsent} lines read were not sent"));
            }
            (Ok(()), Ok(()))
        }
    };
    let dropped = shared.lock().dropped;
    if dropped > 0 {
        say(&format!(
            "{dropped} lines dropped while disconnected: the --buffer of {} bytes was full (--on-full drop)",
            reconnect.buffer
        ));
    }
    read.and(sent)
}

async fn read_lines(
    input: impl AsyncRead + Unpin,
    shared: &Shared,
    reconnect: &Reconnect,
) -> Result<()> {
    let mut input = BufReader::new(input);
    let result = loop {
        let mut line = Vec::new();
        match input.read_until(b'\n', &mut line).await {
            Ok(0) => break Ok(()),
            Ok(_) => {}
            Err(e) => break Err(Error::io("cannot read input", e)),
        }
        loop {
            let room = {
                let mut queue = shared.lock();
                let fits = queue.bytes + line.len() <= reconnect.buffer || queue.lines.is_empty();
                match (fits, reconnect.on_full, queue.connected) {
                    (true, _, _) => {
                        queue.bytes += line.len();
                        queue
                            .lines
                            .push_back(Bytes::from(std::mem::take(&mut line)));
                        true
                    }
                    (false, OnFull::Drop, false) => {
                        queue.dropped += 1;
                        true
                    }
                    (false, _, _) => false,
                }
            };
            if room {
                shared.filled.notify_one();
                break;
            }
            shared.drained.notified().await;
        }
    };
    shared.lock().input_ended = true;
    shared.filled.notify_one();
    result
}

/// The next line to send, or `None` once the input has ended and all are taken.
async fn next_line(shared: &Shared) -> Option<Bytes> {
    loop {
        let notified = shared.filled.notified();
        {
            let mut queue = shared.lock();
            if let Some(line) = queue.lines.pop_front() {
                queue.bytes -= line.len();
                drop(queue);
                shared.drained.notify_one();
                return Some(line);
            }
            if queue.input_ended {
                return None;
            }
        }
        notified.await;
    }
}

/// Says whether a connection is up; a reader waiting on a full buffer looks again.
fn set_connected(shared: &Shared, connected: bool) {
    shared.lock().connected = connected;
    shared.drained.notify_one();
}

/// Puts lines back at the front, in order, to be sent on the next connection.
fn requeue(shared: &Shared, lines: impl DoubleEndedIterator<Item = Bytes>) {
    let mut queue = shared.lock();
    for line in lines.rev() {
        queue.bytes += line.len();
        queue.lines.push_front(line);
    }
}

async fn send_lines(
    shared: &Shared,
    target: (&str, u16),
    origin: &Origin,
    timeout: Option<Duration>,
    reconnect: &Reconnect,
) -> Result<()> {
    let mut wait = reconnect.backoff_min;
    let mut connected_before = false;
    let mut output = PeerOutput::default();
    loop {
        let (stream, peer) = match endpoint::connect_plain_tcp(target, origin, timeout).await {
            Ok(connected) => connected,
            Err(e) => {
                set_connected(shared, false);
                let pause = jittered(wait);
                // Whole milliseconds: "107ms", not "107ms 364us 12ns".
                let shown = Duration::from_millis(pause.as_millis() as u64);
                say(&format!(
                    "{e}; trying again in {}",
                    humantime::format_duration(shown)
                ));
                tokio::time::sleep(pause).await;
                wait = (wait * 2).min(reconnect.backoff_max);
                continue;
            }
        };
        wait = reconnect.backoff_min;
        if connected_before {
            say(&format!("connected to {peer} again"));
        }
        connected_before = true;
        set_connected(shared, true);
        let sent = stream_to(stream, peer, shared, &mut output).await;
        set_connected(shared, false);
        match sent {
            Ok(()) => return Ok(()),
            Err(lost) => say(&lost),
        }
    }
}

/// Sends lines on one connection until the input is done (then closes our
/// side and waits for the peer's end) or the connection breaks: then the
/// lines the peer never acknowledged are queued again, and `Err` says so.
async fn stream_to(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    output: &mut PeerOutput,
) -> std::result::Result<(), String> {
    // What was sent and may not have arrived: as much as the send buffer holds.
    let window = socket2::SockRef::from(&stream)
        .send_buffer_size()
        .unwrap_or(4 << 20)
        + (64 << 10);
    let (mut reader, mut writer) = stream.into_split();
    let mut sent: VecDeque<Bytes> = VecDeque::new();
    let mut sent_bytes = 0;
    let broke =
        |e: std::io::Error| format!("connection to {peer} lost: {}", crate::error::describe(&e));
    // A line the connection broke in the middle of: how much of it the kernel took.
    let mut cut: Option<(Bytes, usize)> = None;
    let failure = loop {
        let line = tokio::select! {
            line = next_line(shared) => line,
            // The peer closing (or resetting) while we wait for input.
            gone = peer_end(&mut reader, output) => break gone.map_or_else(broke, |()| format!("{peer} closed the connection")),
        };
        let Some(line) = line else {
            // All sent: our end, then the peer's.
            if let Err(e) = writer.shutdown().await {
                break broke(e);
            }
            return match peer_end(&mut reader, output).await {
                Ok(()) => Ok(()),
                Err(e) => Err(format!("{}; the last lines may not have arrived", broke(e))),
            };
        };
        if let Err((e, written)) = write_line(&mut writer, &line).await {
            cut = Some((line, written)); // it goes again, whole
            break broke(e);
        }
        sent_bytes += line.len();
        sent.push_back(line);
        while sent_bytes > window {
            if let Some(old) = sent.pop_front() {
                sent_bytes -= old.len();
            }
        }
    };
    let stream = reader.reunite(writer).map_err(|e| e.to_string())?;
    let unacknowledged = crate::sys::unacknowledged(&stream).unwrap_or(sent_bytes);
    // The cut line's written part is the newest of the unacknowledged bytes.
    let cut_written = cut.as_ref().map_or(0, |(_, written)| *written);
    let again = lines_holding(&sent, unacknowledged.saturating_sub(cut_written));
    let resend = sent.into_iter().rev().take(again).rev();
    let resend: Vec<Bytes> = resend.chain(cut.map(|(line, _)| line)).collect();
    let count = resend.len();
    requeue(shared, resend.into_iter());
    Err(format!(
        "{failure}; {count} lines not acknowledged will be sent again"
    ))
}

/// Writes a whole line; on failure, how many of its bytes the kernel took.
async fn write_line(
    writer: &mut (impl AsyncWrite + Unpin),
    line: &[u8],
) -> std::result::Result<(), (std::io::Error, usize)> {
    let mut written = 0;
    while written < line.len() {
        match writer.write(&line[written..]).await {
            Ok(0) => return Err((std::io::ErrorKind::WriteZero.into(), written)),
            Ok(n) => written += n,
            Err(e) => return Err((e, written)),
        }
    }
    Ok(())
}

/// How many of the last `sent` lines hold the last `bytes` bytes sent: a
/// line the peer got only part of is sent again whole.
fn lines_holding(sent: &VecDeque<Bytes>, bytes: usize) -> usize {
    let mut covered = 0;
    sent.iter()
        .rev()
        .take_while(|line| {
            let more = covered < bytes;
            covered += line.len();
            more
        })
        .count()
}

/// Waits for the peer's end: `Ok` when it closed, `Err` when it reset. What it
/// sends meanwhile goes to stdout (`connect`; a collector has nothing to say).
async fn peer_end(
    reader: &mut (impl AsyncRead + Unpin),
    output: &mut PeerOutput,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        // Nobody reading stdout any more is not the peer's end: the stream goes on.
        let _ = output.write(&buf[..n]).await;
    }
}

/// `wait`, give or take a quarter, so that many senders do not all come back at once.
fn jittered(wait: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let quarter = wait / 4;
    let spread = quarter.as_micros().max(1) as u64 * 2;
    wait - quarter + Duration::from_micros(random % spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unacknowledged_bytes_are_resent_as_whole_lines() {
        let sent: VecDeque<Bytes> = [&b"1\n"[..], b"22\n", b"333\n"]
            .map(Bytes::from_static)
            .into();
        assert_eq!(lines_holding(&sent, 0), 0);
        assert_eq!(lines_holding(&sent, 4), 1, "exactly the last line");
        assert_eq!(
            lines_holding(&sent, 5),
            2,
            "one byte of the line before: all of it again"
        );
        assert_eq!(lines_holding(&sent, 100), 3, "never more than was sent");
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..100 {
            let wait = jittered(Duration::from_secs(4));
            assert!(
                wait >= Duration::from_secs(3) && wait <= Duration::from_secs(5),
                "{wait:?}"
            );
        }
    }
}
