//! `portier listen` on UNIX sockets: stream clients named by their kernel
//! credentials, datagrams from `logger`, the socket file claimed with care
//! and removed on exit, and systemd socket activation of a UNIX socket.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{Running, have_peer, portier, run_with_input};

/// `portier listen ADDRESS ARGS`, waited for until it listens.
fn listen(address: &str, args: &[&str]) -> Running {
    let mut command = portier();
    command.arg("listen").arg(address).args(args);
    let run = Running::spawn(command);
    run.stderr.wait_for_listening(1);
    run
}

fn unix(path: &Path) -> String {
    format!("unix:{}", path.display())
}

#[test]
fn stream_clients_are_named_by_their_credentials_and_the_file_goes_on_exit() {
    let test = "stream_clients_are_named_by_their_credentials_and_the_file_goes_on_exit";
    if !have_peer(test, "nc") || !have_peer(test, "socat") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.sock");
    // A stale socket file (nothing accepts on it) is replaced.
    drop(UnixListener::bind(&path).unwrap());
    let args = ["-f", "json", "--mode", "660", "--group", "nogroup"];
    let mut run = listen(&unix(&path), &args);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert_eq!(meta.gid(), 65534, "nogroup, from /etc/group");
    // OpenBSD nc, then socat: real clients, their pids known to the test.
    let mut nc = Command::new("nc")
        .args(["-U", "-N", &path.display().to_string()])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let nc_pid = nc.id();
    nc.stdin.take().unwrap().write_all(b"from nc\n").unwrap();
    assert!(nc.wait().unwrap().success());
    run.stdout.wait_for_text("from nc");
    let socat = run_with_input(
        {
            let mut command = Command::new("socat");
            command.args(["-", &format!("UNIX-CONNECT:{}", path.display())]);
            command
        },
        b"from socat\n",
    );
    assert!(socat.status.success());
    run.stdout.wait_for_text("from socat");
    run.stop();
    assert!(!path.exists(), "the socket file is removed on exit");
    let records = run.stdout.json_lines();
    let data: Vec<_> = records.iter().filter(|r| r["event"] == "data").collect();
    assert_eq!(data.len(), 2, "{records:?}");
    assert_eq!(data[0]["proto"], "unix");
    assert_eq!(data[0]["text"], "from nc\n");
    assert_eq!(data[0]["pid"], nc_pid);
    assert_eq!(data[0]["uid"], 0);
    assert_eq!(data[0]["peer"], format!("pid={nc_pid},uid=0,gid=0"));
    assert_eq!(data[1]["text"], "from socat\n");
    let events = run.stderr.text();
    assert!(
        events.contains(&format!("connect unix pid={nc_pid},uid=0,gid=0")),
        "{events}"
    );
}

#[test]
fn datagrams_from_logger_arrive_whole_and_a_named_sender_is_shown_escaped() {
    let test = "datagrams_from_logger_arrive_whole_and_a_named_sender_is_shown_escaped";
    if !have_peer(test, "logger") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sock");
    let mut run = listen(&format!("unix-dgram:{}", path.display()), &["-f", "lines"]);
    // The real logger, as it writes to /dev/log: unnamed datagrams.
    for flag in ["--socket", "-u"] {
        let status = Command::new("logger")
            .args([flag, &path.display().to_string(), "--tag", "portier-test"])
            .arg(format!("hello via {flag}"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    run.stdout.wait_for_text("hello via -u");
    // A sender that bound a name of its own choosing, control bytes and all.
    let sender_path = dir.path().join("evil \x1b[2J name");
    let sender = UnixDatagram::bind(&sender_path).unwrap();
    sender.send_to(b"named\n", &path).unwrap();
    let shown = run.stdout.wait_for_text("name named");
    run.stop();
    assert!(!path.exists(), "the socket file is removed on exit");
    assert!(shown.contains(" unix-dgram unnamed <13>"), "{shown}");
    assert!(
        shown.contains("portier-test: hello via --socket"),
        "{shown}"
    );
    assert!(!shown.contains('\x1b'), "no live escape: {shown:?}");
    assert!(
        shown.contains("evil\\x20\\x1b[2J\\x20name named"),
        "{shown}"
    );
}

#[test]
fn an_abstract_name_serves_echo_like_a_tcp_port() {
    let name = format!("portier-test-{}", std::process::id());
    let mut run = listen(&format!("unix:@{name}"), &["--echo"]);
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let mut stream = UnixStream::connect_addr(&address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"ping\n").unwrap();
    let mut answer = [0u8; 5];
    std::io::Read::read_exact(&mut stream, &mut answer).unwrap();
    assert_eq!(&answer, b"ping\n");
    drop(stream);
    run.stdout.wait_for_text("ping");
    run.stop();
}

#[test]
fn files_that_are_not_stale_sockets_are_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let precious = dir.path().join("precious");
    std::fs::write(&precious, b"keep me").unwrap();
    let live = dir.path().join("live.sock");
    let _live = UnixDatagram::bind(&live).unwrap();
    for (path, why) in [
        (&precious, "is not a socket: not removed"),
        (&live, "already listens"),
    ] {
        let mut command = portier();
        command.args(["listen", &unix(path)]);
        let out = run_with_input(command, b"");
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep me");
    assert!(live.exists());
}

#[test]
fn options_that_do_not_fit_a_unix_socket_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.sock");
    let dgram = format!("unix-dgram:{}", path.display());
    for (args, why) in [
        (vec![unix(&path), "-u".into()], "drop -b, -t and -u"),
        (vec![dgram.clone(), "--echo".into()], "prints what arrives"),
        (
            vec![unix(&path), "--tls-self-signed".into()],
            "TLS is for TCP",
        ),
        (
            vec!["9000".into(), "--mode".into(), "600".into()],
            "for a unix:/path",
        ),
    ] {
        let mut command = portier();
        command.arg("listen").args(&args);
        let out = run_with_input(command, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
    assert!(!path.exists());
}

#[test]
fn systemd_socket_activation_serves_a_passed_unix_socket() {
    let test = "systemd_socket_activation_serves_a_passed_unix_socket";
    if !have_peer(test, "systemd-socket-activate") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("activated.sock");
    let mut command = Command::new("systemd-socket-activate");
    command
        .args(["-l", &path.display().to_string()])
        .arg(portier().get_program())
        .args(["listen", "-f", "lines"]);
    let mut run = Running::spawn(command);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !path.exists() {
        assert!(std::time::Instant::now() < deadline, "no socket file");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    UnixStream::connect(&path)
        .unwrap()
        .write_all(b"activated\n")
        .unwrap();
    run.stdout.wait_for_text("activated");
    let events = run.stderr.wait_for_text("listening on unix");
    assert!(events.contains(&path.display().to_string()), "{events}");
    run.stop();
}

#[test]
fn an_internet_address_in_place_of_the_port_sets_protocol_and_host() {
    let port = crate::common::free_port();
    let mut run = listen(&format!("udp://127.0.0.1:{port}"), &["-f", "lines"]);
    let events = run.stderr.text();
    assert!(
        events.contains(&format!("listening on udp 127.0.0.1:{port}")),
        "{events}"
    );
    assert!(!events.contains("tcp"), "UDP only: {events}");
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sender
        .send_to(b"by address\n", ("127.0.0.1", port))
        .unwrap();
    run.stdout.wait_for_text("by address");
    run.stop();
    let mut command = portier();
    command.args(["listen", "tls://127.0.0.1:0"]);
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TLS needs a certificate"), "{stderr}");
}

#[test]
fn datagrams_still_queued_at_sigterm_are_counted_as_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sock");
    let mut run = listen(&format!("unix-dgram:{}", path.display()), &[]);
    // A sender that blocks whenever the queue is full: each send it is told
    // went through was taken by the listener, printed or counted.
    let sender = std::thread::spawn(move || {
        let socket = UnixDatagram::unbound().unwrap();
        (0..5000)
            .take_while(|_| socket.send_to(b"x\n", &path).is_ok())
            .count()
    });
    run.stdout.wait_for("100 datagrams", |b| b.len() >= 200);
    run.stop();
    let sent = sender.join().unwrap();
    let printed = run.stdout.bytes().len() / 2;
    let events = run.stderr.text();
    let unread: usize = events
        .split(" datagrams not read (still queued at shutdown)")
        .next()
        .filter(|before| before.len() < events.len())
        .and_then(|before| before.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert_eq!(
        printed + unread,
        sent,
        "printed {printed}, unread {unread}: {events}"
    );
}
