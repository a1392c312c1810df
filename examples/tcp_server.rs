//! The seed's TCP server: takes one client on port 8888 (or the port given),
//! prints what it sends, and says when it disconnects.
//!
//! It reads the library's [`Message`] stream itself, to show what a sink sees.
//! `cargo run --example tcp_server -- 9000`

use std::io::{IsTerminal, Write};

use portier::listen::{ListenConfig, Listener, Protocols};
use portier::message::{Event, Message};
use portier::sink::write_raw;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), portier::error::Error> {
    let port = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8888);
    let config = ListenConfig {
        port,
        protocols: Protocols::Tcp,
        once: true,
        ..ListenConfig::default()
    };
    let listener = Listener::bind(&config)?;
    let (sender, mut messages) = tokio::sync::mpsc::channel::<Message>(64);
    tokio::spawn(async move {
        listener
            .serve(&config, sender, CancellationToken::new())
            .await
    });

    let mut stdout = std::io::stdout();
    let terminal = stdout.is_terminal(); // never let a peer drive the terminal
    while let Some(message) = messages.recv().await {
        match message.event {
            Event::Listening { local, .. } => eprintln!("TCP server listening on {local}"),
            Event::Connect => eprintln!("Remote socket: {:?}", message.peer),
            Event::Data { bytes, .. } => {
                write_raw(&mut stdout, b"Received: ", false).ok();
                write_raw(&mut stdout, &bytes, terminal).ok();
                stdout.flush().ok();
            }
            Event::Disconnect { .. } => eprintln!("Disconnected"),
            Event::Error(error) => eprintln!("error: {error}"),
            _ => {} // UDP-only events
        }
    }
    Ok(())
}
