//! UDP for the clients: a stream sent one datagram per line, size checks that
//! never cut a datagram silently, and the ICMP errors the kernel kept.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::net::UdpSocket;

use crate::endpoint;
use crate::error::{Error, IoContext, Result};

/// Sends `input` one datagram per line, never holding more than one datagram in memory.
pub async fn send_lines(
    socket: &UdpSocket,
    peer: SocketAddr,
    input: impl AsyncRead + Unpin,
    newline: bool,
) -> Result<()> {
    let max = endpoint::max_datagram(peer);
    let mut input = BufReader::new(input);
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        // One byte over the limit, plus the newline, tells a too-long line apart.
        let mut limited = (&mut input).take(max as u64 + 2);
        let read = limited
            .read_until(b'\n', &mut line)
            .await
            .context(|| "cannot read input".into())?;
        if read == 0 {
            break;
        }
        if !newline && line.last() == Some(&b'\n') {
            line.pop();
        }
        check_size(peer, &line, || format!("line {number}"))?;
        send_datagram(socket, peer, &line).await?;
    }
    Ok(())
}

/// A datagram over the protocol's limit is an error, never a silent cut.
pub fn check_size(peer: SocketAddr, datagram: &[u8], what: impl FnOnce() -> String) -> Result<()> {
    let max = endpoint::max_datagram(peer);
    if datagram.len() > max {
        return Err(Error::DatagramTooLarge {
            what: what(),
            max,
            addr: peer,
        });
    }
    Ok(())
}

pub async fn send_datagram(socket: &UdpSocket, peer: SocketAddr, datagram: &[u8]) -> Result<()> {
    socket
        .send_to(datagram, peer)
        .await
        .map(drop)
        .map_err(|e| endpoint::udp_send_error(peer, e))
}

/// Reports an ICMP "port unreachable" the kernel has already received for this socket.
pub fn check_unreachable(socket: &UdpSocket, peer: SocketAddr) -> Result<()> {
    match socket.take_error() {
        Ok(Some(e)) => Err(endpoint::udp_send_error(peer, e)),
        _ => Ok(()),
    }
}
