//! TCP for the clients: a stream uploaded in constant memory.

use std::fmt::Display;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{IoContext, Result};

/// How much one read of the input takes. Large: a file or stdin is read on
/// tokio's blocking pool, one thread hand-over per read, and TLS then
/// encrypts a whole batch of records per wake-up.
const UPLOAD_READ_SIZE: usize = 1024 * 1024;

/// Streams `input` to `socket` in constant memory; returns the bytes sent.
pub async fn upload(
    mut input: impl AsyncRead + Unpin,
    socket: &mut (impl AsyncWrite + Unpin),
    peer: impl Display + Copy,
) -> Result<u64> {
    let mut buf = vec![0u8; UPLOAD_READ_SIZE];
    let mut sent = 0;
    loop {
        let n = input
            .read(&mut buf)
            .await
            .context(|| "cannot read input".into())?;
        if n == 0 {
            return Ok(sent);
        }
        socket.write_all(&buf[..n]).await.context(|| lost(peer))?;
        sent += n as u64;
    }
}

/// The peer is an address, or a UNIX socket's name.
pub fn lost(peer: impl Display) -> String {
    format!("connection to {peer} lost while sending")
}
