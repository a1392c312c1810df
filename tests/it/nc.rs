//! `portier nc` against OpenBSD nc itself: the usual scripts, each run by
//! both on the same peer, must give the same bytes out and the same exit
//! code; then one test per row of the README's end-of-file table.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::common::{
    PATIENCE, Running, free_port, have_peer, portier, run_with_input, wait_bound, wait_output,
};

/// Who runs the command line.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Nc {
    OpenBsd,
    Portier,
}

impl Nc {
    fn command(self, args: &[&str]) -> Command {
        let mut command = match self {
            Nc::OpenBsd => Command::new("nc"),
            Nc::Portier => {
                let mut command = portier();
                command.arg("nc");
                command
            }
        };
        command.args(args);
        command
    }
}

/// What a script gave: its stdout, its exit code, and what the peer received.
#[derive(Debug, PartialEq)]
struct Outcome {
    stdout: Vec<u8>,
    code: Option<i32>,
    peer: Vec<u8>,
}

/// Runs `script` with OpenBSD nc and with portier, asserts both give the
/// same outcome, and returns portier's. Without nc, portier's alone (or a
/// failure under `PORTIER_REQUIRE_PEERS=1`).
fn same_as_nc(test: &str, script: impl Fn(Nc) -> Outcome) -> Outcome {
    let ours = script(Nc::Portier);
    if have_peer(test, "nc") {
        let theirs = script(Nc::OpenBsd);
        assert_eq!(ours, theirs, "portier nc, then OpenBSD nc");
    }
    ours
}

/// A TCP peer on a port of its own, running `serve` on its first client.
fn tcp_peer(
    serve: impl FnOnce(TcpStream) -> Vec<u8> + Send + 'static,
) -> (String, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let peer = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        serve(stream)
    });
    (port, peer)
}

/// True when the client sends nothing more, and no FIN, for a little while.
fn stays_open(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let quiet = matches!(
        stream.read(&mut [0u8; 16]),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
    );
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    quiet
}

fn read_exactly(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut got = vec![0u8; len];
    stream.read_exact(&mut got).unwrap();
    got
}

/// Runs `nc ARGS` with `input` on stdin against a TCP peer.
fn client(
    nc: Nc,
    args: &[&str],
    input: &[u8],
    serve: impl FnOnce(TcpStream) -> Vec<u8> + Send + 'static,
) -> Outcome {
    let (port, peer) = tcp_peer(serve);
    let mut line = args.to_vec();
    line.extend(["127.0.0.1", &port]);
    let out = run_with_input(nc.command(&line), input);
    Outcome {
        stdout: out.stdout,
        code: out.status.code(),
        peer: peer.join().unwrap(),
    }
}

// The scripts of the issue, each checked against OpenBSD nc.

#[test]
fn echo_to_nc_n_sends_closes_and_prints_the_answer() {
    // echo hi | nc -N host port
    let outcome = same_as_nc("echo_to_nc_n", |nc| {
        client(nc, &["-N"], b"hi\n", |mut stream| {
            let mut got = Vec::new();
            stream.read_to_end(&mut got).unwrap(); // ends on -N's FIN
            stream.write_all(b"got it\n").unwrap();
            got
        })
    });
    assert_eq!(outcome.stdout, b"got it\n");
    assert_eq!((outcome.code, outcome.peer), (Some(0), b"hi\n".to_vec()));
}

#[test]
fn nc_l_into_a_file_ends_with_its_client() {
    // nc -l 8888 > file
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let outcome = same_as_nc("nc_l_into_a_file", |nc| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let port = free_port().to_string();
        let child = nc
            .command(&["-l", &port])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&path).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut run = Running::stderr_only(child);
        wait_bound(false, port.parse().unwrap());
        let mut stream = TcpStream::connect(("127.0.0.1", port.parse().unwrap())).unwrap();
        stream.write_all(&data).unwrap();
        drop(stream);
        let code = run.wait().code();
        Outcome {
            stdout: std::fs::read(&path).unwrap(),
            code,
            peer: Vec::new(),
        }
    });
    assert_eq!((outcome.stdout == data, outcome.code), (true, Some(0)));
}

/// Starts `nc ARGS` listening on a fresh port, stdin empty.
fn listener(nc: Nc, args: &[&str], udp: bool) -> (Running, u16) {
    let port = free_port();
    let mut line = args.to_vec();
    let port_text = port.to_string();
    line.push(&port_text);
    let run = Running::spawn(nc.command(&line));
    wait_bound(udp, port);
    (run, port)
}

#[test]
fn nc_lk_takes_one_client_after_another() {
    // nc -lk 8888
    let outcome = same_as_nc("nc_lk", |nc| {
        let (mut run, port) = listener(nc, &["-lk"], false);
        for (n, line) in ["a\n", "b\n"].iter().enumerate() {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream.write_all(line.as_bytes()).unwrap();
            drop(stream);
            run.stdout
                .wait_for("the client's line", |b| b.len() >= 2 * (n + 1));
        }
        run.terminate();
        let status = run.wait();
        if nc == Nc::Portier {
            assert!(status.success(), "SIGTERM ends portier nc cleanly");
        }
        Outcome {
            stdout: run.stdout.bytes(),
            code: None, // nc dies of the signal: no exit code to compare
            peer: Vec::new(),
        }
    });
    assert_eq!(outcome.stdout, b"a\nb\n");
}

#[test]
fn nc_u_l_takes_the_first_sender_as_its_peer() {
    // nc -u -l 8888
    let outcome = same_as_nc("nc_u_l", |nc| {
        let (mut run, port) = listener(nc, &["-u", "-l"], true);
        let first = UdpSocket::bind("127.0.0.1:0").unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        first.send_to(b"a\n", ("127.0.0.1", port)).unwrap();
        run.stdout.wait_for("the first datagram", |b| b == b"a\n");
        other.send_to(b"x\n", ("127.0.0.1", port)).unwrap();
        first.send_to(b"b\n", ("127.0.0.1", port)).unwrap();
        run.stdout
            .wait_for("the peer's second datagram", |b| b.len() >= 4);
        run.terminate();
        run.wait();
        if nc == Nc::Portier {
            // Not written, but counted and told.
            run.stderr
                .wait_for_text("1 datagrams from others than 127.0.0.1:");
        }
        Outcome {
            stdout: run.stdout.bytes(),
            code: None,
            peer: Vec::new(),
        }
    });
    assert_eq!(outcome.stdout, b"a\nb\n");
}

#[test]
fn nc_w_quits_after_silence_once_the_file_is_sent() {
    // nc -w 2 host port < file (here -w 1)
    let file: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8 + b'0').collect();
    let len = file.len();
    let outcome = same_as_nc("nc_w", |nc| {
        client(nc, &["-w", "1"], &file, move |mut stream| {
            let got = read_exactly(&mut stream, len);
            // Silent, and never closing: only -w ends the client. It closes then.
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
            got
        })
    });
    assert_eq!((outcome.stdout, outcome.code), (Vec::new(), Some(0)));
    assert_eq!(outcome.peer, file);
}

#[test]
fn nc_q_quits_after_stdin_ends() {
    // echo hi | nc -q 1 host port
    let outcome = same_as_nc("nc_q", |nc| {
        client(nc, &["-q", "1"], b"hi\n", |mut stream| {
            let got = read_exactly(&mut stream, 3);
            stream.write_all(b"ok\n").unwrap();
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).unwrap(); // until -q closes
            got
        })
    });
    assert_eq!(outcome.stdout, b"ok\n");
    assert_eq!((outcome.code, outcome.peer), (Some(0), b"hi\n".to_vec()));
}

#[test]
fn nc_zv_on_a_range_succeeds_when_any_port_answers() {
    // nc -zv host 20-25
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = open.local_addr().unwrap().port();
    let range = format!("{}-{}", port, port + 1);
    let closed = free_port().to_string();
    let scan = |nc: Nc, ports: &str| {
        let out = wait_output(
            nc.command(&["-zv", "127.0.0.1", ports])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let said = String::from_utf8_lossy(&out.stderr).contains("succeeded");
        (out.stdout, out.status.code(), said)
    };
    let outcome = same_as_nc("nc_zv", |nc| {
        let (stdout, code, said) = scan(nc, &range);
        assert!(said, "{nc:?} -v says which port succeeded");
        Outcome {
            stdout,
            code,
            peer: scan(nc, &closed).0,
        }
    });
    assert_eq!(outcome.code, Some(0));
    assert_eq!(scan(Nc::Portier, &closed).1, Some(1), "no port answers");
}

#[test]
fn nc_zu_tells_a_refusing_port_from_a_silent_one() {
    // nc -zu host 53: a silent listener may be there, so it counts.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let outcome = same_as_nc("nc_zu", |nc| {
        let out = run_with_input(nc.command(&["-zu", "127.0.0.1", &port]), b"");
        Outcome {
            stdout: out.stdout,
            code: out.status.code(),
            peer: Vec::new(),
        }
    });
    assert_eq!((outcome.stdout, outcome.code), (Vec::new(), Some(0)));
    // A port that refused (ICMP port unreachable) is not open: exit 1, as
    // `nc -zuv` says too (`nc -zu` alone exits 0 there, without evidence).
    let closed = free_port().to_string();
    let refused = |nc: Nc, flags| {
        let out = run_with_input(nc.command(&[flags, "127.0.0.1", &closed]), b"");
        out.status.code()
    };
    assert_eq!(refused(Nc::Portier, "-zu"), Some(1));
    if have_peer("nc_zu", "nc") {
        assert_eq!(refused(Nc::OpenBsd, "-zuv"), Some(1));
    }
}

// The end-of-file table, a row each (the rows the scripts above cover are
// named there: -N, -q, -w, -l, -lk).

#[test]
fn stdin_end_without_n_keeps_the_connection_open() {
    let outcome = same_as_nc("stdin_end_without_n", |nc| {
        client(nc, &[], b"hi\n", |mut stream| {
            let got = read_exactly(&mut stream, 3);
            assert!(stays_open(&mut stream), "no FIN without -N");
            stream.write_all(b"bye\n").unwrap();
            got // and the peer's close ends the client
        })
    });
    assert_eq!(outcome.stdout, b"bye\n");
    assert_eq!((outcome.code, outcome.peer), (Some(0), b"hi\n".to_vec()));
}

#[test]
fn the_peer_closing_ends_the_session_while_stdin_is_still_open() {
    // OpenBSD nc waits for stdin here (at a terminal, until the next line):
    // portier quits, so this row is portier's alone.
    let (port, peer) = tcp_peer(|mut stream| {
        stream.write_all(b"bye\n").unwrap();
        stream.shutdown(Shutdown::Both).unwrap();
        Vec::new()
    });
    let mut child = Nc::Portier
        .command(&["127.0.0.1", &port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin_held_open = child.stdin.take();
    let out = wait_output(child);
    drop(stdin_held_open);
    peer.join().unwrap();
    assert_eq!(
        (out.stdout, out.status.code()),
        (b"bye\n".to_vec(), Some(0))
    );
}

#[test]
fn d_never_reads_stdin() {
    let outcome = same_as_nc("d_never_reads_stdin", |nc| {
        client(nc, &["-d"], b"secret\n", |mut stream| {
            assert!(stays_open(&mut stream), "nothing of stdin is sent");
            stream.write_all(b"x\n").unwrap();
            Vec::new()
        })
    });
    assert_eq!((outcome.stdout, outcome.code), (b"x\n".to_vec(), Some(0)));
}

#[test]
fn crlf_flag_sends_crlf_line_ends() {
    let outcome = same_as_nc("crlf_flag", |nc| {
        client(nc, &["-C", "-N"], b"a\nb\n", |mut stream| {
            let mut got = Vec::new();
            stream.read_to_end(&mut got).unwrap();
            got
        })
    });
    assert_eq!(
        (outcome.peer, outcome.code),
        (b"a\r\nb\r\n".to_vec(), Some(0))
    );
}

#[test]
fn send_only_ends_with_stdin_and_writes_nothing() {
    // ncat's --send-only: portier's alone (OpenBSD nc has no such flag).
    let outcome = client(Nc::Portier, &["--send-only"], b"hi\n", |mut stream| {
        let got = read_exactly(&mut stream, 3);
        let _ = stream.write_all(b"not for stdout\n");
        got
    });
    assert_eq!(outcome.stdout, b"");
    assert_eq!((outcome.code, outcome.peer), (Some(0), b"hi\n".to_vec()));
}

/// `nc -u ARGS` with "hi" on stdin against a UDP peer that answers "ok".
fn udp_client(nc: Nc, args: &[&str]) -> Outcome {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(PATIENCE)).unwrap();
    let port = peer.local_addr().unwrap().port().to_string();
    let server = thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (len, from) = peer.recv_from(&mut buf).unwrap();
        peer.send_to(b"ok\n", from).unwrap();
        buf[..len].to_vec()
    });
    let mut line = vec!["-u"];
    line.extend(args);
    line.extend(["127.0.0.1", &port]);
    let out = run_with_input(nc.command(&line), b"hi\n");
    Outcome {
        stdout: out.stdout,
        code: out.status.code(),
        peer: server.join().unwrap(),
    }
}

#[test]
fn udp_client_prints_replies_until_w() {
    // echo hi | nc -u -w 1 host port
    let outcome = same_as_nc("udp_client_w", |nc| udp_client(nc, &["-w", "1"]));
    assert_eq!(outcome.stdout, b"ok\n");
    assert_eq!((outcome.code, outcome.peer), (Some(0), b"hi\n".to_vec()));
}

#[test]
fn udp_client_prints_replies_until_q() {
    // Debian's nc -u -q stops reading the network when stdin ends, and
    // loses the reply; portier prints what comes until -q is up.
    let outcome = udp_client(Nc::Portier, &["-q", "1"]);
    assert_eq!(outcome.stdout, b"ok\n");
    assert_eq!((outcome.code, outcome.peer), (Some(0), b"hi\n".to_vec()));
}

#[test]
fn exec_runs_a_program_against_the_peer() {
    let outcome = client(Nc::Portier, &["-c", "tr a-z A-Z"], b"", |mut stream| {
        stream.write_all(b"abc\n").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        got
    });
    assert_eq!((outcome.peer, outcome.code), (b"ABC\n".to_vec(), Some(0)));
}

#[test]
fn a_listener_refuses_exec_beyond_loopback_unless_asked() {
    let out = run_with_input(Nc::Portier.command(&["-l", "8888", "-e", "cat"]), b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--exec-anywhere"));
}
