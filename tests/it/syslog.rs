//! `--parse syslog`: messages from the real `logger` (RFC 3164 and 5424, over
//! UDP, TCP lines and TCP octet counting) and from a real rsyslogd forwarding
//! to portier, parsed into JSON fields; text that is not syslog is kept whole
//! and flagged.

use std::net::UdpSocket;
use std::process::Command;

use crate::common::{Running, Server, free_port, have_peer, run_with_input, wait_bound};

/// Runs `logger ARGS` against 127.0.0.1:PORT with `message`.
fn logger(port: u16, args: &[&str], message: &str) {
    let mut command = Command::new("logger");
    command
        .args(["-n", "127.0.0.1", "-P", &port.to_string(), "-t", "sensor"])
        .args(args)
        .arg(message);
    let out = run_with_input(command, b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `syslog` objects (or `syslog_error`s) of the data records on stdout.
fn parsed(server: &Server, count: usize) -> Vec<serde_json::Value> {
    server
        .run
        .stdout
        .wait_for(&format!("{count} data records"), |out| {
            String::from_utf8_lossy(out)
                .matches("\"event\":\"data\"")
                .count()
                >= count
        });
    server
        .run
        .stdout
        .json_lines()
        .into_iter()
        .filter(|record| record["event"] == "data")
        .collect()
}

#[test]
fn logger_over_udp_in_both_formats_gives_its_fields_and_free_text_is_flagged() {
    if !have_peer("syslog udp", "logger") {
        return;
    }
    let mut server = Server::start(&["-u", "-b", "127.0.0.1", "--parse", "syslog"]);
    logger(
        server.port,
        &["-d", "--rfc3164", "-p", "daemon.warning"],
        "disk 91% full",
    );
    let sd = ["--sd-id", "reading@32473", "--sd-param", "unit=\"C\""];
    let mut with_sd = vec!["-d", "--rfc5424", "--msgid", "READ"];
    with_sd.extend(sd);
    logger(server.port, &with_sd, "temp=21.5");
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"just some text\n", ("127.0.0.1", server.port))
        .unwrap();
    let records = parsed(&server, 3);
    server.run.stop();

    let rfc3164 = &records[0]["syslog"];
    assert_eq!(rfc3164["protocol"], "rfc3164", "{records:?}");
    assert_eq!(
        (rfc3164["facility"].as_str(), rfc3164["severity"].as_str()),
        (Some("daemon"), Some("warning"))
    );
    assert_eq!(rfc3164["message"], "disk 91% full");

    let rfc5424 = &records[1]["syslog"];
    assert_eq!(rfc5424["protocol"], "rfc5424", "{records:?}");
    assert_eq!(
        (rfc5424["app"].as_str(), rfc5424["msgid"].as_str()),
        (Some("sensor"), Some("READ"))
    );
    assert_eq!(rfc5424["structured_data"]["reading@32473"]["unit"], "C");
    assert_eq!(rfc5424["message"], "temp=21.5");
    assert!(
        rfc5424["timestamp"]
            .as_str()
            .is_some_and(|t| t.starts_with("20"))
    );

    let free_text = &records[2];
    assert!(free_text.get("syslog").is_none(), "{free_text}");
    assert_eq!(
        free_text["syslog_error"],
        "not a syslog message (RFC 5424 or 3164)"
    );
    assert_eq!(free_text["text"], "just some text\n", "kept whole");
}

#[test]
fn logger_over_tcp_with_lines_and_with_octet_counting() {
    if !have_peer("syslog tcp", "logger") {
        return;
    }
    for (frame, extra) in [("lines", None), ("octet-count", Some("--octet-count"))] {
        let args = [
            "-t",
            "-b",
            "127.0.0.1",
            "--frame",
            frame,
            "--parse",
            "syslog",
        ];
        let mut server = Server::start(&args);
        let mut logger_args = vec!["-T", "--rfc5424"];
        logger_args.extend(extra);
        logger(server.port, &logger_args, "over tcp");
        let records = parsed(&server, 1);
        server.run.stop();
        let syslog = &records[0]["syslog"];
        assert_eq!(syslog["message"], "over tcp", "{frame}: {records:?}");
        assert_eq!(syslog["app"], "sensor", "{frame}");
    }
}

#[test]
fn rsyslog_forwards_to_portier_over_tcp_with_octet_counting() {
    if !have_peer("rsyslog forwarding", "rsyslogd") || !have_peer("rsyslog forwarding", "logger") {
        return;
    }
    let args = [
        "-t",
        "-b",
        "127.0.0.1",
        "--frame",
        "octet-count",
        "--parse",
        "syslog",
    ];
    let mut server = Server::start(&args);
    let dir = tempfile::tempdir().unwrap();
    let rsyslog_port = free_port();
    let conf = dir.path().join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            r#"global(workDirectory="{dir}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{rsyslog_port}")
*.* action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
"#,
            dir = dir.path().display(),
            port = server.port
        ),
    )
    .unwrap();
    let mut rsyslog = Command::new("rsyslogd");
    rsyslog
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(dir.path().join("pid"));
    let mut rsyslog = Running::spawn(rsyslog);
    wait_bound(true, rsyslog_port);
    logger(
        rsyslog_port,
        &["-d", "--rfc3164", "-p", "local3.err"],
        "relayed by rsyslog",
    );
    let records = parsed(&server, 1);
    rsyslog.stop();
    server.run.stop();
    let syslog = &records[0]["syslog"];
    assert_eq!(
        syslog["protocol"], "rfc5424",
        "rsyslog rewrites it: {records:?}"
    );
    assert_eq!(
        (syslog["facility"].as_str(), syslog["severity"].as_str()),
        (Some("local3"), Some("err"))
    );
    assert_eq!(syslog["app"], "sensor");
    assert_eq!(syslog["message"], "relayed by rsyslog");
}
