//! What the server counts, whichever way the bytes are delivered: the same
//! counters feed `--stats`, the summary at exit and the totals line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Context;
use crate::sink::broker::BrokerStats;

/// What the server received and turned away, reported when it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Data messages handed to the sinks.
    pub messages: u64,
    /// The bytes of those messages.
    pub bytes: u64,
    /// Peers refused by `--allow` / `--deny` (TCP connections and UDP datagrams).
    pub refused: u64,
    /// TCP connections refused past `--max-conns` or `--max-per-ip`.
    pub over_limit: u64,
    /// Broker or chat clients dropped because they did not read fast enough.
    pub dropped_slow: u64,
    /// Datagrams the kernel dropped because a receive buffer was full.
    pub kernel_drops: u64,
    /// UDP echo replies not sent: to a looping source, or over a peer's budget.
    pub echo_withheld: u64,
    /// Datagrams still queued in the kernel at shutdown, taken off and not read.
    pub unread: u64,
}

impl Summary {
    /// The `--stats` line at exit.
    pub fn totals(&self, elapsed: Duration) -> String {
        format!(
            "total: {} messages, {} in {:.1}s, {} drops",
            self.messages,
            indicatif::HumanBytes(self.bytes),
            elapsed.as_secs_f64(),
            self.kernel_drops
        )
    }

    /// One line for stderr, or `None` when nothing was turned away.
    pub fn line(&self) -> Option<String> {
        let parts: Vec<String> = [
            (self.refused, "refused by --allow/--deny"),
            (self.over_limit, "refused over --max-conns or --max-per-ip"),
            (self.dropped_slow, "slow clients dropped"),
            (
                self.kernel_drops,
                "datagrams dropped by the kernel (receive buffer full)",
            ),
            (
                self.echo_withheld,
                "echo replies not sent (looping source or over --echo-rate)",
            ),
            (self.unread, "datagrams not read (still queued at shutdown)"),
        ]
        .iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, what)| format!("{count} {what}"))
        .collect();
        (!parts.is_empty()).then(|| format!("summary: {}", parts.join(", ")))
    }
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) messages: AtomicU64,
    /// Shared with the watch on stdout at shutdown, which outlives the rest.
    pub(super) bytes: Arc<AtomicU64>,
    pub(super) refused: AtomicU64,
    pub(super) over_limit: AtomicU64,
    pub(super) dropped_slow: AtomicU64,
    pub(super) kernel_drops: AtomicU64,
    pub(super) echo_withheld: AtomicU64,
    pub(super) unread: AtomicU64,
}

impl Counters {
    pub(super) fn summary(&self) -> Summary {
        Summary {
            messages: self.messages.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            over_limit: self.over_limit.load(Ordering::Relaxed),
            dropped_slow: self.dropped_slow.load(Ordering::Relaxed),
            kernel_drops: self.kernel_drops.load(Ordering::Relaxed),
            echo_withheld: self.echo_withheld.load(Ordering::Relaxed),
            unread: self.unread.load(Ordering::Relaxed),
        }
    }
}

/// `--stats`: a line on stderr every `every`, until shutdown.
pub(super) async fn report_stats(context: Arc<Context>, every: Duration, brokers: BrokerStats) {
    let mut last_bytes = 0;
    loop {
        tokio::select! {
            _ = context.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = context.counters.summary();
        let clients = context.max_conns - context.connections.available_permits();
        let rate = (now.bytes - last_bytes) as f64 / every.as_secs_f64();
        last_bytes = now.bytes;
        let mut stats = format!(
            "stats: {clients} clients, {} messages, {}, {}/s, {} drops",
            now.messages,
            indicatif::HumanBytes(now.bytes),
            indicatif::HumanBytes(rate as u64),
            now.kernel_drops
        );
        if let Some(brokers) = brokers.line() {
            stats += &format!("; {brokers}");
        }
        context.notice(stats).await;
    }
}
