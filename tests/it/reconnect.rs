//! `send --reconnect`: a collector stopped and started again three times
//! during a stream of 100,000 lines gets each line once (`--on-full block`),
//! or each line it gets once and the drop count says how many it did not
//! (`--on-full drop`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Stdio};
use std::thread;
use std::time::Duration;

use crate::common::{Capture, PATIENCE, free_port, portier};

const LINES: usize = 100_000;
const ROUNDS: usize = 4; // three restarts

/// Starts `portier send --reconnect ARGS 127.0.0.1 PORT` reading a pipe.
fn sender(port: u16, args: &[&str]) -> (Child, ChildStdin, Capture) {
    let mut child = portier()
        .args([
            "send",
            "--reconnect",
            "--retry-min",
            "0.02",
            "--retry-max",
            "0.1",
        ])
        .args(args)
        .args(["127.0.0.1", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stderr = Capture::from(child.stderr.take().unwrap());
    (child, stdin, stderr)
}

/// A collector listening on `port`, from before the sender starts (its first
/// connect must not be refused: lines read meanwhile would count as dropped).
fn listen(port: u16) -> TcpListener {
    TcpListener::bind(("127.0.0.1", port)).unwrap()
}

/// One life of the collector: takes one connection on `listener`, and
/// reads whole lines until it has seen `last` (or, for the final round, the
/// sender's end); then it goes away, listener and all. Counts each line in `seen`.
fn collector_life(listener: TcpListener, last: Option<usize>, seen: &mut BTreeMap<usize, u32>) {
    let (stream, _) = listener.accept().unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            return; // the sender's end (final round)
        }
        let Some(number) = line
            .strip_suffix('\n')
            .and_then(|n| n.parse::<usize>().ok())
        else {
            panic!("a line in pieces or garbled: {line:?}");
        };
        *seen.entry(number).or_default() += 1;
        if Some(number) == last {
            return; // dropped here: the collector stops at a moment of its choosing
        }
    }
}

fn lines(from: usize, to: usize) -> String {
    (from..=to).map(|n| format!("{n}\n")).collect()
}

#[test]
fn a_collector_restarted_three_times_gets_every_line_once() {
    let port = free_port();
    let mut listener = Some(listen(port));
    let (mut child, mut stdin, stderr) = sender(port, &["--buffer", "64KiB"]);
    let per_round = LINES / ROUNDS;
    // Each quarter of the input is written once the collector has gone
    // away: it waits in the sender's 64 KiB, then in the pipe, since
    // --on-full block stops reading stdin, until the collector is back.
    let (collector_gone, wait_gone) = std::sync::mpsc::channel::<()>();
    let feeder = thread::spawn(move || {
        for round in 0..ROUNDS {
            if round > 0 {
                wait_gone.recv().unwrap();
            }
            let text = lines(round * per_round + 1, (round + 1) * per_round);
            stdin.write_all(text.as_bytes()).unwrap();
        }
    });
    let mut seen = BTreeMap::new();
    for round in 0..ROUNDS {
        // It leaves once it has read all that was sent so far: nothing is
        // in flight then, so nothing is lost with it.
        let last = (round + 1 < ROUNDS).then_some((round + 1) * per_round);
        let life = listener.take().unwrap_or_else(|| listen(port));
        collector_life(life, last, &mut seen);
        if round + 1 < ROUNDS {
            collector_gone.send(()).unwrap();
            thread::sleep(Duration::from_millis(150)); // down a while: connects are refused
        }
    }
    feeder.join().unwrap();
    let status = child.wait().unwrap();
    let said = stderr.text();
    assert!(status.success(), "{said}");
    assert_eq!(seen.len(), LINES, "every line arrived: {said}");
    assert!(seen.values().all(|&n| n == 1), "each once");
    // At least once per restart; once more when a connect reaches a
    // collector that is closing (its listening socket still open).
    assert!(
        said.matches("connected to 127.0.0.1:").count() >= ROUNDS - 1,
        "{said}"
    );
}

#[test]
fn with_on_full_drop_what_overflows_is_counted() {
    let port = free_port();
    let first = listen(port);
    let (mut child, mut stdin, stderr) = sender(port, &["--buffer", "8KiB", "--on-full", "drop"]);
    let half = LINES / 2;
    let (collector_down, wait_down) = std::sync::mpsc::channel::<()>();
    let feeder = thread::spawn(move || {
        stdin.write_all(lines(1, half).as_bytes()).unwrap();
        // The second half comes while nothing listens: most of it overflows 8 KiB.
        wait_down.recv().unwrap();
        stdin.write_all(lines(half + 1, LINES).as_bytes()).unwrap();
    });
    let mut seen = BTreeMap::new();
    collector_life(first, Some(half), &mut seen);
    collector_down.send(()).unwrap();
    feeder.join().unwrap(); // all written, stdin closed
    thread::sleep(Duration::from_millis(300));
    collector_life(listen(port), None, &mut seen);
    let status = child.wait().unwrap();
    let said = stderr.text();
    assert!(status.success(), "{said}");
    assert!(seen.values().all(|&n| n == 1), "each line it got, once");
    let dropped: usize = said
        .split(" lines dropped while disconnected")
        .next()
        .and_then(|before| before.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no drop count in {said}"));
    assert!(dropped > 0, "{said}");
    assert_eq!(
        seen.len() + dropped,
        LINES,
        "every line delivered or counted: {said}"
    );
}

#[test]
fn connect_reconnect_prints_each_collectors_answers_and_goes_on() {
    let port = free_port();
    let first = listen(port);
    let mut child = portier()
        .args([
            "connect",
            "--reconnect",
            "--retry-min",
            "0.02",
            "127.0.0.1",
            &port.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = Capture::from(child.stdout.take().unwrap());
    // Each life answers one line in capitals, then leaves.
    let answer_one = |listener: TcpListener| {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        (&stream).write_all(line.to_uppercase().as_bytes()).unwrap();
    };
    stdin.write_all(b"first\n").unwrap();
    answer_one(first);
    stdout.wait_for_text("FIRST\n");
    thread::sleep(Duration::from_millis(100)); // away a while
    stdin.write_all(b"second\n").unwrap();
    answer_one(listen(port));
    stdout.wait_for_text("SECOND\n");
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(stdout.text(), "FIRST\nSECOND\n");
}
