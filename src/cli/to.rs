//! `--to` and its settings: publishing what a listener receives to MQTT or
//! NATS brokers, checked into a [`BrokersConfig`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clap::builder::TypedValueParser;
use portier::error::{Error, Result};
use portier::sink::broker::{
    BrokerKind, BrokerTarget, BrokersConfig, DEFAULT_QUEUE, OnFull, Payload,
};
use portier::tls::{ClientTlsConfig, Fingerprint};

use super::parse_positive_duration;

#[derive(Debug, Args)]
#[command(next_help_heading = "Publishing to brokers")]
pub(super) struct ToArgs {
    /// Also publish every message to mqtt://[USER:PASS@]HOST[:PORT]/TOPIC, mqtts://…, or
    /// nats://HOST[:PORT]/SUBJECT; the topic may hold {proto}, {peer_ip}, {peer_port}; repeatable
    // Parsed in `config`, not by clap: clap's error would echo a password.
    #[arg(long, value_name = "URL")]
    pub(super) to: Vec<String>,
    /// What is published: the bytes as received, or the JSON record of -f json
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        default_value = "raw",
        requires = "to"
    )]
    to_format: Payload,
    /// MQTT QoS: 0 (at most once) or 1 (acknowledged by the broker)
    #[arg(long, value_name = "0|1", default_value_t = 0, requires = "to",
          value_parser = clap::value_parser!(u8).range(0..=1))]
    to_qos: u8,
    /// MQTT client id [default: portier-PID]
    #[arg(long, value_name = "ID", requires = "to")]
    to_client_id: Option<String>,
    /// MQTT keepalive
    #[arg(long, value_name = "SECS", default_value = "30", requires = "to",
          value_parser = parse_positive_duration)]
    to_keepalive: Duration,
    /// Messages queued per broker while it is slow or away
    #[arg(long, value_name = "N", default_value_t = DEFAULT_QUEUE, requires = "to",
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    to_queue: usize,
    /// A full queue drops the message (counted) or blocks (TCP senders are slowed down)
    #[arg(
        long,
        value_enum,
        value_name = "POLICY",
        default_value = "drop",
        requires = "to"
    )]
    to_on_full: OnFull,
    /// NATS: publish through JetStream and count a message delivered once it is acknowledged
    #[arg(long, requires = "to")]
    to_ack: bool,
    /// mqtts: trust this CA (PEM) instead of the system's
    #[arg(long, value_name = "FILE", requires = "to")]
    to_ca: Option<PathBuf>,
    /// mqtts: accept exactly the broker certificate with this SHA-256 fingerprint
    #[arg(long, value_name = "SHA256", requires = "to", value_parser = Fingerprint::parse)]
    to_pin: Vec<Fingerprint>,
}

impl ToArgs {
    /// Whether brokers get JSON records.
    pub(super) fn json(&self) -> bool {
        !self.to.is_empty() && self.to_format == Payload::Json
    }

    /// The brokers to publish to, or `None` without `--to`.
    pub(super) fn config(&self) -> Result<Option<BrokersConfig>> {
        if self.to.is_empty() {
            return Ok(None);
        }
        let targets = self
            .to
            .iter()
            .map(|to| BrokerTarget::parse(to))
            .collect::<Result<Vec<_>>>()?;
        let has = |kind: fn(BrokerKind) -> bool| targets.iter().any(|t| kind(t.kind));
        let mqtt = has(|k| matches!(k, BrokerKind::Mqtt { .. }));
        let mqtts = has(|k| k == BrokerKind::Mqtt { tls: true });
        let nats = has(|k| k == BrokerKind::Nats);
        let misfits = [
            (
                self.to_qos > 0 || self.to_client_id.is_some(),
                mqtt,
                "--to-qos and --to-client-id are for mqtt://",
            ),
            (self.to_ack, nats, "--to-ack is for nats:// (JetStream)"),
            (
                self.to_ca.is_some() || !self.to_pin.is_empty(),
                mqtts,
                "--to-ca and --to-pin are for mqtts://",
            ),
        ];
        if let Some((_, _, why)) = misfits.iter().find(|(asked, fits, _)| *asked && !fits) {
            return Err(Error::Usage((*why).into()));
        }
        let bad_id =
            |id: &String| id.is_empty() || id.starts_with(' ') || id.chars().any(char::is_control);
        if self.to_client_id.as_ref().is_some_and(bad_id) {
            return Err(Error::Usage(
                "--to-client-id: give a name without leading spaces or control characters".into(),
            ));
        }
        if self.to_keepalive < Duration::from_secs(1) {
            return Err(Error::Usage("--to-keepalive: one second at least".into()));
        }
        Ok(Some(BrokersConfig {
            targets,
            payload: self.to_format,
            at_least_once: self.to_qos == 1,
            client_id: self.to_client_id.clone(),
            keepalive: self.to_keepalive,
            queue: self.to_queue,
            on_full: self.to_on_full,
            ack: self.to_ack,
            tls: ClientTlsConfig {
                ca: self.to_ca.clone(),
                pins: self.to_pin.clone(),
                ..ClientTlsConfig::default()
            },
        }))
    }
}
