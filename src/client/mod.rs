//! The clients: `send` (a message, stdin or a file, then wait for the peer
//! to close), `connect` (both ways, like `nc HOST PORT`) and the UDP ping of
//! `send --reply`. They share the stream and datagram helpers below them and
//! never each other's internals: send -> ping -> datagram, connect -> datagram.

mod connect;
mod datagram;
mod output;
mod ping;
mod progress;
mod send;
mod stream;

pub use connect::{ConnectConfig, UDP_LINGER, connect};
pub use ping::Repeat;
pub use send::{SendConfig, Source, send};
