//! `portier relay`: its flags, as a [`RelayConfig`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clap::builder::TypedValueParser;
use ipnet::IpNet;
use portier::access::{AccessList, parse_range};
use portier::address::{Address, Transport};
use portier::client::Origin;
use portier::error::{Error, Result};
use portier::relay::{EventFormat, RelayConfig};
use portier::tls::{ClientTlsConfig, Fingerprint, ServerIdentity, ServerTlsConfig};

use super::parse_positive_duration;

pub(super) const RELAY_EXAMPLES: &str = "\
Examples:
  portier relay tcp://:8080 tcp://10.0.0.5:80             forward a port
  portier relay tcp://127.0.0.1:2375 unix:/var/run/docker.sock   a UNIX socket on TCP
  portier relay unix:/tmp/db.sock tcp://db:5432           a TCP service as a UNIX socket
  portier relay udp://:5353 udp://192.168.1.1:53          UDP, a session per client
  portier relay tls://:8443 tcp://127.0.0.1:8080 --cert c.pem --key k.pem   TLS in front
  portier relay tcp://:9000 tls://collector:9443 --ca ca.pem                TLS onward";

#[derive(Debug, Args)]
pub(super) struct RelayArgs {
    /// Where clients come in: tcp://[HOST]:PORT, udp://, tls://, unix:/path or unix:@name
    from: Address,
    /// Where each client goes: tcp://HOST:PORT, udp://, tls://, unix:/path or unix:@name
    to: Address,
    /// Accept only clients in this range (e.g. 192.168.1.0/24); repeatable
    #[arg(long, value_name = "CIDR", value_parser = parse_range)]
    allow: Vec<IpNet>,
    /// Refuse clients in this range; repeatable, and wins over --allow
    #[arg(long, value_name = "CIDR", value_parser = parse_range)]
    deny: Vec<IpNet>,
    /// Relay at most N clients (UDP: sessions) at once; more are turned away and counted
    #[arg(short, long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    max_conns: usize,
    /// Stream clients: at most N at once from any one address (of the -m)
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    max_per_ip: Option<usize>,
    /// Close a connection, or end a UDP session, after this long with nothing moving [UDP default: 60s]
    #[arg(long, value_name = "SECS", value_parser = parse_positive_duration)]
    idle_timeout: Option<Duration>,
    /// UDP: at most N replies a second to each client (burst as many), so a spoofed source's
    /// victim gets no more than that; the rest are dropped and counted [default: no limit]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    reply_rate: Option<u32>,
    /// FROM tls://: the certificate chain (PEM)
    #[arg(
        long,
        value_name = "FILE",
        requires = "key",
        conflicts_with = "self_signed"
    )]
    cert: Option<PathBuf>,
    /// FROM tls://: the certificate's private key (PEM)
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// FROM tls://: a certificate made at start; its fingerprint is printed for clients to pin
    #[arg(long)]
    self_signed: bool,
    /// TO tls://: trust this CA (PEM); a server's own self-signed certificate works too
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// TO tls://: accept exactly the certificate with this SHA-256 fingerprint
    #[arg(long, value_name = "SHA256", value_parser = Fingerprint::parse)]
    pin: Vec<Fingerprint>,
    /// TO tls://: check nothing about the server (you are warned)
    #[arg(long, conflicts_with_all = ["ca", "pin"])]
    insecure: bool,
    #[command(flatten)]
    unix_file: super::UnixFileArgs,
    /// Say the totals so far this often (e.g. 10s)
    #[arg(long, value_name = "SECS", value_parser = parse_positive_duration)]
    stats: Option<Duration>,
    /// Events as lines on stderr (text), or one JSON object per line on stdout (json)
    #[arg(short, long, value_enum, default_value = "text")]
    format: EventsArg,
    #[command(flatten)]
    origin: super::OriginArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum EventsArg {
    Text,
    Json,
}

impl RelayArgs {
    pub(super) fn config(&self) -> Result<RelayConfig> {
        let identity = match (&self.cert, &self.key, self.self_signed) {
            (Some(cert), Some(key), _) => Some(ServerIdentity::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (_, _, true) => Some(ServerIdentity::SelfSigned),
            _ => None,
        };
        let tls_from = self.from.to_string().starts_with("tls://");
        if identity.is_some() && !tls_from {
            return Err(Error::Usage(
                "--cert, --key and --self-signed are for a tls:// FROM".into(),
            ));
        }
        Ok(RelayConfig {
            from: self.from.clone(),
            to: self.to.clone(),
            access: AccessList::new(self.allow.clone(), self.deny.clone()),
            max_conns: self.max_conns,
            max_per_ip: self.max_per_ip,
            idle_timeout: self.idle_timeout,
            reply_rate: self.reply_rate,
            server_tls: identity.map(|identity| ServerTlsConfig {
                identity,
                client_ca: None,
            }),
            client_tls: ClientTlsConfig {
                insecure: super::warn_if_insecure(self.insecure),
                ca: self.ca.clone(),
                pins: self.pin.clone(),
                cert: None,
                key: None,
            },
            unix_file: self.unix_file.access(),
            stats: self.stats,
            events: match self.format {
                EventsArg::Text => EventFormat::Text,
                EventsArg::Json => EventFormat::Json,
            },
            origin: match &self.to {
                Address::Inet {
                    transport: Transport::Tcp | Transport::Tls,
                    host,
                    ..
                } => self.origin.origin(host, true)?,
                Address::Inet { .. } => self.origin.origin("", false)?,
                Address::Unix { .. } if self.origin.proxy.is_some() => {
                    return Err(Error::Usage("--proxy is for a tcp:// or tls:// TO".into()));
                }
                Address::Unix { .. } => Origin {
                    keepalive: self.origin.keepalive,
                    ..Origin::default()
                },
            },
        })
    }
}
