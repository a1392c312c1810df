//! What a relay says: a line per event on stderr, or with `-f json` a JSON
//! object per line on stdout (for `jq` and scripts), as `listen` does.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value, json};

use super::{RelayConfig, Totals};
use crate::sink::say;

/// How the relay's events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventFormat {
    /// One line each on stderr.
    #[default]
    Text,
    /// One JSON object each on stdout.
    Json,
}

/// How a client is relayed.
#[derive(Clone, Copy)]
pub(super) enum Relayed {
    /// A stream joined to its own upstream connection.
    Stream,
    /// A UDP session with its own upstream socket.
    Session,
    /// A TCP client's lines sent on as datagrams.
    Lines,
}

/// Which limit turned a client away.
#[derive(Debug, Clone, Copy)]
pub(super) enum Limit {
    /// `-m`: this many clients (UDP: sessions) at once.
    Clients(usize),
    /// `--max-per-ip`: this many stream clients from one address.
    PerAddress(usize),
}

/// One thing that happened.
pub(super) enum Event<'a> {
    Listening(Option<SocketAddr>),
    Connected(&'a str, Relayed),
    /// A client gone, with the bytes each way when counted per client.
    Disconnected {
        client: &'a str,
        bytes: Option<(u64, u64)>,
        why: Option<&'a str>,
    },
    /// A client refused by --allow/--deny: who, why, how many so far.
    Refused(&'a str, &'a str, u64),
    /// A client past a limit: who, which, how many so far.
    TurnedAway(&'a str, Limit, u64),
    /// Something failed, for one client or for the relay.
    Failed(Option<&'a str>, String),
    SessionEnded(&'a str),
    /// A UDP session closed to make room (-m reached) for a new client:
    /// whose, for whom, how many so far.
    Evicted(&'a str, &'a str, u64),
    Notice(String),
    /// The totals: so far (`--stats`), or at the end.
    Totals(&'a Totals, bool),
}

/// Says `event` the way `config` asks.
pub(super) fn tell(config: &RelayConfig, event: Event<'_>) {
    match config.events {
        EventFormat::Text => say(&line(config, &event)),
        EventFormat::Json => {
            let mut text = record(config, &event).to_string();
            text.push('\n');
            // One write per record, so records from many tasks never mix; a
            // stdout nobody reads has nobody to tell.
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
        }
    }
}

fn line(config: &RelayConfig, event: &Event<'_>) -> String {
    let (from, to) = (&config.from, &config.to);
    match event {
        Event::Listening(Some(local)) => format!("relay listening on {from} ({local})"),
        Event::Listening(None) => format!("relay listening on {from}"),
        Event::Connected(client, Relayed::Stream) => format!("{client} connected, relayed to {to}"),
        Event::Connected(client, Relayed::Session) => {
            format!("{client} session started, relayed to {to}")
        }
        Event::Connected(client, Relayed::Lines) => {
            format!("{client} connected, its lines relayed to {to} as datagrams")
        }
        Event::Disconnected { client, bytes, why } => {
            let counted = bytes
                .map(|(up, down)| format!(": {up} bytes to the upstream, {down} back"))
                .unwrap_or_default();
            let why = why.map(|why| format!(" ({why})")).unwrap_or_default();
            format!("{client} disconnected{counted}{why}")
        }
        Event::Refused(client, why, count) => format!("{client} refused: {why} (#{count})"),
        Event::TurnedAway(client, Limit::Clients(max), count) => {
            format!("{client} turned away: {max} clients already (-m) (#{count})")
        }
        Event::TurnedAway(client, Limit::PerAddress(max), count) => format!(
            "{client} turned away: {max} clients from this address already (--max-per-ip) (#{count})"
        ),
        Event::Failed(Some(client), error) => format!("{client}: {error}"),
        Event::Failed(None, error) => error.clone(),
        Event::SessionEnded(client) => format!("{client} session ended (idle)"),
        Event::Evicted(client, newcomer, count) => format!(
            "{client} session ended: -m reached and it was never answered back and forth, \
             so {newcomer} took its place (#{count})"
        ),
        Event::Notice(text) => text.clone(),
        Event::Totals(totals, so_far) => {
            let summary = totals.summary();
            match so_far {
                true => summary.replacen("relay summary", "relay so far", 1),
                false => summary,
            }
        }
    }
}

fn record(config: &RelayConfig, event: &Event<'_>) -> Value {
    let mut fields = Map::new();
    let mut put = |name: &str, value: Value| {
        fields.insert(name.to_string(), value);
    };
    put(
        "time",
        json!(crate::sink::timestamp(std::time::SystemTime::now())),
    );
    let name = match event {
        Event::Listening(local) => {
            put("from", json!(config.from.to_string()));
            put("to", json!(config.to.to_string()));
            if let Some(local) = local {
                put("local", json!(local.to_string()));
            }
            "listening"
        }
        Event::Connected(client, how) => {
            put("client", json!(client));
            put("to", json!(config.to.to_string()));
            let how = match how {
                Relayed::Stream => "stream",
                Relayed::Session => "session",
                Relayed::Lines => "lines",
            };
            put("relayed", json!(how));
            "connect"
        }
        Event::Disconnected { client, bytes, why } => {
            put("client", json!(client));
            if let Some((up, down)) = bytes {
                put("bytes_up", json!(up));
                put("bytes_down", json!(down));
            }
            if let Some(why) = why {
                put("why", json!(why));
            }
            "disconnect"
        }
        Event::Refused(client, why, count) => {
            put("client", json!(client));
            put("why", json!(why));
            put("count", json!(count));
            "refused"
        }
        Event::TurnedAway(client, limit, count) => {
            put("client", json!(client));
            match limit {
                Limit::Clients(max) => put("max_conns", json!(max)),
                Limit::PerAddress(max) => put("max_per_ip", json!(max)),
            }
            put("count", json!(count));
            "turned_away"
        }
        Event::Failed(client, error) => {
            if let Some(client) = client {
                put("client", json!(client));
            }
            put("error", json!(error));
            "error"
        }
        Event::SessionEnded(client) => {
            put("client", json!(client));
            put("why", json!("idle"));
            "session_end"
        }
        Event::Evicted(client, newcomer, count) => {
            put("client", json!(client));
            put("why", json!("evicted"));
            put("by", json!(newcomer));
            put("count", json!(count));
            "session_end"
        }
        Event::Notice(text) => {
            put("text", json!(text));
            "notice"
        }
        Event::Totals(totals, so_far) => {
            let get =
                |counter: &std::sync::atomic::AtomicU64| json!(counter.load(Ordering::Relaxed));
            put("clients", get(&totals.connections));
            put("bytes_up", get(&totals.bytes_up));
            put("bytes_down", get(&totals.bytes_down));
            put("datagrams_up", get(&totals.datagrams_up));
            put("datagrams_down", get(&totals.datagrams_down));
            put("kernel_drops", get(&totals.kernel_drops));
            put("refused", get(&totals.refused));
            put("turned_away", get(&totals.over_limit));
            put("evicted", get(&totals.evicted));
            put("looping", get(&totals.looping));
            put("upstream_failures", get(&totals.upstream_failed));
            put("replies_failed", get(&totals.replies_failed));
            put("replies_limited", get(&totals.replies_limited));
            put("queued_at_shutdown", get(&totals.queued_at_shutdown));
            if *so_far { "stats" } else { "summary" }
        }
    };
    fields.insert("event".into(), json!(name));
    Value::Object(fields)
}
