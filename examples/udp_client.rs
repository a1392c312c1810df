//! The seed's UDP client: one datagram "abcdefg!\n" to 127.0.0.1:8888 (or the port given).
//!
//! Unlike the seed, it says so when nothing listens there (ICMP port unreachable).
//! `cargo run --example udp_client -- 9000`

use portier::client::{SendConfig, send};
use portier::message::Proto;

#[tokio::main]
async fn main() -> Result<(), portier::error::Error> {
    let port = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8888);
    send(&SendConfig::message(
        Proto::Udp,
        "127.0.0.1",
        port,
        "abcdefg!",
    ))
    .await
}
