//! What a peer answers, on stdout as it arrives: escaped on a terminal, and
//! checked for the one mistake that shows as garbage (clear text to a TLS server).

use std::io::{self, IsTerminal};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, IoContext, Result};
use crate::sink::{Escape, write_escaped};

fn cannot_write() -> String {
    "cannot write output".into()
}

/// Writes a peer's bytes to stdout as they arrive, escaped when stdout is a
/// terminal. Used by `send` and `connect`, which have no message stream.
pub struct PeerOutput {
    terminal: bool,
    stdout: tokio::io::Stdout,
    escaped: Vec<u8>,
    /// The peer was reached over plain TCP: an answer that is a TLS record
    /// means we spoke clear text to a TLS server.
    plain_tcp: bool,
}

impl Default for PeerOutput {
    fn default() -> Self {
        PeerOutput {
            terminal: io::stdout().is_terminal(),
            stdout: tokio::io::stdout(),
            escaped: Vec::new(),
            plain_tcp: false,
        }
    }
}

/// True when `bytes` start like a TLS record a server sends first: a
/// handshake or an alert, in TLS 1.0-1.3 framing.
fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15 | 0x16, 0x03, 0x00..=0x04, ..])
}

impl PeerOutput {
    /// For a peer reached over plain TCP, which must not answer in TLS.
    pub fn plain_tcp() -> Self {
        PeerOutput {
            plain_tcp: true,
            ..PeerOutput::default()
        }
    }

    /// Writes and flushes `bytes`; `Ok(false)` when nobody reads stdout any
    /// more (`portier connect ... | head`), which ends a session normally.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<bool> {
        let bytes = if self.terminal {
            self.escaped.clear();
            write_escaped(&mut self.escaped, bytes, Escape::Terminal).context(cannot_write)?;
            &self.escaped[..]
        } else {
            bytes
        };
        let written = async {
            self.stdout.write_all(bytes).await?;
            self.stdout.flush().await
        };
        match written.await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(Error::io(cannot_write(), e)),
        }
    }

    /// Copies what `peer` sends until it ends; returns how many bytes came.
    pub async fn copy_from(
        mut self,
        mut from: impl AsyncRead + Unpin,
        peer: impl std::fmt::Display + Copy,
    ) -> Result<u64> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            let n = match from.read(&mut buf).await {
                Err(e) if crate::tls::is_unannounced_close(&e) => 0,
                read => read.context(|| format!("connection to {peer} failed"))?,
            };
            if n == 0 {
                return Ok(total);
            }
            if total == 0 && self.plain_tcp && looks_like_tls(&buf[..n]) {
                // Its alert is not for a person's eyes, and nothing was delivered.
                return Err(Error::Tls(format!(
                    "{peer} speaks TLS: add --tls (with --pin or --ca to trust it)"
                )));
            }
            total += n as u64;
            if !self.write(&buf[..n]).await? {
                return Ok(total);
            }
        }
    }
}
