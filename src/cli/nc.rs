//! `portier nc`: OpenBSD nc's flags (and ncat's -e, -c, --send-only,
//! --recv-only, -C), as an [`NcConfig`], so that `alias nc='portier nc'` keeps
//! scripts working.

use std::net::IpAddr;
use std::time::Duration;

use clap::Args;
use portier::client::parse_ports;
use portier::client::{Family, Origin};
use portier::error::{Error, Result};
use portier::nc::{Ending, NcConfig, NcMode};

use super::{client_port, loopback_only, parse_duration, program, proto};

pub(super) const NC_EXAMPLES: &str = "\
Examples:
  echo hi | portier nc -N host 8888   send, close our side, print the answer
  portier nc -l 8888 > file           receive one client into a file
  portier nc -lk 8888                 one client after another
  portier nc -u -l 8888               UDP: the first sender is the peer
  portier nc -w 2 host 8888 < file    give up after 2 s of silence once the file is sent
  portier nc -zv host 20-25           which ports answer (exit 0 if any does)
End of file (the README's table): stdin's end sends nothing more and keeps the
connection open (-N closes our side, -q N quits N s later, -w N quits after
N s of silence); the peer's end quits at once.";

#[derive(Debug, Args)]
pub(super) struct NcArgs {
    /// Listen for a client instead of connecting
    #[arg(short = 'l')]
    listen: bool,
    /// With -l: the port to listen on; otherwise the local port to connect from
    #[arg(short = 'p', value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// With -l: after a client leaves, wait for the next
    #[arg(short = 'k', requires = "listen")]
    keep: bool,
    /// Use UDP
    #[arg(short = 'u')]
    udp: bool,
    /// Say on stderr what happens (nc's lines: "Connection to ... succeeded!")
    #[arg(short = 'v')]
    verbose: bool,
    /// HOST must be a numeric address: no name lookup
    #[arg(short = 'n')]
    numeric: bool,
    /// Give up connecting after SECS; once stdin has ended, quit after SECS of silence
    #[arg(short = 'w', value_name = "SECS", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Quit SECS after stdin ends (0: at once; negative: never, the default)
    #[arg(short = 'q', value_name = "SECS", allow_negative_numbers = true)]
    quit: Option<f64>,
    /// Close our side (send a FIN) once stdin has ended
    #[arg(short = 'N')]
    half_close: bool,
    /// Do not read stdin
    #[arg(short = 'd', visible_alias = "recv-only")]
    no_stdin: bool,
    /// Only send: what the peer sends is not written, and stdin's end ends the session
    #[arg(long, conflicts_with = "no_stdin")]
    send_only: bool,
    /// Only report which ports answer (exit 0 if any does); ports as 20-25 or 22,80
    #[arg(short = 'z', conflicts_with_all = ["listen", "program"])]
    scan: bool,
    /// IPv4 only
    #[arg(short = '4', conflicts_with = "ipv6")]
    ipv4: bool,
    /// IPv6 only
    #[arg(short = '6')]
    ipv6: bool,
    /// The local address to connect from, or with -l to listen on
    #[arg(short = 's', value_name = "ADDR")]
    source: Option<IpAddr>,
    /// TCP: run this program with the connection on its stdin and stdout (split on spaces, no shell)
    #[arg(
        short = 'e',
        long,
        value_name = "CMD",
        group = "program",
        conflicts_with = "udp"
    )]
    exec: Option<String>,
    /// Like --exec, through `sh -c`
    #[arg(
        short = 'c',
        long,
        value_name = "CMD",
        group = "program",
        conflicts_with = "udp"
    )]
    sh_exec: Option<String>,
    /// -l with --exec on an address beyond this machine: anyone who reaches it runs the program
    #[arg(long, requires = "program")]
    exec_anywhere: bool,
    /// Send each LF of stdin as CRLF
    #[arg(short = 'C', long)]
    crlf: bool,
    /// HOST PORT; with -l, [HOST] PORT; with -z, HOST PORTS...
    #[arg(value_name = "HOST/PORT")]
    words: Vec<String>,
}

impl NcArgs {
    pub(super) fn config(&self) -> Result<NcConfig> {
        let program = program(self.exec.as_deref(), self.sh_exec.as_deref())?;
        let mode = self.mode()?;
        if let (Some(_), NcMode::Listen { host, .. }) = (&program, &mode) {
            let bind = host.clone().or(self.source.map(|ip| ip.to_string()));
            if !loopback_only(bind.as_deref()) && !self.exec_anywhere {
                return Err(Error::Usage(
                    "-e runs a program for every client: listen on 127.0.0.1 (nc -l 127.0.0.1 PORT), or say --exec-anywhere".into(),
                ));
            }
        }
        let family = match (self.ipv4, self.ipv6) {
            (true, _) => Some(Family::V4),
            (_, true) => Some(Family::V6),
            _ => None,
        };
        let quit_after_stdin = match self.quit {
            Some(seconds) if seconds >= 0.0 => Some(
                Duration::try_from_secs_f64(seconds)
                    .map_err(|e| Error::Usage(format!("-q {seconds}: {e}")))?,
            ),
            _ => None,
        };
        Ok(NcConfig {
            mode,
            proto: proto(self.udp),
            origin: Origin {
                family,
                ip: self.source,
                port: self.port.filter(|_| !self.listen),
                ..Origin::default()
            },
            ending: Ending {
                read_stdin: !self.no_stdin,
                write_stdout: !self.send_only,
                half_close: self.half_close,
                quit_after_stdin,
                idle: self.timeout,
            },
            crlf: self.crlf,
            program,
            verbose: self.verbose,
        })
    }

    /// The positional words, read as nc reads them.
    fn mode(&self) -> Result<NcMode> {
        let usage = |line: &str| Err(Error::Usage(line.into()));
        let words: Vec<&str> = self.words.iter().map(String::as_str).collect();
        if self.scan {
            let [host, ports @ ..] = words.as_slice() else {
                return usage("-z needs a host and ports: portier nc -z HOST 20-25");
            };
            let mut all = Vec::new();
            for spec in ports {
                all.extend(parse_ports(spec).map_err(Error::Usage)?);
            }
            if all.is_empty() {
                return usage("-z needs ports after the host: portier nc -z HOST 20-25");
            }
            return Ok(NcMode::Scan {
                host: self.host(host)?,
                ports: all,
            });
        }
        if self.listen {
            let (host, port) = match (words.as_slice(), self.port) {
                ([], Some(port)) => (None, port),
                ([host], Some(port)) => (Some(*host), port),
                ([port], None) => (None, client_port(port)?),
                ([host, port], None) => (Some(*host), client_port(port)?),
                _ => return usage("-l takes a port: portier nc -l [HOST] PORT (or -l -p PORT)"),
            };
            return Ok(NcMode::Listen {
                host: host.map(|host| self.host(host)).transpose()?,
                port,
                keep: self.keep,
            });
        }
        match words.as_slice() {
            [host, port] => Ok(NcMode::Connect {
                host: self.host(host)?,
                port: client_port(port)?,
            }),
            _ => usage("portier nc HOST PORT, or -l PORT to listen, or -z HOST PORTS to check"),
        }
    }

    /// `-n`: only numeric addresses.
    fn host(&self, host: &str) -> Result<String> {
        let numeric = host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok();
        match self.numeric && !numeric {
            true => Err(Error::Usage(format!(
                "-n: '{host}' is not a numeric address, and -n looks up no names"
            ))),
            false => Ok(host.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Nc {
        #[command(flatten)]
        args: NcArgs,
    }

    fn config(line: &str) -> Result<NcConfig> {
        let words = std::iter::once("nc").chain(line.split_whitespace());
        Nc::try_parse_from(words)
            .map_err(|e| Error::Usage(e.to_string()))?
            .args
            .config()
    }

    fn listen(host: Option<&str>, port: u16, keep: bool) -> NcMode {
        let host = host.map(String::from);
        NcMode::Listen { host, port, keep }
    }

    #[test]
    fn every_way_nc_is_told_to_listen() {
        assert_eq!(config("-l 8888").unwrap().mode, listen(None, 8888, false));
        assert_eq!(config("-lp 8888").unwrap().mode, listen(None, 8888, false));
        assert_eq!(
            config("-l -p 8888").unwrap().mode,
            listen(None, 8888, false)
        );
        assert_eq!(config("-lk 8888").unwrap().mode, listen(None, 8888, true));
        let on_loopback = listen(Some("127.0.0.1"), 8888, false);
        assert_eq!(config("-l 127.0.0.1 8888").unwrap().mode, on_loopback);
        assert!(config("-l").is_err());
        assert!(config("-k host 8888").is_err(), "-k without -l");
    }

    #[test]
    fn a_client_takes_host_port_and_its_source_port() {
        let parse = config;
        let config = parse("-p 4000 -s 127.0.0.1 -4 host 80").unwrap();
        assert_eq!(
            config.mode,
            NcMode::Connect {
                host: "host".into(),
                port: 80
            }
        );
        assert_eq!(config.origin.port, Some(4000));
        assert_eq!(config.origin.family, Some(Family::V4));
        assert!(parse("host").is_err());
        assert!(parse("host 0").is_err());
        assert!(parse("-n localhost 80").is_err());
        assert!(parse("-n ::1 80").is_ok());
    }

    #[test]
    fn scan_ports_are_lists_and_ranges() {
        let parse = config;
        let config = parse("-zv host 20-22 80,443").unwrap();
        assert_eq!(
            config.mode,
            NcMode::Scan {
                host: "host".into(),
                ports: vec![20, 21, 22, 80, 443]
            }
        );
        assert!(parse("-z host").is_err());
    }

    #[test]
    fn end_of_file_flags() {
        let ending = config("-N -q 1 -w 2 host 80").unwrap().ending;
        assert!(ending.half_close && ending.read_stdin && ending.write_stdout);
        assert_eq!(ending.quit_after_stdin, Some(Duration::from_secs(1)));
        assert_eq!(ending.idle, Some(Duration::from_secs(2)));
        assert_eq!(config("-q -1 h 80").unwrap().ending.quit_after_stdin, None);
        assert!(!config("-d h 80").unwrap().ending.read_stdin);
        assert!(!config("--recv-only h 80").unwrap().ending.read_stdin);
        assert!(!config("--send-only h 80").unwrap().ending.write_stdout);
    }

    #[test]
    fn exec_on_a_listener_beyond_loopback_must_be_asked_for() {
        assert!(config("-l 8888 -e cat").is_err());
        assert!(config("-l 127.0.0.1 8888 -e cat").is_ok());
        assert!(config("-s 127.0.0.1 -l 8888 -e cat").is_ok());
        assert!(config("-l 8888 -c cat --exec-anywhere").is_ok());
        assert!(config("-u -l 8888 -e cat").is_err(), "-e is TCP only");
    }
}
