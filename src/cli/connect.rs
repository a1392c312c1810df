//! `portier connect`: its flags, as a [`ConnectConfig`].

use std::time::Duration;

use clap::Args;
use portier::client::ConnectConfig;

use super::send::ClientTlsArgs;
use super::{parse_duration, proto};

pub(super) const CONNECT_EXAMPLES: &str = "\
Examples:
  portier connect 127.0.0.1 8888     type lines, see the answers (like nc)
  portier connect -u 127.0.0.1 8888  the same over UDP";

#[derive(Debug, Args)]
pub(super) struct ConnectArgs {
    /// Host: a name, an IPv4 or an IPv6 address
    host: String,
    /// Port (1-65535)
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// Use UDP (one datagram per line of stdin)
    #[arg(short, long)]
    udp: bool,
    /// Give up connecting after this long; UDP: wait this long for replies
    /// after stdin ends [UDP default: 2s]
    #[arg(short = 'w', long, value_name = "SECS", value_parser = parse_duration)]
    timeout: Option<Duration>,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

impl ConnectArgs {
    pub(super) fn config(&self) -> ConnectConfig {
        ConnectConfig {
            host: self.host.clone(),
            port: self.port,
            proto: proto(self.udp),
            timeout: self.timeout,
            tls: self.tls.config(),
        }
    }
}
