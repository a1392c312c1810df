//! The command line: clap definitions, and their translation into checked
//! library configs. Nothing here does network work.

use std::ffi::OsString;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use clap::builder::{Resettable, TypedValueParser};
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use ipnet::IpNet;

use crate::access::{AccessList, parse_range};
use crate::connect::{self, ConnectConfig};
use crate::datagram::{Interface, SendOptions};
use crate::error::{Error, Result};
use crate::framing::Framing;
use crate::listen::{
    self, DEFAULT_ECHO_RATE, DEFAULT_MAX_CONNS, DEFAULT_RECV_BUFFER, ListenConfig, Mode, Protocols,
};
use crate::message::Proto;
use crate::send::{self, Repeat, SendConfig, Source};
use crate::sink::{Format, OutputConfig};
use crate::tls::{ClientTlsConfig, Fingerprint, ServerIdentity, ServerTlsConfig};

const LISTEN_EXAMPLES: &str = "\
Examples:
  portier listen                     TCP and UDP on port 8888, print what arrives
  portier listen 9000 -u             UDP only, port 9000
  portier listen -t --once           one TCP client, then exit (the seed's server)
  portier listen -f lines            one line per message: TIME PROTO PEER TEXT
  portier listen -f json | jq .text  JSON for scripts
  portier listen > capture.bin       every byte, exactly as received
  portier listen -o readings.log     print and keep a log, flushed per message
  portier listen --echo              a test partner: everything comes back
  portier listen -t --chat           a chat room for everyone who connects
  portier listen --allow 192.168.1.0/24 --idle-timeout 5m
  portier listen -u --join 239.1.2.3 --iface eth0     a multicast group";

const SEND_EXAMPLES: &str = "\
Examples:
  portier send                           stdin to 127.0.0.1:8888 over TCP
  portier send 127.0.0.1 8888 abcdefg!   the seed's client: sends \"abcdefg!\\n\"
  portier send -u pi.local 8888 22.5C    one UDP datagram
  sensor | portier send -u pi.local 8888 one datagram per line
  portier send ::1 8888 --file photo.jpg a file over TCP, IPv6
  portier send -u --broadcast 192.168.1.255 8888 hello   every host on the LAN
  portier send -u 239.1.2.3 8888 --ttl 1 hello           a multicast group
  portier send -u --reply --count 5 --interval 0.2 pi.local 7 ping   a UDP ping";

const CONNECT_EXAMPLES: &str = "\
Examples:
  portier connect 127.0.0.1 8888     type lines, see the answers (like nc)
  portier connect -u 127.0.0.1 8888  the same over UDP";

/// Send and receive messages over TCP and UDP: a friendlier, safer netcat.
#[derive(Debug, Parser)]
#[command(name = "portier", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive on a port (TCP and UDP) and print what arrives
    #[command(after_help = LISTEN_EXAMPLES)]
    Listen(Deferred<ListenArgs>),
    /// Send a message, stdin or a file to a host, then wait for the peer to close
    #[command(after_help = SEND_EXAMPLES)]
    Send(Deferred<SendArgs>),
    /// Talk both ways: stdin to the peer, the peer to stdout (like `nc HOST PORT`)
    #[command(after_help = CONNECT_EXAMPLES)]
    Connect(Deferred<ConnectArgs>),
    /// Print a shell completion script (e.g. `portier completions bash > /etc/bash_completion.d/portier`)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (portier.1, portier-listen.1, ...) into DIR
    #[command(hide = true)]
    Man { dir: PathBuf },
}

/// A subcommand's arguments, added to the parser only when that subcommand is
/// the one used (`Command::defer`). The derive builds every subcommand's
/// arguments at every start: 100 KiB of code run before a listener idles,
/// resident for as long as it runs (BENCHMARKS.md, idle RSS).
#[derive(Debug)]
pub struct Deferred<T>(pub T);

impl<T: Args> Args for Deferred<T> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.defer(|cmd| keeping_about(cmd, T::augment_args))
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        cmd.defer(|cmd| keeping_about(cmd, T::augment_args_for_update))
    }
    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }
}

/// Adds the arguments, keeping the subcommand's own about text: deferred, they
/// come after it, and the doc comment of a struct flattened among them (the
/// TLS options) would replace it.
fn keeping_about(cmd: clap::Command, add: fn(clap::Command) -> clap::Command) -> clap::Command {
    let about = cmd.get_about().cloned();
    let long_about = cmd.get_long_about().cloned();
    add(cmd)
        .about(Resettable::from(about))
        .long_about(Resettable::from(long_about))
}

impl<T: FromArgMatches> FromArgMatches for Deferred<T> {
    fn from_arg_matches(matches: &ArgMatches) -> std::result::Result<Self, clap::Error> {
        T::from_arg_matches(matches).map(Self)
    }
    fn update_from_arg_matches(
        &mut self,
        matches: &ArgMatches,
    ) -> std::result::Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Port to listen on; 0 picks a free one (shown on stderr)
    #[arg(default_value_t = 8888)]
    pub port: u16,
    /// TCP only
    #[arg(short, long, conflicts_with = "udp")]
    pub tcp: bool,
    /// UDP only
    #[arg(short, long)]
    pub udp: bool,
    /// Local address or name to listen on [default: all, IPv4 and IPv6]
    #[arg(short, long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Exit after the first TCP client disconnects (UDP only: after the first datagram)
    #[arg(long)]
    pub once: bool,
    /// How data is written to stdout [default: raw; lines with --chat]
    #[arg(short, long, value_enum)]
    pub format: Option<Format>,
    /// Also append everything received to FILE, in the same format, flushed per message
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Send every message back to its sender (TCP: on its connection; UDP: to its source,
    /// never to this listener's own port or an echo-like service's, at most --echo-rate a second)
    #[arg(long, group = "mode")]
    pub echo: bool,
    /// UDP echo: replies per second to any one peer, at most; the rest are counted, not sent
    #[arg(long, value_name = "N", default_value_t = DEFAULT_ECHO_RATE, requires = "echo",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub echo_rate: u32,
    /// Relay every TCP client's data to all the other clients (not back to the sender); TCP only
    #[arg(long, group = "mode")]
    pub broker: bool,
    /// Like --broker, line by line, each line prefixed by its sender's address; TCP only
    #[arg(long, group = "mode")]
    pub chat: bool,
    /// Accept only peers in this range (e.g. 192.168.1.0/24, ::1/128); repeatable
    #[arg(long, value_name = "CIDR", value_parser = parse_range)]
    pub allow: Vec<IpNet>,
    /// Refuse peers in this range; repeatable, and wins over --allow
    #[arg(long, value_name = "CIDR", value_parser = parse_range)]
    pub deny: Vec<IpNet>,
    /// Serve at most N TCP clients at once; more are told the server is full
    #[arg(short, long, value_name = "N", default_value_t = DEFAULT_MAX_CONNS,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_conns: usize,
    /// Close TCP clients that send nothing, or take nothing we write, for this long (e.g. 30, 5m)
    #[arg(long, value_name = "SECS", value_parser = parse_positive_duration)]
    pub idle_timeout: Option<Duration>,
    /// UDP: join this multicast group (e.g. 239.1.2.3, ff02::1234); repeatable
    #[arg(long, value_name = "GROUP")]
    pub join: Vec<std::net::IpAddr>,
    /// UDP: the interface to join groups on, a name (eth0) or one of its addresses
    #[arg(long, value_name = "NAME|ADDR", requires = "join")]
    pub iface: Option<String>,
    /// UDP: receive buffer to ask the kernel for (SO_RCVBUF)
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_RECV_BUFFER)]
    pub recv_buffer: usize,
    /// Speak TLS (TCP only), with --cert and --key, or --tls-self-signed
    #[arg(long)]
    pub tls: bool,
    /// TLS: the certificate chain (PEM)
    #[arg(
        long,
        value_name = "FILE",
        requires = "key",
        conflicts_with = "tls_self_signed"
    )]
    pub cert: Option<PathBuf>,
    /// TLS: the certificate's private key (PEM)
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// TLS with a certificate made at start; its fingerprint is printed for clients to --pin
    #[arg(long)]
    pub tls_self_signed: bool,
    /// TLS: require client certificates issued by this CA (PEM)
    #[arg(long, value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// Print a summary line on stderr every SECS (clients, messages, bytes, rate, drops), and totals at exit
    #[arg(long, value_name = "SECS", value_parser = parse_positive_duration)]
    pub stats: Option<Duration>,
    /// Longest line kept whole in lines and json formats (its newline not counted); longer ones come in pieces
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u32).range(4..).map(|n| n as usize))]
    pub max_line: usize,
    /// No event lines (listening, connect, disconnect) on stderr
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Host: a name, an IPv4 or an IPv6 address
    #[arg(default_value = "127.0.0.1")]
    pub host: String,
    /// Port (1-65535)
    #[arg(default_value_t = 8888, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Message words, joined by spaces and ended by a newline; without them, stdin is sent
    #[arg(value_name = "MESSAGE")]
    pub message: Vec<OsString>,
    /// Use UDP (one datagram per message, or per line of stdin or the file)
    #[arg(short, long)]
    pub udp: bool,
    /// Leave out the newline at the end of the message (UDP: of each line)
    #[arg(short = 'n', long)]
    pub no_newline: bool,
    /// Send this file
    #[arg(long, value_name = "PATH", conflicts_with = "message")]
    pub file: Option<PathBuf>,
    /// Give up connecting after this long (e.g. 3, 0.5, 500ms, 2s)
    #[arg(short = 'w', long, value_name = "SECS", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// UDP: allow a broadcast address (e.g. 255.255.255.255 or 192.168.1.255)
    #[arg(long, requires = "udp")]
    pub broadcast: bool,
    /// UDP: hops the datagram may take (multicast TTL for a multicast group)
    #[arg(long, value_name = "N", requires = "udp")]
    pub ttl: Option<u32>,
    /// UDP: the interface to send by, a name (eth0) or one of its addresses
    #[arg(long, value_name = "NAME|ADDR", requires = "udp")]
    pub iface: Option<String>,
    /// UDP: wait for answers and print them (with --count, a ping)
    #[arg(long, requires = "udp", requires = "message")]
    pub reply: bool,
    /// How long to wait for each answer
    #[arg(long, value_name = "SECS", value_parser = parse_duration, default_value = "1",
          requires = "reply")]
    pub reply_timeout: Duration,
    /// UDP: send the message N times
    #[arg(long, value_name = "N", requires = "udp", requires = "message",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Time between two sends of --count
    #[arg(long, value_name = "SECS", value_parser = parse_positive_duration, default_value = "1",
          requires = "count")]
    pub interval: Duration,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// TLS options of `send` and `connect`.
#[derive(Debug, Args)]
pub struct ClientTlsArgs {
    /// Speak TLS; the server is checked against the system's trusted CAs
    #[arg(long, conflicts_with = "udp")]
    pub tls: bool,
    /// TLS: trust this CA (PEM); a server's own self-signed certificate works too
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub ca: Option<PathBuf>,
    /// TLS: accept exactly the certificate with this SHA-256 fingerprint (as the listener printed it)
    #[arg(long, value_name = "SHA256", requires = "tls", value_parser = Fingerprint::parse)]
    pub pin: Vec<Fingerprint>,
    /// TLS: check nothing about the server (you are warned)
    #[arg(long, requires = "tls", conflicts_with_all = ["ca", "pin"])]
    pub insecure: bool,
    /// TLS: a client certificate (PEM), for listeners that require one
    #[arg(long, value_name = "FILE", requires = "tls", requires = "key")]
    pub cert: Option<PathBuf>,
    /// TLS: the client certificate's private key (PEM)
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl ClientTlsArgs {
    fn config(&self) -> Option<ClientTlsConfig> {
        self.tls.then(|| ClientTlsConfig {
            ca: self.ca.clone(),
            pins: self.pin.clone(),
            insecure: self.insecure,
            cert: self.cert.clone(),
            key: self.key.clone(),
        })
    }
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Host: a name, an IPv4 or an IPv6 address
    pub host: String,
    /// Port (1-65535)
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Use UDP (one datagram per line of stdin)
    #[arg(short, long)]
    pub udp: bool,
    /// Give up connecting after this long; UDP: wait this long for replies
    /// after stdin ends [UDP default: 2s]
    #[arg(short = 'w', long, value_name = "SECS", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// [`parse_duration`], refusing zero: for periods where zero would close
/// every client at once or print without end.
fn parse_positive_duration(text: &str) -> std::result::Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!("{text}: must be more than zero")),
        duration => Ok(duration),
    }
}

/// Plain seconds (`0.5`) or a duration with units (`500ms`, `2s`).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text}: {e}"));
    }
    humantime::parse_duration(text).map_err(|e| format!("{text}: {e}"))
}

fn proto(udp: bool) -> Proto {
    if udp { Proto::Udp } else { Proto::Tcp }
}

impl ListenArgs {
    pub fn configs(&self) -> Result<(ListenConfig, OutputConfig)> {
        let default_format = if self.chat {
            Format::Lines
        } else {
            Format::Raw
        };
        let format = self.format.unwrap_or(default_format);
        let mut output = OutputConfig::for_stdout(format, self.quiet);
        output.file = self.output.clone();
        let mode = match (self.echo, self.broker, self.chat) {
            (true, _, _) => Mode::Echo,
            (_, true, _) => Mode::Broker,
            (_, _, true) => Mode::Chat,
            _ => Mode::Print,
        };
        // A chat relays whole lines, whatever stdout shows.
        let framing = match mode {
            Mode::Chat => Framing::Lines {
                max_line: self.max_line,
            },
            _ => format.framing(output.terminal, self.max_line),
        };
        let tls = self.server_tls()?;
        // Broker and chat relay between connected clients: UDP has none.
        let relays = matches!(mode, Mode::Broker | Mode::Chat);
        if relays && self.udp {
            return Err(Error::Usage(
                "--broker and --chat relay between TCP clients; drop -u".into(),
            ));
        }
        let protocols = match (self.tcp, self.udp) {
            (true, _) => Protocols::Tcp,
            (_, true) => Protocols::Udp,
            _ if tls.is_some() || relays => Protocols::Tcp,
            _ => Protocols::Both,
        };
        let listen = ListenConfig {
            port: self.port,
            bind: self.bind.clone(),
            protocols,
            once: self.once,
            framing,
            mode,
            access: AccessList::new(self.allow.clone(), self.deny.clone()),
            max_conns: self.max_conns,
            idle_timeout: self.idle_timeout,
            echo_rate: self.echo_rate,
            join: self.join.clone(),
            iface: self.iface.as_deref().map(Interface::parse),
            recv_buffer: self.recv_buffer,
            tls,
            stats: self.stats,
            straight_to_stdout: false, // decided by `listen::run`, which sees the output too
        };
        Ok((listen, output))
    }

    fn server_tls(&self) -> Result<Option<ServerTlsConfig>> {
        let identity = match (&self.cert, &self.key, self.tls_self_signed) {
            (Some(cert), Some(key), _) => ServerIdentity::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            (_, _, true) => ServerIdentity::SelfSigned,
            _ if self.tls || self.client_ca.is_some() => {
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

impl SendArgs {
    pub fn config(&self) -> SendConfig {
        let source = match (&self.file, self.message.is_empty()) {
            (Some(path), _) => Source::File(path.clone()),
            (None, true) => Source::Stdin,
            (None, false) => {
                let words: Vec<&[u8]> = self.message.iter().map(|w| w.as_encoded_bytes()).collect();
                Source::Message(Bytes::from(words.join(&b' ')))
            }
        };
        SendConfig {
            host: self.host.clone(),
            port: self.port,
            proto: proto(self.udp),
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
            tls: self.tls.config(),
        }
    }
}

impl ConnectArgs {
    pub fn config(&self) -> ConnectConfig {
        ConnectConfig {
            host: self.host.clone(),
            port: self.port,
            proto: proto(self.udp),
            timeout: self.timeout,
            tls: self.tls.config(),
        }
    }
}

impl Cli {
    /// Parses the command line; a usage error comes back as one line, the
    /// way every other error is printed (help and version are printed here).
    pub fn parse_args() -> Result<Cli> {
        Cli::try_parse().map_err(|e| {
            use clap::error::ErrorKind::{DisplayHelp, DisplayVersion};
            match e.kind() {
                DisplayHelp | DisplayVersion => e.exit(),
                _ => Error::Usage(usage_line(&e.render().to_string())),
            }
        })
    }

    /// True for a `listen` that can have many TCP clients at once; a UDP
    /// listener has one socket to read and gains nothing from more threads.
    pub fn serves_many(&self) -> bool {
        matches!(&self.command, Command::Listen(Deferred(args)) if !args.udp)
    }

    /// Runs the chosen subcommand. Each network subcommand's future is boxed
    /// apart: awaited inline they made one 49 KiB function, all of it kept
    /// resident by a listener that only runs its `listen` part.
    pub async fn run(self) -> Result<()> {
        let job: Pin<Box<dyn Future<Output = Result<()>>>> = match self.command {
            Command::Listen(Deferred(args)) => {
                let (listen, output) = args.configs()?;
                Box::pin(listen::run(listen, output))
            }
            Command::Send(Deferred(args)) => {
                Box::pin(async move { send::send(&args.config()).await })
            }
            Command::Connect(Deferred(args)) => {
                Box::pin(async move { connect::connect(&args.config()).await })
            }
            Command::Completions { shell } => {
                // Into memory first: clap_complete panics on a failed write.
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "portier", &mut script);
                return match std::io::stdout().write_all(&script) {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                        Err(Error::io("cannot write the completion script", e))
                    }
                    _ => Ok(()),
                };
            }
            Command::Man { dir } => {
                return clap_mangen::generate_to(Cli::command(), &dir).map_err(|e| {
                    Error::io(format!("cannot write man pages to {}", dir.display()), e)
                });
            }
        };
        job.await
    }
}

/// clap's usage error in one line: its message and tips, without the
/// usage block and the help hint, pointing to `--help` instead.
fn usage_line(rendered: &str) -> String {
    let parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty() && !line.starts_with("Usage:") && !line.starts_with("For more")
        })
        .map(|line| line.trim_start_matches("error: "))
        .collect();
    format!("{} (see --help)", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn deferred_arguments_keep_each_subcommand_about() {
        let mut cli = Cli::command();
        cli.build(); // adds the deferred arguments, TLS options included
        let about = |name: &str| {
            let subcommand = cli.find_subcommand(name).unwrap();
            subcommand.get_about().unwrap().to_string()
        };
        assert_eq!(
            about("send"),
            "Send a message, stdin or a file to a host, then wait for the peer to close"
        );
        assert_eq!(
            about("connect"),
            "Talk both ways: stdin to the peer, the peer to stdout (like `nc HOST PORT`)"
        );
        assert_eq!(
            about("listen"),
            "Receive on a port (TCP and UDP) and print what arrives"
        );
    }

    #[test]
    fn durations_take_seconds_or_units() {
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn send_joins_words_with_a_newline_by_default() {
        let cli = Cli::parse_from(["portier", "send", "::1", "9", "abc", "defg!"]);
        let Command::Send(Deferred(args)) = cli.command else {
            panic!("not send")
        };
        let config = args.config();
        assert_eq!(
            config.source,
            Source::Message(Bytes::from_static(b"abc defg!"))
        );
        assert!(config.newline);
        assert_eq!(config.host, "::1");
    }
}
