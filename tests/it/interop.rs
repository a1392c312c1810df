//! Interoperability with peers no one here wrote: the seed's own Python
//! programs, OpenBSD nc, ncat and socat, each as client and as server.

use std::process::Command;

use crate::common::{
    Running, SeedProgram, Server, free_port, have_peer, portier, python, run_with_input,
    seed_program, wait_bound,
};

/// Runs a peer client that sends `input` from its stdin to a fresh `portier listen`.
fn peer_client_to_portier(
    listen_args: &[&str],
    peer: &str,
    peer_args: &[&str],
    input: &[u8],
) -> Vec<u8> {
    let mut server = Server::start(listen_args);
    let port = server.port.to_string();
    let mut command = Command::new(peer);
    command.args(peer_args.iter().map(|a| a.replace("PORT", &port)));
    let output = run_with_input(command, input);
    assert!(
        output.status.success(),
        "{peer}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(server.run.wait().success(), "{}", server.run.stderr.text());
    server.run.stdout.bytes()
}

/// Starts a peer server on a free port, waits until it is bound, then runs `portier send`.
fn portier_to_peer_server(
    udp: bool,
    peer: &str,
    peer_args: &[&str],
    send_args: &[&str],
) -> Running {
    let port = free_port().to_string();
    let mut command = Command::new(peer);
    command.args(peer_args.iter().map(|a| a.replace("PORT", &port)));
    let server = Running::spawn(command);
    wait_bound(udp, port.parse().unwrap());
    let mut send = portier();
    send.args(["send", "127.0.0.1", &port]).args(send_args);
    if udp {
        send.arg("-u");
    }
    let output = send.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    server
}

#[test]
fn seed_tcp_client_to_portier() {
    let mut server = Server::start(&["-t", "--once"]);
    let Some((_dir, program)) = seed_program(
        "seed_tcp_client_to_portier",
        SeedProgram::TcpClient,
        server.port,
    ) else {
        return;
    };
    assert!(python(&program).status().unwrap().success());
    assert!(server.run.wait().success());
    assert_eq!(server.run.stdout.text(), "abcdefg!\n");
    assert!(
        server
            .run
            .stderr
            .text()
            .contains("disconnect tcp 127.0.0.1:")
    );
}

#[test]
fn seed_udp_client_to_portier() {
    let mut server = Server::start(&["-u", "--once", "-f", "lines"]);
    let Some((_dir, program)) = seed_program(
        "seed_udp_client_to_portier",
        SeedProgram::UdpClient,
        server.port,
    ) else {
        return;
    };
    assert!(python(&program).status().unwrap().success());
    assert!(server.run.wait().success());
    assert!(server.run.stdout.text().ends_with(" abcdefg!\n"));
}

#[test]
fn portier_send_to_seed_tcp_server() {
    let port = free_port();
    let Some((_dir, program)) = seed_program(
        "portier_send_to_seed_tcp_server",
        SeedProgram::TcpServer,
        port,
    ) else {
        return;
    };
    let mut server = Running::spawn(python(&program));
    server.stdout.wait_for_text("en écoute");
    let status = portier()
        .args(["send", "127.0.0.1", &port.to_string(), "abcdefg!"])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(server.wait().success());
    let shown = server.stdout.text();
    assert!(shown.contains("Socket distant: ('127.0.0.1', "), "{shown}");
    assert!(shown.contains("Reçu: abcdefg!\n"), "{shown}");
    assert!(shown.contains("Déconnecté"), "{shown}");
}

#[test]
fn portier_send_to_seed_udp_server() {
    let port = free_port();
    let Some((_dir, program)) = seed_program(
        "portier_send_to_seed_udp_server",
        SeedProgram::UdpServer,
        port,
    ) else {
        return;
    };
    let server = Running::spawn(python(&program));
    server.stdout.wait_for_text("On attend");
    let status = portier()
        .args(["send", "-u", "127.0.0.1", &port.to_string(), "abcdefg!"])
        .status()
        .unwrap();
    assert!(status.success());
    server.stdout.wait_for_text("Message reçu: abcdefg!\n");
}

#[test]
fn nc_clients_to_portier() {
    if !have_peer("nc_clients_to_portier", "nc") {
        return;
    }
    let tcp = peer_client_to_portier(
        &["-t", "--once"],
        "nc",
        &["-N", "127.0.0.1", "PORT"],
        b"over tcp\x00\xff\n",
    );
    assert_eq!(tcp, b"over tcp\x00\xff\n");
    let udp = peer_client_to_portier(
        &["-u", "--once"],
        "nc",
        &["-u", "-w1", "127.0.0.1", "PORT"],
        b"over udp\n",
    );
    assert_eq!(udp, b"over udp\n");
    let ipv6 = peer_client_to_portier(
        &["-t", "--once", "-b", "::1"],
        "nc",
        &["-N", "::1", "PORT"],
        b"over ipv6\n",
    );
    assert_eq!(ipv6, b"over ipv6\n");
}

#[test]
fn portier_send_to_nc_servers() {
    if !have_peer("portier_send_to_nc_servers", "nc") {
        return;
    }
    let mut tcp =
        portier_to_peer_server(false, "nc", &["-l", "127.0.0.1", "PORT"], &["hello", "nc"]);
    assert!(tcp.wait().success());
    assert_eq!(tcp.stdout.text(), "hello nc\n");
    let udp = portier_to_peer_server(
        true,
        "nc",
        &["-u", "-l", "127.0.0.1", "PORT"],
        &["hello", "udp"],
    );
    udp.stdout.wait_for_text("hello udp\n");
}

#[test]
fn portier_connect_talks_both_ways_with_nc() {
    if !have_peer("portier_connect_talks_both_ways_with_nc", "nc") {
        return;
    }
    let port = free_port().to_string();
    let mut nc = Command::new("nc");
    nc.args(["-l", "127.0.0.1", &port]);
    let nc = std::thread::spawn(move || run_with_input(nc, b"from nc\n"));
    wait_bound(false, port.parse().unwrap());
    let mut connect = portier();
    connect.args(["connect", "127.0.0.1", &port]);
    let ours = run_with_input(connect, b"from portier\n");
    let theirs = nc.join().unwrap();
    assert!(
        ours.status.success(),
        "{}",
        String::from_utf8_lossy(&ours.stderr)
    );
    assert_eq!(ours.stdout, b"from nc\n");
    assert_eq!(theirs.stdout, b"from portier\n");
}

#[test]
fn socat_clients_to_portier_and_portier_to_socat_servers() {
    if !have_peer(
        "socat_clients_to_portier_and_portier_to_socat_servers",
        "socat",
    ) {
        return;
    }
    let tcp = peer_client_to_portier(
        &["-t", "--once"],
        "socat",
        &["-u", "-", "TCP:127.0.0.1:PORT"],
        b"socat tcp\n",
    );
    assert_eq!(tcp, b"socat tcp\n");
    let udp = peer_client_to_portier(
        &["-u", "--once"],
        "socat",
        &["-u", "-", "UDP:127.0.0.1:PORT"],
        b"socat udp\n",
    );
    assert_eq!(udp, b"socat udp\n");
    let mut server = portier_to_peer_server(
        false,
        "socat",
        &["-u", "TCP-LISTEN:PORT,bind=127.0.0.1,reuseaddr", "-"],
        &["to", "socat"],
    );
    assert!(server.wait().success());
    assert_eq!(server.stdout.text(), "to socat\n");
    let server = portier_to_peer_server(
        true,
        "socat",
        &["-u", "UDP-RECV:PORT,bind=127.0.0.1", "-"],
        &["to", "socat", "udp"],
    );
    server.stdout.wait_for_text("to socat udp\n");
}

#[test]
fn ncat_client_to_portier_and_portier_to_ncat_server() {
    if !have_peer("ncat_client_to_portier_and_portier_to_ncat_server", "ncat") {
        return;
    }
    let tcp = peer_client_to_portier(
        &["-t", "--once"],
        "ncat",
        &["--send-only", "127.0.0.1", "PORT"],
        b"ncat tcp\n",
    );
    assert_eq!(tcp, b"ncat tcp\n");
    let mut server = portier_to_peer_server(
        false,
        "ncat",
        &["-l", "127.0.0.1", "PORT", "--recv-only"],
        &["to", "ncat"],
    );
    assert!(server.wait().success());
    assert_eq!(server.stdout.text(), "to ncat\n");
}
