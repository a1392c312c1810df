//! How received bytes reach stdout, decided once, in [`Delivery::choose`],
//! from the configuration, the output and the sockets. What goes back to the
//! clients (echo, broker, chat) is the other axis, [`super::Mode`].
//!
//! Every path counts into the same statistics, so `--stats`, `-q` and the
//! summary mean the same whichever runs; `-o`, formats and terminal escaping
//! need messages, so they always take [`Delivery::Formatted`].

use crate::sink::{Format, OutputConfig};

use super::config::{ListenConfig, Protocols};
use super::replies::Mode;

/// The path received bytes take to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Framed into messages and handed to the writer thread, which formats
    /// them for stdout (and `-o`): every format, any number of sockets.
    Formatted,
    /// One UDP socket writes the datagrams of each batch to stdout with one
    /// call, from where they were received, skipping framing and the writer.
    Straight,
    /// One TCP client (`--once`): its bytes are spliced from the socket to
    /// stdout inside the kernel (Linux), never copied through portier.
    Spliced,
}

/// What decides the delivery besides the configuration: facts about the
/// process and the sockets, gathered by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Surroundings {
    /// The sockets served, once bound or handed in.
    pub sockets: usize,
    /// stdout can be spliced into and written to straight (a pipe, a file
    /// not in append mode, /dev/null; not a terminal).
    pub stdout_spliceable: bool,
}

impl Delivery {
    /// Bytes skip the writer only when they are to reach stdout exactly as
    /// received and nowhere else, from one reader.
    pub fn choose(config: &ListenConfig, output: &OutputConfig, around: Surroundings) -> Delivery {
        // A --frame cuts and unwraps messages: the bytes are not delivered as received.
        let bytes_as_received = output.format == Format::Raw
            && !output.terminal
            && config.framing == crate::framing::Framing::Raw;
        // With --exec the data goes to the programs, not to stdout. (The
        // web page is fed by the straight path too, not by the spliced one.)
        let only_stdout = output.file.is_none()
            && output.to.is_none()
            && config.tls.is_none()
            && config.exec.is_none();
        if !(bytes_as_received && only_stdout && around.stdout_spliceable) {
            return Delivery::Formatted;
        }
        match config.protocols {
            Protocols::Tcp
                if config.once
                    && config.mode == Mode::Print
                    && output.web.is_none()
                    && cfg!(target_os = "linux") =>
            {
                Delivery::Spliced
            }
            Protocols::Udp
                if around.sockets == 1 && matches!(config.mode, Mode::Print | Mode::Echo) =>
            {
                Delivery::Straight
            }
            _ => Delivery::Formatted,
        }
    }
}

/// Whether this process's stdout can be spliced into (Linux).
#[cfg(target_os = "linux")]
pub fn stdout_spliceable() -> bool {
    use std::os::fd::AsFd;
    crate::splice::spliceable(std::io::stdout().as_fd())
}

/// Whether this process's stdout can be spliced into: never here.
#[cfg(not(target_os = "linux"))]
pub fn stdout_spliceable() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::LogFileConfig;
    use std::path::PathBuf;

    fn raw_to_a_pipe() -> OutputConfig {
        OutputConfig {
            format: Format::Raw,
            quiet: false,
            terminal: false,
            file: None,
            to: None,
            parse: None,
            web: None,
        }
    }

    fn config(protocols: Protocols, once: bool, mode: Mode) -> ListenConfig {
        ListenConfig {
            protocols,
            once,
            mode,
            ..ListenConfig::default()
        }
    }

    const ONE_SOCKET: Surroundings = Surroundings {
        sockets: 1,
        stdout_spliceable: true,
    };

    #[test]
    #[cfg(target_os = "linux")]
    fn one_raw_tcp_client_to_a_pipe_is_spliced() {
        let config = config(Protocols::Tcp, true, Mode::Print);
        let chosen = Delivery::choose(&config, &raw_to_a_pipe(), ONE_SOCKET);
        assert_eq!(chosen, Delivery::Spliced);
    }

    #[test]
    fn one_raw_udp_socket_to_a_pipe_writes_straight() {
        for mode in [Mode::Print, Mode::Echo] {
            let config = config(Protocols::Udp, false, mode);
            let chosen = Delivery::choose(&config, &raw_to_a_pipe(), ONE_SOCKET);
            assert_eq!(chosen, Delivery::Straight);
        }
    }

    #[test]
    fn the_web_page_keeps_the_straight_udp_path_but_not_the_spliced_one() {
        let mut with_web = raw_to_a_pipe();
        with_web.web = Some(crate::sink::web::WebConfig {
            addr: "127.0.0.1:8080".parse().unwrap(),
            allow: crate::access::AccessList::default(),
            history: 10,
            tls: None,
        });
        let udp = config(Protocols::Udp, false, Mode::Print);
        let chosen = Delivery::choose(&udp, &with_web, ONE_SOCKET);
        assert_eq!(chosen, Delivery::Straight);
        let tcp_once = config(Protocols::Tcp, true, Mode::Print);
        let chosen = Delivery::choose(&tcp_once, &with_web, ONE_SOCKET);
        assert_eq!(chosen, Delivery::Formatted);
    }

    #[test]
    fn everything_else_is_formatted() {
        let udp = config(Protocols::Udp, false, Mode::Print);
        let tcp_once = config(Protocols::Tcp, true, Mode::Print);
        let mut lines = raw_to_a_pipe();
        lines.format = Format::Lines;
        let mut terminal = raw_to_a_pipe();
        terminal.terminal = true;
        let mut with_file = raw_to_a_pipe();
        with_file.file = Some(LogFileConfig {
            path: PathBuf::from("log"),
            ..LogFileConfig::default()
        });
        let two_sockets = Surroundings {
            sockets: 2,
            stdout_spliceable: true,
        };
        let not_spliceable = Surroundings {
            sockets: 1,
            stdout_spliceable: false,
        };
        let cases = [
            (
                config(Protocols::Both, false, Mode::Print),
                raw_to_a_pipe(),
                ONE_SOCKET,
            ),
            (
                config(Protocols::Tcp, false, Mode::Print),
                raw_to_a_pipe(),
                ONE_SOCKET,
            ),
            (
                config(Protocols::Tcp, true, Mode::Echo),
                raw_to_a_pipe(),
                ONE_SOCKET,
            ),
            (
                config(Protocols::Tcp, false, Mode::Broker),
                raw_to_a_pipe(),
                ONE_SOCKET,
            ),
            (udp.clone(), raw_to_a_pipe(), two_sockets),
            (udp.clone(), lines.clone(), ONE_SOCKET),
            (udp.clone(), terminal, ONE_SOCKET),
            (udp.clone(), with_file.clone(), ONE_SOCKET),
            (udp, raw_to_a_pipe(), not_spliceable),
            (tcp_once.clone(), lines, ONE_SOCKET),
            (tcp_once, with_file, ONE_SOCKET),
        ];
        for (config, output, around) in cases {
            let chosen = Delivery::choose(&config, &output, around);
            assert_eq!(
                chosen,
                Delivery::Formatted,
                "{config:?} {output:?} {around:?}"
            );
        }
    }
}
