//! TCP for the clients: a stream uploaded in constant memory.

use std::fmt::Display;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{IoContext, Result};

/// How much one read of the input takes: the bytes stay in the processor's
/// cache between the read and their encryption (TLS). A pipe or a terminal
/// is read on tokio's blocking pool, and gives at most what is waiting anyway.
const UPLOAD_READ_SIZE: usize = 128 * 1024;

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

/// A regular file read where it is asked for, not on tokio's blocking pool:
/// the page cache answers at memory speed, so a thread hand-over per read
/// (and the pool's copy of the bytes) would cost more than the read itself.
pub struct RegularFile(std::fs::File);

impl From<std::fs::File> for RegularFile {
    fn from(file: std::fs::File) -> Self {
        RegularFile(file)
    }
}

impl AsyncRead for RegularFile {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let read = std::io::Read::read(&mut self.get_mut().0, buf.initialize_unfilled())?;
        buf.advance(read);
        std::task::Poll::Ready(Ok(()))
    }
}
