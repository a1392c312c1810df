//! `portier connect`: its flags, as a [`ConnectConfig`].

use std::time::Duration;

use clap::Args;
use portier::client::ConnectConfig;
use portier::error::{Error, Result};

use super::send::ClientTlsArgs;
use super::{Target, parse_duration, program, proto};

pub(super) const CONNECT_EXAMPLES: &str = "\
Examples:
  portier connect 127.0.0.1 8888     type lines, see the answers (like nc)
  portier connect -u 127.0.0.1 8888  the same over UDP
  portier connect host 8888 --exec \"tee log\"   a program talks to the peer";

#[derive(Debug, Args)]
pub(super) struct ConnectArgs {
    /// Host: a name, an IPv4 or an IPv6 address; or HOST:PORT, or an address: tcp://HOST:PORT,
    /// udp://HOST:PORT, tls://HOST:PORT, unix:/path, unix:@name (then no PORT follows)
    host: String,
    /// Port (1-65535)
    port: Option<std::ffi::OsString>,
    /// Use UDP (one datagram per line of stdin)
    #[arg(short, long)]
    udp: bool,
    /// Give up connecting after this long; UDP: wait this long for replies
    /// after stdin ends [UDP default: 2s]
    #[arg(short = 'w', long, value_name = "SECS", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// TCP: run this program with the connection on its stdin and stdout (split on spaces, no shell)
    #[arg(short = 'e', long, value_name = "CMD", conflicts_with_all = ["udp", "sh_exec", "reconnect"])]
    exec: Option<String>,
    /// Like --exec, through `sh -c`
    #[arg(short = 'c', long, value_name = "CMD", conflicts_with_all = ["udp", "reconnect"])]
    sh_exec: Option<String>,
    #[command(flatten)]
    reconnect: super::send::ReconnectArgs,
    #[command(flatten)]
    tls: ClientTlsArgs,
    #[command(flatten)]
    origin: super::OriginArgs,
}

impl ConnectArgs {
    pub(super) fn config(&self) -> Result<ConnectConfig> {
        let target = Target::from_words(&self.host, self.port.as_ref(), &[], None)?;
        if let Some(word) = target.rest.first() {
            let word = word.to_string_lossy();
            return Err(Error::Usage(format!(
                "'{word}' after an address: connect takes no more words"
            )));
        }
        let udp = self.udp || target.udp;
        super::send::check_target(&target, udp, self.tls.tls, self.reconnect.reconnect)?;
        Ok(ConnectConfig {
            origin: self
                .origin
                .origin(&target.host, !udp && target.unix.is_none())?,
            host: target.host,
            port: target.port,
            proto: proto(udp),
            unix: target.unix,
            reconnect: self.reconnect.config(),
            timeout: self.timeout,
            tls: self.tls.config(target.tls),
            exec: program(self.exec.as_deref(), self.sh_exec.as_deref())?,
        })
    }
}
