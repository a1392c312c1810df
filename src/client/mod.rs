//! The clients: `send` (a message, stdin or a file, then wait for the peer
//! to close), `connect` (both ways, like `nc HOST PORT`), `check` (which
//! ports are open, like `nc -z`) and the UDP ping of `send --reply`. They share the stream and datagram helpers below them and
//! never each other's internals: send -> ping -> datagram, connect -> datagram.

mod check;
mod connect;
mod datagram;
mod output;
mod ping;
mod progress;
mod reconnect;
mod send;
mod stream;

pub use crate::endpoint::{Family, Origin};
pub use crate::exec::Program;
pub use check::{CheckConfig, CheckOutput, PortReport, PortState, check, check_ports, parse_ports};
pub use connect::{ConnectConfig, UDP_LINGER, connect, connect_until};
pub use ping::Repeat;
pub(crate) use reconnect::send_reconnecting;
pub use reconnect::{OnFull, Reconnect};
pub use send::{SendConfig, Source, send, send_until};
// For `portier nc`, which is built of the same pieces.
pub(crate) use connect::program_session;
pub(crate) use datagram::{check_size, send_datagram};
pub(crate) use output::PeerOutput;
pub(crate) use stream::lost;
