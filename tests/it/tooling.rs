//! What makes portier feel at home on a system: progress, statistics,
//! completions and man pages generated from the CLI.

use std::process::Command;

use crate::common::{Running, Server, have_peer, portier};

#[test]
fn send_shows_progress_on_a_terminal_and_nothing_elsewhere() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), vec![b'p'; 4 << 20]).unwrap();
    let path = file.path().to_str().unwrap();

    let mut server = Server::start(&["-t", "--once"]);
    let quiet = portier()
        .args([
            "send",
            "127.0.0.1",
            &server.port.to_string(),
            "--file",
            path,
        ])
        .output()
        .unwrap();
    assert!(quiet.status.success());
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    assert!(server.run.wait().success());

    if !have_peer(
        "send_shows_progress_on_a_terminal_and_nothing_elsewhere",
        "script",
    ) {
        return;
    }
    let mut server = Server::start(&["-t", "--once"]);
    let command = format!(
        "{} send 127.0.0.1 {} --file {path}",
        env!("CARGO_BIN_EXE_portier"),
        server.port
    );
    let mut terminal = Running::spawn({
        let mut script = Command::new("script");
        script.args(["-qefc", &command, "/dev/null"]);
        script
    });
    assert!(terminal.wait().success());
    let shown = terminal.stdout.text();
    assert!(shown.contains("portier: sent 4.00 MiB in "), "{shown:?}");
    assert!(server.run.wait().success());
    assert_eq!(server.run.stdout.bytes().len(), 4 << 20);
}

#[test]
fn listen_stats_reports_periodically_and_totals_at_exit() {
    let mut server = Server::start(&["-u", "--stats", "0.2"]);
    let status = portier()
        .args([
            "send",
            "-u",
            "127.0.0.1",
            &server.port.to_string(),
            "reading",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    server.run.stderr.wait_for_text("1 messages, 8 B");
    server.run.stop();
    let events = server.run.stderr.text();
    assert!(events.contains("portier: stats: 0 clients, "), "{events}");
    assert!(
        events.contains("portier: total: 1 messages, 8 B in "),
        "{events}"
    );
}

#[test]
fn completions_come_from_the_cli_definitions() {
    for shell in ["bash", "zsh", "fish"] {
        let output = portier().args(["completions", shell]).output().unwrap();
        assert!(output.status.success());
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(
            script.contains("listen") && script.contains("broadcast"),
            "{shell}"
        );
    }
}

#[test]
fn man_pages_come_from_the_cli_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let status = portier()
        .args(["man", dir.path().to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    for page in [
        "portier.1",
        "portier-listen.1",
        "portier-send.1",
        "portier-connect.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
    }
    let listen = std::fs::read_to_string(dir.path().join("portier-listen.1")).unwrap();
    assert!(
        listen.contains("idle\\-timeout"),
        "the options are in the page"
    );
}
