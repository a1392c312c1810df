//! `portier send` and `portier connect` against real servers.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;
use std::thread;

use crate::common::{Running, Server, free_port, portier, run_with_input, wait_bound, wait_output};

fn send_ok(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut command = portier();
    command.arg("send").args(args);
    let output = run_with_input(command, input);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn message_words_get_one_newline_and_n_leaves_it_out() {
    let mut server = Server::start(&["-t", "--once"]);
    send_ok(
        &[
            "127.0.0.1",
            &server.port.to_string(),
            "abcdefg!",
            "and",
            "more",
        ],
        b"",
    );
    assert!(server.run.wait().success());
    assert_eq!(server.run.stdout.text(), "abcdefg! and more\n");

    let mut server = Server::start(&["-t", "--once"]);
    send_ok(&["-n", "127.0.0.1", &server.port.to_string(), "exact"], b"");
    assert!(server.run.wait().success());
    assert_eq!(server.run.stdout.text(), "exact");
}

#[test]
fn host_colon_port_is_read_as_a_host_and_a_port() {
    let mut server = Server::start(&["-t", "--once"]);
    let at = format!("127.0.0.1:{}", server.port);
    send_ok(&[&at, "abcdefg!"], b"");
    assert!(server.run.wait().success());
    assert_eq!(server.run.stdout.text(), "abcdefg!\n");
}

#[test]
fn non_utf8_message_arguments_arrive_byte_exact() {
    let mut server = Server::start(&["-t", "--once"]);
    let word = std::ffi::OsStr::from_bytes(b"caf\xe9\x00?");
    let status = portier()
        .args(["send", "127.0.0.1", &server.port.to_string()])
        .arg(word)
        .status();
    // A NUL cannot be in an argument; the OS refuses it before portier runs.
    assert!(status.is_err());
    let word = std::ffi::OsStr::from_bytes(b"caf\xe9");
    let status = portier()
        .args(["send", "127.0.0.1", &server.port.to_string()])
        .arg(word)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(server.run.wait().success());
    assert_eq!(server.run.stdout.bytes(), b"caf\xe9\n");
}

#[test]
fn stdin_and_files_stream_whole_over_tcp() {
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut server = Server::start(&["-t", "--once"]);
    send_ok(&["127.0.0.1", &server.port.to_string()], &data);
    assert!(server.run.wait().success());
    assert!(server.run.stdout.bytes() == data);

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &data).unwrap();
    let mut server = Server::start(&["-t", "--once", "-b", "::1"]);
    let path = file.path().to_str().unwrap();
    send_ok(&["::1", &server.port.to_string(), "--file", path], b"");
    assert!(server.run.wait().success());
    assert!(server.run.stdout.bytes() == data);
}

#[test]
fn udp_stdin_is_one_datagram_per_line() {
    let mut server = Server::start(&["-u", "-f", "json"]);
    send_ok(
        &["-u", "127.0.0.1", &server.port.to_string()],
        b"one\ntwo\nthree\n",
    );
    server.wait_lines(4); // listening + 3 datagrams
    server.run.stop();
    let texts: Vec<String> = server
        .run
        .stdout
        .json_lines()
        .into_iter()
        .filter(|r| r["event"] == "data")
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, ["one\n", "two\n", "three\n"]);
}

#[test]
fn a_datagram_over_the_udp_limit_is_an_error_not_a_truncation() {
    let server = Server::start(&["-u"]);
    let mut line = vec![b'x'; 70_000];
    line.push(b'\n');
    let mut command = portier();
    command.args(["send", "-u", "127.0.0.1", &server.port.to_string()]);
    let output = run_with_input(command, &line);
    assert_eq!(output.status.code(), Some(1));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("line 1 is over the UDP limit of 65507 bytes"),
        "{error}"
    );
    assert!(server.run.stdout.bytes().is_empty());
}

#[test]
fn send_prints_what_the_peer_answers_then_exits_when_it_closes() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        stream.read_to_end(&mut request).unwrap(); // ends at portier's half-close
        stream.write_all(b"got: ").unwrap();
        stream.write_all(&request).unwrap();
    });
    let output = send_ok(&["127.0.0.1", &port.to_string(), "ping"], b"");
    server.join().unwrap();
    assert_eq!(output.stdout, b"got: ping\n");
}

#[test]
fn connect_half_closes_at_the_end_of_stdin_and_reads_the_answer() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(b"hello\n").unwrap();
        let mut request = Vec::new();
        stream.read_to_end(&mut request).unwrap();
        stream
            .write_all(format!("got {} bytes\n", request.len()).as_bytes())
            .unwrap();
    });
    let mut command = portier();
    command.args(["connect", "localhost", &port.to_string()]);
    let output = run_with_input(command, b"ping\n");
    server.join().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout, b"hello\ngot 5 bytes\n");
}

#[test]
fn connect_ends_when_the_peer_closes_even_while_stdin_stays_open() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(b"bye\n").unwrap();
    });
    let child = portier()
        .args(["connect", "127.0.0.1", &port.to_string()])
        .stdin(Stdio::piped()) // held open, never written
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_output(child);
    server.join().unwrap();
    assert!(output.status.success());
    assert_eq!(output.stdout, b"bye\n");
}

#[test]
fn connect_over_udp_sends_lines_and_prints_replies() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let echo = thread::spawn(move || {
        let mut buf = [0u8; 1500];
        for _ in 0..2 {
            let (n, from) = socket.recv_from(&mut buf).unwrap();
            socket.send_to(&buf[..n], from).unwrap();
        }
    });
    let mut command = portier();
    command.args(["connect", "-u", "-w", "0.5", "127.0.0.1", &port.to_string()]);
    let output = run_with_input(command, b"ping\npong\n");
    echo.join().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout, b"ping\npong\n");
}

/// An example program built by `cargo test` (target/debug/examples/NAME).
fn example(name: &str) -> std::process::Command {
    let deps = std::env::current_exe().unwrap();
    let target = deps.parent().unwrap().parent().unwrap();
    std::process::Command::new(target.join("examples").join(name))
}

#[test]
fn the_seed_programs_redone_as_library_examples_talk_to_each_other() {
    if !std::path::Path::new(example("tcp_server").get_program()).exists() {
        // `cargo test` builds the examples; `cargo test --test send_connect` alone does not.
        eprintln!("SKIPPED: the examples are not built; run the whole `cargo test`");
        return;
    }
    // The TCP server ends after its one client; the UDP server runs until told to stop, like the seed's.
    for (server, client, runs_until_stopped) in [
        ("tcp_server", "tcp_client", false),
        ("udp_server", "udp_client", true),
    ] {
        let (port, udp) = (free_port(), server.starts_with("udp"));
        let mut command = example(server);
        command.arg(port.to_string());
        let mut server = Running::spawn(command);
        wait_bound(udp, port);
        let port = port.to_string();
        let status = example(client).arg(&port).status().unwrap();
        assert!(status.success(), "{client}");
        server.stdout.wait_for_text("abcdefg!");
        if runs_until_stopped {
            server.signal("-INT"); // Ctrl-C, as the seed's server is stopped
        }
        assert!(server.wait().success());
    }
}

/// The timers `ss` shows for established TCP sockets matching `filter`.
fn socket_timers(filter: &str) -> String {
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established", filter])
        .output()
        .expect("ss (iproute2) runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn keepalive_is_on_for_clients_and_for_the_listener_when_asked() {
    // connect --keepalive: its socket to the server probes when idle.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut client = portier()
        .args([
            "connect",
            "--keepalive",
            "30",
            "127.0.0.1",
            &port.to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (_accepted, _) = listener.accept().unwrap();
    let ours = socket_timers(&format!("( dport = :{port} )"));
    assert!(ours.contains("timer:(keepalive,"), "{ours}");
    let _ = client.kill();
    let _ = client.wait();

    // listen --keepalive: each accepted client is probed; without it, none is.
    for (args, wanted) in [
        (&["-t", "--keepalive", "30"][..], true),
        (&["-t"][..], false),
    ] {
        let mut server = Server::start(args);
        let _stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        server.run.stderr.wait_for_text("connect");
        let timers = socket_timers(&format!("( sport = :{} )", server.port));
        assert_eq!(
            timers.contains("timer:(keepalive,"),
            wanted,
            "{args:?}: {timers}"
        );
        server.run.stop();
    }
}

/// socat serving ADDRESS (its syntax) with `tr a-z A-Z`, ready when `path` exists or the port listens.
fn shouting_socat(address: &str) -> Running {
    let mut command = std::process::Command::new("socat");
    command.args([address, "SYSTEM:tr a-z A-Z"]);
    Running::spawn(command)
}

fn wait_path(path: &std::path::Path) {
    let start = std::time::Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < crate::common::PATIENCE,
            "{} never appeared",
            path.display()
        );
        thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn send_and_connect_take_addresses_unix_sockets_included() {
    if !crate::common::have_peer("send_and_connect_take_addresses", "socat") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A UNIX stream socket: the message, the answer, the peer's close.
    let stream_path = dir.path().join("stream.sock");
    let _stream_peer = shouting_socat(&format!("UNIX-LISTEN:{}", stream_path.display()));
    wait_path(&stream_path);
    let out = send_ok(
        &[&format!("unix:{}", stream_path.display()), "hello", "unix"],
        b"",
    );
    assert_eq!(out.stdout, b"HELLO UNIX\n");

    // A UNIX datagram socket (as /dev/log is): one datagram per line, from an unnamed socket.
    let dgram_path = dir.path().join("log.sock");
    let mut receiver = std::process::Command::new("socat");
    receiver.args(["-u", &format!("UNIX-RECV:{}", dgram_path.display()), "-"]);
    let receiver = Running::spawn(receiver);
    wait_path(&dgram_path);
    send_ok(
        &[&format!("unix-dgram:{}", dgram_path.display())],
        b"first\nsecond\n",
    );
    receiver.stdout.wait_for_text("second");
    assert_eq!(receiver.stdout.text(), "first\nsecond\n");

    // An abstract name, with connect.
    let name = format!("portier-send-{}", std::process::id());
    let _abstract_peer = shouting_socat(&format!("ABSTRACT-LISTEN:{name}"));
    thread::sleep(std::time::Duration::from_millis(200)); // no file to wait for
    let mut command = portier();
    command.args(["connect", &format!("unix:@{name}")]);
    let out = run_with_input(command, b"abstract\n");
    assert_eq!(
        out.stdout,
        b"ABSTRACT\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // tcp://HOST:PORT: the word after it is the message, not a port.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut got = String::new();
        stream.read_to_string(&mut got).unwrap();
        got
    });
    send_ok(
        &[
            &format!("tcp://127.0.0.1:{port}"),
            "8888",
            "is",
            "a",
            "word",
        ],
        b"",
    );
    assert_eq!(got.join().unwrap(), "8888 is a word\n");
}

#[test]
fn addresses_that_cannot_work_are_usage_errors() {
    for (args, why) in [
        (
            &["send", "-u", "unix:/tmp/x", "hi"][..],
            "does not go with -u",
        ),
        (&["send", "tcp://h", "hi"][..], "missing ':PORT'"),
        (
            &["send", "udp://127.0.0.1:9", "--tls", "hi"][..],
            "TLS is for TCP",
        ),
        (&["send", "127.0.0.1", "abc"][..], "'abc' is not a port"),
        (&["connect", "unix-dgram:/tmp/x"][..], "use send"),
        (
            &["connect", "tcp://127.0.0.1:9", "9"][..],
            "connect takes no more words",
        ),
    ] {
        let mut command = portier();
        command.args(args);
        let out = run_with_input(command, b"");
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {said}");
        assert!(said.contains(why), "{args:?}: {said}");
    }
}
