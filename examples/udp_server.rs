//! The seed's UDP server: prints every datagram that reaches port 8888 (or
//! the port given), one line each with its sender, until Ctrl-C.
//!
//! `cargo run --example udp_server -- 9000`

use portier::listen::{self, ListenConfig, Protocols};
use portier::sink::{Format, OutputConfig};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), portier::error::Error> {
    let port = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8888);
    let format = Format::Lines;
    let output = OutputConfig::for_stdout(format, false);
    let config = ListenConfig {
        port,
        protocols: Protocols::Udp,
        framing: format.framing(output.terminal, 64 * 1024),
        ..ListenConfig::default()
    };
    // The library stops when told to; here, on Ctrl-C, after flushing what came.
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    listen::run(config, output, Vec::new(), shutdown).await
}
