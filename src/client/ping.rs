//! `portier send -u --reply`: send a datagram (every interval, `--count`
//! times) and print the answers as they come, like ping: a reply missing
//! after the reply timeout counts as lost, and a summary closes the run.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep_until};

use super::datagram::send_datagram;
use super::output::PeerOutput;
use crate::endpoint::{natural, udp_send_error};
use crate::error::{Error, Result};

/// How often a UDP message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeat {
    /// How many times.
    pub count: u64,
    /// The time between two sends.
    pub interval: Duration,
}

impl Default for Repeat {
    fn default() -> Self {
        Repeat {
            count: 1,
            interval: Duration::from_secs(1),
        }
    }
}

/// What a ping run saw.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    pub sent: u64,
    /// Replies beyond one per request (e.g. several hosts answering a broadcast).
    pub extra: u64,
    /// The round-trip time of each reply matched to a request within the timeout.
    pub rtts: Vec<Duration>,
}

impl Tally {
    /// Replies matched to a request within the timeout.
    pub fn received(&self) -> u64 {
        self.rtts.len() as u64
    }

    pub fn lost(&self) -> u64 {
        self.sent - self.received()
    }

    /// `5 sent, 4 received, 20.0% loss, rtt min/avg/max 0.101/0.150/0.213 ms`
    pub fn summary(&self) -> String {
        let loss = if self.sent == 0 {
            0.0
        } else {
            100.0 * self.lost() as f64 / self.sent as f64
        };
        let mut line = format!(
            "{} sent, {} received, {loss:.1}% loss",
            self.sent,
            self.received()
        );
        if let (Some(min), Some(max)) = (self.rtts.iter().min(), self.rtts.iter().max()) {
            let avg = self.rtts.iter().sum::<Duration>() / self.rtts.len() as u32;
            line += &format!(", rtt min/avg/max {}/{}/{} ms", ms(*min), ms(avg), ms(*max));
        }
        if self.extra > 0 {
            line += &format!(", {} extra replies", self.extra);
        }
        line
    }
}

fn no_reply(seq: u64, reply_timeout: Duration) {
    let after = humantime::format_duration(reply_timeout);
    crate::sink::say(&format!("no reply to request {seq} within {after}"));
}

fn ms(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64() * 1000.0)
}

/// Sends `datagram` `repeat.count` times and prints each answer on stdout as
/// it arrives, its round-trip time on stderr, then the summary on stderr.
///
/// A single request waits the whole `reply_timeout` and prints every answer
/// (several hosts may answer a broadcast); a series ends as soon as each
/// request is answered or timed out.
pub async fn run(
    socket: &UdpSocket,
    peer: SocketAddr,
    datagram: &[u8],
    repeat: Repeat,
    reply_timeout: Duration,
) -> Result<()> {
    let tally = exchange(socket, peer, datagram, repeat, reply_timeout).await?;
    crate::sink::say(&format!("{peer}: {}", tally.summary()));
    if tally.received() == 0 {
        return Err(Error::NoReply {
            addr: peer,
            after: reply_timeout,
        });
    }
    Ok(())
}

async fn exchange(
    socket: &UdpSocket,
    peer: SocketAddr,
    datagram: &[u8],
    repeat: Repeat,
    reply_timeout: Duration,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut output = PeerOutput::default();
    let mut buf = vec![0u8; 65_536];
    // Requests not yet answered, oldest first: (sequence number, when sent).
    let mut waiting: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut next_send = Instant::now();
    let mut window_end = next_send + reply_timeout;
    loop {
        let all_sent = tally.sent == repeat.count;
        let answered_all = repeat.count > 1 && waiting.is_empty();
        if all_sent && (answered_all || Instant::now() >= window_end) {
            for (seq, _) in waiting {
                no_reply(seq, reply_timeout);
            }
            return Ok(tally);
        }
        let oldest_expires = waiting.front().map(|(_, sent)| *sent + reply_timeout);
        tokio::select! {
            _ = sleep_until(next_send), if !all_sent => {
                send_datagram(socket, peer, datagram).await?;
                tally.sent += 1;
                let now = Instant::now();
                waiting.push_back((tally.sent, now));
                next_send = now + repeat.interval;
                window_end = now + reply_timeout;
            }
            _ = sleep_until(oldest_expires.unwrap_or(window_end)), if oldest_expires.is_some() => {
                if let Some((seq, _)) = waiting.pop_front() {
                    no_reply(seq, reply_timeout);
                }
            }
            _ = sleep_until(window_end), if all_sent => {}
            received = socket.recv_from(&mut buf) => {
                let (len, from) = received.map_err(|e| udp_send_error(peer, e))?;
                let from = natural(from);
                let reply = &buf[..len];
                match waiting.pop_front() {
                    Some((seq, sent)) => {
                        let rtt = sent.elapsed();
                        tally.rtts.push(rtt);
                        crate::sink::say(&format!("reply {seq} from {from}: {len} bytes, time {} ms", ms(rtt)));
                    }
                    None => {
                        tally.extra += 1;
                        crate::sink::say(&format!("extra reply from {from}: {len} bytes"));
                    }
                }
                output.write(reply).await?;
                if !reply.ends_with(b"\n") {
                    output.write(b"\n").await?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_reads_like_ping() {
        let tally = Tally {
            sent: 5,
            extra: 0,
            rtts: [100, 200, 150, 150].map(Duration::from_micros).to_vec(),
        };
        assert_eq!(
            tally.summary(),
            "5 sent, 4 received, 20.0% loss, rtt min/avg/max 0.100/0.150/0.200 ms"
        );
    }
}
