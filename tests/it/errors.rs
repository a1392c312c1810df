//! Every error a user meets is one clear line on stderr and a non-zero exit, never a panic.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::{free_port, portier, skip};

/// Runs portier with `args`; asserts exit `code` and a single stderr line containing `needles`.
fn fails(args: &[&str], code: i32, needles: &[&str]) -> String {
    let output = portier().args(args).output().unwrap();
    assert_one_line_error(&output, code, needles)
}

fn assert_one_line_error(output: &Output, code: i32, needles: &[&str]) -> String {
    let error = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "{error}");
    assert!(!error.contains("panicked"), "{error}");
    assert_eq!(error.lines().count(), 1, "{error}");
    for needle in needles {
        assert!(error.contains(needle), "missing {needle:?} in {error:?}");
    }
    error
}

#[test]
fn port_in_use_names_the_port_and_suggests_another() {
    let taken = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let error = fails(
        &["listen", "-t", &port],
        1,
        &[
            &format!("port {port} is already in use"),
            "try another port",
            "portier listen ",
        ],
    );
    assert_eq!(error.lines().count(), 1, "{error}");
}

#[test]
fn ports_below_1024_need_privileges() {
    let unprivileged_start =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|v| v.trim().parse::<u16>().ok())
            .unwrap_or(1024);
    if unprivileged_start <= 80 {
        return skip(
            "ports_below_1024_need_privileges",
            "this kernel lets anyone bind port 80",
        );
    }
    // As root, drop to nobody: the check is about what a normal user meets.
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n");
    let mut command = if is_root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_portier"));
        c
    } else {
        portier()
    };
    let output = command
        .args(["listen", "-t", "-b", "127.0.0.1", "80"])
        .output()
        .unwrap();
    assert_one_line_error(&output, 1, &["permission denied", "below 1024", "8888"]);
}

#[test]
fn unresolvable_host() {
    // A name with spaces fails in the resolver itself: no query leaves the machine.
    fails(
        &["send", "no such host", "9", "x"],
        1,
        &["cannot resolve host 'no such host'"],
    );
    fails(
        &["listen", "-b", "no such host"],
        1,
        &["cannot resolve host"],
    );
}

#[test]
fn connection_refused_asks_whether_a_server_listens() {
    let port = free_port().to_string();
    fails(
        &["send", "127.0.0.1", &port, "x"],
        1,
        &[
            "connection refused",
            &format!("is a server listening on 127.0.0.1:{port}?"),
        ],
    );
    fails(&["connect", "127.0.0.1", &port], 1, &["connection refused"]);
}

#[test]
fn udp_to_a_closed_port_reports_port_unreachable() {
    let port = free_port().to_string();
    fails(
        &["send", "-u", "127.0.0.1", &port, "x"],
        1,
        &["port unreachable", "no UDP server"],
    );
}

#[test]
fn a_connection_that_hangs_times_out() {
    // A listener whose accept queue is full drops new SYNs, so connecting hangs.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let fillers: Vec<TcpStream> = (0..4)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok())
        .collect();
    assert!(!fillers.is_empty());
    let port = addr.port().to_string();
    fails(
        &["send", "-w", "0.3", "127.0.0.1", &port, "x"],
        1,
        &["timed out after 300ms"],
    );
}

#[test]
fn a_missing_file_is_named_before_any_connection() {
    let port = free_port().to_string(); // nothing listens: the file error must come first
    for udp in [false, true] {
        let mut args = vec!["send", "127.0.0.1", &port, "--file", "/no/such/file"];
        if udp {
            args.push("-u");
        }
        fails(
            &args,
            1,
            &["cannot read /no/such/file: no such file or directory"],
        );
    }
}

#[test]
fn nc_flags_get_the_portier_command_to_type() {
    fails(&["listen", "-p", "8888"], 2, &[": portier listen 8888"]);
    fails(&["listen", "-lk", "8888"], 2, &[": portier listen 8888"]);
    fails(&["connect", "-l", "9000"], 2, &[": portier listen 9000"]);
    fails(
        &["send", "-p", "5000", "h", "1"],
        2,
        &["nc's -p picks the local port"],
    );
}

#[test]
fn usage_errors_exit_with_2() {
    fails(&["listen", "70000"], 2, &["70000"]);
    fails(&["send", "--bogus"], 2, &["--bogus"]);
    fails(&["listen", "-t", "-u"], 2, &["cannot be used with"]);
    fails(&["send", "-w", "soon"], 2, &["soon"]);
    fails(&["frobnicate"], 2, &["frobnicate"]);
}

#[test]
fn every_subcommand_has_help_with_examples_and_there_is_a_version() {
    for sub in ["listen", "send", "connect"] {
        let output = portier().args([sub, "--help"]).output().unwrap();
        assert!(output.status.success());
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(
            help.contains("Examples:") && help.contains("portier "),
            "{help}"
        );
    }
    let output = portier().arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("portier {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn broker_addresses_and_settings_that_cannot_work_are_one_line_without_the_password() {
    let cases: &[(&[&str], &str)] = &[
        (&["listen", "--to", "mqtt://ann:s3cret@host"], "no topic"),
        (
            &["listen", "--to", "amqp://host/q"],
            "mqtt://, mqtts:// or nats://",
        ),
        (
            &["listen", "--to", "mqtt://ann:s3cret@host/a/{who}"],
            "unknown field {who}",
        ),
        (&["listen", "--to", "mqtt://host/a/#"], "wildcards"),
        (
            &["listen", "--to", "mqtt://host/a", "--to-ack"],
            "--to-ack is for nats://",
        ),
        (
            &["listen", "--to", "nats://host/a", "--to-qos", "1"],
            "for mqtt://",
        ),
        (&["listen", "--to", "mqtt://host/a", "--to-pin", "AA"], ""),
    ];
    for (args, needle) in cases {
        let error = fails(args, 2, &[needle]);
        assert!(!error.contains("s3cret"), "{error}");
    }
}
