//! `portier check`: its flags, as a [`CheckConfig`] and a [`CheckOutput`].

use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use portier::client::{CheckConfig, CheckOutput, parse_ports};
use portier::error::{Error, Result};

use super::{parse_positive_duration, proto};

pub(super) const CHECK_EXAMPLES: &str = "\
Examples:
  portier check pi.local 22             is SSH open? (exit 0 if so, 1 if not)
  portier check 127.0.0.1 1-1024 --open the open ones among the first 1024
  portier check ::1 22,80,8000-8100     lists and ranges, IPv6
  portier check -u 127.0.0.1 53         UDP: open on an answer, closed on ICMP, else open|filtered
  portier check db:5432 --wait 30s      wait until the database accepts connections
  portier check host 1-65535 --json     one JSON object per port, for scripts";

#[derive(Debug, Args)]
pub(super) struct CheckArgs {
    /// Host: a name, an IPv4 or an IPv6 address; or HOST:PORT
    host: String,
    /// Ports: a list and ranges, e.g. 22,80,8000-8100
    #[arg(value_name = "PORTS", value_parser = parse_ports)]
    ports: Vec<Vec<u16>>,
    /// Use UDP (a probe datagram per port)
    #[arg(short, long)]
    udp: bool,
    /// How long each port may take to answer
    #[arg(short = 'w', long, value_name = "SECS", default_value = "1",
          value_parser = parse_positive_duration)]
    timeout: Duration,
    /// Ports checked at once
    #[arg(short = 'c', long, value_name = "N", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    concurrency: u32,
    /// UDP: the probe's bytes (empty by default)
    #[arg(long, value_name = "TEXT", requires = "udp")]
    payload: Option<String>,
    /// Check again until every port is open, for this long at most (e.g. 30s)
    #[arg(long, value_name = "SECS", value_parser = parse_positive_duration)]
    wait: Option<Duration>,
    /// One JSON object per port
    #[arg(long)]
    json: bool,
    /// Show only the open ports
    #[arg(long)]
    open: bool,
}

impl CheckArgs {
    pub(super) fn configs(&self) -> Result<(CheckConfig, CheckOutput)> {
        let (host, mut ports) = match super::client_host_port(&self.host) {
            Some(pair) => pair.map(|(host, port)| (host, vec![port]))?,
            None => (self.host.clone(), Vec::new()),
        };
        ports.extend(self.ports.concat());
        if ports.is_empty() {
            return Err(Error::Usage(
                "which ports? give them after the host (22,80,8000-8100) or as HOST:PORT".into(),
            ));
        }
        let config = CheckConfig {
            host,
            ports,
            proto: proto(self.udp),
            timeout: self.timeout,
            concurrency: self.concurrency as usize,
            payload: Bytes::from(self.payload.clone().unwrap_or_default()),
            wait: self.wait,
        };
        let output = CheckOutput {
            json: self.json,
            open_only: self.open,
        };
        Ok((config, output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Check {
        #[command(flatten)]
        args: CheckArgs,
    }

    fn ports(words: &[&str]) -> Result<Vec<u16>> {
        let words = std::iter::once("check").chain(words.iter().copied());
        let args = Check::try_parse_from(words).map_err(|e| Error::Usage(e.to_string()))?;
        Ok(args.args.configs()?.0.ports)
    }

    #[test]
    fn ports_come_after_the_host_or_with_it() {
        assert_eq!(ports(&["db:5432"]).unwrap(), [5432]);
        assert_eq!(ports(&["db:5432", "80,81"]).unwrap(), [5432, 80, 81]);
        assert_eq!(ports(&["db", "22"]).unwrap(), [22]);
        assert!(ports(&["db"]).is_err_and(|e| e.to_string().contains("which ports?")));
    }
}
