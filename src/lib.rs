//! portier: send and receive messages over TCP and UDP.
//!
//! Every received byte takes one path, whatever the protocol:
//!
//! ```text
//! socket (TCP accept / UDP recv) -> framing (raw | lines) -> Message -> sink (stdout: raw/lines/json/hex)
//! ```
//!
//! - [`listen`] binds and serves; [`client`] sends once, talks both ways and checks ports;
//!   [`nc`] is OpenBSD nc's one-peer session, with its end-of-file rules.
//! - [`framing`] cuts a stream into messages, [`message`] is what the sinks see,
//!   [`sink`] writes them out safely.
//! - [`access`] holds `--allow`/`--deny`, [`udp_options`] the UDP socket options (broadcast,
//!   multicast, buffers), [`tls`] the TLS set-up, [`error`] says what went wrong in one line.
//! - Inside: `endpoint` resolves and binds (dual-stack), `exec` runs `--exec` programs,
//!   `splice` (Linux) is the zero-copy data path, `sys` holds the only unsafe code.
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
pub mod address;
pub mod client;
mod endpoint;
pub mod error;
mod exec;
pub mod framing;
pub mod listen;
pub mod message;
pub mod nc;
pub mod proxy;
pub mod relay;
pub mod sink;
#[cfg(target_os = "linux")]
mod splice;
mod sys;
pub mod tls;
pub mod udp_options;
pub mod unix_socket;
