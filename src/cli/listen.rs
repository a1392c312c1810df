//! `portier listen`: its flags, checked into a [`ListenConfig`] and an [`OutputConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clap::builder::TypedValueParser;
use ipnet::IpNet;
use portier::access::{AccessList, parse_range};
use portier::address::{Address, AddressError, Transport, UnixName, UnixSocket, host_and_port};
use portier::error::{Error, Result};
use portier::framing::Framing;
use portier::listen::{
    DEFAULT_ECHO_RATE, DEFAULT_MAX_CONNS, DEFAULT_RECV_BUFFER, ListenConfig, Mode, Program,
    Protocols,
};
use portier::sink::web::{DEFAULT_HISTORY, WebConfig};
use portier::sink::{DEFAULT_KEEP, Format, LogFileConfig, OutputConfig, Parse};
use portier::tls::{ServerIdentity, ServerTlsConfig};
use portier::udp_options::Interface;
use portier::unix_socket::FileAccess;

use super::parse_positive_duration;

pub(super) const LISTEN_EXAMPLES: &str = "\
Examples:
  portier listen                     TCP and UDP on port 8888, print what arrives
  portier listen 9000 -u             UDP only, port 9000
  portier listen -t --once           one TCP client, then exit (the seed's server)
  portier listen -f lines            one line per message: TIME PROTO PEER TEXT
  portier listen -f json | jq .text  JSON for scripts
  portier listen --web               and watch it live at http://127.0.0.1:8080
  portier listen 5514 -u --parse syslog   syslog messages as JSON fields (facility, host, app, ...)
  portier listen > capture.bin       every byte, exactly as received
  portier listen -o readings.log     print and keep a log, flushed per message
  portier listen -o r.log --rotate-size 100MiB --keep 10 --gzip   a log that does not fill the disk
  portier listen -o 'readings-%Y%m%d.log'   a file a day
  portier listen -u --to 'mqtt://localhost/sensors/{peer_ip}'   publish each datagram to MQTT
  portier listen -u --to nats://localhost/readings --to-format json   JSON records to NATS
  portier listen --echo              a test partner: everything comes back
  portier listen --chat              a chat room for everyone who connects (TCP)
  portier listen --allow 192.168.1.0/24 --idle-timeout 5m
  portier listen -u --join 239.1.2.3 --iface eth0     a multicast group
  systemd-socket-activate -l 8888 portier listen      serve the sockets handed in (LISTEN_FDS)

Stopping: Ctrl-C or SIGTERM ends it within a second, under any load: what was received is
flushed, datagrams still queued are delivered for 0.3 s, then counted as not read; a second
signal exits at once. Peers' control bytes and bidi characters are shown escaped.";

#[derive(Debug, Args)]
pub(super) struct ListenArgs {
    /// Port to listen on (0 picks a free one, shown on stderr), HOST:PORT, or an address:
    /// tcp://[HOST]:PORT, udp://…, tls://…, unix:/path, unix:@name, unix-dgram:/path
    #[arg(default_value = "8888", value_name = "PORT|ADDRESS", value_parser = parse_listen_at)]
    at: ListenAt,
    /// TCP only
    #[arg(short, long, conflicts_with = "udp")]
    tcp: bool,
    /// UDP only
    #[arg(short, long)]
    pub(super) udp: bool,
    /// Local address or name to listen on [default: all, IPv4 and IPv6]
    #[arg(short, long, value_name = "ADDR")]
    bind: Option<String>,
    /// Exit after the first TCP client disconnects (UDP only: after the first datagram)
    #[arg(long)]
    pub(crate) once: bool,
    /// How data is written to stdout [default: raw; lines with --chat]
    #[arg(short, long, value_enum)]
    format: Option<Format>,
    /// Also append everything received to FILE, in the same format, flushed per message;
    /// reopened on SIGHUP (for logrotate). strftime fields in the name (readings-%Y%m%d.log)
    /// start a new file when the name changes
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// -o: once FILE holds this much (e.g. 100MiB), move it to FILE.1 (FILE.1 to FILE.2, …)
    /// and start anew, between two messages
    #[arg(long, value_name = "SIZE", requires = "output", value_parser = super::parse_size)]
    rotate_size: Option<usize>,
    /// -o: rotate the same way once FILE has been written to for this long (e.g. 1d, 6h)
    #[arg(long, value_name = "SECS", requires = "output", value_parser = parse_positive_duration)]
    rotate_every: Option<Duration>,
    /// -o: rotated files kept (FILE.1 … FILE.N; 5 unless given); older ones are removed.
    /// With a dated name (%Y%m%d), given: the N newest earlier dated files are kept too
    #[arg(long, value_name = "N", requires = "output")]
    keep: Option<usize>,
    /// -o: gzip rotated files (FILE.1.gz, and a dated file once its day is over)
    #[arg(long, requires = "output")]
    gzip: bool,
    /// Send every message back to its sender (TCP: on its connection; UDP: to its source,
    /// never to this listener's own port or an echo-like service's, at most --echo-rate a second)
    #[arg(long, group = "answer")]
    echo: bool,
    /// UDP echo: replies per second to any one address (all its ports), at most; the rest are counted, not sent
    #[arg(long, value_name = "N", default_value_t = DEFAULT_ECHO_RATE, requires = "echo",
          value_parser = clap::value_parser!(u32).range(1..))]
    echo_rate: u32,
    /// Run this program for each TCP client, the connection on its stdin and stdout, and
    /// for each UDP datagram, its answer sent back (e.g. "cat -n"; split on spaces, no
    /// shell). Beyond loopback it needs --allow
    #[arg(
        short = 'e',
        long,
        value_name = "CMD",
        group = "answer",
        group = "program"
    )]
    exec: Option<String>,
    /// Like --exec, through `sh -c` (pipes, redirections)
    #[arg(
        short = 'c',
        long,
        value_name = "CMD",
        group = "answer",
        group = "program"
    )]
    sh_exec: Option<String>,
    /// --exec on a listener reachable beyond this machine without --allow: anyone may run it
    #[arg(long, requires = "program")]
    exec_anywhere: bool,
    /// Relay every TCP client's data to all the other clients (not back to the sender); TCP only
    #[arg(long, group = "answer")]
    broker: bool,
    /// Like --broker, line by line, each line prefixed by its sender's address; TCP only
    #[arg(long, group = "answer")]
    chat: bool,
    /// Accept only peers in this range (e.g. 192.168.1.0/24, ::1/128); repeatable
    #[arg(long, value_name = "CIDR", value_parser = parse_range)]
    allow: Vec<IpNet>,
    /// Refuse peers in this range; repeatable, and wins over --allow
    #[arg(long, value_name = "CIDR", value_parser = parse_range)]
    deny: Vec<IpNet>,
    /// Serve at most N TCP clients at once; more are told the server is full
    #[arg(short, long, value_name = "N", default_value_t = DEFAULT_MAX_CONNS,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    max_conns: usize,
    /// Serve at most N TCP clients at once from any one address (of the --max-conns)
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    max_per_ip: Option<usize>,
    /// Close TCP clients that send nothing, or take nothing we write, for this long (e.g. 30, 5m)
    #[arg(long, value_name = "SECS", value_parser = parse_positive_duration)]
    idle_timeout: Option<Duration>,
    /// TCP keepalive: probe a client idle this long, so one that vanished frees its slot
    #[arg(long, value_name = "SECS", value_parser = parse_positive_duration)]
    keepalive: Option<Duration>,
    /// UDP: join this multicast group (e.g. 239.1.2.3, ff02::1234); repeatable
    #[arg(long, value_name = "GROUP")]
    join: Vec<std::net::IpAddr>,
    /// UDP: the interface to join groups on, a name (eth0) or one of its addresses
    #[arg(long, value_name = "NAME|ADDR", requires = "join")]
    iface: Option<String>,
    /// UDP: receive buffer to ask the kernel for (SO_RCVBUF)
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_RECV_BUFFER)]
    recv_buffer: usize,
    /// Speak TLS (TCP only), with --cert and --key, or --tls-self-signed
    #[arg(long)]
    tls: bool,
    #[command(flatten)]
    unix_file: super::UnixFileArgs,
    /// TLS: the certificate chain (PEM)
    #[arg(
        long,
        value_name = "FILE",
        requires = "key",
        conflicts_with = "tls_self_signed"
    )]
    cert: Option<PathBuf>,
    /// TLS: the certificate's private key (PEM)
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// TLS with a certificate made at start; its fingerprint is printed for clients to --pin
    #[arg(long)]
    tls_self_signed: bool,
    /// TLS: require client certificates issued by this CA (PEM)
    #[arg(long, value_name = "FILE")]
    client_ca: Option<PathBuf>,
    /// Print a summary line on stderr every SECS (clients, messages, bytes, rate, drops), and totals at exit
    #[arg(long, value_name = "SECS", value_parser = parse_positive_duration)]
    stats: Option<Duration>,
    /// Longest line kept whole in lines and json formats (its newline not counted); longer ones come in pieces
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u32).range(4..).map(|n| n as usize))]
    max_line: usize,
    /// TCP: how messages are cut from a stream: lines, nul (NUL-ended), u16be or u32be (a
    /// length first), octet-count (syslog over TCP, RFC 6587); the messages without their framing
    #[arg(long, value_enum, value_name = "FRAMING")]
    frame: Option<FrameArg>,
    /// Parse each message into fields of the JSON record: syslog (RFC 5424 and 3164; one that
    /// does not parse is kept whole, with "syslog_error") [implies -f json]
    #[arg(long, value_enum, value_name = "FORMAT")]
    parse: Option<Parse>,
    /// No event lines (listening, connect, disconnect) on stderr
    #[arg(short, long)]
    quiet: bool,
    /// Serve a live page of what arrives at http://[ADDR:]PORT [default: 127.0.0.1:8080];
    /// beyond loopback it needs the token printed at start, or --web-allow
    #[arg(long, value_name = "[ADDR:]PORT", num_args = 0..=1,
          default_missing_value = "127.0.0.1:8080", value_parser = parse_web_addr)]
    pub(super) web: Option<SocketAddr>,
    /// --web: only these peers may open the page (e.g. 192.168.1.0/24); repeatable
    #[arg(long, value_name = "CIDR", value_parser = parse_range, requires = "web")]
    web_allow: Vec<IpNet>,
    /// --web: messages kept for a browser opened late
    #[arg(long, value_name = "N", default_value_t = DEFAULT_HISTORY, requires = "web")]
    web_history: usize,
    #[command(flatten)]
    pub(super) to: super::to::ToArgs,
}

/// `8080`, `0.0.0.0:8080` or `[::]:8080`; a port alone is on loopback.
fn parse_web_addr(text: &str) -> std::result::Result<SocketAddr, String> {
    match text.parse::<u16>() {
        Ok(port) => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        Err(_) => text
            .parse()
            .map_err(|_| format!("'{text}': give PORT or ADDR:PORT (e.g. 8080, 0.0.0.0:8080)")),
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FrameArg {
    Lines,
    Nul,
    U16be,
    U32be,
    OctetCount,
}

impl ListenArgs {
    pub(super) fn configs(&self) -> Result<(ListenConfig, OutputConfig)> {
        let place = self.place()?;
        let default_format = match (self.chat, self.parse.is_some()) {
            (true, _) => Format::Lines,
            (_, true) => Format::Json,
            _ => Format::Raw,
        };
        let format = self.format.unwrap_or(default_format);
        if self.parse.is_some() && format != Format::Json && !self.to.json() {
            return Err(Error::Usage(
                "--parse fills the fields of JSON records: use -f json (or --to-format json)"
                    .into(),
            ));
        }
        let mut output = OutputConfig::for_stdout(format, self.quiet);
        output.parse = self.parse;
        output.web = self.web.map(|addr| WebConfig {
            addr,
            allow: AccessList::new(self.web_allow.clone(), Vec::new()),
            history: self.web_history,
            tls: None,
        });
        output.file = self.output.as_ref().map(|path| LogFileConfig {
            path: path.clone(),
            rotate_size: self.rotate_size.map(|size| size as u64),
            rotate_every: self.rotate_every,
            keep: self.keep.unwrap_or(DEFAULT_KEEP),
            // Dated files are data a user chose to keep by day: removed only when asked.
            keep_dated: self.keep,
            gzip: self.gzip,
            reopen: None,
        });
        output.to = self.to.config()?;
        let mode = match (self.echo, self.broker, self.chat) {
            (true, _, _) => Mode::Echo,
            (_, true, _) => Mode::Broker,
            (_, _, true) => Mode::Chat,
            _ => Mode::Print,
        };
        // A chat relays whole lines, whatever stdout shows.
        let max_line = self.max_line;
        let framing = match (mode, self.frame) {
            (Mode::Chat, _) => Framing::Lines { max_line },
            (_, Some(frame)) if place.datagram => {
                use clap::ValueEnum;
                let name = frame.to_possible_value().map(|v| v.get_name().to_string());
                return Err(Error::Usage(format!(
                    "--frame {} cuts streams; a datagram is already one message",
                    name.unwrap_or_default()
                )));
            }
            (_, Some(FrameArg::Lines)) => Framing::Lines { max_line },
            (_, Some(FrameArg::Nul)) => Framing::Nul { max_line },
            (_, Some(FrameArg::U16be)) => Framing::LengthPrefixed { width: 2, max_line },
            (_, Some(FrameArg::U32be)) => Framing::LengthPrefixed { width: 4, max_line },
            (_, Some(FrameArg::OctetCount)) => Framing::OctetCount { max_line },
            (_, None) => format.framing(output.terminal, max_line),
        };
        let tls = self.server_tls(place.tls)?;
        // The page speaks TLS with the listener's identity.
        if let Some(web) = &mut output.web {
            web.tls = tls.clone();
        }
        // Broker and chat relay between connected clients: UDP has none.
        let program = self.program(&place)?;
        let relays = matches!(mode, Mode::Broker | Mode::Chat);
        if relays && place.datagram {
            return Err(Error::Usage(
                "--broker and --chat relay between stream clients; drop -u".into(),
            ));
        }
        let protocols = match (place.tcp, place.datagram) {
            (true, _) => Protocols::Tcp,
            (_, true) => Protocols::Udp,
            _ if tls.is_some() || relays => Protocols::Tcp,
            _ => Protocols::Both,
        };
        let listen = ListenConfig {
            port: place.port,
            bind: place.bind,
            unix: place.unix,
            unix_file: self.unix_file.access(),
            protocols,
            once: self.once,
            framing,
            mode,
            access: AccessList::new(self.allow.clone(), self.deny.clone()),
            max_conns: self.max_conns,
            max_per_ip: self.max_per_ip,
            idle_timeout: self.idle_timeout,
            keepalive: self.keepalive,
            echo_rate: self.echo_rate,
            exec: program,
            join: self.join.clone(),
            iface: self.iface.as_deref().map(Interface::parse),
            recv_buffer: self.recv_buffer,
            tls,
            stats: self.stats,
        };
        Ok((listen, output))
    }

    /// The program of `--exec` or `--sh-exec`, refused on a listener anyone
    /// can reach unless `--allow` says who may run it (or `--exec-anywhere`).
    fn program(&self, place: &Place) -> Result<Option<Program>> {
        let Some(program) = super::program(self.exec.as_deref(), self.sh_exec.as_deref())? else {
            return Ok(None);
        };
        if place.unix.is_none()
            && !super::loopback_only(place.bind.as_deref())
            && self.allow.is_empty()
            && !self.exec_anywhere
        {
            return Err(Error::Usage(
                "--exec runs a program for every client: on a listener reachable beyond this machine, say who may with --allow CIDR (or -b 127.0.0.1, or --exec-anywhere)".into(),
            ));
        }
        Ok(Some(program))
    }

    /// Where to listen, from the port or the address, with -b, -t and -u.
    fn place(&self) -> Result<Place> {
        let flags_too = || {
            let given = self.bind.is_some() || self.tcp || self.udp;
            match given {
                true => Err(Error::Usage(
                    "the address names the protocol and host: drop -b, -t and -u".into(),
                )),
                false => Ok(()),
            }
        };
        let unix_file = self.unix_file.access();
        let place = match &self.at {
            ListenAt::Port { host: Some(_), .. } if self.bind.is_some() => {
                return Err(Error::Usage(
                    "HOST:PORT and -b both name the host: give it once".into(),
                ));
            }
            ListenAt::Port { port, host } => Place {
                port: *port,
                bind: host.clone().or_else(|| self.bind.clone()),
                unix: None,
                tcp: self.tcp,
                datagram: self.udp,
                tls: false,
            },
            ListenAt::Address(Address::Inet {
                transport,
                host,
                port,
            }) => {
                flags_too()?;
                let datagram = *transport == Transport::Udp;
                Place {
                    port: *port,
                    bind: (!host.is_empty()).then(|| host.clone()),
                    unix: None,
                    tcp: !datagram,
                    datagram,
                    tls: *transport == Transport::Tls,
                }
            }
            ListenAt::Address(Address::Unix { datagram, name }) => {
                flags_too()?;
                if matches!(name, UnixName::Abstract(_)) && unix_file != FileAccess::default() {
                    return Err(Error::Usage(
                        "--mode and --group set a socket file's; unix:@name has no file".into(),
                    ));
                }
                Place {
                    port: 0,
                    bind: None,
                    unix: Some(UnixSocket {
                        datagram: *datagram,
                        name: name.clone(),
                    }),
                    tcp: !datagram,
                    datagram: *datagram,
                    tls: false,
                }
            }
        };
        if place.unix.is_none() && unix_file != FileAccess::default() {
            return Err(Error::Usage(
                "--mode and --group are for a unix:/path socket file".into(),
            ));
        }
        Ok(place)
    }

    fn server_tls(&self, by_address: bool) -> Result<Option<ServerTlsConfig>> {
        let identity = match (&self.cert, &self.key, self.tls_self_signed) {
            (Some(cert), Some(key), _) => ServerIdentity::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            (_, _, true) => ServerIdentity::SelfSigned,
            _ if self.tls || by_address || self.client_ca.is_some() => {
                return Err(Error::Usage(
                    "TLS needs a certificate: --cert FILE --key FILE, or --tls-self-signed".into(),
                ));
            }
            _ => return Ok(None),
        };
        Ok(Some(ServerTlsConfig {
            identity,
            client_ca: self.client_ca.clone(),
        }))
    }
}

/// Where `listen` listens, as given: a port, or an address.
#[derive(Debug, Clone)]
enum ListenAt {
    /// A port, and a host to bind from `HOST:PORT` (none from `:PORT`):
    /// TCP and UDP unless -t or -u says otherwise.
    Port {
        port: u16,
        host: Option<String>,
    },
    Address(Address),
}

fn parse_listen_at(text: &str) -> std::result::Result<ListenAt, String> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse() {
            Ok(port) => Ok(ListenAt::Port { port, host: None }),
            Err(_) => Err(format!("'{text}' is not a port (0-65535)")),
        };
    }
    if let Some(pair) = host_and_port(text).filter(|_| !text.contains("://")) {
        let (host, port) = pair.map_err(|e| e.to_string())?;
        let host = (!host.is_empty()).then_some(host);
        return Ok(ListenAt::Port { port, host });
    }
    text.parse()
        .map(ListenAt::Address)
        .map_err(|e: AddressError| e.to_string())
}

/// Where to listen, checked.
struct Place {
    port: u16,
    bind: Option<String>,
    unix: Option<UnixSocket>,
    /// Streams only (TCP, or a UNIX stream).
    tcp: bool,
    /// Datagrams only (UDP, or UNIX datagrams).
    datagram: bool,
    /// The address is `tls://`.
    tls: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Listen {
        #[command(flatten)]
        args: ListenArgs,
    }

    fn place(args: &[&str]) -> Result<Place> {
        let words = std::iter::once("listen").chain(args.iter().copied());
        Listen::try_parse_from(words)
            .map_err(|e| Error::Usage(e.to_string()))?
            .args
            .place()
    }

    #[test]
    fn host_colon_port_binds_that_host_on_both_protocols() {
        let at = place(&["127.0.0.1:9000"]).unwrap();
        assert_eq!((at.port, at.bind.as_deref()), (9000, Some("127.0.0.1")));
        assert!(!at.tcp && !at.datagram, "TCP and UDP both");
        let at = place(&["-u", "[::1]:0"]).unwrap();
        assert_eq!(
            (at.port, at.bind.as_deref(), at.datagram),
            (0, Some("::1"), true)
        );
        let at = place(&[":9000", "-b", "127.0.0.1"]).unwrap();
        assert_eq!((at.port, at.bind.as_deref()), (9000, Some("127.0.0.1")));
        let twice = place(&["127.0.0.1:9000", "-b", "::1"]);
        assert!(twice.is_err_and(|e| e.to_string().contains("give it once")));
        let wrong = place(&["127.0.0.1:70000"]).map(|_| ()).unwrap_err();
        assert!(
            wrong.to_string().contains("'70000' is not a port"),
            "{wrong}"
        );
    }
}
