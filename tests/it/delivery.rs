//! `--stats`, `-o`, `-q` and the summary mean the same on every delivery
//! path: formatted, straight (one UDP socket to a pipe) and spliced (one TCP
//! client to a pipe). Which path is chosen is unit-tested in
//! `src/listen/delivery.rs`; here each flag is checked with each path's arguments.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};

use socket2::{Domain, Socket, Type};

use crate::common::{Running, free_port, portier, wait_bound};

const PAYLOAD: &[u8] = b"0123456789\n";

/// The listener arguments of each path, stdout being a pipe.
const PATHS: [(&str, &[&str]); 4] = [
    ("straight", &["-u"]),
    ("spliced", &["-t", "--once"]),
    ("formatted udp", &["-u", "-f", "json"]),
    ("formatted tcp", &["-t", "--once", "-f", "json"]),
];

/// Starts the listener of one path with `extra` on a free port, sends
/// [`PAYLOAD`] from `source`, waits `until` it shows what the test waits for
/// while the client is still there (a spliced client stays connected), then
/// lets it go and stops the listener; returns it for its output.
fn one_message(args: &[&str], extra: &[&str], source: &str, until: impl Fn(&Running)) -> Running {
    let port = free_port();
    let udp = args.contains(&"-u");
    let mut command = portier();
    command.args(["listen", &port.to_string(), "-b", "127.0.0.1"]);
    command.args(args).args(extra);
    let mut run = Running::spawn(command);
    wait_bound(udp, port);
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let local = SocketAddr::new(source.parse().unwrap(), 0);
    let mut client = None;
    if udp {
        let socket = UdpSocket::bind(local).unwrap();
        socket.send_to(PAYLOAD, target).unwrap();
    } else {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.bind(&local.into()).unwrap();
        socket.connect(&target.into()).unwrap();
        let mut stream = TcpStream::from(socket);
        let _ = stream.write_all(PAYLOAD); // a refused client may be closed already
        client = Some(stream);
    }
    until(&run);
    drop(client);
    let refused = extra.contains(&"--deny");
    if args.contains(&"--once") && !refused {
        assert!(run.wait().success(), "{}", run.stderr.text());
    } else {
        run.stop();
    }
    run
}

#[test]
fn stats_count_the_same_bytes_on_every_path() {
    for (path, args) in PATHS {
        // A stats line counts the bytes while the client is still connected.
        let counted = |run: &Running| drop(run.stderr.wait_for_text(", 11 B, "));
        let run = one_message(args, &["--stats", "0.05"], "127.0.0.1", counted);
        let events = run.stderr.text();
        assert!(
            events.contains("total: 1 messages, 11 B in "),
            "{path}: {events}"
        );
    }
}

#[test]
fn quiet_leaves_only_the_data_on_every_path() {
    for (path, args) in PATHS {
        let printed = |run: &Running| drop(run.stdout.wait_for_text("0123456789"));
        let run = one_message(args, &["-q"], "127.0.0.1", printed);
        assert_eq!(run.stderr.text(), "", "{path}");
        assert!(run.stdout.text().contains("0123456789"), "{path}");
    }
}

#[test]
fn an_output_file_gets_the_data_on_every_path() {
    for (path, args) in PATHS {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("log");
        let output = ["-o", file.to_str().unwrap()];
        let listening = |run: &Running| drop(run.stderr.wait_for_text("listening on"));
        let run = one_message(args, &output, "127.0.0.1", listening);
        let logged = std::fs::read_to_string(&file).unwrap();
        assert!(logged.contains("0123456789"), "{path}: {logged:?}");
        assert!(run.stdout.text().contains("0123456789"), "{path}");
    }
}

#[test]
fn the_summary_counts_refused_peers_on_every_path() {
    for (path, args) in PATHS {
        let deny = ["--deny", "127.0.0.2"];
        let refused = |run: &Running| drop(run.stderr.wait_for_text("matches --deny"));
        let run = one_message(args, &deny, "127.0.0.2", refused);
        let events = run.stderr.text();
        assert!(
            events.contains("summary: 1 refused by --allow/--deny"),
            "{path}: {events}"
        );
        assert!(!run.stdout.text().contains("0123456789"), "{path}");
    }
}
