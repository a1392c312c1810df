//! `listen --exec` / `--sh-exec`: a program per TCP client and per UDP
//! datagram, tested with real programs (`cat`, `tr`, `sh`, `sleep`), the way
//! ncat's `--exec` behaves for a client.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use crate::common::{PATIENCE, Server, portier};

fn client(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Sends `input`, half-closes, and reads the answer to its end.
fn exchange(server: &Server, input: &[u8]) -> String {
    let mut stream = client(server);
    stream.write_all(input).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn each_client_talks_to_its_own_program() {
    let mut server = Server::start(&["-t", "-b", "127.0.0.1", "--exec", "cat -n"]);
    assert_eq!(exchange(&server, b"a\nb\n"), "     1\ta\n     2\tb\n");
    // A second client gets a program of its own, counting from 1 again.
    assert_eq!(exchange(&server, b"c\n"), "     1\tc\n");
    server.run.stderr.wait_for("two disconnects", |b| {
        String::from_utf8_lossy(b)
            .matches("program: exit 0")
            .count()
            >= 2
    });
    server.run.stop();
    assert!(server.run.stdout.text().is_empty());
}

#[test]
fn each_datagram_gets_the_programs_answer() {
    let mut server = Server::start(&["-u", "-b", "127.0.0.1", "--exec", "tr a-z A-Z"]);
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 64];
    for word in ["hello", "again"] {
        client
            .send_to(word.as_bytes(), ("127.0.0.1", server.port))
            .unwrap();
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], word.to_uppercase().as_bytes());
    }
    // A program that fails is reported; nothing is sent back.
    server.run.stop();
    let mut failing = Server::start(&["-u", "-b", "127.0.0.1", "--sh-exec", "exit 4"]);
    client.send_to(b"x", ("127.0.0.1", failing.port)).unwrap();
    failing.run.stderr.wait_for_text("program: exit 4");
    failing.run.stop();
}

#[test]
fn a_client_that_stays_connected_does_not_keep_an_ended_program_session() {
    let mut server = Server::start(&["-t", "-b", "127.0.0.1", "-m", "1", "--sh-exec", "echo hi"]);
    let mut silent = client(&server);
    let mut answer = String::new();
    silent.read_to_string(&mut answer).unwrap(); // the program's output, then the end
    assert_eq!(answer, "hi\n");
    // The client has not closed, yet its session is over and its slot (-m 1) is free.
    server.run.stderr.wait_for_text("program: exit 0");
    assert_eq!(exchange(&server, b""), "hi\n");
    drop(silent);
    server.run.stop();
}

#[test]
fn the_program_learns_both_ends_and_its_exit_status_is_reported() {
    let script = r#"echo "$PORTIER_PROTO $PORTIER_PEER_ADDR $PORTIER_LOCAL_PORT"; exit 3"#;
    let args = ["-t", "-b", "127.0.0.1", "--sh-exec", script, "-f", "json"];
    let mut server = Server::start(&args);
    let answer = exchange(&server, b"");
    assert_eq!(answer, format!("tcp 127.0.0.1 {}\n", server.port));
    server.run.stderr.wait_for_text("program: exit 3");
    server.run.stop();
    let exits: Vec<_> = server
        .run
        .stdout
        .json_lines()
        .into_iter()
        .filter(|r| r["event"] == "disconnect")
        .map(|r| r["exit"].clone())
        .collect();
    assert_eq!(exits, ["exit 3"]);
}

#[test]
fn a_program_that_hangs_is_killed_after_the_idle_timeout_and_on_sigterm() {
    let mut server = Server::start(&[
        "-b",
        "127.0.0.1",
        "--exec",
        "sleep 60",
        "--idle-timeout",
        "1",
    ]);
    let _quiet = client(&server);
    server
        .run
        .stderr
        .wait_for_text("killed after 1s with nothing moving");
    server
        .run
        .stderr
        .wait_for_text("program: killed by signal 9");
    // Another one, stopped with the server: killed, reaped, and the server exits.
    let _second = client(&server);
    server.run.stderr.wait_for("the second client", |b| {
        String::from_utf8_lossy(b).matches("connect tcp").count() >= 2
    });
    std::thread::sleep(Duration::from_millis(200)); // its program has started
    server.run.stop();
    let events = server.run.stderr.text();
    assert_eq!(events.matches("killed by signal 9").count(), 2, "{events}");
}

/// Whether process `pid` still runs (a zombie waiting for its reaper does not).
fn runs(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    matches!(state, Some(state) if state != 'Z' && state != 'X')
}

/// What a program started (`sh -c` runs its commands as children), even
/// shielded from signals, ends with its client: on SIGTERM and on the idle
/// timeout alike; it used to be left running, reparented to init.
#[test]
fn what_a_program_started_ends_with_its_client() {
    let program = "trap '' TERM INT HUP; sleep 60 & echo $!; wait";
    let mut server = Server::start(&["-t", "-b", "127.0.0.1", "--sh-exec", program]);
    let started = |server: &Server| {
        let mut stream = client(server);
        let mut line = String::new();
        let mut byte = [0u8; 1];
        while stream.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0] as char);
        }
        let pid: u32 = line.trim().parse().unwrap();
        assert!(runs(pid), "the program's child {pid} is running");
        (stream, pid)
    };
    let (_client, pid) = started(&server);
    server.run.stop();
    let gone = |pid| {
        let start = std::time::Instant::now();
        while runs(pid) && start.elapsed() < PATIENCE {
            std::thread::sleep(Duration::from_millis(20));
        }
        !runs(pid)
    };
    assert!(gone(pid), "the program's child {pid} outlived the server");

    let mut server = Server::start(&[
        "-t",
        "-b",
        "127.0.0.1",
        "--sh-exec",
        program,
        "--idle-timeout",
        "1",
    ]);
    let (_client, pid) = started(&server);
    server.run.stderr.wait_for_text("--idle-timeout");
    assert!(gone(pid), "the program's child {pid} outlived its client");
    server.run.stop();
}

#[test]
fn exec_beyond_loopback_needs_allow() {
    let refused = |args: &[&str]| {
        let output = portier().arg("listen").args(args).output().unwrap();
        let error = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(2), "{error}");
        assert_eq!(error.lines().count(), 1, "{error}");
        error
    };
    assert!(refused(&["0", "--exec", "cat"]).contains("--allow"));
    assert!(refused(&["0", "--exec", "cat", "--echo"]).contains("cannot be used with"));
    // With --allow, it runs (and here is stopped at once).
    let mut server = Server::start(&["-t", "--exec", "cat", "--allow", "127.0.0.1"]);
    assert_eq!(exchange(&server, b"allowed\n"), "allowed\n");
    server.run.stop();
}

/// Writes `input` to `port` and reads as many bytes back, the connection left open.
fn echoed(port: u16, input: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(input).unwrap();
    let mut answer = vec![0u8; input.len()];
    stream.read_exact(&mut answer).unwrap();
    answer
}

#[test]
fn a_client_sees_what_ncat_exec_shows_it() {
    if !crate::common::have_peer("a_client_sees_what_ncat_exec_shows_it", "ncat") {
        return;
    }
    let input = b"one\ntwo\n";
    let mut ours = Server::start(&["-t", "-b", "127.0.0.1", "--exec", "cat"]);
    let from_portier = echoed(ours.port, input);
    ours.run.stop();
    let port = crate::common::free_port();
    let _ncat = crate::common::Running::spawn({
        let mut command = std::process::Command::new("ncat");
        command.args(["-l", "127.0.0.1", &port.to_string(), "--exec", "/bin/cat"]);
        command
    });
    crate::common::wait_bound(false, port);
    assert_eq!(from_portier, echoed(port, input));
    // After a half-close, ncat drops what the program still writes; portier
    // delivers it, then closes.
    let mut ours = Server::start(&["-t", "-b", "127.0.0.1", "--exec", "cat"]);
    assert_eq!(exchange(&ours, input), "one\ntwo\n");
    ours.run.stop();
}

/// OpenBSD nc listening for one client on a free port.
fn nc_listening() -> (crate::common::Running, u16) {
    let port = crate::common::free_port();
    let mut command = std::process::Command::new("nc");
    command.args(["-l", "127.0.0.1", &port.to_string()]);
    let peer = crate::common::Running::spawn(command);
    crate::common::wait_bound(false, port);
    (peer, port)
}

#[test]
fn connect_exec_runs_the_program_against_the_remote_end() {
    if !crate::common::have_peer("connect_exec_runs_the_program_against_the_remote_end", "nc") {
        return;
    }
    let (mut peer, port) = nc_listening();
    let script = r#"echo "hello from $PORTIER_PROTO port $PORTIER_PEER_PORT""#;
    let output = portier()
        .args([
            "connect",
            "127.0.0.1",
            &port.to_string(),
            "--sh-exec",
            script,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    peer.stdout
        .wait_for_text(&format!("hello from tcp port {port}"));
    assert!(peer.wait().success());
    // A program that fails makes connect fail, saying how it ended.
    let (_peer, port) = nc_listening();
    let output = portier()
        .args([
            "connect",
            "127.0.0.1",
            &port.to_string(),
            "--sh-exec",
            "exit 5",
        ])
        .output()
        .unwrap();
    let error = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{error}");
    assert!(error.contains("the program ended: exit 5"), "{error}");
}
