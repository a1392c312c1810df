//! `portier check`: open, closed and silent ports over TCP and UDP, the same
//! open set as OpenBSD `nc -z`, JSON, `--open`, `--wait`, and the exit codes.

use std::net::{TcpListener, UdpSocket};
use std::process::Output;
use std::thread;
use std::time::Duration;

use crate::common::{free_port, have_peer, portier};

fn check(args: &[&str]) -> Output {
    portier().arg("check").args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn tcp_ports_are_open_or_closed_and_the_exit_says_whether_all_are_open() {
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = open.local_addr().unwrap().port();
    let closed = free_port();
    let ports = format!("{open},{closed}");
    let output = check(&["127.0.0.1", &ports]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1 {open}/tcp open ")),
        "{text}"
    );
    assert!(
        text.contains(&format!("127.0.0.1 {closed}/tcp closed ")),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("1 of 2 ports open"));
    let output = check(&["127.0.0.1", &open.to_string()]);
    assert!(output.status.success());
    // --open: only the open port; --json: one exact record per port.
    let output = check(&["127.0.0.1", &ports, "--open", "--json"]);
    let records: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["port"], open);
    assert_eq!(records[0]["state"], "open");
    assert_eq!(records[0]["proto"], "tcp");
}

#[test]
fn the_open_set_is_the_one_openbsd_nc_finds() {
    if !have_peer("the_open_set_is_the_one_openbsd_nc_finds", "nc") {
        return;
    }
    // Two listeners two ports apart, in a range of five: other tests running
    // beside this one are unlikely to open a port in it meanwhile.
    let (listeners, first) = loop {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if let Some(second) = port
            .checked_add(2)
            .and_then(|p| TcpListener::bind(("127.0.0.1", p)).ok())
        {
            break ([first, second], port);
        }
    };
    let open = [first, first + 2];
    let range = format!("{}-{}", first - 1, first + 3);
    let by_nc = std::process::Command::new("nc")
        .args(["-z", "-v", "-w", "1", "127.0.0.1", &range])
        .output()
        .unwrap();
    let nc_open: Vec<u16> = String::from_utf8_lossy(&by_nc.stderr)
        .lines()
        .filter(|line| line.contains("succeeded"))
        .filter_map(|line| line.split_whitespace().nth(3)?.parse().ok())
        .collect();
    let ours = check(&["127.0.0.1", &range, "--open"]);
    let our_open: Vec<u16> = stdout(&ours)
        .lines()
        .filter_map(|line| {
            line.split_whitespace()
                .nth(1)?
                .split('/')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(our_open, nc_open);
    assert!(
        open.iter().all(|port| our_open.contains(port)),
        "{our_open:?}"
    );
    drop(listeners); // open until both scans are done
}

#[test]
fn udp_answers_icmp_and_silence_are_told_apart() {
    // One port answers every datagram, one is bound and silent, one is closed.
    let answering = UdpSocket::bind("127.0.0.1:0").unwrap();
    let answering_port = answering.local_addr().unwrap().port();
    answering
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let answerer = thread::spawn(move || {
        let mut buf = [0u8; 64];
        if let Ok((_, from)) = answering.recv_from(&mut buf) {
            answering.send_to(b"here", from).unwrap();
        }
    });
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let closed = free_port();
    let ports = format!("{answering_port},{silent_port},{closed}");
    let output = check(&["-u", "-w", "0.5", "127.0.0.1", &ports, "--payload", "ping"]);
    answerer.join().unwrap();
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("{answering_port}/udp open ")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{silent_port}/udp open|filtered ")),
        "{text}"
    );
    assert!(text.contains(&format!("{closed}/udp closed ")), "{text}");
}

#[test]
fn wait_returns_once_the_port_opens() {
    let port = free_port();
    let opener = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        thread::sleep(Duration::from_secs(3));
        drop(listener);
    });
    let output = check(&["127.0.0.1", &port.to_string(), "--wait", "10"]);
    assert!(output.status.success(), "{}", stdout(&output));
    assert!(stdout(&output).contains("/tcp open "));
    opener.join().unwrap();
}

#[test]
fn bad_port_lists_are_usage_errors() {
    for ports in ["0", "70000", "90-80", "http"] {
        let output = check(&["127.0.0.1", ports]);
        let error = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{ports}: {error}");
        assert_eq!(error.lines().count(), 1, "{error}");
    }
}
