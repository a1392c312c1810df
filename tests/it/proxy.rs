//! Clients through real proxies started here on loopback: microsocks
//! (SOCKS5, with and without a password) and tinyproxy (HTTP CONNECT, with
//! and without basic auth); refusals, wrong passwords and silent proxies end
//! in one clear line that names the proxy and never its password.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread::{self, JoinHandle};

use crate::common::{
    PATIENCE, Running, free_port, have_peer, portier, run_with_input, wait_bound, wait_output,
};

const PASSWORD: &str = "s3cret-pw";

/// `microsocks` on a free port, with a user and password if asked.
fn microsocks(with_login: bool) -> (Running, u16) {
    let port = free_port();
    let mut command = Command::new("microsocks");
    command.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
    if with_login {
        command.args(["-u", "ann", "-P", PASSWORD]);
    }
    let run = Running::spawn(command);
    wait_bound(false, port);
    (run, port)
}

/// `tinyproxy` in the foreground on a free port, with basic auth if asked.
fn tinyproxy(with_login: bool) -> (Running, u16, tempfile::TempDir) {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("tinyproxy.conf");
    let mut text =
        format!("Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nMaxClients 16\n");
    if with_login {
        text += &format!("BasicAuth ann {PASSWORD}\n");
    }
    std::fs::write(&conf, text).unwrap();
    let mut command = Command::new("tinyproxy");
    command.args(["-d", "-c"]).arg(&conf);
    let run = Running::spawn(command);
    wait_bound(false, port);
    (run, port, dir)
}

/// A server that answers one line with the line in capitals, then closes.
fn shouting_server() -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        (&stream).write_all(line.to_uppercase().as_bytes()).unwrap();
    });
    (port, server)
}

/// `portier connect ARGS 127.0.0.1 PORT`, "hello" typed and stdin held open
/// (proxies like microsocks end the whole tunnel at a half-close).
fn connect_through(args: &[&str], port: u16, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = portier();
    command
        .arg("connect")
        .args(args)
        .args(["127.0.0.1", &port.to_string()])
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !env.iter().any(|(name, _)| *name == "ALL_PROXY") {
        command.env_remove("ALL_PROXY").env_remove("all_proxy");
    }
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A client refused by its proxy may be gone before this is written.
    let _ = stdin.write_all(b"hello\n");
    let out = wait_output(child);
    drop(stdin);
    out
}

fn says(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn socks5_with_and_without_a_password() {
    if !have_peer("socks5_with_and_without_a_password", "microsocks") {
        return;
    }
    let (_open, open_port) = microsocks(false);
    let (port, server) = shouting_server();
    let proxy = format!("socks5h://127.0.0.1:{open_port}");
    let out = connect_through(&["--proxy", &proxy], port, &[]);
    assert_eq!(
        (out.stdout.as_slice(), out.status.code()),
        (b"HELLO\n".as_slice(), Some(0)),
        "{}",
        says(&out)
    );
    server.join().unwrap();

    let (_locked, locked_port) = microsocks(true);
    let (port, server) = shouting_server();
    let proxy = format!("socks5://ann:{PASSWORD}@127.0.0.1:{locked_port}");
    let out = connect_through(&["--proxy", &proxy], port, &[]);
    assert_eq!(out.stdout, b"HELLO\n", "{}", says(&out));
    server.join().unwrap();

    let wrong = format!("socks5://ann:not-{PASSWORD}@127.0.0.1:{locked_port}");
    let out = connect_through(&["--proxy", &wrong], port, &[]);
    assert_eq!(out.status.code(), Some(1));
    let said = says(&out);
    assert!(
        said.contains(&format!(
            "proxy socks5://127.0.0.1:{locked_port}: it refused the user name and password"
        )),
        "{said}"
    );
    assert!(
        !said.contains(PASSWORD) && !said.contains("ann"),
        "no credentials in errors: {said}"
    );

    let none = format!("socks5://127.0.0.1:{locked_port}");
    let out = connect_through(&["--proxy", &none], port, &[]);
    assert!(
        says(&out).contains("it asks for a user name and password"),
        "{}",
        says(&out)
    );
}

#[test]
fn http_connect_with_and_without_basic_auth() {
    if !have_peer("http_connect_with_and_without_basic_auth", "tinyproxy") {
        return;
    }
    let (_open, open_port, _dir) = tinyproxy(false);
    let (port, server) = shouting_server();
    let out = connect_through(
        &["--proxy", &format!("http://127.0.0.1:{open_port}")],
        port,
        &[],
    );
    assert_eq!(
        (out.stdout.as_slice(), out.status.code()),
        (b"HELLO\n".as_slice(), Some(0)),
        "{}",
        says(&out)
    );
    server.join().unwrap();

    let (_locked, locked_port, _dir) = tinyproxy(true);
    let (port, server) = shouting_server();
    let proxy = format!("http://ann:{PASSWORD}@127.0.0.1:{locked_port}");
    let out = connect_through(&["--proxy", &proxy], port, &[]);
    assert_eq!(out.stdout, b"HELLO\n", "{}", says(&out));
    server.join().unwrap();

    let out = connect_through(
        &["--proxy", &format!("http://127.0.0.1:{locked_port}")],
        port,
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let said = says(&out);
    assert!(
        said.contains("it asks for a user name and password") && said.contains("407"),
        "{said}"
    );
    assert_eq!(said.lines().count(), 1, "one line: {said}");
}

#[test]
fn a_refused_destination_is_said_by_each_kind_of_proxy() {
    let test = "a_refused_destination_is_said_by_each_kind_of_proxy";
    if !have_peer(test, "microsocks") || !have_peer(test, "tinyproxy") {
        return;
    }
    let closed = free_port();
    let (_socks, socks_port) = microsocks(false);
    let (_http, http_port, _dir) = tinyproxy(false);
    for (proxy, expected) in [
        (
            format!("socks5h://127.0.0.1:{socks_port}"),
            "connection refused by the destination",
        ),
        (
            format!("http://127.0.0.1:{http_port}"),
            "it refused the tunnel to 127.0.0.1:",
        ),
    ] {
        let out = connect_through(&["--proxy", &proxy], closed, &[]);
        assert_eq!(out.status.code(), Some(1), "{proxy}");
        assert!(says(&out).contains(expected), "{proxy}: {}", says(&out));
    }
}

#[test]
fn a_proxy_that_hangs_up_or_stays_silent_never_hangs_the_client() {
    // One hangs up after the greeting; one never answers.
    let rude = TcpListener::bind("127.0.0.1:0").unwrap();
    let rude_port = rude.local_addr().unwrap().port();
    let hangs_up = thread::spawn(move || {
        let (mut stream, _) = rude.accept().unwrap();
        let _ = stream.read(&mut [0u8; 8]);
    });
    let out = connect_through(
        &["--proxy", &format!("socks5://127.0.0.1:{rude_port}")],
        9,
        &[],
    );
    hangs_up.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        says(&out).contains("closed the connection during the handshake"),
        "{}",
        says(&out)
    );

    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let proxy = format!("http://127.0.0.1:{silent_port}");
    let out = connect_through(&["-w", "0.5", "--proxy", &proxy], 9, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        says(&out).contains("timed out after 500ms"),
        "{}",
        says(&out)
    );
    drop(silent);
}

#[test]
fn all_proxy_is_taken_unless_no_proxy_lists_the_host() {
    if !have_peer(
        "all_proxy_is_taken_unless_no_proxy_lists_the_host",
        "microsocks",
    ) {
        return;
    }
    let (_socks, socks_port) = microsocks(true);
    let (port, server) = shouting_server();
    let proxy = format!("socks5h://ann:{PASSWORD}@127.0.0.1:{socks_port}");
    let out = connect_through(&[], port, &[("ALL_PROXY", &proxy)]);
    assert_eq!(out.stdout, b"HELLO\n", "{}", says(&out));
    server.join().unwrap();
    // Exempt: straight to the server, past a proxy that does not exist.
    let (port, server) = shouting_server();
    let nowhere = format!("socks5h://127.0.0.1:{}", free_port());
    let out = connect_through(
        &[],
        port,
        &[
            ("ALL_PROXY", &nowhere),
            ("NO_PROXY", "localhost,127.0.0.0/8"),
        ],
    );
    assert_eq!(out.stdout, b"HELLO\n", "{}", says(&out));
    server.join().unwrap();
}

#[test]
fn a_relay_forwards_through_a_proxy() {
    if !have_peer("a_relay_forwards_through_a_proxy", "microsocks") {
        return;
    }
    let (_socks, socks_port) = microsocks(false);
    let (port, server) = shouting_server();
    let relay_port = free_port();
    let mut command = portier();
    command.args([
        "relay",
        &format!("tcp://127.0.0.1:{relay_port}"),
        &format!("tcp://127.0.0.1:{port}"),
        "--proxy",
        &format!("socks5h://127.0.0.1:{socks_port}"),
    ]);
    let mut relay = Running::spawn(command);
    wait_bound(false, relay_port);
    let mut stream = TcpStream::connect(("127.0.0.1", relay_port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(b"through two hops\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "THROUGH TWO HOPS\n");
    server.join().unwrap();
    relay.stop();
}

#[test]
fn udp_through_a_proxy_is_a_usage_error() {
    let mut command = portier();
    command.args([
        "send",
        "-u",
        "--proxy",
        "socks5://127.0.0.1:1080",
        "127.0.0.1",
        "9",
        "x",
    ]);
    let out = run_with_input(command, b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(says(&out).contains("TCP (and TLS) only"));
}
