//! Sockets handed in: the library serving sockets a test bound itself (no
//! stderr to parse for a port), and the binary under systemd socket
//! activation (`systemd-socket-activate`, stream and datagram).

use std::io::Write;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::Command;

use portier::listen::{ListenConfig, Listener, Socket};
use portier::message::{Event, Message, SocketKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::common::{Running, free_port, have_peer, portier};

/// The next data message's bytes, skipping events.
async fn next_data(messages: &mut mpsc::Receiver<Message>) -> (SocketKind, Vec<u8>) {
    loop {
        let message = messages.recv().await.expect("the listener ended");
        if let Event::Data { bytes, .. } = message.event {
            return (message.proto, bytes.to_vec());
        }
    }
}

#[tokio::test]
async fn the_library_serves_sockets_it_is_given() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tcp_addr, udp_addr) = (tcp.local_addr().unwrap(), udp.local_addr().unwrap());
    let config = ListenConfig::default();
    let listener =
        Listener::from_sockets(vec![Socket::Tcp(tcp), Socket::Udp(udp)], &config).unwrap();
    let local: Vec<_> = listener
        .local_addrs()
        .into_iter()
        .map(|(_, addr)| addr)
        .collect();
    assert_eq!(local, [tcp_addr.into(), udp_addr.into()]);
    let (events, mut messages) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { listener.serve(&config, events, shutdown).await }
    });
    tokio::task::spawn_blocking(move || {
        TcpStream::connect(tcp_addr)
            .unwrap()
            .write_all(b"over tcp")
            .unwrap();
    })
    .await
    .unwrap();
    assert_eq!(
        next_data(&mut messages).await,
        (SocketKind::Tcp, b"over tcp".to_vec())
    );
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"over udp", udp_addr).unwrap();
    assert_eq!(
        next_data(&mut messages).await,
        (SocketKind::Udp, b"over udp".to_vec())
    );
    shutdown.cancel();
    let summary = serving.await.unwrap();
    assert_eq!((summary.messages, summary.bytes), (2, 16));
}

#[tokio::test]
async fn tls_is_refused_for_a_udp_socket_handed_in() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = ListenConfig {
        tls: Some(portier::tls::ServerTlsConfig {
            identity: portier::tls::ServerIdentity::SelfSigned,
            client_ca: None,
        }),
        ..ListenConfig::default()
    };
    let refused = Listener::from_sockets(vec![Socket::Udp(udp)], &config);
    assert!(refused.is_err_and(|e| e.to_string().contains("UDP cannot do TLS")));
}

/// `systemd-socket-activate [--datagram] -l 127.0.0.1:PORT portier listen ARGS`.
fn activated(test: &str, datagram: bool, args: &[&str]) -> Option<(Running, u16)> {
    if !have_peer(test, "systemd-socket-activate") {
        return None;
    }
    let port = free_port();
    let mut command = Command::new("systemd-socket-activate");
    if datagram {
        command.arg("--datagram");
    }
    command
        .args(["-l", &format!("127.0.0.1:{port}")])
        .arg(portier().get_program())
        .arg("listen")
        .args(args);
    let run = Running::spawn(command);
    crate::common::wait_bound(datagram, port);
    Some((run, port))
}

#[test]
fn systemd_socket_activation_serves_the_passed_tcp_socket() {
    let test = "systemd_socket_activation_serves_the_passed_tcp_socket";
    // The port given is ignored: the socket handed in is served.
    let Some((mut run, port)) = activated(test, false, &["9", "-f", "lines"]) else {
        return;
    };
    TcpStream::connect(("127.0.0.1", port))
        .unwrap()
        .write_all(b"activated\n")
        .unwrap();
    run.stdout.wait_for_text("activated");
    run.stop();
    let events = run.stderr.text();
    assert!(
        events.contains(&format!("listening on tcp 127.0.0.1:{port}")),
        "{events}"
    );
    assert!(!events.contains("udp"), "{events}");
}

#[test]
fn systemd_socket_activation_serves_the_passed_udp_socket() {
    let test = "systemd_socket_activation_serves_the_passed_udp_socket";
    let Some((mut run, port)) = activated(test, true, &["-f", "lines"]) else {
        return;
    };
    // systemd-socket-activate starts portier on the first datagram, which then waits for it.
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"datagram\n", ("127.0.0.1", port))
        .unwrap();
    run.stdout.wait_for_text("datagram");
    run.stop();
    let events = run.stderr.text();
    assert!(
        events.contains(&format!("listening on udp 127.0.0.1:{port}")),
        "{events}"
    );
}

#[test]
fn a_relay_serves_a_unix_socket_systemd_bound() {
    let test = "a_relay_serves_a_unix_socket_systemd_bound";
    if !have_peer(test, "systemd-socket-activate") {
        return;
    }
    use std::io::Read;
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = upstream.local_addr().unwrap().port();
    let served = std::thread::spawn(move || {
        let (mut stream, _) = upstream.accept().unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        stream.write_all(&got.to_ascii_uppercase()).unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("activated.sock");
    let mut command = Command::new("systemd-socket-activate");
    command
        .args(["-l", &path.display().to_string()])
        .arg(portier().get_program())
        .args(["relay", &format!("unix:{}", path.display())])
        .arg(format!("tcp://127.0.0.1:{up_port}"));
    let mut run = Running::spawn(command);
    let start = std::time::Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < crate::common::PATIENCE, "no socket file");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The first client starts portier, which takes the socket systemd bound.
    let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    client.write_all(b"activated").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "ACTIVATED");
    served.join().unwrap();
    run.stderr.wait_for_text("relay listening on unix:");
    run.stop();
}

#[test]
fn sockets_handed_in_must_be_what_the_flags_ask_for() {
    // A UDP and a TCP socket handed in: -t and -u each refuse the other kind,
    // instead of serving what the flag said not to.
    for (flag, why) in [("-t", "takes streams only"), ("-u", "asks for UDP only")] {
        let mut command = portier();
        command.args(["listen", flag]);
        crate::common::hand_in_sockets(&mut command, &[]);
        let output = command.output().unwrap();
        let error = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag}: {error}");
        assert!(error.contains(why), "{flag}: {error}");
    }
}
