//! `portier listen` driven over real sockets.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::{ChildStdout, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{Running, Server, hand_in_sockets, listen_command, portier};

fn tcp_send(port: u16, data: &[u8]) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(data).unwrap();
}

#[test]
fn lines_format_shows_time_proto_peer_text_and_events_go_to_stderr() {
    let mut server = Server::start(&["-t", "-b", "127.0.0.1", "-f", "lines"]);
    tcp_send(server.port, b"hello\nworld\n");
    let out = server.wait_lines(2);
    server.run.stop();
    let lines: Vec<&str> = out.lines().collect();
    for (line, text) in lines.iter().zip(["hello", "world"]) {
        let fields: Vec<&str> = line.splitn(4, ' ').collect();
        assert!(humantime::parse_rfc3339(fields[0]).is_ok(), "{line}");
        assert_eq!(fields[1], "tcp");
        assert!(fields[2].starts_with("127.0.0.1:"), "{line}");
        assert_eq!(fields[3], text);
    }
    let events = server.run.stderr.text();
    assert!(events.contains("listening on tcp 127.0.0.1:"), "{events}");
    assert!(events.contains("connect tcp 127.0.0.1:"), "{events}");
    assert!(events.contains("disconnect tcp 127.0.0.1:"), "{events}");
    assert!(events.contains("(12 bytes in"), "{events}");
}

/// `len` bytes in no simple pattern, so a lost, doubled or misplaced block shows.
fn scrambled(len: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[test]
fn raw_keeps_every_byte_including_nul_and_invalid_utf8() {
    let mut server = Server::start(&["-t", "--once"]);
    let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    tcp_send(server.port, &data);
    assert!(server.run.wait().success());
    assert_eq!(server.run.stdout.bytes(), data);
}

#[test]
fn a_64_mib_stream_arrives_intact() {
    let mut server = Server::start(&["-t", "--once"]);
    let data = scrambled(64 << 20);
    tcp_send(server.port, &data);
    assert!(server.run.wait().success());
    let got = server.run.stdout.bytes();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the stream was altered");
}

#[test]
fn a_stream_into_a_regular_file_arrives_intact() {
    // The bulk path with a regular file for stdout: spliced into the page cache.
    let out = tempfile::NamedTempFile::new().unwrap();
    let (mut command, port, _) = listen_command(&["-t", "--once", "-b", "127.0.0.1"]);
    let child = command
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut run = Running::stderr_only(child);
    let data = scrambled(24 << 20);
    tcp_send(port, &data);
    assert!(run.wait().success());
    let got = std::fs::read(out.path()).unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the file differs from what was sent");
    assert!(run.stderr.text().contains("(25165824 bytes in"));
}

#[test]
fn three_hundred_concurrent_clients_each_line_exactly_once() {
    const CLIENTS: usize = 300;
    let mut server = Server::start(&["-t", "-f", "lines"]);
    let port = server.port;
    // Connect all first, so they are really concurrent, then send.
    let streams: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let senders: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, mut stream)| {
            thread::spawn(move || {
                stream
                    .write_all(format!("client {i} says hi\n").as_bytes())
                    .unwrap();
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    let out = server.wait_lines(CLIENTS);
    server.run.stop();
    let mut seen = HashMap::new();
    for line in out.lines() {
        let text = line.splitn(4, ' ').nth(3).unwrap();
        *seen.entry(text.to_string()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), CLIENTS);
    assert!(seen.values().all(|&n| n == 1));
}

#[test]
fn json_format_is_one_parseable_object_per_line() {
    let mut server = Server::start(&["-t", "-f", "json", "--once"]);
    tcp_send(server.port, b"caf\xc3\xa9\n\xff\x00\n");
    assert!(server.run.wait().success());
    let records = server.run.stdout.json_lines();
    let events: Vec<&str> = records
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["listening", "connect", "data", "data", "disconnect"]
    );
    assert_eq!(records[2]["text"], "café\n");
    assert_eq!(records[2]["len"], 6);
    assert_eq!(records[3]["data_b64"], "/wAK");
    assert_eq!(records[4]["bytes"], 9);
    assert!(
        records[1]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(humantime::parse_rfc3339(records[2]["ts"].as_str().unwrap()).is_ok());
}

#[test]
fn hex_format_dumps_like_hexdump_c() {
    let mut server = Server::start(&["-u", "-f", "hex", "--once"]);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .send_to(b"abcdefg!\n", ("127.0.0.1", server.port))
        .unwrap();
    assert!(server.run.wait().success());
    let out = server.run.stdout.text();
    assert!(out.contains(" udp 127.0.0.1:"), "{out}");
    assert!(out.contains(
        "00000000  61 62 63 64 65 66 67 21  0a                       |abcdefg!.|\n00000009\n"
    ));
}

#[test]
fn default_listener_takes_tcp_and_udp_from_ipv4_ipv6_and_localhost() {
    let mut server = Server::bound_by_itself(&["-f", "lines"], 2);
    let port = server.port.to_string();
    let listening = server.run.stderr.text();
    for proto in ["tcp", "udp"] {
        let line = format!("listening on {proto} [::]:{port} (IPv4 and IPv6)");
        assert!(listening.contains(&line), "{listening}");
    }
    for (udp, host) in [
        (false, "127.0.0.1"),
        (false, "::1"),
        (true, "127.0.0.1"),
        (true, "::1"),
        (true, "localhost"),
    ] {
        let mut send = portier();
        send.args(["send", host, &port, "from", host]);
        if udp {
            send.arg("-u");
        }
        let status = send.status().unwrap();
        assert!(status.success(), "send to {host} (udp: {udp})");
    }
    let out = server.wait_lines(5);
    server.run.stop();
    assert!(out.contains("tcp 127.0.0.1:"), "{out}");
    assert!(out.contains("tcp [::1]:"), "{out}");
    assert!(out.contains("udp 127.0.0.1:"), "{out}");
    assert!(out.contains("udp [::1]:"), "{out}");
    assert!(out.contains(" from localhost"), "{out}");
    assert!(!out.contains("::ffff:"), "mapped addresses shown: {out}");
}

#[test]
fn once_exits_after_the_first_client() {
    let mut server = Server::start(&["-t", "--once"]);
    tcp_send(server.port, b"abcdefg!\n");
    assert!(server.run.wait().success());
    assert_eq!(server.run.stdout.text(), "abcdefg!\n");
}

#[test]
fn clients_come_and_go_and_the_server_stays() {
    let mut server = Server::start(&["-t"]);
    for i in 0..3 {
        tcp_send(server.port, format!("visit {i}\n").as_bytes());
        server.run.stdout.wait_for_text(&format!("visit {i}\n"));
    }
    assert!(server.run.child.try_wait().unwrap().is_none());
    server.run.stop();
}

#[test]
fn sigterm_flushes_what_was_received_even_an_unfinished_line() {
    let mut server = Server::start(&["-t", "-f", "lines"]);
    let mut client = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    client.write_all(b"complete\nunfinished").unwrap();
    server.run.stdout.wait_for_text("complete");
    // Give the unfinished bytes time to be read before the signal.
    server.run.stderr.wait_for_text("connect tcp");
    thread::sleep(Duration::from_millis(200));
    server.run.stop();
    let out = server.run.stdout.text();
    assert!(out.ends_with(" unfinished\n"), "{out}");
}

/// `listen -t` and `extra` whose stdout is a pipe handed to the caller, with the port.
fn tcp_listener_with_stdout_pipe(extra: &[&str]) -> (Running, ChildStdout, u16) {
    let (mut command, port, _) = listen_command(&[&["-t"], extra].concat());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let run = Running::stderr_only(child);
    run.stderr.wait_for_listening(1);
    (run, stdout, port)
}

#[test]
fn ctrl_c_stops_a_listener_cleanly() {
    let mut server = Server::start(&[]);
    tcp_send(server.port, b"before ctrl-c\n");
    server.wait_lines(1);
    server.run.signal("-INT");
    let status = server.run.wait();
    assert!(
        status.success(),
        "exit {status}: {}",
        server.run.stderr.text()
    );
    assert_eq!(server.run.stdout.text(), "before ctrl-c\n");
}

#[test]
fn a_second_signal_ends_a_server_whose_output_is_stuck() {
    // stdout held open and never read: once the pipe is full, output blocks.
    let (mut run, _stuck, port) = tcp_listener_with_stdout_pipe(&[]);
    // 1 MiB, far more than a pipe holds; from a thread, as it may block too.
    thread::spawn(move || {
        if let Ok(mut client) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = client.write_all(&vec![b'x'; 1 << 20]);
        }
    });
    run.stderr.wait_for_text("connect tcp");
    thread::sleep(Duration::from_millis(300));
    run.signal("-TERM");
    thread::sleep(Duration::from_millis(300));
    assert!(
        run.child.try_wait().unwrap().is_none(),
        "the first signal should wait for the stuck output"
    );
    run.signal("-INT");
    let status = run.wait();
    assert_eq!(status.code(), Some(130), "{}", run.stderr.text());
}

#[test]
fn a_closed_stdout_ends_the_server_quietly() {
    let (mut run, stdout, port) = tcp_listener_with_stdout_pipe(&[]);
    drop(stdout); // nobody reads stdout, like `portier listen | head -c 0`
    tcp_send(port, b"nobody reads this\n");
    let status = run.wait();
    let errors = run.stderr.text();
    assert!(status.success(), "exit {status}: {errors}");
    assert!(!errors.contains("panicked"), "{errors}");
}

#[test]
fn a_reader_that_leaves_ends_a_spliced_stream_while_the_client_stays() {
    // `portier listen -t --once | head -c 5`: the bulk path, spliced into the
    // pipe, must not wait for the quiet client's next bytes to notice.
    let (mut run, mut stdout, port) = tcp_listener_with_stdout_pipe(&["--once", "-b", "127.0.0.1"]);
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.write_all(b"hello world\n").unwrap();
    let mut first = [0u8; 5];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"hello");
    drop(stdout);
    let status = run.wait(); // the client is still connected
    let errors = run.stderr.text();
    assert!(status.success(), "exit {status}: {errors}");
    assert!(errors.contains("(12 bytes in"), "{errors}");
    assert!(!errors.contains("error"), "{errors}");
    drop(client);
}

#[test]
fn a_peer_cannot_drive_the_terminal() {
    if !crate::common::have_peer("a_peer_cannot_drive_the_terminal", "script") {
        return;
    }
    // `script` gives portier a real pseudo-terminal as stdout and copies what it shows.
    let command = format!("{} listen -t --once", env!("CARGO_BIN_EXE_portier"));
    let mut script = Command::new("script");
    script.args(["-qefc", &command, "/dev/null"]);
    let (port, _) = hand_in_sockets(&mut script, &["-t"]);
    let run = Running::spawn(script);
    run.stdout.wait_for_listening(1);
    tcp_send(port, b"\x1b[2J\x1b]0;pwned\x07red\tok\n");
    let mut run = run;
    assert!(run.wait().success());
    let shown = run.stdout.bytes();
    assert!(
        !shown.contains(&0x1b),
        "a live escape reached the terminal: {shown:?}"
    );
    assert!(
        !shown.contains(&0x07),
        "a live bell reached the terminal: {shown:?}"
    );
    let shown = String::from_utf8_lossy(&shown);
    assert!(
        shown.contains("\\x1b[2J\\x1b]0;pwned\\x07red\tok"),
        "{shown}"
    );
}

#[test]
fn frame_octet_count_takes_syslog_from_the_real_logger() {
    if !crate::common::have_peer("frame_octet_count", "logger") {
        return;
    }
    let mut server = Server::start(&[
        "-t",
        "-b",
        "127.0.0.1",
        "--frame",
        "octet-count",
        "-f",
        "json",
    ]);
    // Two messages on one connection, each `LEN SP MSG` (RFC 6587), one of them multi-line.
    let mut logger = Command::new("logger");
    logger
        .args([
            "--tcp",
            "--octet-count",
            "--rfc5424",
            "--tag",
            "portier-test",
        ])
        .args(["--server", "127.0.0.1", "--port", &server.port.to_string()]);
    let out = crate::common::run_with_input(logger, b"first message\nsecond message\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.wait_lines(4); // connect, two data, disconnect
    server.run.stop();
    let texts: Vec<String> = server
        .run
        .stdout
        .json_texts()
        .into_iter()
        .map(|(text, _)| text)
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    for (text, wanted) in texts.iter().zip(["first message", "second message"]) {
        assert!(
            text.starts_with('<') && text.contains("portier-test"),
            "the count is taken off: {text}"
        );
        assert!(text.ends_with(wanted), "{text}");
    }
}

#[test]
fn frame_u16be_and_nul_give_one_message_each() {
    for (frame, stream) in [
        ("u16be", &b"\x00\x05hello\x00\x02hi"[..]),
        ("u32be", b"\x00\x00\x00\x05hello\x00\x00\x00\x02hi"),
        ("nul", b"hello\0hi\0"),
    ] {
        let mut server = Server::start(&["-t", "-b", "127.0.0.1", "--frame", frame, "-f", "json"]);
        tcp_send(server.port, stream);
        server.wait_lines(4);
        server.run.stop();
        let texts: Vec<String> = server
            .run
            .stdout
            .json_texts()
            .into_iter()
            .map(|(text, _)| text)
            .collect();
        assert_eq!(texts, ["hello", "hi"], "--frame {frame}");
    }
}

#[test]
fn frame_is_for_tcp_streams() {
    let out = crate::common::run_with_input(
        {
            let mut command = portier();
            command.args(["listen", "-u", "--frame", "nul", "0"]);
            command
        },
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--frame nul cuts streams"));
}

#[test]
fn a_rotated_log_holds_every_line_once_and_whole_across_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("readings.log");
    let log_arg = log.to_str().unwrap();
    let args = [
        "-t",
        "--frame",
        "lines",
        "-o",
        log_arg,
        "--rotate-size",
        "4KiB",
        "--keep",
        "1000",
    ];
    let mut server = Server::start(&args);
    let port = server.port;
    // Two clients at once, so rotation happens while lines keep coming.
    let clients: Vec<_> = (0..2)
        .map(|c| {
            thread::spawn(move || {
                let text: String = (0..3000)
                    .map(|n| format!("client {c} line {n}\n"))
                    .collect();
                tcp_send(port, text.as_bytes());
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    server.run.stdout.wait_for("6000 lines", |out| {
        out.iter().filter(|&&b| b == b'\n').count() == 6000
    });
    server.run.stop();
    let mut lines = HashMap::new();
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(
            text.len() <= 4096 + 32,
            "a file grew past its size: {}",
            text.len()
        );
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "a line cut at a file's end"
        );
        files += 1;
        for line in text.lines() {
            *lines.entry(line.to_string()).or_insert(0) += 1;
        }
    }
    assert!(files > 20, "rotated into {files} files");
    assert_eq!(lines.len(), 6000);
    assert!(
        lines.values().all(|&n| n == 1),
        "each line in exactly one file"
    );
    for c in 0..2 {
        for n in 0..3000 {
            assert!(lines.contains_key(&format!("client {c} line {n}")));
        }
    }
}

#[test]
fn sighup_reopens_the_log_after_logrotate_moved_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("readings.log");
    let mut server = Server::start(&["-u", "-b", "127.0.0.1", "-o", log.to_str().unwrap()]);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let wait_for = |path: &std::path::Path, text: &str| {
        let start = std::time::Instant::now();
        while !std::fs::read_to_string(path).is_ok_and(|t| t.contains(text)) {
            assert!(
                start.elapsed() < crate::common::PATIENCE,
                "{text} never reached {path:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    };
    socket
        .send_to(b"before\n", ("127.0.0.1", server.port))
        .unwrap();
    wait_for(&log, "before");
    let moved = dir.path().join("readings.log.1");
    std::fs::rename(&log, &moved).unwrap();
    server.run.signal("-HUP");
    // The signal is taken before the next message; a datagram may race it, so send until one lands.
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("after")) {
        assert!(
            start.elapsed() < crate::common::PATIENCE,
            "no new file after SIGHUP"
        );
        socket
            .send_to(b"after\n", ("127.0.0.1", server.port))
            .unwrap();
        thread::sleep(Duration::from_millis(20));
    }
    server.run.stop();
    let old = std::fs::read_to_string(&moved).unwrap();
    assert!(old.starts_with("before\n"), "{old}");
}

#[test]
fn logs_rotate_by_age_into_gzipped_files_and_dated_names_are_filled() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("readings-%Y%m%d.log");
    let args = ["-u", "-b", "127.0.0.1", "-o", log.to_str().unwrap()];
    let mut server = Server::start(
        &[
            &args[..],
            &["--rotate-every", "0.3", "--gzip", "--keep", "9"],
        ]
        .concat(),
    );
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for n in 0..4 {
        socket
            .send_to(
                format!("reading {n}\n").as_bytes(),
                ("127.0.0.1", server.port),
            )
            .unwrap();
        server.wait_lines(n + 1);
        thread::sleep(Duration::from_millis(400)); // older than --rotate-every: the next one rotates
    }
    server.run.stop();
    // gzip runs beside the writer: wait until the three rotated files are compressed.
    let today =
        String::from_utf8(Command::new("date").arg("+%Y%m%d").output().unwrap().stdout).unwrap();
    let name = format!("readings-{}.log", today.trim());
    let start = std::time::Instant::now();
    while (1..=3).any(|n| !dir.path().join(format!("{name}.{n}.gz")).exists()) {
        assert!(
            start.elapsed() < crate::common::PATIENCE,
            "{:?}",
            std::fs::read_dir(dir.path()).unwrap().collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let read = |file: &str| {
        let path = dir.path().join(file);
        match file.ends_with(".gz") {
            true => String::from_utf8(
                Command::new("gzip")
                    .arg("-dc")
                    .arg(&path)
                    .output()
                    .unwrap()
                    .stdout,
            )
            .unwrap(),
            false => std::fs::read_to_string(path).unwrap(),
        }
    };
    assert_eq!(read(&name), "reading 3\n");
    assert_eq!(read(&format!("{name}.1.gz")), "reading 2\n");
    assert_eq!(read(&format!("{name}.3.gz")), "reading 0\n");
}

#[test]
fn sigterm_during_a_gzip_ends_at_once_and_leaves_the_rotated_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("r.log");
    let mut server = Server::start(&[
        "-t",
        "-b",
        "127.0.0.1",
        "-o",
        log.to_str().unwrap(),
        "--rotate-size",
        "16MiB",
        "--gzip",
    ]);
    // 16 MiB of lines, then one more that rotates them into r.log.1 to be compressed.
    let line = [b"z".repeat(1023), b"\n".to_vec()].concat();
    let mut client = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    for _ in 0..16 * 1024 {
        client.write_all(&line).unwrap();
    }
    let start = Instant::now();
    while std::fs::metadata(&log).map_or(0, |m| m.len()) < 16 * 1024 * 1024 {
        assert!(start.elapsed() < crate::common::PATIENCE);
        thread::sleep(Duration::from_millis(5));
    }
    client.write_all(b"last\n").unwrap();
    drop(client);
    let partial = dir.path().join("r.log.1.gz.partial");
    while !partial.exists() && !dir.path().join("r.log.1.gz").exists() {
        assert!(start.elapsed() < crate::common::PATIENCE);
        thread::sleep(Duration::from_millis(5));
    }
    let asked = Instant::now();
    server.run.stop();
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert!(!partial.exists(), "a half-written .gz was left behind");
    // Either the compression finished first, or the rotated file is as it was.
    match std::fs::metadata(dir.path().join("r.log.1")) {
        Ok(rotated) => assert_eq!(rotated.len(), 16 * 1024 * 1024),
        Err(_) => assert!(dir.path().join("r.log.1.gz").exists()),
    }
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "last\n");
}

/// A name that changes every second stands in for one that changes every day.
#[test]
fn with_keep_only_the_newest_earlier_dated_files_stay() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("r-%H%M%S.log");
    let args = [
        "-u",
        "-b",
        "127.0.0.1",
        "-o",
        log.to_str().unwrap(),
        "--keep",
        "1",
    ];
    let mut server = Server::start(&args);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for n in 0..3 {
        if n > 0 {
            thread::sleep(Duration::from_millis(1200)); // a new second, and a new name
        }
        let line = format!("m{n}\n");
        socket
            .send_to(line.as_bytes(), ("127.0.0.1", server.port))
            .unwrap();
        server.wait_lines(n + 1);
    }
    server.run.stop();
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["m1\n", "m2\n"]);
}
