//! The command line: clap definitions, and their translation into checked
//! library configs (one file per subcommand). Nothing here does network work;
//! it lives in the binary, apart from the library, as in ripgrep.

mod check;
mod connect;
mod listen;
mod nc;
mod nc_habits;
mod relay;
mod send;
mod to;

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use clap::builder::Resettable;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use portier::client::Program;
use portier::error::{Error, Result};
use portier::message::Proto;

use crate::signals;
use check::{CHECK_EXAMPLES, CheckArgs};
use connect::{CONNECT_EXAMPLES, ConnectArgs};
use listen::{LISTEN_EXAMPLES, ListenArgs};
use nc::{NC_EXAMPLES, NcArgs};
use relay::{RELAY_EXAMPLES, RelayArgs};
use send::{SEND_EXAMPLES, SendArgs};

/// Send and receive messages over TCP and UDP: a friendlier, safer netcat.
#[derive(Debug, Parser)]
#[command(name = "portier", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive on a port (TCP and UDP) or a UNIX socket, and print what arrives
    #[command(after_help = LISTEN_EXAMPLES)]
    Listen(Deferred<Box<ListenArgs>>),
    /// Send a message, stdin or a file to a host, then wait for the peer to close
    #[command(after_help = SEND_EXAMPLES)]
    Send(Deferred<SendArgs>),
    /// Talk both ways: stdin to the peer, the peer to stdout (like `nc HOST PORT`)
    #[command(after_help = CONNECT_EXAMPLES)]
    Connect(Deferred<ConnectArgs>),
    /// Check which ports are open (like `nc -z`): exit 0 if all are, 1 if not
    #[command(after_help = CHECK_EXAMPLES)]
    Check(Deferred<CheckArgs>),
    /// Forward each client of FROM to TO: TCP, UDP, TLS and UNIX sockets, joined
    #[command(after_help = RELAY_EXAMPLES)]
    Relay(Deferred<RelayArgs>),
    /// nc's own command line (OpenBSD nc's flags, ncat's -e and -c): `alias nc='portier nc'`
    #[command(after_help = NC_EXAMPLES)]
    Nc(Deferred<NcArgs>),
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
struct Deferred<T>(T);

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

/// [`parse_duration`], refusing zero: for periods where zero would close
/// every client at once or print without end.
pub(crate) fn parse_positive_duration(text: &str) -> std::result::Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!("{text}: must be more than zero")),
        duration => Ok(duration),
    }
}

/// Plain seconds (`0.5`) or a duration with units (`500ms`, `2s`).
pub(crate) fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text}: {e}"));
    }
    humantime::parse_duration(text).map_err(|e| format!("{text}: {e}"))
}

/// Says [`portier::tls::INSECURE_WARNING`] when `--insecure` is given; returns it.
pub(crate) fn warn_if_insecure(insecure: bool) -> bool {
    if insecure {
        portier::sink::say(portier::tls::INSECURE_WARNING);
    }
    insecure
}

/// `65536`, `64KiB`, `10MiB`, `1GiB` (and K, M, G, KB, MB, GB as powers of 1024 too).
pub(crate) fn parse_size(text: &str) -> std::result::Result<usize, String> {
    let digits = text
        .trim()
        .trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text.trim()[digits.len()..];
    let scale: usize = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "'{text}': a size is a number of bytes, or 64KiB, 10MiB, 1GiB"
            ));
        }
    };
    match digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
    {
        Some(size) if size > 0 => Ok(size),
        _ => Err(format!(
            "'{text}': a size is a number of bytes above 0, or 64KiB, 10MiB, 1GiB"
        )),
    }
}

/// `--exec CMD` (split on spaces, no shell) or `--sh-exec CMD` (`sh -c`), for listen and connect.
pub(crate) fn program(exec: Option<&str>, sh_exec: Option<&str>) -> Result<Option<Program>> {
    let program = match (exec, sh_exec) {
        (Some(line), _) => Program::Argv(line.split_whitespace().map(String::from).collect()),
        (_, Some(line)) => Program::Shell(line.to_string()),
        _ => return Ok(None),
    };
    if matches!(&program, Program::Argv(argv) if argv.is_empty()) {
        return Err(Error::Usage("--exec needs a program".into()));
    }
    Ok(Some(program))
}

/// True when a listener on `bind` can be reached only from this machine.
pub(crate) fn loopback_only(bind: Option<&str>) -> bool {
    match bind {
        Some("localhost") => true,
        Some(addr) => addr
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// How the TCP clients' connections leave: `--proxy URL` (without it,
/// `ALL_PROXY` unless `NO_PROXY` exempts the host) and `--keepalive SECS`.
#[derive(Debug, Args)]
pub(crate) struct OriginArgs {
    /// Go through this proxy: socks5://[USER:PASS@]HOST:PORT (socks5h:// to let it resolve names)
    /// or http://[USER:PASS@]HOST:PORT (CONNECT); ALL_PROXY and NO_PROXY are honoured as curl does
    #[arg(long, value_name = "URL")]
    proxy: Option<portier::proxy::Proxy>,
    /// TCP keepalive: probe a connection idle this long, so a peer that vanished is noticed
    #[arg(long, value_name = "SECS", value_parser = parse_positive_duration)]
    keepalive: Option<Duration>,
}

impl OriginArgs {
    /// The way to `host`: its proxy (none for UDP, which proxies here do not carry) and keepalive.
    pub(crate) fn origin(&self, host: &str, tcp: bool) -> Result<portier::client::Origin> {
        Ok(portier::client::Origin {
            proxy: self.proxy_for(host, tcp)?,
            keepalive: self.keepalive,
            ..Default::default()
        })
    }

    fn proxy_for(&self, host: &str, tcp: bool) -> Result<Option<portier::proxy::Proxy>> {
        match (&self.proxy, tcp) {
            (Some(_), false) => Err(Error::Usage(
                "--proxy carries TCP (and TLS) only, not UDP".into(),
            )),
            (Some(proxy), true) => Ok(Some(proxy.clone())),
            (None, true) => portier::proxy::from_env(host),
            (None, false) => Ok(None),
        }
    }
}

/// Where `send` and `connect` go: `HOST PORT`, or one address
/// (`tcp://HOST:PORT`, `udp://`, `tls://`, `unix:/path`, `unix-dgram:/path`)
/// whose next word, if any, is not a port but the message's first.
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `udp://` (or `-u`).
    pub(crate) udp: bool,
    /// `tls://`: TLS without `--tls`.
    pub(crate) tls: bool,
    pub(crate) unix: Option<portier::address::UnixSocket>,
    /// The words after the host and port.
    pub(crate) rest: Vec<std::ffi::OsString>,
}

impl Target {
    pub(crate) fn from_words(
        host: &str,
        port: Option<&std::ffi::OsString>,
        message: &[std::ffi::OsString],
        default_port: Option<u16>,
    ) -> Result<Target> {
        use portier::address::{Address, Transport, UnixSocket};
        let port_word = port;
        let mut target = Target {
            host: host.to_string(),
            port: 0,
            udp: false,
            tls: false,
            unix: None,
            rest: message.to_vec(),
        };
        let scheme =
            host.contains("://") || host.starts_with("unix:") || host.starts_with("unix-dgram:");
        if let Some(pair) = client_host_port(host).filter(|_| !scheme) {
            target.rest.splice(0..0, port_word.cloned());
            (target.host, target.port) = pair?;
            return Ok(target);
        }
        if !scheme {
            let port = match port_word {
                Some(word) => client_port(&word.to_string_lossy())
                    .map_err(|e| Error::Usage(format!("PORT: {e}")))?,
                None => default_port.ok_or_else(|| {
                    Error::Usage("a port is needed after the host (or HOST:PORT)".into())
                })?,
            };
            target.port = port;
            return Ok(target);
        }
        let address: Address = host
            .parse()
            .map_err(|e: portier::address::AddressError| Error::Usage(e.to_string()))?;
        target.rest.splice(0..0, port_word.cloned());
        match address {
            Address::Inet { port: 0, .. } => {
                return Err(Error::Usage(format!("{host}: port 0 cannot be sent to")));
            }
            Address::Inet {
                transport,
                host,
                port,
            } => {
                target.host = host;
                target.port = port;
                target.udp = transport == Transport::Udp;
                target.tls = transport == Transport::Tls;
            }
            Address::Unix { datagram, name } => target.unix = Some(UnixSocket { datagram, name }),
        }
        Ok(target)
    }
}

/// `HOST:PORT` (or `[V6]:PORT`) as a client needs it, with a host and a
/// port it can reach; `None` when `text` is not of that form (a bare host).
pub(crate) fn client_host_port(text: &str) -> Option<Result<(String, u16)>> {
    let pair = portier::address::host_and_port(text)?;
    Some(match pair {
        Err(e) => Err(Error::Usage(e.to_string())),
        Ok((host, port)) if host.is_empty() => Err(Error::Usage(format!(
            "':{port}': a host is needed before the port (e.g. 127.0.0.1:{port})"
        ))),
        Ok((host, port)) => client_port(&port.to_string()).map(|port| (host, port)),
    })
}

/// A port a client can reach: 1-65535.
pub(crate) fn client_port(word: &str) -> Result<u16> {
    match word.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(Error::Usage(format!("'{word}' is not a port (1-65535)"))),
    }
}

pub(crate) fn proto(udp: bool) -> Proto {
    if udp { Proto::Udp } else { Proto::Tcp }
}

impl Cli {
    /// Parses the command line; a usage error comes back as one line, the
    /// way every other error is printed (help and version are printed here).
    pub(crate) fn parse_args() -> Result<Cli> {
        Cli::try_parse().map_err(|e| {
            use clap::error::ErrorKind::{DisplayHelp, DisplayVersion};
            match e.kind() {
                DisplayHelp | DisplayVersion => e.exit(),
                _ => {
                    let args: Vec<String> = std::env::args_os()
                        .map(|arg| arg.to_string_lossy().into_owned())
                        .collect();
                    let line = nc_habits::suggestion(&args)
                        .unwrap_or_else(|| usage_line(&e.render().to_string()));
                    Error::Usage(line)
                }
            }
        })
    }

    /// True for `listen` and `relay`, which serve sockets handed in through `LISTEN_FDS`.
    pub(crate) fn takes_sockets(&self) -> bool {
        matches!(self.command, Command::Listen(_) | Command::Relay(_))
    }

    /// True for a `listen` that can have many TCP clients at once; a UDP
    /// listener has one socket to read and gains nothing from more threads.
    pub(crate) fn serves_many(&self) -> bool {
        match &self.command {
            // One TCP client (--once) or UDP alone: one thread; broker
            // connections and the web page run beside the receivers.
            Command::Listen(Deferred(args)) => {
                !(args.udp || args.once) || !args.to.to.is_empty() || args.web.is_some()
            }
            Command::Relay(_) => true,
            _ => false,
        }
    }

    /// Runs the chosen subcommand. Each network subcommand's future is boxed
    /// apart: awaited inline they made one 49 KiB function, all of it kept
    /// resident by a listener that only runs its `listen` part.
    pub(crate) async fn run(self, handed_in: Vec<portier::listen::Socket>) -> Result<()> {
        let job: Pin<Box<dyn Future<Output = Result<()>>>> = match self.command {
            Command::Listen(Deferred(args)) => {
                let (listen, mut output) = args.configs()?;
                if let Some(file) = &mut output.file {
                    file.reopen = signals::reopen_on_sighup();
                }
                let shutdown = tokio_util::sync::CancellationToken::new();
                signals::cancel_on_signal(shutdown.clone());
                Box::pin(portier::listen::run(listen, output, handed_in, shutdown))
            }
            Command::Send(Deferred(args)) => {
                let config = args.config()?;
                let stop = stop_on_signal(config.reconnect.is_some());
                Box::pin(async move { portier::client::send_until(&config, &stop).await })
            }
            Command::Connect(Deferred(args)) => {
                let config = args.config()?;
                let stop = stop_on_signal(config.reconnect.is_some());
                Box::pin(async move { portier::client::connect_until(&config, &stop).await })
            }
            Command::Check(Deferred(args)) => {
                let (config, output) = args.configs()?;
                Box::pin(async move { portier::client::check(&config, output).await })
            }
            Command::Relay(Deferred(args)) => {
                let config = args.config()?;
                let shutdown = tokio_util::sync::CancellationToken::new();
                signals::cancel_on_signal(shutdown.clone());
                Box::pin(async move { portier::relay::relay(&config, handed_in, shutdown).await })
            }
            Command::Nc(Deferred(args)) => {
                let config = args.config()?;
                let shutdown = tokio_util::sync::CancellationToken::new();
                signals::cancel_on_signal(shutdown.clone());
                Box::pin(async move { portier::nc::nc(&config, shutdown).await })
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

/// A token the first SIGTERM or Ctrl-C cancels, for a client that can stop
/// cleanly (`--reconnect`); other clients keep the signals' own action,
/// which ends them at once.
fn stop_on_signal(handled: bool) -> tokio_util::sync::CancellationToken {
    let stop = tokio_util::sync::CancellationToken::new();
    if handled {
        signals::cancel_on_signal(stop.clone());
    }
    stop
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
    use bytes::Bytes;
    use portier::client::Source;

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
            "Receive on a port (TCP and UDP) or a UNIX socket, and print what arrives"
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
        let config = args.config().unwrap();
        assert_eq!(
            config.source,
            Source::Message(Bytes::from_static(b"abc defg!"))
        );
        assert!(config.newline);
        assert_eq!(config.host, "::1");
    }

    #[test]
    fn host_colon_port_is_a_host_and_a_port() {
        let send = |words: &[&str]| {
            let words = ["portier", "send"].iter().chain(words);
            let Command::Send(Deferred(args)) = Cli::parse_from(words).command else {
                panic!("not send")
            };
            args.config()
        };
        let config = send(&["pi.local:9000", "22.5", "C"]).unwrap();
        assert_eq!((config.host.as_str(), config.port), ("pi.local", 9000));
        assert_eq!(
            config.source,
            Source::Message(Bytes::from_static(b"22.5 C"))
        );
        let config = send(&["[::1]:9000"]).unwrap();
        assert_eq!((config.host.as_str(), config.port), ("::1", 9000));
        let config = send(&["fe80::1:9000", "7"]).unwrap();
        assert_eq!((config.host.as_str(), config.port), ("fe80::1:9000", 7));
        let error = |words| send(words).unwrap_err().to_string();
        assert!(error(&[":9000"]).contains("a host is needed"));
        assert!(error(&["pi.local:0"]).contains("'0' is not a port"));
        assert!(error(&["pi.local:99999"]).contains("'99999' is not a port"));
    }
}

/// Who may use a `unix:/path` socket file that listen or relay creates.
#[derive(Debug, clap::Args)]
pub(super) struct UnixFileArgs {
    /// unix:/path: the socket file's permissions, in octal (e.g. 660)
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    mode: Option<u32>,
    /// unix:/path: the socket file's group, a name or a number (with --mode 660: its members may connect)
    #[arg(long, value_name = "GROUP", value_parser = parse_group)]
    group: Option<u32>,
}

impl UnixFileArgs {
    fn access(&self) -> portier::unix_socket::FileAccess {
        portier::unix_socket::FileAccess {
            mode: self.mode,
            group: self.group,
        }
    }
}

/// A group id, or a name looked up in /etc/group.
fn parse_group(text: &str) -> std::result::Result<u32, String> {
    if let Ok(gid) = text.parse::<u32>() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group")
        .map_err(|e| format!("cannot read /etc/group: {e}"))?;
    groups
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid = fields.nth(1)?.parse::<u32>().ok()?;
            (name == text).then_some(gid)
        })
        .next()
        .ok_or_else(|| format!("no group named '{text}' in /etc/group"))
}

fn parse_mode(text: &str) -> std::result::Result<u32, String> {
    match u32::from_str_radix(text, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(format!("'{text}' is not an octal file mode (e.g. 660)")),
    }
}
