//! portier: send and receive messages over TCP and UDP.
//!
//! Every received byte takes one path, whatever the protocol:
//!
//! ```text
//! socket (TCP accept / UDP recv) -> framing (raw | lines) -> Message -> sink (stdout: raw/lines/json/hex)
//! ```
//!
//! - [`listen`] binds and serves, [`send`] sends once, [`connect`] talks both ways.
//! - [`framing`] cuts a stream into messages, [`message`] is what the sinks see,
//!   [`sink`] writes them out safely.
//! - [`endpoint`] resolves and binds (dual-stack), [`error`] says what went wrong in one line.
//! - [`access`] holds `--allow`/`--deny`, [`datagram`] the UDP socket options (broadcast,
//!   multicast, drop counter), [`ping`] the UDP request/answer loop, [`tls`] the TLS set-up,
//!   [`progress`] the send progress bar, `splice` (Linux) the zero-copy data path.
//!
//! A UDP client, as in the seed:
//!
//! ```no_run
//! use portier::{message::Proto, client::{send, SendConfig}};
//! # async fn demo() -> portier::error::Result<()> {
//! send(&SendConfig::message(Proto::Udp, "127.0.0.1", 8888, "abcdefg!")).await
//! # }
//! ```

pub mod access;
pub mod client;
mod endpoint;
pub mod error;
mod exec;
pub mod framing;
pub mod listen;
pub mod message;
pub mod sink;
#[cfg(target_os = "linux")]
mod splice;
mod sys;
pub mod tls;
pub mod udp_options;
