//! UDP on loopback: drop accounting, ping, broadcast guard, large datagrams.

use std::net::UdpSocket;

use crate::common::{Server, free_port, portier, run_with_input};

#[test]
fn every_datagram_is_either_received_or_counted_as_dropped() {
    const SENT: usize = 3000;
    // A tiny buffer, and a listener frozen while the burst arrives: most must drop.
    let mut server = Server::start(&["-u", "-f", "json", "--recv-buffer", "4096"]);
    server.run.signal("-STOP");
    let burst: String = (0..SENT).map(|i| format!("datagram {i}\n")).collect();
    let mut send = portier();
    send.args(["send", "-u", "127.0.0.1", &server.port.to_string()]);
    let output = run_with_input(send, burst.as_bytes());
    assert!(output.status.success());
    server.run.signal("-CONT");
    server.run.stderr.wait_for_text("the kernel dropped");
    server.run.stop();
    let records = server.run.stdout.json_lines();
    let received = records.iter().filter(|r| r["event"] == "data").count() as u64;
    let drops = records
        .iter()
        .filter(|r| r["event"] == "drops")
        .map(|r| r["drops"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(drops > 0);
    assert_eq!(
        received + drops,
        SENT as u64,
        "received {received}, dropped {drops}"
    );
    let summary = format!("summary: {drops} datagrams dropped by the kernel");
    assert!(
        server.run.stderr.text().contains(&summary),
        "{}",
        server.run.stderr.text()
    );
}

#[test]
fn the_largest_datagram_arrives_whole() {
    let mut server = Server::start(&["-u", "--once", "-b", "127.0.0.1"]);
    let datagram = vec![b'z'; 65_507];
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .send_to(&datagram, ("127.0.0.1", server.port))
        .unwrap();
    assert!(server.run.wait().success());
    assert_eq!(server.run.stdout.bytes(), datagram);
}

#[test]
fn reply_with_count_is_a_udp_ping_against_the_echo_listener() {
    let mut server = Server::start(&["-u", "--echo"]);
    let output = portier()
        .args([
            "send",
            "-u",
            "--reply",
            "--count",
            "4",
            "--interval",
            "50ms",
        ])
        .args(["127.0.0.1", &server.port.to_string(), "ping"])
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{events}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ping\n".repeat(4));
    assert!(
        events.contains("4 sent, 4 received, 0.0% loss, rtt min/avg/max "),
        "{events}"
    );
    assert_eq!(events.matches("time ").count(), 4, "{events}");
    server.run.stop();
}

#[test]
fn reply_without_an_answer_fails_after_the_timeout() {
    // Something is bound (no ICMP), but it never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let output = portier()
        .args([
            "send",
            "-u",
            "--reply",
            "--reply-timeout",
            "200ms",
            "127.0.0.1",
            &port,
            "hello?",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let events = String::from_utf8_lossy(&output.stderr);
    assert!(
        events.contains("1 sent, 0 received, 100.0% loss"),
        "{events}"
    );
    assert!(events.contains("no reply from 127.0.0.1:"), "{events}");
}

#[test]
fn count_repeats_a_sensor_reading() {
    let mut server = Server::start(&["-u", "-f", "lines"]);
    let status = portier()
        .args(["send", "-u", "--count", "3", "--interval", "0.01"])
        .args(["127.0.0.1", &server.port.to_string(), "21.5C"])
        .status()
        .unwrap();
    assert!(status.success());
    let shown = server.wait_lines(3);
    server.run.stop();
    assert_eq!(shown.matches(" 21.5C\n").count(), 3);
}

#[test]
fn a_broadcast_address_needs_broadcast() {
    let port = free_port().to_string();
    let output = portier()
        .args(["send", "-u", "255.255.255.255", &port, "x"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("add --broadcast"), "{error}");
}

#[test]
fn joining_something_that_is_not_a_group_is_a_usage_error() {
    let output = portier()
        .args(["listen", "0", "-u", "--join", "10.0.0.1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a multicast group"));
}

#[test]
fn a_lone_udp_socket_writing_straight_to_stdout_still_checks_and_echoes() {
    // Raw output to a pipe from one UDP socket: the datagrams skip the writer thread.
    let mut denied = Server::start(&["-u", "-b", "127.0.0.1", "--deny", "127.0.0.1/32"]);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .send_to(b"keep out\n", ("127.0.0.1", denied.port))
        .unwrap();
    denied.run.stderr.wait_for_text("matches --deny");
    denied.run.stop();
    assert!(denied.run.stdout.bytes().is_empty());

    let mut echo = Server::start(&["-u", "-b", "127.0.0.1", "--echo"]);
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    for datagram in [&b"one\n"[..], b"two\n", b"\x00\xff"] {
        socket.send_to(datagram, ("127.0.0.1", echo.port)).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], datagram);
    }
    echo.run
        .stdout
        .wait_for("three datagrams", |b| b.len() == 10);
    echo.run.stop();
    assert_eq!(echo.run.stdout.bytes(), b"one\ntwo\n\x00\xff");
}

#[test]
fn datagrams_queued_when_the_listener_is_stopped_are_still_delivered() {
    // Raw (straight to stdout) and json (through the writer): both drain the socket at the end.
    for format in ["raw", "json"] {
        let mut server = Server::start(&["-u", "-b", "127.0.0.1", "-f", format]);
        server.run.signal("-STOP");
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..100 {
            let datagram = format!("queued {i}\n");
            socket
                .send_to(datagram.as_bytes(), ("127.0.0.1", server.port))
                .unwrap();
        }
        // SIGTERM waits while the process is frozen; it is the first thing seen after.
        server.run.signal("-TERM");
        server.run.signal("-CONT");
        assert!(server.run.wait().success(), "{format}");
        let text = server.run.stdout.text();
        for i in 0..100 {
            assert!(
                text.contains(&format!("queued {i}")),
                "{format}: {i} missing"
            );
        }
    }
}
