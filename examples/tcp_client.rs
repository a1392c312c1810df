//! The seed's TCP client: sends "abcdefg!\n" to 127.0.0.1:8888 (or the port given).
//!
//! `cargo run --example tcp_client -- 9000`

use portier::client::{SendConfig, send};
use portier::message::Proto;

#[tokio::main]
async fn main() {
    let port = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8888);
    let config = SendConfig::message(Proto::Tcp, "127.0.0.1", port, "abcdefg!");
    if let Err(e) = send(&config).await {
        eprintln!("tcp_client: {e}");
        std::process::exit(1);
    }
}
