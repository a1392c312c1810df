//! `portier check HOST PORTS`: is anything listening there? Many ports at
//! once, each with its own timeout, a bounded number at a time.
//!
//! TCP: a connection made and closed is `open`, a refusal `closed`, silence
//! `filtered`. UDP: one probe datagram; an answer is `open`, ICMP "port
//! unreachable" `closed`, silence `open|filtered`. UDP silence is never
//! called open: nothing proves a listener there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::endpoint;
use crate::error::{Error, Result};
use crate::message::Proto;

/// What `portier check` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    /// A name, an IPv4 or an IPv6 address (its first address is checked).
    pub host: String,
    /// The ports, in the order they are reported.
    pub ports: Vec<u16>,
    /// TCP or UDP.
    pub proto: Proto,
    /// How long each port may take to answer.
    pub timeout: Duration,
    /// Ports checked at once.
    pub concurrency: usize,
    /// UDP: the probe datagram (empty by default).
    pub payload: Bytes,
    /// Check again until every port is open, for this long at most.
    pub wait: Option<Duration>,
}

/// What a port said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PortState {
    /// Something listens: a TCP connection was made, or a UDP probe answered.
    #[serde(rename = "open")]
    Open,
    /// Nothing listens: a TCP refusal, or ICMP port unreachable for UDP.
    #[serde(rename = "closed")]
    Closed,
    /// TCP: no answer within the timeout (a firewall dropping, or an unreachable host).
    #[serde(rename = "filtered")]
    Filtered,
    /// UDP: no answer within the timeout; a listener may be there, or a firewall.
    #[serde(rename = "open|filtered")]
    OpenFiltered,
}

impl PortState {
    /// As printed: `open`, `closed`, `filtered`, `open|filtered`.
    pub fn as_str(self) -> &'static str {
        match self {
            PortState::Open => "open",
            PortState::Closed => "closed",
            PortState::Filtered => "filtered",
            PortState::OpenFiltered => "open|filtered",
        }
    }
}

/// One port's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortReport {
    /// The address checked.
    pub addr: SocketAddr,
    /// What it said.
    pub state: PortState,
    /// How long it took to say it.
    pub took: Duration,
}

/// `22,80,8000-8100`: ports and ranges, in order, each 1-65535.
pub fn parse_ports(text: &str) -> std::result::Result<Vec<u16>, String> {
    let port = |word: &str| match word.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("'{word}' is not a port (1-65535)")),
        Ok(port) => Ok(port),
    };
    let mut ports = Vec::new();
    for part in text.split(',') {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (port(first)?, port(last)?);
                if first > last {
                    return Err(format!("'{part}': the range runs backwards"));
                }
                ports.extend(first..=last);
            }
            None => ports.push(port(part)?),
        }
    }
    Ok(ports)
}

/// Checks every port once (or, with `wait`, until all are open or the time
/// is up); the reports in the order of `config.ports`.
pub async fn check_ports(config: &CheckConfig) -> Result<Vec<PortReport>> {
    let ip = endpoint::resolve(&config.host, 0).await?[0].ip();
    endpoint::raise_open_file_limit();
    let deadline = config.wait.map(|wait| Instant::now() + wait);
    loop {
        let reports = check_once(config, ip).await;
        let all_open = reports.iter().all(|r| r.state == PortState::Open);
        match deadline {
            Some(deadline) if !all_open && Instant::now() < deadline => {
                tokio::time::sleep(RETRY_EVERY.min(deadline - Instant::now())).await;
            }
            _ => return Ok(reports),
        }
    }
}

/// How often `--wait` checks again.
const RETRY_EVERY: Duration = Duration::from_millis(250);

async fn check_once(config: &CheckConfig, ip: IpAddr) -> Vec<PortReport> {
    match config.proto {
        Proto::Tcp => {
            let config = config.clone();
            let scan = move || scan_tcp(&config, ip);
            tokio::task::spawn_blocking(scan).await.unwrap_or_default()
        }
        Proto::Udp => check_udp(config, ip).await,
    }
}

/// TCP: `concurrency` threads, each taking the next port and connecting
/// with a blocking call (connect and nothing else: through an event loop,
/// registering every socket made a scan of all ports slower than nc's).
fn scan_tcp(config: &CheckConfig, ip: IpAddr) -> Vec<PortReport> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let reports = Mutex::new(vec![None; config.ports.len()]);
    let threads = config.concurrency.clamp(1, config.ports.len().max(1));
    let work = || {
        let mut spare = None;
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(&port) = config.ports.get(index) else {
                return;
            };
            let addr = SocketAddr::new(ip, port);
            let started = Instant::now();
            let state = probe_tcp(addr, config.timeout, &mut spare);
            let report = PortReport {
                addr,
                state,
                took: started.elapsed(),
            };
            if let Ok(mut reports) = reports.lock() {
                reports[index] = Some(report);
            }
        }
    };
    std::thread::scope(|scope| {
        // Small stacks: a probe needs little, and there may be hundreds.
        let spawned = (0..threads)
            .map(|_| {
                std::thread::Builder::new()
                    .stack_size(64 << 10)
                    .spawn_scoped(scope, work)
            })
            .take_while(Result::is_ok)
            .count();
        if spawned == 0 {
            work(); // no thread to be had: one port after the other, here
        }
    });
    let reports = reports
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    reports.into_iter().flatten().collect()
}

/// Connects to `addr` and closes at once, like nc -z. A socket refused is
/// kept in `spare` for the next port: Linux lets a socket whose connect
/// failed connect again, and making and closing one per port was 40% of a
/// scan of every port (BENCHMARKS.md, "Port check").
fn probe_tcp(
    addr: SocketAddr,
    timeout: Duration,
    spare: &mut Option<socket2::Socket>,
) -> PortState {
    let socket = match spare.take() {
        Some(socket) => socket,
        None => {
            let domain = socket2::Domain::for_address(addr);
            match socket2::Socket::new(domain, socket2::Type::STREAM, None)
                .and_then(|socket| socket.set_write_timeout(Some(timeout)).map(|()| socket))
            {
                Ok(socket) => socket,
                Err(_) => return PortState::Filtered, // out of sockets: no answer to be had
            }
        }
    };
    // A blocking connect gives up after SO_SNDTIMEO: one system call a port.
    match socket
        .connect(&addr.into())
        .and_then(|()| socket.local_addr())
    {
        // A socket whose own port the kernel picked as the one asked for
        // connects to itself (TCP simultaneous open): nobody listens there.
        Ok(local) if local.as_socket() == Some(addr) => PortState::Closed,
        Ok(_) => PortState::Open, // closed at once, on drop
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            *spare = Some(socket);
            PortState::Closed
        }
        Err(_) => PortState::Filtered, // still connecting, maybe: not reused
    }
}

/// UDP: each probe waits for its answer in the event loop, `concurrency` at once.
async fn check_udp(config: &CheckConfig, ip: IpAddr) -> Vec<PortReport> {
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let mut probes = JoinSet::new();
    for (index, &port) in config.ports.iter().enumerate() {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break; // the semaphore is never closed
        };
        let (addr, timeout) = (SocketAddr::new(ip, port), config.timeout);
        let payload = config.payload.clone();
        probes.spawn(async move {
            let started = Instant::now();
            let state = probe_udp(addr, timeout, &payload).await;
            drop(permit);
            (
                index,
                PortReport {
                    addr,
                    state,
                    took: started.elapsed(),
                },
            )
        });
    }
    let mut reports: Vec<Option<PortReport>> = vec![None; config.ports.len()];
    while let Some(done) = probes.join_next().await {
        if let Ok((index, report)) = done {
            reports[index] = Some(report);
        }
    }
    reports.into_iter().flatten().collect()
}

async fn probe_udp(addr: SocketAddr, timeout: Duration, payload: &[u8]) -> PortState {
    let any = match addr {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let answered = async {
        let socket = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
        // Connected, so the kernel hands us the ICMP error for this port.
        socket.connect(addr).await?;
        socket.send(payload).await?;
        socket.recv(&mut [0u8; 1]).await
    };
    match tokio::time::timeout(timeout, answered).await {
        Ok(Ok(_)) => PortState::Open,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => PortState::Closed,
        Ok(Err(_)) | Err(_) => PortState::OpenFiltered,
    }
}

/// How the reports are written on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckOutput {
    /// One JSON object per line instead of text.
    pub json: bool,
    /// Only the open ports.
    pub open_only: bool,
}

#[derive(Serialize)]
struct Record<'a> {
    host: &'a str,
    addr: String,
    port: u16,
    proto: &'a str,
    state: PortState,
    ms: f64,
}

/// Runs `portier check`: checks, writes a line per port on stdout, and is an
/// error (exit 1) unless every port asked is open.
pub async fn check(config: &CheckConfig, output: CheckOutput) -> Result<()> {
    let reports = check_ports(config).await?;
    let mut text = String::new();
    for report in &reports {
        if output.open_only && report.state != PortState::Open {
            continue;
        }
        let ms = report.took.as_secs_f64() * 1000.0;
        if output.json {
            let record = Record {
                host: &config.host,
                addr: report.addr.ip().to_string(),
                port: report.addr.port(),
                proto: config.proto.as_str(),
                state: report.state,
                ms,
            };
            let line = serde_json::to_string(&record).map_err(std::io::Error::from);
            text += &line.map_err(|e| Error::io("cannot write output", e))?;
        } else {
            text += &format!(
                "{} {}/{} {} {ms:.1} ms",
                report.addr.ip(),
                report.addr.port(),
                config.proto,
                report.state.as_str()
            );
        }
        text.push('\n');
    }
    write_stdout(text.as_bytes())?;
    let open = reports
        .iter()
        .filter(|r| r.state == PortState::Open)
        .count();
    if open < config.ports.len() {
        return Err(Error::NotAllOpen {
            open,
            asked: config.ports.len(),
        });
    }
    Ok(())
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::io("cannot write output", e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_lists_and_ranges() {
        assert_eq!(
            parse_ports("22,80,8000-8002"),
            Ok(vec![22, 80, 8000, 8001, 8002])
        );
        assert_eq!(parse_ports("1-65535").map(|p| p.len()), Ok(65535));
        for bad in ["0", "70000", "80-22", "http", "22,", "-5"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
    }
}
