//! `--to` sinks: every data message also published to MQTT or NATS brokers,
//! so other programs subscribe to what a collector receives.
//!
//! Between the writer thread and each broker's connection task sits a bounded
//! queue with a when-full policy (`--to-queue`, `--to-on-full`): a broker that
//! is slow or down never grows memory without bound, and never loses a message
//! without counting it. A broker down at start is retried with backoff while
//! the queue fills. At exit each broker gets a moment to take what is queued;
//! what it did not take is reported, never silently lost.

mod mqtt;
mod nats;
mod target;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::message::{Event, Message};
use crate::tls::ClientTlsConfig;

pub use target::{BrokerKind, BrokerTarget, Topic};

/// Messages queued per broker unless told otherwise.
pub const DEFAULT_QUEUE: usize = 10_000;
/// MQTT keepalive unless told otherwise.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);
/// How long brokers get at exit to take what is queued, after a signal.
const DRAIN_AFTER_SIGNAL: Duration = Duration::from_millis(500);
/// The same, when the listener ended by itself (`--once`).
const DRAIN_AT_END: Duration = Duration::from_secs(5);
/// Reconnection backoff: from this, doubling…
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// …up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What is published for each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Payload {
    /// The message's bytes as received (one datagram, one read or one frame).
    #[default]
    Raw,
    /// The JSON record of `-f json` (time, proto, peer, text or data_b64).
    Json,
}

/// What a full queue does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OnFull {
    /// Drop the message and count it: receiving never waits on a broker.
    #[default]
    Drop,
    /// Wait for room: TCP senders are slowed down (UDP ones can only be
    /// dropped by the kernel, counted as kernel drops).
    Block,
}

/// The `--to` sinks and their settings (shared by all of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokersConfig {
    /// Where to publish.
    pub targets: Vec<BrokerTarget>,
    /// Raw bytes or JSON records.
    pub payload: Payload,
    /// MQTT: QoS 1 (acknowledged by the broker) instead of 0.
    pub at_least_once: bool,
    /// MQTT client id [default: portier-PID].
    pub client_id: Option<String>,
    /// MQTT keepalive.
    pub keepalive: Duration,
    /// Messages queued per broker.
    pub queue: usize,
    /// What a full queue does.
    pub on_full: OnFull,
    /// NATS: publish through JetStream and wait for its acknowledgement.
    pub ack: bool,
    /// How `mqtts://` checks the broker.
    pub tls: ClientTlsConfig,
}

impl Default for BrokersConfig {
    fn default() -> Self {
        BrokersConfig {
            targets: Vec::new(),
            payload: Payload::Raw,
            at_least_once: false,
            client_id: None,
            keepalive: DEFAULT_KEEPALIVE,
            queue: DEFAULT_QUEUE,
            on_full: OnFull::Drop,
            ack: false,
            tls: ClientTlsConfig::default(),
        }
    }
}

/// One message on its way to a broker.
struct Outgoing {
    topic: String,
    payload: Bytes,
}

/// What happened to the messages offered to one broker.
#[derive(Debug, Default)]
struct Tally {
    /// Taken into the queue.
    queued: AtomicU64,
    /// Not queued: the queue was full (or the broker task had stopped).
    dropped: AtomicU64,
    /// Not queued: `--to-on-full block` was waiting for room when the
    /// listener stopped (a drop of its own kind: the queue did not overflow).
    stopped: AtomicU64,
    /// Taken by the broker: written (MQTT QoS 0), flushed (NATS) or acknowledged (QoS 1, JetStream).
    delivered: AtomicU64,
    /// Refused by the broker (an invalid subject, a JetStream error).
    failed: AtomicU64,
}

impl Tally {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Queued and not yet delivered or failed.
    fn waiting(&self) -> u64 {
        let done = Tally::get(&self.delivered) + Tally::get(&self.failed);
        Tally::get(&self.queued).saturating_sub(done)
    }
}

/// The counters of every broker, for `--stats` and the summary.
#[derive(Debug, Clone, Default)]
pub struct BrokerStats(Vec<(String, Arc<Tally>)>);

impl BrokerStats {
    /// Messages dropped on a full queue, all brokers together.
    pub fn dropped(&self) -> u64 {
        self.0
            .iter()
            .map(|(_, tally)| Tally::get(&tally.dropped))
            .sum()
    }

    /// `mqtt://…: 10 delivered, 0 dropped, 2 waiting` for each broker, or `None` without `--to`.
    pub fn line(&self) -> Option<String> {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(name, tally)| {
                let failed = match Tally::get(&tally.failed) {
                    0 => String::new(),
                    n => format!(", {n} refused by the broker"),
                };
                format!(
                    "{name}: {} delivered, {} dropped (queue full){failed}, {} waiting",
                    Tally::get(&tally.delivered),
                    Tally::get(&tally.dropped),
                    tally.waiting()
                )
            })
            .collect();
        (!parts.is_empty()).then(|| format!("to {}", parts.join("; ")))
    }
}

/// One running `--to` sink.
struct Sink {
    target: BrokerTarget,
    queue: mpsc::Sender<Outgoing>,
    tally: Arc<Tally>,
    task: JoinHandle<()>,
    stop: CancellationToken,
}

/// The running `--to` sinks, fed by the writer thread.
pub(super) struct Brokers {
    sinks: Vec<Sink>,
    config: Arc<BrokersConfig>,
    runtime: Handle,
    /// The JSON record, and write_json's scratch, kept between messages.
    json: Vec<u8>,
    scratch: Vec<u8>,
    parse: Option<super::Parse>,
}

impl Brokers {
    /// Starts a connection task per broker. Must be called inside a tokio runtime.
    pub(super) fn start(
        config: &BrokersConfig,
        quiet: bool,
        parse: Option<super::Parse>,
    ) -> Result<Brokers> {
        let runtime =
            Handle::try_current().map_err(|_| Error::Usage("--to needs a tokio runtime".into()))?;
        let config = Arc::new(config.clone());
        let tls = match config
            .targets
            .iter()
            .any(|t| t.kind == (BrokerKind::Mqtt { tls: true }))
        {
            true => Some(crate::tls::client_config(&config.tls)?),
            false => None,
        };
        let sinks = config
            .targets
            .iter()
            .map(|target| {
                let (queue, receiver) = mpsc::channel(config.queue);
                let tally = Arc::new(Tally::default());
                let stop = CancellationToken::new();
                let link = Link {
                    target: target.clone(),
                    config: config.clone(),
                    queue: receiver,
                    tally: tally.clone(),
                    stop: stop.clone(),
                    status: Status::new(target, quiet),
                };
                let task = match target.kind {
                    BrokerKind::Mqtt { .. } => runtime.spawn(mqtt::run(link, tls.clone())),
                    BrokerKind::Nats => runtime.spawn(nats::run(link)),
                };
                Sink {
                    target: target.clone(),
                    queue,
                    tally,
                    task,
                    stop,
                }
            })
            .collect();
        Ok(Brokers {
            sinks,
            config,
            runtime,
            json: Vec::new(),
            scratch: Vec::new(),
            parse,
        })
    }

    /// The counters, for `--stats`.
    pub(super) fn stats(&self) -> BrokerStats {
        let named = self.sinks.iter();
        BrokerStats(
            named
                .map(|s| (s.target.to_string(), s.tally.clone()))
                .collect(),
        )
    }

    /// Queues a data message for every broker; returns the events to report
    /// (a dropped message: the first ten, then every power of two).
    pub(super) fn offer(
        &mut self,
        message: &Message,
        shutdown: &CancellationToken,
    ) -> Vec<Message> {
        let Event::Data { bytes, .. } = &message.event else {
            return Vec::new();
        };
        let payload = match self.config.payload {
            Payload::Raw => bytes.clone(),
            Payload::Json => {
                self.json.clear();
                let ts = super::timestamp(message.time);
                let _ =
                    super::write_json(&mut self.json, &mut self.scratch, &ts, message, self.parse);
                let record = self.json.strip_suffix(b"\n").unwrap_or(&self.json);
                Bytes::copy_from_slice(record)
            }
        };
        let mut events = Vec::new();
        for sink in &self.sinks {
            let outgoing = Outgoing {
                topic: sink.target.topic.fill(message),
                payload: payload.clone(),
            };
            let block = self.config.on_full == OnFull::Block;
            let taken = match sink.queue.try_send(outgoing) {
                Ok(()) => Taken::Queued,
                Err(TrySendError::Full(outgoing)) if block && !shutdown.is_cancelled() => {
                    self.runtime.block_on(async {
                        tokio::select! {
                            sent = sink.queue.send(outgoing) => match sent {
                                Ok(()) => Taken::Queued,
                                Err(_) => Taken::Dropped,
                            },
                            _ = shutdown.cancelled() => Taken::Stopped,
                        }
                    })
                }
                Err(TrySendError::Full(_)) if block => Taken::Stopped,
                Err(_) => Taken::Dropped,
            };
            let dropped = match taken {
                Taken::Queued => {
                    Tally::add(&sink.tally.queued, 1);
                    None
                }
                // Counted for the report at exit; no event per message while stopping.
                Taken::Stopped => {
                    Tally::add(&sink.tally.stopped, 1);
                    None
                }
                Taken::Dropped => super::count_paced(&sink.tally.dropped),
            };
            if let Some(count) = dropped {
                let why = format!(
                    "to {}: queue full ({} messages), message dropped (#{count})",
                    sink.target, self.config.queue
                );
                events.push(Message::new(
                    message.proto,
                    message.peer.clone(),
                    Event::Error(why),
                ));
            }
        }
        events
    }

    /// Closes the queues, gives the brokers `DRAIN_*` to take what is queued,
    /// and returns a report line per broker.
    pub(super) fn finish(self, after_signal: bool) -> Vec<String> {
        let deadline = match after_signal {
            true => DRAIN_AFTER_SIGNAL,
            false => DRAIN_AT_END,
        };
        let Brokers { sinks, runtime, .. } = self;
        runtime.block_on(async {
            let until = tokio::time::Instant::now() + deadline;
            let mut lines = Vec::new();
            for sink in sinks {
                drop(sink.queue);
                let mut task = sink.task;
                if tokio::time::timeout_at(until, &mut task).await.is_err() {
                    sink.stop.cancel();
                    let _ = task.await;
                }
                let tally = &sink.tally;
                let dropped = Tally::get(&tally.dropped);
                let failed = Tally::get(&tally.failed);
                let mut line = format!(
                    "to {}: {} delivered",
                    sink.target,
                    Tally::get(&tally.delivered)
                );
                let stopped = Tally::get(&tally.stopped);
                for (count, what) in [
                    (dropped, "dropped (queue full)"),
                    (
                        stopped,
                        "not delivered (waiting for room in the queue when the listener stopped)",
                    ),
                    (failed, "refused by the broker"),
                    (
                        tally.waiting(),
                        "not delivered (the broker did not take them before exit)",
                    ),
                ] {
                    if count > 0 {
                        line += &format!(", {count} {what}");
                    }
                }
                lines.push(line);
            }
            lines
        })
    }
}

/// What became of a message offered to one broker's queue.
enum Taken {
    Queued,
    /// The queue was full, or its broker task had ended.
    Dropped,
    /// `--to-on-full block` was waiting for room when the listener stopped.
    Stopped,
}

/// What a broker task is given: its queue, its counters, its stop signal.
struct Link {
    target: BrokerTarget,
    config: Arc<BrokersConfig>,
    queue: mpsc::Receiver<Outgoing>,
    tally: Arc<Tally>,
    /// Cancelled when the exit deadline has passed.
    stop: CancellationToken,
    status: Status,
}

/// A broker's connection state, said on stderr when it changes (not on every
/// retry, so a broker that stays down does not flood the terminal).
#[derive(Clone)]
struct Status {
    name: String,
    quiet: bool,
    shown: Arc<std::sync::Mutex<Option<String>>>,
}

impl Status {
    fn new(target: &BrokerTarget, quiet: bool) -> Status {
        Status {
            name: target.to_string(),
            quiet,
            shown: Arc::default(),
        }
    }

    fn connected(&self) {
        if self.change("connected".into()) && !self.quiet {
            crate::sink::say(&format!("to {}: connected", self.name));
        }
    }

    fn failed(&self, error: impl fmt::Display) {
        let error = error.to_string();
        if self.change(error.clone()) {
            let retry = "queueing and retrying with backoff";
            crate::sink::say(&format!("to {}: {error}; {retry}", self.name));
        }
    }

    /// Records `state`; whether it differs from the last one said.
    fn change(&self, state: String) -> bool {
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        let changed = shown.as_deref() != Some(state.as_str());
        *shown = Some(state);
        changed
    }
}

/// The wait before reconnection attempt `attempt` (0-based).
fn backoff(attempt: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1 << attempt.min(16))
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(0), BACKOFF_FIRST);
        assert_eq!(backoff(1), BACKOFF_FIRST * 2);
        assert_eq!(backoff(40), BACKOFF_MAX);
    }

    #[test]
    fn stats_name_each_broker_without_its_password() {
        let target = BrokerTarget::parse("mqtt://ann:pw@host/t").unwrap();
        let tally = Arc::new(Tally::default());
        Tally::add(&tally.queued, 5);
        Tally::add(&tally.delivered, 3);
        Tally::add(&tally.dropped, 1);
        let stats = BrokerStats(vec![(target.to_string(), tally)]);
        assert_eq!(
            stats.line().unwrap(),
            "to mqtt://ann:***@host:1883/t: 3 delivered, 1 dropped (queue full), 2 waiting"
        );
        assert_eq!(BrokerStats::default().line(), None);
    }
}
