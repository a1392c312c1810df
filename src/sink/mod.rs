//! Sinks: where messages go. One writer thread owns stdout and stderr, so
//! reads from many clients never interleave inside one message, and a slow
//! stdout pushes back on the readers through a bounded channel.
//!
//! The writer also feeds the `--to` brokers (`broker/`), each behind a
//! bounded queue of its own.
//!
//! Every line portier writes on stderr goes through [`write_event`] (the
//! writer thread's events, and [`say`] for the clients and `main`): one write
//! per line, every control and invisible character in it escaped.

pub mod broker;
mod file;
mod hex;
mod json;
mod syslog;
mod text;
pub mod web;

use std::io::{self, IsTerminal, Write};
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::framing::Framing;
use crate::message::{Event, Message};
use broker::{BrokerStats, Brokers, BrokersConfig};
use file::LogFile;
pub use file::{DEFAULT_KEEP, LogFileConfig};
use web::{WebConfig, WebTap};

pub use hex::write_hex;
pub use json::write_json;
pub use text::{Escape, peer_label, write_escaped, write_line, write_raw};

/// Messages waiting for the writer; when full, readers wait (TCP then pushes back on the peer).
const QUEUE_LEN: usize = 256;
/// At most this many messages are written between two flushes, so output stays prompt under load.
const FLUSH_EVERY: usize = 64;

/// How data is written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// The bytes exactly as received.
    #[default]
    Raw,
    /// One line per message: TIME PROTO PEER TEXT.
    Lines,
    /// One JSON object per line, events included.
    Json,
    /// A `hexdump -C` style dump per message.
    Hex,
}

impl Format {
    /// The framing this format needs: lines for the line-based formats.
    pub fn framing(self, terminal: bool, max_line: usize) -> Framing {
        match self {
            Format::Raw if terminal => Framing::RawWholeChars,
            Format::Raw | Format::Hex => Framing::Raw,
            Format::Lines | Format::Json => Framing::Lines { max_line },
        }
    }
}

/// How data is parsed into fields of the JSON record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Parse {
    /// RFC 5424 and RFC 3164 syslog: facility, severity, timestamp, host, app, …
    Syslog,
}

/// Settings of the writer.
#[derive(Debug, Clone, Default)]
pub struct OutputConfig {
    /// How data is written.
    pub format: Format,
    /// No event lines on stderr.
    pub quiet: bool,
    /// stdout is a terminal: escape control bytes in raw data.
    pub terminal: bool,
    /// Also append everything to this file, in the same format, flushed per
    /// message; rotated and reopened as configured.
    pub file: Option<LogFileConfig>,
    /// Also publish every message to these brokers (`--to`).
    pub to: Option<BrokersConfig>,
    /// Parse data into fields of the JSON record (stdout's and the brokers').
    pub parse: Option<Parse>,
    /// Serve a live page of what arrives (`--web`).
    pub web: Option<WebConfig>,
}

impl OutputConfig {
    /// The settings for `format` on this process's stdout.
    pub fn for_stdout(format: Format, quiet: bool) -> Self {
        OutputConfig {
            format,
            quiet,
            terminal: io::stdout().is_terminal(),
            file: None,
            to: None,
            parse: None,
            web: None,
        }
    }
}

/// Handles on the sinks for the listener's own use: the brokers' counters
/// (`--stats`), the web page's feed (for bytes that skip the writer), and
/// how much of what was received has reached stdout.
#[derive(Clone, Default)]
pub struct Taps {
    /// What the `--to` brokers delivered and dropped so far.
    pub brokers: BrokerStats,
    /// The `--web` page's feed.
    pub web: Option<WebTap>,
    /// Data bytes (as received, before formatting) surely written to stdout:
    /// by the writer once flushed, and by the paths that skip it.
    pub written: Arc<AtomicU64>,
}

/// The writer thread and the channel that feeds it.
pub struct Output {
    sender: mpsc::Sender<Message>,
    thread: JoinHandle<io::Result<()>>,
    brokers: BrokerStats,
    web: Option<WebTap>,
    written: Arc<AtomicU64>,
}

impl Output {
    /// Starts writing data to stdout (and the `file`, if any) and events to
    /// stderr. A broken stdout (`portier listen | head`) cancels `shutdown`:
    /// the reader is gone.
    pub fn to_stdio(config: OutputConfig, shutdown: CancellationToken) -> Result<Output> {
        // Not through `io::stdout()`: its line buffering searches every write
        // for a newline, and the writer buffers and flushes on its own.
        let data: Box<dyn Write + Send> = match own_stdout() {
            Some(stdout) => Box::new(stdout),
            None => Box::new(io::stdout()),
        };
        Output::spawn(config, shutdown, data, io::stderr())
    }

    /// Starts writing to any pair of writers. With `--to` brokers, it must be
    /// called inside a tokio runtime, which then runs their connections.
    pub fn spawn<D, E>(
        config: OutputConfig,
        shutdown: CancellationToken,
        data: D,
        events: E,
    ) -> Result<Output>
    where
        D: Write + Send + 'static,
        E: Write + Send + 'static,
    {
        let file = config.file.as_ref().map(LogFile::open).transpose()?;
        let brokers = match &config.to {
            Some(to) => Some(Brokers::start(to, config.quiet, config.parse)?),
            None => None,
        };
        let stats = brokers.as_ref().map(Brokers::stats).unwrap_or_default();
        let web = match &config.web {
            Some(web) => Some(WebTap::start(web, config.parse, stats.clone())?),
            None => None,
        };
        let tap = web.clone();
        let (sender, receiver) = mpsc::channel(QUEUE_LEN);
        let written = Arc::new(AtomicU64::new(0));
        let credited = written.clone();
        let thread = std::thread::spawn(move || {
            let mut writer = Writer {
                config,
                data: io::BufWriter::with_capacity(64 * 1024, data),
                unflushed: 0,
                written: credited,
                file,
                brokers,
                web,
                events,
                scratch: Vec::new(),
            };
            writer.run(receiver, &shutdown)
        });
        Ok(Output {
            sender,
            thread,
            brokers: stats,
            web: tap,
            written,
        })
    }

    /// What the listener reports to besides this writer: the brokers'
    /// counters (for `--stats`) and the web page's feed.
    pub fn taps(&self) -> Taps {
        Taps {
            brokers: self.brokers.clone(),
            web: self.web.clone(),
            written: self.written.clone(),
        }
    }

    /// Where to send messages; clone it for each task.
    pub fn sender(&self) -> mpsc::Sender<Message> {
        self.sender.clone()
    }

    /// Waits until every message sent so far is written and flushed, and the
    /// brokers have taken what is queued for them (or their time is up).
    /// Every other sender must be dropped first. It blocks: in async code,
    /// call it through `spawn_blocking`.
    pub fn finish(self) -> Result<()> {
        drop(self.sender);
        match self.thread.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::io(cannot_write(), e)),
            Err(_) => Err(Error::io(
                cannot_write(),
                io::Error::other("the writer thread stopped"),
            )),
        }
    }
}

/// A descriptor of its own for stdout, written to straight (no line
/// buffering), or spliced into.
#[cfg(unix)]
pub fn own_stdout() -> Option<std::fs::File> {
    use std::os::fd::AsFd;
    let fd = io::stdout().as_fd().try_clone_to_owned().ok()?;
    Some(std::fs::File::from(fd))
}

/// A descriptor of its own for stdout: none here.
#[cfg(not(unix))]
pub fn own_stdout() -> Option<std::fs::File> {
    None
}

struct Writer<D: Write, E: Write> {
    config: OutputConfig,
    data: io::BufWriter<D>,
    /// Data bytes in `data` not yet flushed, then credited to `written`.
    unflushed: u64,
    written: Arc<AtomicU64>,
    file: Option<LogFile>,
    brokers: Option<Brokers>,
    web: Option<WebTap>,
    events: E,
    scratch: Vec<u8>,
}

impl<D: Write, E: Write> Writer<D, E> {
    fn run(
        &mut self,
        mut receiver: mpsc::Receiver<Message>,
        shutdown: &CancellationToken,
    ) -> io::Result<()> {
        let result = self.write_all_messages(&mut receiver, shutdown);
        if result.is_err() {
            shutdown.cancel();
            // Keep taking messages so no reader waits forever on a full queue.
            while receiver.blocking_recv().is_some() {}
        }
        if let Some(brokers) = self.brokers.take() {
            for line in brokers.finish(shutdown.is_cancelled()) {
                let report = Message::new(crate::message::Proto::Tcp, None, Event::Notice(line));
                self.write(&report)?;
            }
            self.flush_data()?;
        }
        match result {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }

    fn write_all_messages(
        &mut self,
        receiver: &mut mpsc::Receiver<Message>,
        shutdown: &CancellationToken,
    ) -> io::Result<()> {
        while let Some(first) = receiver.blocking_recv() {
            self.deliver(&first, shutdown)?;
            for _ in 1..FLUSH_EVERY {
                match receiver.try_recv() {
                    Ok(message) => self.deliver(&message, shutdown)?,
                    Err(_) => break,
                }
            }
            self.flush_data()?;
        }
        self.flush_data()
    }

    /// Flushes stdout, and counts the data it held as written.
    fn flush_data(&mut self) -> io::Result<()> {
        self.data.flush()?;
        let flushed = std::mem::take(&mut self.unflushed);
        self.written.fetch_add(flushed, Ordering::Relaxed);
        Ok(())
    }

    /// Writes `message`, shows it on the web page, then offers it to the
    /// brokers (and reports what they dropped).
    fn deliver(&mut self, message: &Message, shutdown: &CancellationToken) -> io::Result<()> {
        self.write(message)?;
        if let Some(web) = &self.web {
            web.offer(message);
        }
        let Some(brokers) = &mut self.brokers else {
            return Ok(());
        };
        for dropped in brokers.offer(message, shutdown) {
            self.write(&dropped)?;
            if let Some(web) = &self.web {
                web.offer(&dropped);
            }
        }
        Ok(())
    }

    fn write(&mut self, message: &Message) -> io::Result<()> {
        let shown = !self.config.quiet || matches!(message.event, Event::Notice(_));
        if let Some(line) = event_line(message).filter(|_| shown) {
            // Data written before the event must show first when both share a terminal.
            self.flush_data()?;
            write_event(&mut self.events, &line)?;
        }
        let format = self.config.format;
        let ts = match format {
            Format::Raw => String::new(),
            _ => timestamp(message.time),
        };
        let (scratch, terminal, parse) =
            (&mut self.scratch, self.config.terminal, self.config.parse);
        render(
            &mut self.data,
            format,
            &ts,
            message,
            terminal,
            parse,
            scratch,
        )?;
        if let Event::Data { bytes, .. } = &message.event {
            self.unflushed += bytes.len() as u64;
        }
        if let Some(file) = &mut self.file {
            let file = file.next()?;
            // Flushed per message, so a crash loses nothing already received.
            render(file, format, &ts, message, false, parse, scratch)?;
            file.flush()?;
        }
        Ok(())
    }
}

/// Writes `message` in `format`; only `json` shows events other than data.
fn render(
    out: &mut impl Write,
    format: Format,
    ts: &str,
    message: &Message,
    terminal: bool,
    parse: Option<Parse>,
    scratch: &mut Vec<u8>,
) -> io::Result<()> {
    let Event::Data { bytes, cut } = &message.event else {
        return match format {
            Format::Json => write_json(out, scratch, ts, message, parse),
            _ => Ok(()),
        };
    };
    let (proto, peer) = (message.proto.as_str(), &peer_label(message));
    match format {
        Format::Json => write_json(out, scratch, ts, message, parse),
        Format::Raw => write_raw(out, bytes, terminal),
        Format::Lines => write_line(out, ts, proto, peer, bytes, *cut),
        Format::Hex => write_hex(out, ts, proto, peer, bytes),
    }
}

/// The plain-words line for stderr, for every event but data.
pub(crate) fn event_line(message: &Message) -> Option<String> {
    let proto = message.proto;
    let peer = peer_label(message);
    Some(match &message.event {
        Event::Data { .. } => return None,
        Event::Listening { local, note } => {
            let dual = (local.inet().map(|l| l.ip()) == Some(Ipv6Addr::UNSPECIFIED.into()))
                .then_some("IPv4 and IPv6");
            let notes: Vec<&str> = dual.into_iter().chain(*note).collect();
            match notes.is_empty() {
                true => format!("listening on {proto} {local}"),
                false => format!("listening on {proto} {local} ({})", notes.join("; ")),
            }
        }
        Event::Connect => format!("connect {proto} {peer}"),
        Event::Disconnect {
            bytes,
            duration,
            exit,
        } => {
            let program = exit.as_ref().map(|exit| format!("; program: {exit}"));
            format!(
                "disconnect {proto} {peer} ({bytes} bytes in {:.3}s{})",
                duration.as_secs_f64(),
                program.unwrap_or_default()
            )
        }
        Event::Drops { new, total } => format!(
            "{proto}: the kernel dropped {new} datagrams (receive buffer full; {total} in all)"
        ),
        Event::Error(error) => format!("error {proto} {peer}: {error}"),
        Event::Notice(notice) => notice.clone(),
    })
}

/// Writes `portier: LINE` and its newline in one call, every control and
/// invisible character in `line` escaped: lines from several tasks never
/// interleave, and none carries a live escape sequence.
pub fn write_event(out: &mut impl Write, line: &str) -> io::Result<()> {
    let mut buf = Vec::with_capacity(line.len() + 16);
    buf.extend_from_slice(b"portier: ");
    write_escaped(&mut buf, line.as_bytes(), Escape::Event)?;
    buf.push(b'\n');
    out.write_all(&buf)
}

/// Counts one more on `counter`; the new count when it is worth saying: the
/// first ten, then every power of two. A flood (of refused peers, of dropped
/// messages) is then reported as it grows without flooding stderr, and
/// whatever logs it; the summaries have every one.
pub fn count_paced(counter: &std::sync::atomic::AtomicU64) -> Option<u64> {
    let count = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    (count <= 10 || count.is_power_of_two()).then_some(count)
}

/// One event line on stderr, for the code that has no writer thread (the
/// clients, `main`). A stderr that cannot be written to has nobody to tell.
pub fn say(line: &str) {
    let _ = write_event(&mut io::stderr().lock(), line);
}

fn cannot_write() -> String {
    "cannot write output".into()
}

/// The time a message is stamped with, as written in `lines`, `json` and `hex`.
pub(crate) fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::{Frame, Framer};
    use crate::message::Proto;
    use base64::Engine;
    use bytes::Bytes;
    use proptest::prelude::*;
    use std::sync::{Arc, Mutex};

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Feeds `data`, cut into reads at `cuts`, through the framing and writer of `format`.
    fn render(format: Format, data: &[u8], cuts: &[usize]) -> String {
        let mut framer = Framer::new(format.framing(false, 16));
        let stdout = Shared::default();
        let config = OutputConfig {
            format,
            quiet: true,
            terminal: false,
            file: None,
            to: None,
            parse: None,
            web: None,
        };
        let output =
            Output::spawn(config, CancellationToken::new(), stdout.clone(), io::sink()).unwrap();
        let sender = output.sender();
        let peer = "127.0.0.1:9"
            .parse::<std::net::SocketAddr>()
            .ok()
            .map(Into::into);
        let emit = |frame: Frame| {
            let event = Event::Data {
                bytes: frame.bytes,
                cut: frame.cut,
            };
            let message = Message::new(Proto::Tcp, peer.clone(), event);
            sender.blocking_send(message).unwrap();
        };
        let mut ends: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        ends.push(data.len());
        ends.sort();
        let mut start = 0;
        for end in ends {
            framer.push(Bytes::copy_from_slice(&data[start..end]));
            while let Some(frame) = framer.next_frame() {
                emit(frame);
            }
            start = end;
        }
        framer.finish().into_iter().for_each(emit);
        drop(sender);
        output.finish().unwrap();
        let bytes = stdout.0.lock().unwrap().clone();
        String::from_utf8(bytes).expect("every format but raw writes UTF-8")
    }

    fn json_payload(out: &str) -> Vec<u8> {
        out.lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .flat_map(|record| match record.get("text") {
                Some(text) => text.as_str().unwrap().as_bytes().to_vec(),
                None => base64::engine::general_purpose::STANDARD
                    .decode(record["data_b64"].as_str().unwrap())
                    .unwrap(),
            })
            .collect()
    }

    fn hex_payload(out: &str) -> Vec<u8> {
        out.lines()
            .filter(|line| line.len() > 58 && line.as_bytes()[8] == b' ')
            .flat_map(|line| {
                line[10..58]
                    .split_whitespace()
                    .map(|h| u8::from_str_radix(h, 16).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    proptest! {
        #[test]
        fn json_and_hex_give_back_exactly_the_bytes_received(
            data in proptest::collection::vec(any::<u8>(), 1..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            prop_assert_eq!(json_payload(&render(Format::Json, &data, &cuts)), data.clone());
            prop_assert_eq!(hex_payload(&render(Format::Hex, &data, &cuts)), data);
        }

        #[test]
        fn characters_split_across_reads_are_never_mangled(
            text in "[a-zé€😀 \n]{1,80}",
            cuts in proptest::collection::vec(any::<usize>(), 1..6),
        ) {
            let lines = render(Format::Lines, text.as_bytes(), &cuts);
            prop_assert!(!lines.contains("\\x"), "{}", lines);
            let json = render(Format::Json, text.as_bytes(), &cuts);
            prop_assert!(!json.contains("data_b64"), "{}", json);
            prop_assert_eq!(json_payload(&json), text.as_bytes());
        }
    }
}
