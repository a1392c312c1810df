//! `portier relay`: TCP, TLS, UNIX and UDP joined, with real clients and
//! upstreams (the tests' own sockets, ncat for TLS, socat as a reference).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::common::{
    PATIENCE, Running, connect_from, free_port, have_peer, portier, run_with_input, wait_bound,
};

/// `portier relay FROM TO ARGS`, ready when its socket is bound (it says so
/// on stderr, or with `-f json` on stdout).
fn relay(from: &str, to: &str, args: &[&str]) -> Running {
    let mut command = portier();
    command.args(["relay", from, to]).args(args);
    let run = Running::spawn(command);
    match args.contains(&"json") {
        true => run.stdout.wait_for_text("\"listening\""),
        false => run.stderr.wait_for_text("relay listening on"),
    };
    run
}

/// A UDP socket standing in for the upstream, and the relay in front of it: (upstream, relay port, relay).
fn udp_relay_to_a_socket(args: &[&str]) -> (UdpSocket, u16, Running) {
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    let up_port = upstream.local_addr().unwrap().port();
    upstream.set_read_timeout(Some(PATIENCE)).unwrap();
    let port = free_port();
    let run = relay(
        &format!("udp://127.0.0.1:{port}"),
        &format!("udp://127.0.0.1:{up_port}"),
        args,
    );
    (upstream, port, run)
}

/// Stops the relay; what it said on stderr (its summary last) must hold `text`.
fn stop_saying(run: &mut Running, text: &str) {
    run.stop();
    let said = run.stderr.text();
    assert!(said.contains(text), "{said}");
}

/// A TCP upstream that serves one connection with `serve`.
fn tcp_upstream(serve: impl FnOnce(TcpStream) + Send + 'static) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        serve(stream);
    });
    (port, upstream)
}

/// A UDP upstream that answers `count` datagrams in capitals; who sent each, and what.
fn shouting_udp_upstream(count: usize) -> (u16, JoinHandle<Vec<(std::net::SocketAddr, String)>>) {
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = upstream.local_addr().unwrap().port();
    upstream.set_read_timeout(Some(PATIENCE)).unwrap();
    let echo = thread::spawn(move || {
        let mut buf = [0u8; 64];
        (0..count)
            .map(|_| {
                let (len, from) = upstream.recv_from(&mut buf).unwrap();
                upstream
                    .send_to(&buf[..len].to_ascii_uppercase(), from)
                    .unwrap();
                (from, String::from_utf8_lossy(&buf[..len]).into_owned())
            })
            .collect()
    });
    (port, echo)
}

/// Reads the request to its end (the client's half-close, passed on), then answers and closes.
fn answer_after_eof(mut stream: impl Read + Write) {
    let mut request = Vec::new();
    stream.read_to_end(&mut request).unwrap();
    stream.write_all(&request.to_ascii_uppercase()).unwrap();
}

fn client_exchange(
    mut stream: impl Read + Write,
    half_close: impl FnOnce(&mut dyn Write),
) -> Vec<u8> {
    stream.write_all(b"hello relay").unwrap();
    half_close(&mut stream);
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    answer
}

/// `client_exchange` over a new TCP connection to `port`, half-closed after the request.
fn tcp_exchange(port: u16) -> Vec<u8> {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let shutdown = stream.try_clone().unwrap();
    client_exchange(stream, |_| shutdown.shutdown(Shutdown::Write).unwrap())
}

#[test]
fn tcp_to_tcp_passes_half_closes_both_ways_and_counts_bytes() {
    let (up_port, upstream) = tcp_upstream(answer_after_eof);
    let port = free_port();
    let mut run = relay(
        &format!("tcp://127.0.0.1:{port}"),
        &format!("tcp://127.0.0.1:{up_port}"),
        &[],
    );
    let answer = tcp_exchange(port);
    assert_eq!(answer, b"HELLO RELAY");
    upstream.join().unwrap();
    run.stderr
        .wait_for_text("disconnected: 11 bytes to the upstream, 11 back");
    run.stop();
    assert!(
        run.stderr
            .text()
            .contains("relay summary: 1 clients, 11 bytes to the upstream, 11 bytes back"),
        "{}",
        run.stderr.text()
    );
    assert!(run.stdout.text().is_empty(), "stdout carries no events");
}

#[test]
fn an_upstream_reset_reaches_the_client_as_a_reset() {
    let (up_port, upstream) = tcp_upstream(|mut stream| {
        let mut first = [0u8; 5];
        stream.read_exact(&mut first).unwrap();
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(stream); // RST
    });
    let port = free_port();
    let mut run = relay(
        &format!("tcp://127.0.0.1:{port}"),
        &format!("tcp://127.0.0.1:{up_port}"),
        &[],
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(b"hello").unwrap();
    upstream.join().unwrap();
    let mut buf = [0u8; 16];
    let read = stream.read(&mut buf);
    assert!(
        matches!(&read, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "the client sees a reset, not an orderly end: {read:?}"
    );
    run.stderr.wait_for_text("(reset: ");
    run.stop();
}

#[test]
fn a_unix_socket_in_front_of_tcp_names_its_clients_and_is_removed_on_exit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.sock");
    // A stale socket file (nothing accepts on it) is replaced.
    drop(UnixListener::bind(&path).unwrap());
    let (up_port, upstream) = tcp_upstream(answer_after_eof);
    let from = format!("unix:{}", path.display());
    let mut run = relay(
        &from,
        &format!("tcp://127.0.0.1:{up_port}"),
        &["--mode", "660", "--group", "nogroup"],
    );
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert_eq!(meta.gid(), 65534, "nogroup, from /etc/group");
    let stream = UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let shutdown = stream.try_clone().unwrap();
    let answer = client_exchange(stream, |_| shutdown.shutdown(Shutdown::Write).unwrap());
    assert_eq!(answer, b"HELLO RELAY");
    upstream.join().unwrap();
    // After the exchange (its probe would be a client too), a second relay on the same live socket is refused, and leaves it in place.
    let second = run_with_input(
        {
            let mut command = portier();
            command.args(["relay", &from, "tcp://127.0.0.1:9"]);
            command
        },
        b"",
    );
    assert_eq!(second.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&second.stderr).contains("already listens"));
    let pid = std::process::id();
    run.stderr
        .wait_for_text(&format!("pid={pid},uid=0,gid=0 disconnected"));
    run.stop();
    assert!(!path.exists(), "the socket file is removed on exit");
}

#[test]
fn a_file_that_is_not_a_socket_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("precious");
    std::fs::write(&path, b"keep me").unwrap();
    let mut command = portier();
    command.args([
        "relay",
        &format!("unix:{}", path.display()),
        "tcp://127.0.0.1:9",
    ]);
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a socket: not removed"));
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
}

#[test]
fn tcp_in_front_of_a_unix_socket_and_an_abstract_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upstream.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let upstream = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        answer_after_eof(stream);
    });
    // tcp -> unix:@name -> unix:/path: two relays in a row.
    let name = format!("portier-test-{}", std::process::id());
    let mut inner = relay(
        &format!("unix:@{name}"),
        &format!("unix:{}", path.display()),
        &[],
    );
    let port = free_port();
    let mut outer = relay(
        &format!("tcp://127.0.0.1:{port}"),
        &format!("unix:@{name}"),
        &[],
    );
    let answer = tcp_exchange(port);
    assert_eq!(answer, b"HELLO RELAY");
    upstream.join().unwrap();
    outer.stop();
    inner.stop();
}

#[test]
fn udp_sessions_route_replies_to_their_own_client_and_end_when_idle() {
    let (up_port, echo) = shouting_udp_upstream(2);
    let port = free_port();
    let mut run = relay(
        &format!("udp://127.0.0.1:{port}"),
        &format!("udp://127.0.0.1:{up_port}"),
        &["--idle-timeout", "0.3"],
    );
    let (a, b) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    let mut buf = [0u8; 64];
    for (client, text) in [(&a, b"from a".as_slice()), (&b, b"from b".as_slice())] {
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        client.send_to(text, ("127.0.0.1", port)).unwrap();
        let len = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], text.to_ascii_uppercase().as_slice());
    }
    let sources = echo.join().unwrap();
    assert_ne!(
        sources[0], sources[1],
        "each client has its own upstream socket"
    );
    run.stderr.wait_for("both sessions to end", |b| {
        String::from_utf8_lossy(b)
            .matches("session ended (idle)")
            .count()
            >= 2
    });
    stop_saying(&mut run, "(2 datagrams up, 2 back)");
}

#[test]
fn a_burst_from_one_client_goes_upstream_whole_and_in_order() {
    // Taken off the socket and sent on in batches: none lost, none reordered.
    let (upstream, port, mut run) = udp_relay_to_a_socket(&[]);
    let received = thread::spawn(move || {
        let mut buf = [0u8; 16];
        (0..200)
            .map(|_| {
                let len = upstream.recv(&mut buf).unwrap();
                String::from_utf8_lossy(&buf[..len]).into_owned()
            })
            .collect::<Vec<_>>()
    });
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    for datagram in &sent {
        client
            .send_to(datagram.as_bytes(), ("127.0.0.1", port))
            .unwrap();
    }
    assert_eq!(received.join().unwrap(), sent);
    stop_saying(&mut run, "(200 datagrams up, 0 back)");
}

#[test]
fn udp_sessions_past_m_are_turned_away_while_each_is_a_real_exchange() {
    let (upstream, port, mut run) = udp_relay_to_a_socket(&["-m", "1"]);
    // An answer, then the client again: its session is assured.
    let first = UdpSocket::bind("127.0.0.1:0").unwrap();
    first.set_read_timeout(Some(PATIENCE)).unwrap();
    first.send_to(b"1", ("127.0.0.1", port)).unwrap();
    let (_, session) = upstream.recv_from(&mut [0u8; 8]).unwrap();
    upstream.send_to(b"one", session).unwrap();
    first.recv(&mut [0u8; 8]).unwrap();
    first.send_to(b"2", ("127.0.0.1", port)).unwrap();
    upstream.recv_from(&mut [0u8; 8]).unwrap();
    let second = UdpSocket::bind("127.0.0.1:0").unwrap();
    second.send_to(b"x", ("127.0.0.1", port)).unwrap();
    first.send_to(b"3", ("127.0.0.1", port)).unwrap();
    let mut got = [0u8; 8];
    let (len, from) = upstream.recv_from(&mut got).unwrap(); // "3": so "x" was handled before it
    assert_eq!((&got[..len], from), (b"3".as_slice(), session));
    stop_saying(&mut run, "1 turned away (-m, --max-per-ip)");
}

/// 20,000 datagrams sent as fast as they go to a UDP relay to `to`, then
/// SIGTERM at once: each was relayed, dropped by the kernel or still queued,
/// and counted as one of those.
fn a_burst_cut_off_by_sigterm_is_all_counted(to: &str) {
    const SENT: u64 = 20_000;
    let port = free_port();
    let mut run = relay(&format!("udp://127.0.0.1:{port}"), to, &["-f", "json"]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..SENT {
        client.send_to(&[b'x'; 64], ("127.0.0.1", port)).unwrap();
    }
    run.stop(); // at once: some of it is still queued
    let records = run.stdout.json_lines();
    let summary = records.last().unwrap();
    let get = |key: &str| summary[key].as_u64().unwrap_or(0);
    let counted = get("datagrams_up") + get("kernel_drops") + get("queued_at_shutdown");
    assert_eq!(counted, SENT, "{summary}");
}

#[test]
fn every_datagram_of_a_burst_cut_off_by_sigterm_is_relayed_or_counted() {
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    let up_port = upstream.local_addr().unwrap().port();
    a_burst_cut_off_by_sigterm_is_all_counted(&format!("udp://127.0.0.1:{up_port}"));
}

#[test]
fn every_datagram_of_a_burst_cut_off_on_its_way_to_lines_is_relayed_or_counted() {
    let collector = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = collector.local_addr().unwrap().port();
    let drained = thread::spawn(move || {
        let (mut stream, _) = collector.accept().unwrap();
        std::io::copy(&mut stream, &mut std::io::sink()).unwrap();
    });
    a_burst_cut_off_by_sigterm_is_all_counted(&format!("tcp://127.0.0.1:{up_port}"));
    drained.join().unwrap();
}

#[test]
fn a_flood_of_made_up_sources_ends_a_session_a_millisecond_at_most() {
    // Each newcomer that takes a place costs a socket and a task: a flood of
    // them is turned away, but for one a millisecond. Every datagram counted.
    const SOURCES: u64 = 1000;
    let (_upstream, port, mut run) =
        udp_relay_to_a_socket(&["-m", "1", "-f", "json", "--stats", "0.05"]);
    let started = std::time::Instant::now();
    // All kept open, so no two share a port (a reused one would join a session).
    let sources: Vec<UdpSocket> = (0..SOURCES)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for source in &sources {
        source.send_to(b"x", ("127.0.0.1", port)).unwrap();
    }
    let get = |record: &serde_json::Value, key: &str| record[key].as_u64().unwrap_or(0);
    let handled = |record: &serde_json::Value| get(record, "clients") + get(record, "turned_away");
    // Most of them handled (the kernel may drop some: they are counted at the end).
    let most_handled = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes).lines().any(|line| {
            serde_json::from_str(line).is_ok_and(|record| handled(&record) >= SOURCES / 2)
        })
    };
    run.stdout.wait_for("most datagrams handled", most_handled);
    run.stop();
    let took_ms = started.elapsed().as_millis() as u64;
    let records = run.stdout.json_lines();
    let summary = records.last().unwrap();
    let evicted = get(summary, "evicted");
    assert_eq!(get(summary, "clients"), evicted + 1, "{summary}");
    let unhandled = get(summary, "kernel_drops") + get(summary, "queued_at_shutdown");
    assert_eq!(handled(summary) + unhandled, SOURCES, "{summary}");
    assert!(evicted <= took_ms + 1, "{evicted} ended in {took_ms} ms");
}

#[test]
fn reply_rate_bounds_what_a_client_gets_back_and_counts_the_rest() {
    // What a spoofed source's victim would get from an upstream that answers big.
    const REPLIES: u64 = 100;
    let (upstream, port, mut run) =
        udp_relay_to_a_socket(&["--reply-rate", "10", "-f", "json", "--stats", "0.05"]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"one request", ("127.0.0.1", port)).unwrap();
    let (_, session) = upstream.recv_from(&mut [0u8; 64]).unwrap();
    let started = std::time::Instant::now();
    for _ in 0..REPLIES {
        upstream.send_to(&[b'r'; 512], session).unwrap();
    }
    let get = |record: &serde_json::Value, key: &str| record[key].as_u64().unwrap_or(0);
    let settled = |record: &serde_json::Value| {
        get(record, "datagrams_down") + get(record, "replies_limited") == REPLIES
    };
    run.stdout.wait_for("every reply sent or counted", |bytes| {
        let text = String::from_utf8_lossy(bytes);
        let mut records = text.lines().filter_map(|l| serde_json::from_str(l).ok());
        records.any(|record| settled(&record))
    });
    let took = started.elapsed().as_secs_f64();
    run.stop();
    let records = run.stdout.json_lines();
    let summary = records.last().unwrap();
    assert!(settled(summary), "{summary}");
    // A burst of 10, and 10 a second more while the 100 came.
    let sent = get(summary, "datagrams_down") as f64;
    assert!(
        sent >= 10.0 && sent <= 10.0 + 10.0 * took + 1.0,
        "{took} s: {summary}"
    );
}

#[test]
fn a_full_udp_relay_ends_a_session_never_answered_back_and_forth_for_a_newcomer() {
    // What spoofed sources leave behind (they never see the answers) must
    // not keep real clients out until it idles away.
    let (upstream, port, mut run) = udp_relay_to_a_socket(&["-m", "1", "-f", "json"]);
    let one_shot = UdpSocket::bind("127.0.0.1:0").unwrap();
    one_shot.send_to(b"a", ("127.0.0.1", port)).unwrap();
    let (_, first_session) = upstream.recv_from(&mut [0u8; 8]).unwrap();
    let newcomer = UdpSocket::bind("127.0.0.1:0").unwrap();
    newcomer.set_read_timeout(Some(PATIENCE)).unwrap();
    newcomer.send_to(b"b", ("127.0.0.1", port)).unwrap();
    let mut got = [0u8; 8];
    let (len, session) = upstream.recv_from(&mut got).unwrap();
    assert_eq!(&got[..len], b"b");
    assert_ne!(
        session, first_session,
        "the newcomer has a session of its own"
    );
    upstream.send_to(b"B", session).unwrap();
    assert_eq!(newcomer.recv(&mut got).unwrap(), 1);
    run.stop();
    let records = run.stdout.json_lines();
    let evicted = records
        .iter()
        .find(|record| record["why"] == "evicted")
        .unwrap_or_else(|| panic!("{records:?}"));
    assert_eq!(
        evicted["client"],
        one_shot.local_addr().unwrap().to_string()
    );
    assert_eq!(evicted["by"], newcomer.local_addr().unwrap().to_string());
    let summary = records.last().unwrap();
    assert_eq!(
        (summary["evicted"].as_u64(), summary["turned_away"].as_u64()),
        (Some(1), Some(0))
    );
}

#[test]
fn tls_in_front_of_tcp_for_an_ncat_client() {
    if !have_peer("tls_in_front_of_tcp_for_an_ncat_client", "ncat") {
        return;
    }
    let (up_port, upstream) = tcp_upstream(answer_after_eof);
    let port = free_port();
    let mut run = relay(
        &format!("tls://127.0.0.1:{port}"),
        &format!("tcp://127.0.0.1:{up_port}"),
        &["--self-signed"],
    );
    let mut ncat = std::process::Command::new("ncat");
    ncat.args(["--ssl", "127.0.0.1", &port.to_string()]);
    let out = run_with_input(ncat, b"over tls");
    assert_eq!(
        out.stdout,
        b"OVER TLS",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    upstream.join().unwrap();
    run.stop();
}

#[test]
fn clients_outside_allow_are_refused_and_counted() {
    let port = free_port();
    let mut run = relay(
        &format!("tcp://127.0.0.1:{port}"),
        "tcp://127.0.0.1:9",
        &["--allow", "10.0.0.0/8"],
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 8];
    assert!(
        matches!(stream.read(&mut buf), Ok(0) | Err(_)),
        "closed at once"
    );
    run.stderr.wait_for_text("refused: ");
    stop_saying(&mut run, "1 refused (--allow/--deny)");
}

/// `--max-per-ip`: a second connection from the same address is closed at
/// once and counted, while another address is relayed.
#[test]
fn max_per_ip_keeps_one_address_to_its_share() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = format!("tcp://{}", upstream.local_addr().unwrap());
    let port = free_port();
    let from = format!("tcp://127.0.0.1:{port}");
    let mut run = relay(&from, &to, &["--max-per-ip", "1"]);
    let _first = connect_from([127, 0, 0, 3], port);
    upstream.accept().unwrap(); // relayed
    let mut second = connect_from([127, 0, 0, 3], port);
    second.set_read_timeout(Some(PATIENCE)).unwrap();
    assert!(
        matches!(second.read(&mut [0u8; 8]), Ok(0) | Err(_)),
        "closed at once"
    );
    let _other = connect_from([127, 0, 0, 4], port);
    upstream.accept().unwrap(); // relayed too
    run.stderr.wait_for_text("(--max-per-ip)");
    stop_saying(&mut run, "1 turned away (-m, --max-per-ip)");
}

#[test]
fn pairs_that_cannot_work_are_usage_errors() {
    for (from, to, why) in [
        (
            "udp://:5000",
            "unix:/tmp/x.sock",
            "joined between udp:// and tcp:// only",
        ),
        ("tcp://127.0.0.1:5000", "tcp://127.0.0.1:5000", "would loop"),
        ("tls://:5000", "tcp://127.0.0.1:9", "needs a certificate"),
        ("tcp//:5000", "tcp://127.0.0.1:9", "not an address"),
        ("tcp://:99999", "tcp://127.0.0.1:9", "'99999' is not a port"),
    ] {
        usage_error(from, to, why);
    }
    // The relay itself under another name: found once FROM is bound.
    for (from, to) in [
        ("tcp://:{port}", "tcp://localhost:{port}"),
        ("tcp://127.0.0.1:{port}", "tls://127.0.0.1:{port}"),
        ("udp://:{port}", "udp://localhost:{port}"),
    ] {
        let port = free_port().to_string();
        let (from, to) = (from.replace("{port}", &port), to.replace("{port}", &port));
        usage_error(&from, &to, "is this relay's own port, it would loop");
    }
}

/// `relay FROM TO` ends at once with exit code 2 and one line saying `why`.
fn usage_error(from: &str, to: &str, why: &str) {
    let mut command = portier();
    command.args(["relay", from, to]);
    let out = run_with_input(command, b"");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{from} {to}: {said}");
    assert!(said.contains(why), "{from} {to}: {said}");
    assert_eq!(said.lines().count(), 1, "one line: {said}");
}

#[test]
fn the_same_bytes_as_socat_for_a_large_stream() {
    if !have_peer("the_same_bytes_as_socat_for_a_large_stream", "socat") {
        return;
    }
    // A sink that counts what reaches it, behind portier and behind socat.
    let through = |relay_cmd: &dyn Fn(u16, u16) -> Running| {
        let sink = TcpListener::bind("127.0.0.1:0").unwrap();
        let sink_port = sink.local_addr().unwrap().port();
        let counter = thread::spawn(move || {
            let (mut stream, _) = sink.accept().unwrap();
            let mut all = Vec::new();
            stream.read_to_end(&mut all).unwrap();
            all
        });
        let port = free_port();
        let mut run = relay_cmd(port, sink_port);
        wait_bound(false, port);
        let data: Vec<u8> = (0..4_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(&data).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let got = counter.join().unwrap();
        run.terminate();
        let _ = run.wait();
        (got == data, got.len())
    };
    let ours = through(&|port, sink| {
        relay(
            &format!("tcp://127.0.0.1:{port}"),
            &format!("tcp://127.0.0.1:{sink}"),
            &[],
        )
    });
    let socat = through(&|port, sink| {
        let mut command = std::process::Command::new("socat");
        command.args([
            format!("TCP-LISTEN:{port},bind=127.0.0.1"),
            format!("TCP:127.0.0.1:{sink}"),
        ]);
        Running::spawn(command)
    });
    assert_eq!(ours, socat);
    assert_eq!(ours, (true, 4_000_000));
}

#[test]
fn udp_datagrams_become_lines_on_one_tcp_connection_to_a_collector() {
    let collector = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = collector.local_addr().unwrap().port();
    let lines = thread::spawn(move || {
        let (stream, _) = collector.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut got = String::new();
        let mut reader = std::io::BufReader::new(stream);
        for _ in 0..3 {
            std::io::BufRead::read_line(&mut reader, &mut got).unwrap();
        }
        got
    });
    let port = free_port();
    let mut run = relay(
        &format!("udp://127.0.0.1:{port}"),
        &format!("tcp://127.0.0.1:{up_port}"),
        &[],
    );
    let (a, b) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    a.send_to(b"<13>one", ("127.0.0.1", port)).unwrap();
    thread::sleep(Duration::from_millis(50)); // in order
    b.send_to(b"<13>two\n", ("127.0.0.1", port)).unwrap();
    thread::sleep(Duration::from_millis(50));
    a.send_to(b"<13>three", ("127.0.0.1", port)).unwrap();
    assert_eq!(lines.join().unwrap(), "<13>one\n<13>two\n<13>three\n");
    stop_saying(&mut run, "(3 datagrams up, 0 back)");
}

#[test]
fn tcp_lines_become_datagrams_and_answers_come_back_as_lines() {
    let (up_port, echo) = shouting_udp_upstream(2);
    let port = free_port();
    let mut run = relay(
        &format!("tcp://127.0.0.1:{port}"),
        &format!("udp://127.0.0.1:{up_port}"),
        &[],
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(b"ping\npong\n").unwrap();
    let mut answers = [0u8; 10];
    stream.read_exact(&mut answers).unwrap();
    assert_eq!(&answers, b"PING\nPONG\n");
    let got: Vec<String> = echo
        .join()
        .unwrap()
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert_eq!(
        got,
        ["ping", "pong"],
        "one datagram a line, without its newline"
    );
    run.stop();
}

#[test]
fn stats_says_the_totals_so_far_while_relaying() {
    let (up_port, upstream) = tcp_upstream(answer_after_eof);
    let port = free_port();
    let mut run = relay(
        &format!("tcp://127.0.0.1:{port}"),
        &format!("tcp://127.0.0.1:{up_port}"),
        &["--stats", "0.1"],
    );
    tcp_exchange(port);
    upstream.join().unwrap();
    run.stderr
        .wait_for_text("relay so far: 1 clients, 11 bytes to the upstream, 11 bytes back");
    run.stop();
}

#[test]
fn a_unix_datagram_socket_feeds_a_collector_that_logger_writes_to() {
    let test = "a_unix_datagram_socket_feeds_a_collector_that_logger_writes_to";
    if !have_peer(test, "logger") {
        return;
    }
    let collector = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = collector.local_addr().unwrap().port();
    let lines = thread::spawn(move || {
        let (stream, _) = collector.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stream), &mut line).unwrap();
        line
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sock");
    let from = format!("unix-dgram:{}", path.display());
    let mut run = relay(&from, &format!("tcp://127.0.0.1:{up_port}"), &[]);
    // The real logger, writing to the socket as to /dev/log: one unnamed datagram.
    let status = std::process::Command::new("logger")
        .args([
            "--socket",
            &path.display().to_string(),
            "--tag",
            "portier-test",
        ])
        .arg("hello from logger")
        .status()
        .unwrap();
    assert!(status.success());
    let line = lines.join().unwrap();
    assert!(
        line.contains("portier-test") && line.ends_with("hello from logger\n"),
        "{line:?}"
    );
    run.stop();
    assert!(!path.exists(), "the socket file is removed on exit");
}

#[test]
fn a_live_socket_of_the_other_type_is_never_replaced() {
    // A datagram socket in use (as /dev/log is) looks refused to a stream connect.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live-dgram.sock");
    let _live = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    let mut command = portier();
    command.args([
        "relay",
        &format!("unix:{}", path.display()),
        "tcp://127.0.0.1:9",
    ]);
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already listens"));
    assert!(path.exists(), "left in place");
}

#[test]
fn unix_datagrams_go_on_as_udp_datagrams() {
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    let up_port = upstream.local_addr().unwrap().port();
    upstream.set_read_timeout(Some(PATIENCE)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.sock");
    let from = format!("unix-dgram:{}", path.display());
    let mut run = relay(&from, &format!("udp://127.0.0.1:{up_port}"), &[]);
    let mut command = portier();
    command.args(["send", &from]);
    let out = run_with_input(command, b"one\ntwo\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut buf = [0u8; 16];
    for expected in [&b"one\n"[..], b"two\n"] {
        let len = upstream.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], expected);
    }
    stop_saying(&mut run, "(2 datagrams up, 0 back)");
}

#[test]
fn json_events_for_scripts_on_stdout() {
    let (up_port, upstream) = tcp_upstream(answer_after_eof);
    let port = free_port();
    let mut command = portier();
    command.args([
        "relay",
        &format!("tcp://127.0.0.1:{port}"),
        &format!("tcp://127.0.0.1:{up_port}"),
        "-f",
        "json",
    ]);
    let mut run = Running::spawn(command);
    wait_bound(false, port);
    assert_eq!(tcp_exchange(port), b"HELLO RELAY");
    upstream.join().unwrap();
    run.stdout.wait_for_text("\"disconnect\"");
    run.stop();
    let records = run.stdout.json_lines();
    let events: Vec<&str> = records
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["listening", "connect", "disconnect", "summary"]);
    assert_eq!(
        (
            records[2]["bytes_up"].as_u64(),
            records[2]["bytes_down"].as_u64()
        ),
        (Some(11), Some(11))
    );
    assert_eq!(records[3]["clients"].as_u64(), Some(1));
    assert!(
        run.stderr.text().is_empty(),
        "events are on stdout: {}",
        run.stderr.text()
    );
}

#[test]
fn udp_datagrams_go_on_to_a_unix_datagram_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.sock");
    let sink = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sink.set_read_timeout(Some(PATIENCE)).unwrap();
    let port = free_port();
    let mut run = relay(
        &format!("udp://127.0.0.1:{port}"),
        &format!("unix-dgram:{}", path.display()),
        &[],
    );
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .send_to(b"<14>to syslog", ("127.0.0.1", port))
        .unwrap();
    let mut buf = [0u8; 64];
    let len = sink.recv(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"<14>to syslog");
    run.stop();
    let mut command = portier();
    command.args([
        "relay",
        "tcp://127.0.0.1:5001",
        &format!("unix-dgram:{}", path.display()),
    ]);
    let out = run_with_input(command, b"");
    assert_eq!(
        out.status.code(),
        Some(2),
        "a stream to a datagram socket is refused"
    );
}

/// A datagram claiming to come from an echo service (port 7) would have the
/// upstream's answer go to that service, whose echo would come back as a new
/// request, forever: the relay opens no session for it, and says so once.
#[test]
fn a_udp_source_that_would_loop_gets_no_session() {
    let test = "a_udp_source_that_would_loop_gets_no_session";
    // Port 7 is below 1024: only root may bind it.
    let Ok(echo_service) = UdpSocket::bind("127.0.0.77:7") else {
        crate::common::skip(test, "cannot bind 127.0.0.77:7 (needs root)");
        return;
    };
    let (up_port, upstream) = shouting_udp_upstream(1);
    let port = free_port();
    let mut run = relay(
        &format!("udp://127.0.0.1:{port}"),
        &format!("udp://127.0.0.1:{up_port}"),
        &[],
    );
    for _ in 0..3 {
        echo_service.send_to(b"loop", ("127.0.0.1", port)).unwrap();
    }
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.send_to(b"hello", ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 16];
    let (len, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"HELLO");
    // The upstream saw the client's datagram only (it answers one, then stops).
    let seen = upstream.join().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1, "hello");
    run.stop();
    let said = run.stderr.text();
    assert_eq!(said.matches("a spoofed loop").count(), 1, "{said}");
    assert!(said.contains("3 from a looping source"), "{said}");
}

/// Spoofed datagrams cost an attacker nothing: a flood of refused ones is
/// counted in full but said only the first ten times and then at each power
/// of two, so stderr (and whatever logs it) keeps up.
#[test]
fn a_flood_of_refused_datagrams_is_counted_not_echoed_line_by_line() {
    let port = free_port();
    let mut run = relay(
        &format!("udp://127.0.0.1:{port}"),
        "udp://127.0.0.1:9",
        &["--allow", "10.0.0.0/8"],
    );
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..64 {
        client.send_to(b"x", ("127.0.0.1", port)).unwrap();
    }
    run.stderr.wait_for_text("(#64)");
    run.stop();
    let said = run.stderr.text();
    assert_eq!(said.matches(" refused: ").count(), 13, "{said}"); // 1-10, 16, 32, 64
    assert!(said.contains("64 refused (--allow/--deny)"), "{said}");
}
