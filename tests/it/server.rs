//! The shared, long-running server: echo, broker, chat, output file, access
//! control, limits, and behaviour under stress. Every loop is bounded.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{PATIENCE, Running, Server, listen_command, portier};

fn client(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

fn read_exactly(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).unwrap();
    buf
}

/// Nothing arrives on `stream` within a short while.
fn assert_silent(stream: &mut TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected silence, got {other:?}"),
    }
}

/// Waits until stderr shows `n` events containing `what`.
fn wait_events(server: &Server, what: &str, n: usize) {
    server.run.stderr.wait_for(what, |b| {
        String::from_utf8_lossy(b).matches(what).count() >= n
    });
}

#[test]
fn echo_sends_every_message_back_over_tcp_and_udp() {
    let mut server = Server::start(&["--echo", "-b", "127.0.0.1"]);
    let mut tcp = client(server.port);
    for word in ["ping\n", "pong\n"] {
        tcp.write_all(word.as_bytes()).unwrap();
        assert_eq!(read_exactly(&mut tcp, word.len()), word.as_bytes());
    }
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(PATIENCE)).unwrap();
    udp.send_to(b"datagram", ("127.0.0.1", server.port))
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"datagram");
    server.run.stdout.wait_for_text("datagram");
    server.run.stop();
    assert_eq!(server.run.stdout.text().len(), "ping\npong\ndatagram".len());
}

#[test]
fn echo_answers_a_half_closed_client() {
    let mut server = Server::start(&["-t", "--echo"]);
    let mut stream = client(server.port);
    stream.write_all(b"half\n").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, b"half\n");
    server.run.stop();
}

#[test]
fn broker_relays_to_the_others_never_back() {
    let mut server = Server::start(&["-t", "--broker"]);
    let mut clients: Vec<TcpStream> = (0..3).map(|_| client(server.port)).collect();
    wait_events(&server, "connect tcp", 3);
    clients[0].write_all(b"from a\n").unwrap();
    assert_eq!(read_exactly(&mut clients[1], 7), b"from a\n");
    assert_eq!(read_exactly(&mut clients[2], 7), b"from a\n");
    assert_silent(&mut clients[0]);
    server.run.stop();
    assert_eq!(server.run.stdout.text(), "from a\n");
}

#[test]
fn chat_prefixes_each_line_with_its_sender_and_the_listener_shows_it() {
    let mut server = Server::start(&["-t", "--chat"]);
    let a = client(server.port);
    let a_addr = a.local_addr().unwrap();
    wait_events(&server, "connect tcp", 1);
    let b = client(server.port);
    wait_events(&server, "connect tcp", 2);
    (&a).write_all(b"hi all\n").unwrap();
    let mut line = String::new();
    BufReader::new(&b).read_line(&mut line).unwrap();
    assert_eq!(line, format!("{a_addr}: hi all\n"));
    line.clear();
    BufReader::new(&a).read_line(&mut line).unwrap();
    assert!(
        line.starts_with("*** 127.0.0.1:") && line.ends_with(" joined\n"),
        "{line}"
    );
    server.run.stdout.wait_for_text(" hi all\n");
    server.run.stop();
    let shown = server.run.stdout.text();
    assert!(
        shown.contains(&format!(" tcp {a_addr} hi all\n")),
        "{shown}"
    );
}

#[test]
fn a_slow_broker_client_is_dropped_and_the_others_keep_going() {
    const TOTAL: usize = 48 << 20;
    const CHUNK: usize = 64 << 10;
    let mut server = Server::start(&["-t", "--broker"]);
    let slow = client(server.port); // never reads
    let mut fast = client(server.port);
    let mut sender = client(server.port);
    wait_events(&server, "connect tcp", 3);
    let reader = thread::spawn(move || {
        let mut got = 0;
        let mut buf = vec![0u8; CHUNK];
        while got < TOTAL {
            let n = fast.read(&mut buf).unwrap();
            assert!(n > 0, "the fast client was cut off after {got} bytes");
            got += n;
        }
        got
    });
    let chunk = vec![b'x'; CHUNK];
    for _ in 0..TOTAL / CHUNK {
        sender.write_all(&chunk).unwrap();
        thread::sleep(Duration::from_millis(1)); // a steady sender, not a flood
    }
    assert_eq!(reader.join().unwrap(), TOTAL);
    server.run.stderr.wait_for_text("too slow");
    drop(slow);
    server.run.stop();
    assert!(
        server
            .run
            .stderr
            .text()
            .contains("summary: 1 slow clients dropped")
    );
}

#[test]
fn output_file_gets_everything_flushed_per_message_beside_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("readings.log");
    let mut server = Server::start(&["-t", "-f", "lines", "-o", log.to_str().unwrap()]);
    let mut sensor = client(server.port);
    sensor.write_all(b"22.5C\n").unwrap();
    server.run.stdout.wait_for_text("22.5C");
    // Still connected, and the file already has it: flushed per message.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.ends_with(" 22.5C\n"), "{logged:?}");
    sensor.write_all(b"22.7C\n").unwrap();
    drop(sensor);
    server.run.stdout.wait_for_text("22.7C");
    server.run.stop();
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        server.run.stdout.text()
    );
}

#[test]
fn an_output_file_that_cannot_be_opened_is_a_one_line_error() {
    let output = portier()
        .args(["listen", "0", "-o", "/no/such/dir/log"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("cannot open /no/such/dir/log: no such file or directory"),
        "{error}"
    );
}

#[test]
fn peers_outside_allow_get_nothing_through() {
    let mut server = Server::start(&["-b", "127.0.0.1", "--allow", "10.0.0.0/8"]);
    let mut tcp = client(server.port);
    let _ = tcp.write_all(b"let me in\n");
    let mut buf = [0u8; 16];
    // Closed at once: end of stream, or a reset.
    assert!(matches!(tcp.read(&mut buf), Ok(0) | Err(_)));
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"let me in\n", ("127.0.0.1", server.port))
        .unwrap();
    wait_events(&server, "not in --allow", 2);
    server.run.stop();
    assert!(server.run.stdout.bytes().is_empty());
    let events = server.run.stderr.text();
    assert!(!events.contains("connect tcp"), "{events}");
    assert!(
        events.contains("summary: 2 refused by --allow/--deny"),
        "{events}"
    );
}

#[test]
fn ipv4_peers_on_the_dual_stack_socket_match_ipv4_ranges() {
    let mut server = Server::start(&["-t", "-f", "lines", "--deny", "127.0.0.0/8"]);
    let mut v4 = client(server.port);
    let _ = v4.write_all(b"from v4\n");
    let mut v6 = TcpStream::connect(("::1", server.port)).unwrap();
    v6.write_all(b"from v6\n").unwrap();
    drop(v6);
    server.run.stdout.wait_for_text("from v6");
    wait_events(&server, "matches --deny", 1);
    server.run.stop();
    let shown = server.run.stdout.text();
    assert!(!shown.contains("from v4"), "{shown}");
}

#[test]
fn past_max_conns_new_clients_are_refused_while_the_others_keep_working() {
    let mut server = Server::start(&["-t", "-f", "lines", "-m", "2"]);
    let mut a = client(server.port);
    let mut b = client(server.port);
    wait_events(&server, "connect tcp", 2);
    let mut c = client(server.port);
    let mut notice = String::new();
    c.read_to_string(&mut notice).unwrap();
    assert_eq!(notice, "portier: server full, try again later\n");
    a.write_all(b"a still works\n").unwrap();
    b.write_all(b"b still works\n").unwrap();
    server.run.stdout.wait_for_text("a still works");
    server.run.stdout.wait_for_text("b still works");
    server.run.stop();
    let events = server.run.stderr.text();
    assert!(
        events.contains("server full: 2 clients (--max-conns)"),
        "{events}"
    );
    assert!(
        events.contains("summary: 1 refused over --max-conns"),
        "{events}"
    );
}

#[test]
fn idle_clients_are_closed() {
    let mut server = Server::start(&["-t", "--idle-timeout", "0.3"]);
    let mut quiet = client(server.port);
    let mut buf = [0u8; 8];
    assert_eq!(quiet.read(&mut buf).unwrap(), 0);
    server
        .run
        .stderr
        .wait_for_text("closed after 300ms without data (--idle-timeout)");
    server.run.stop();
}

#[test]
fn lines_longer_than_max_line_come_in_flagged_pieces() {
    let mut server = Server::start(&["-t", "-f", "json", "--max-line", "8", "--once"]);
    client(server.port)
        .write_all(b"0123456789abcdef\nok\n")
        .unwrap();
    assert!(server.run.wait().success());
    let pieces = server.run.stdout.json_texts();
    // The last piece of the long line is exactly --max-line bytes: whole, with its newline.
    let expected = [("01234567", true), ("89abcdef\n", false), ("ok\n", false)];
    let expected: Vec<(String, bool)> = expected.iter().map(|(t, c)| (t.to_string(), *c)).collect();
    assert_eq!(pieces, expected);
}

#[test]
fn resets_half_closes_and_vanishing_peers_are_reported_while_others_are_served() {
    let mut server = Server::start(&["-t", "-f", "lines"]);
    // A reset in mid-stream.
    let reset = socket2::Socket::from(client(server.port));
    reset.set_linger(Some(Duration::ZERO)).unwrap();
    let mut reset = TcpStream::from(reset);
    reset.write_all(b"before the reset\n").unwrap();
    server.run.stdout.wait_for_text("before the reset");
    drop(reset);
    // A half-close, and a peer that connects and vanishes.
    let mut half = client(server.port);
    half.write_all(b"half closed\n").unwrap();
    half.shutdown(Shutdown::Write).unwrap();
    drop(client(server.port));
    let mut normal = client(server.port);
    normal.write_all(b"still served\n").unwrap();
    drop(normal);
    server.run.stdout.wait_for_text("still served");
    server.run.stdout.wait_for_text("half closed");
    wait_events(&server, "disconnect tcp", 4);
    server.run.stop();
    let events = server.run.stderr.text();
    assert!(events.contains("connection reset by peer"), "{events}");
}

#[test]
fn sigterm_flushes_stdout_and_the_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut server = Server::start(&["-t", "-f", "lines", "-o", log.to_str().unwrap()]);
    let mut sending = client(server.port);
    sending.write_all(b"one\ntwo\nunfinished").unwrap();
    server.run.stdout.wait_for_text("two");
    thread::sleep(Duration::from_millis(200)); // let the unfinished line be read
    server.run.stop();
    let shown = server.run.stdout.text();
    assert!(shown.ends_with(" unfinished\n"), "{shown}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), shown);
}

#[test]
fn a_slow_stdout_pushes_back_on_the_sender_with_memory_bounded() {
    const TOTAL: usize = 64 << 20;
    let (mut command, port, _) = listen_command(&["-t", "-f", "lines"]);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap(); // not read for now: a stuck consumer
    let mut run = Running::stderr_only(child);
    let line = [b"0123456789abcdef".repeat(64).as_slice(), b"\n"].concat();
    let count = TOTAL / line.len();
    let sender = thread::spawn(move || {
        let mut stream = client(port);
        for _ in 0..count {
            stream.write_all(&line).unwrap();
        }
    });
    thread::sleep(Duration::from_secs(2));
    assert!(
        !sender.is_finished(),
        "64 MiB went into a listener whose stdout nobody reads"
    );
    let peak = peak_rss_kib(run.child.id());
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} KiB while stdout was stuck"
    );
    // The consumer wakes up: everything arrives, nothing was dropped.
    let mut shown = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0usize;
    while lines < count {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0);
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
        shown += n;
    }
    sender.join().unwrap();
    assert!(shown > TOTAL);
    drop(stdout);
    run.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_clients_ten_lines_each_every_line_exactly_once() {
    use tokio::io::AsyncWriteExt;
    const CLIENTS: usize = 2000;
    const LINES: usize = 10;
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let mut server = Server::start(&["-t", "-f", "lines", "-m", "4096"]);
    let port = server.port;
    let mut streams = Vec::new();
    for _ in 0..CLIENTS {
        streams.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    let mut senders = tokio::task::JoinSet::new();
    for (i, mut stream) in streams.into_iter().enumerate() {
        senders.spawn(async move {
            for j in 0..LINES {
                stream
                    .write_all(format!("c{i} l{j}\n").as_bytes())
                    .await
                    .unwrap();
            }
        });
    }
    senders.join_all().await;
    let out = tokio::task::spawn_blocking(move || {
        let out = server.wait_lines(CLIENTS * LINES);
        server.run.stop();
        out
    })
    .await
    .unwrap();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for line in out.lines() {
        *seen.entry(line.splitn(4, ' ').nth(3).unwrap()).or_default() += 1;
    }
    assert_eq!(seen.len(), CLIENTS * LINES);
    assert!(seen.values().all(|&n| n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_keep_a_new_client_waiting() {
    use tokio::io::AsyncWriteExt;
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let server = Server::start(&["-t", "-f", "lines", "-m", "2000"]);
    let port = server.port;
    let mut idle = Vec::new();
    for i in 0..1000 {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        if i % 2 == 0 {
            stream.write_all(b"a line that never en").await.unwrap(); // slowloris
        }
        idle.push(stream);
    }
    let mut newcomer = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    newcomer.write_all(b"served anyway\n").await.unwrap();
    tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.run.stdout.wait_for_text("served anyway");
        server.run.stop();
    })
    .await
    .unwrap();
    drop(idle);
}

/// The peak resident memory of a running process, from the kernel.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

#[test]
fn a_200_mib_line_with_no_newline_keeps_memory_bounded_and_every_byte_comes_out() {
    const TOTAL: usize = 200 << 20;
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let (mut command, port, _) = listen_command(&["-t", "-f", "lines"]);
    let child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut run = Running::stderr_only(child);
    let started = Instant::now();
    let mut stream = client(port);
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..TOTAL / chunk.len() {
        stream.write_all(&chunk).unwrap();
    }
    drop(stream);
    run.stderr.wait_for_text("disconnect tcp");
    assert!(started.elapsed() < PATIENCE);
    let peak = peak_rss_kib(run.child.id());
    run.stop();
    eprintln!("peak RSS of the listener: {peak} KiB");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    let mut written = 0;
    let out = BufReader::new(std::fs::File::open(&out_path).unwrap());
    for line in out.lines() {
        let line = line.unwrap();
        let text = line.splitn(4, ' ').nth(3).unwrap();
        written += text.trim_end_matches('\\').len();
    }
    assert_eq!(written, TOTAL);
}
