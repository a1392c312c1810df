//! `portier send`: its flags (and the TLS ones it shares with `connect`), as a [`SendConfig`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use portier::client::{OnFull, Reconnect, Repeat, SendConfig, Source};
use portier::error::{Error, Result};
use portier::tls::{ClientTlsConfig, Fingerprint};
use portier::udp_options::{Interface, SendOptions};

use super::{Target, parse_duration, parse_positive_duration, proto};

pub(super) const SEND_EXAMPLES: &str = "\
Examples:
  portier send                           stdin to 127.0.0.1:8888 over TCP
  portier send 127.0.0.1 8888 abcdefg!   the seed's client: sends \"abcdefg!\\n\"
  portier send -u pi.local 8888 22.5C    one UDP datagram
  sensor | portier send -u pi.local 8888 one datagram per line
  portier send ::1 8888 --file photo.jpg a file over TCP, IPv6
  portier send -u --broadcast 192.168.1.255 8888 hello   every host on the LAN
  portier send -u 239.1.2.3 8888 --ttl 1 hello           a multicast group
  portier send -u --reply --count 5 --interval 0.2 pi.local 7 ping   a UDP ping";

#[derive(Debug, Args)]
pub(super) struct SendArgs {
    /// Host: a name, an IPv4 or an IPv6 address; or HOST:PORT, or an address: tcp://HOST:PORT,
    /// udp://HOST:PORT, tls://HOST:PORT, unix:/path, unix:@name, unix-dgram:/path (then no PORT follows)
    #[arg(default_value = "127.0.0.1")]
    host: String,
    /// Port (1-65535) [default: 8888]
    port: Option<OsString>,
    /// Message words, joined by spaces and ended by a newline; without them, stdin is sent
    #[arg(value_name = "MESSAGE")]
    message: Vec<OsString>,
    /// Use UDP (one datagram per message, or per line of stdin or the file)
    #[arg(short, long)]
    udp: bool,
    /// Leave out the newline at the end of the message (UDP: of each line)
    #[arg(short = 'n', long)]
    no_newline: bool,
    /// Send this file
    #[arg(long, value_name = "PATH", conflicts_with = "message")]
    file: Option<PathBuf>,
    /// Give up connecting after this long (e.g. 3, 0.5, 500ms, 2s)
    #[arg(short = 'w', long, value_name = "SECS", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// UDP: allow a broadcast address (e.g. 255.255.255.255 or 192.168.1.255)
    #[arg(long, requires = "udp")]
    broadcast: bool,
    /// UDP: hops the datagram may take (multicast TTL for a multicast group)
    #[arg(long, value_name = "N", requires = "udp")]
    ttl: Option<u32>,
    /// UDP: the interface to send by, a name (eth0) or one of its addresses
    #[arg(long, value_name = "NAME|ADDR", requires = "udp")]
    iface: Option<String>,
    /// UDP: wait for answers and print them (with --count, a ping)
    #[arg(long, requires = "udp", requires = "message")]
    reply: bool,
    /// How long to wait for each answer
    #[arg(long, value_name = "SECS", value_parser = parse_duration, default_value = "1",
          requires = "reply")]
    reply_timeout: Duration,
    /// UDP: send the message N times
    #[arg(long, value_name = "N", requires = "udp", requires = "message",
          value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Time between two sends of --count
    #[arg(long, value_name = "SECS", value_parser = parse_positive_duration, default_value = "1",
          requires = "count")]
    interval: Duration,
    #[command(flatten)]
    reconnect: ReconnectArgs,
    #[command(flatten)]
    tls: ClientTlsArgs,
    #[command(flatten)]
    origin: super::OriginArgs,
}

/// `--reconnect` and its limits, for send and connect.
#[derive(Debug, Args)]
pub(super) struct ReconnectArgs {
    /// TCP: send line by line, and connect again (backoff with jitter) whenever the connection breaks
    #[arg(long, conflicts_with = "tls")]
    pub(super) reconnect: bool,
    /// --reconnect: bytes of lines kept while disconnected (e.g. 64KiB, 10MiB)
    #[arg(long, value_name = "SIZE", default_value = "10MiB", value_parser = super::parse_size, requires = "reconnect")]
    buffer: usize,
    /// --reconnect: a full buffer stops reading input (block) or drops lines, counted (drop)
    #[arg(long, value_enum, default_value = "block", requires = "reconnect")]
    on_full: OnFullArg,
    /// --reconnect: the first wait before connecting again; it doubles up to --retry-max
    #[arg(long, value_name = "SECS", default_value = "0.1", value_parser = parse_positive_duration, requires = "reconnect")]
    retry_min: Duration,
    /// --reconnect: the longest wait between two attempts
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_positive_duration, requires = "reconnect")]
    retry_max: Duration,
}

impl ReconnectArgs {
    pub(super) fn config(&self) -> Option<Reconnect> {
        self.reconnect.then(|| Reconnect {
            backoff_min: self.retry_min,
            backoff_max: self.retry_max.max(self.retry_min),
            buffer: self.buffer,
            on_full: match self.on_full {
                OnFullArg::Block => OnFull::Block,
                OnFullArg::Drop => OnFull::Drop,
            },
        })
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OnFullArg {
    Block,
    Drop,
}

/// TLS options of `send` and `connect`.
#[derive(Debug, Args)]
pub(super) struct ClientTlsArgs {
    /// Speak TLS; the server is checked against the system's trusted CAs
    #[arg(long, conflicts_with = "udp")]
    pub(super) tls: bool,
    /// TLS: trust this CA (PEM); a server's own self-signed certificate works too
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// TLS: accept exactly the certificate with this SHA-256 fingerprint (as the listener printed it)
    #[arg(long, value_name = "SHA256", requires = "tls", value_parser = Fingerprint::parse)]
    pin: Vec<Fingerprint>,
    /// TLS: check nothing about the server (you are warned)
    #[arg(long, requires = "tls", conflicts_with_all = ["ca", "pin"])]
    insecure: bool,
    /// TLS: a client certificate (PEM), for listeners that require one
    #[arg(long, value_name = "FILE", requires = "tls", requires = "key")]
    cert: Option<PathBuf>,
    /// TLS: the client certificate's private key (PEM)
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
}

/// A `udp://` or `unix:` target with flags that cannot go with it.
pub(super) fn check_target(target: &Target, udp: bool, tls: bool, reconnect: bool) -> Result<()> {
    if reconnect && udp {
        return Err(Error::Usage(
            "--reconnect is for TCP: UDP has no connection to lose".into(),
        ));
    }
    let clash = match (&target.unix, udp, tls || target.tls) {
        (Some(_), true, _) => Some("-u"),
        (Some(_), _, true) => Some("--tls"),
        (None, true, true) => Some("--tls with UDP"),
        _ => None,
    };
    match (clash, &target.unix) {
        (Some(flag), Some(unix)) => Err(Error::Usage(format!("{unix} does not go with {flag}"))),
        (Some(flag), None) => Err(Error::Usage(format!("{flag}: TLS is for TCP"))),
        (None, Some(unix)) if reconnect => {
            Err(Error::Usage(format!("--reconnect is for TCP, not {unix}")))
        }
        (None, _) => Ok(()),
    }
}

impl ClientTlsArgs {
    /// The TLS set-up, with `--tls` or a `tls://` address (`forced`).
    pub(super) fn config(&self, forced: bool) -> Option<ClientTlsConfig> {
        super::warn_if_insecure(self.insecure);
        (self.tls || forced).then(|| ClientTlsConfig {
            ca: self.ca.clone(),
            pins: self.pin.clone(),
            insecure: self.insecure,
            cert: self.cert.clone(),
            key: self.key.clone(),
        })
    }
}

impl SendArgs {
    pub(super) fn config(&self) -> Result<SendConfig> {
        let target = Target::from_words(&self.host, self.port.as_ref(), &self.message, Some(8888))?;
        let udp = self.udp || target.udp;
        check_target(&target, udp, self.tls.tls, self.reconnect.reconnect)?;
        let source = match (&self.file, target.rest.is_empty()) {
            (Some(_), false) => {
                return Err(Error::Usage(
                    "--file and message words: one or the other".into(),
                ));
            }
            (Some(path), true) => Source::File(path.clone()),
            (None, true) => Source::Stdin,
            (None, false) => {
                let words: Vec<&[u8]> = target.rest.iter().map(|w| w.as_encoded_bytes()).collect();
                Source::Message(Bytes::from(words.join(&b' ')))
            }
        };
        Ok(SendConfig {
            origin: self
                .origin
                .origin(&target.host, !udp && target.unix.is_none())?,
            host: target.host,
            port: target.port,
            proto: proto(udp),
            unix: target.unix,
            source,
            newline: !self.no_newline,
            timeout: self.timeout,
            udp: SendOptions {
                broadcast: self.broadcast,
                ttl: self.ttl,
                iface: self.iface.as_deref().map(Interface::parse),
            },
            repeat: Repeat {
                count: self.count.unwrap_or(1),
                interval: self.interval,
            },
            reply_timeout: self.reply.then_some(self.reply_timeout),
            tls: self.tls.config(target.tls),
            reconnect: self.reconnect.config(),
        })
    }
}
