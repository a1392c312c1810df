//! `listen --web` in a real browser: headless Chromium through chromedriver
//! (WebDriver, with the fantoccini client), fed by the seed's programs, nc
//! and bursts of datagrams; what the page shows is read from its DOM.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::process::{Command, Stdio};

use std::thread;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::common::{
    PATIENCE, Running, SeedProgram, connect_from, free_port, have_peer, portier, python,
    seed_program, wait_bound,
};

/// A listener with `--web` on a port of its own, and its web port.
fn web_listener(args: &[&str]) -> (Running, u16, u16) {
    let (port, web) = (free_port(), free_port());
    let mut command = portier();
    command
        .args(["listen", "-b", "127.0.0.1", &port.to_string()])
        .args(["--web", &format!("127.0.0.1:{web}")])
        .args(args);
    let run = Running::spawn(command);
    let sockets = if args.contains(&"-u") || args.contains(&"-t") {
        1
    } else {
        2
    };
    run.stderr.wait_for_listening(sockets);
    wait_bound(false, web);
    (run, port, web)
}

/// chromedriver on a free port, driving headless Chromium; `None` (after
/// saying so, or failing under PORTIER_REQUIRE_PEERS) when they are absent.
struct Browser {
    _driver: Running,
    client: Client,
    runtime: tokio::runtime::Runtime,
}

impl Browser {
    fn open(test: &str, url: &str) -> Option<Browser> {
        if !have_peer(test, "chromedriver") || !have_peer(test, "chromium") {
            return None;
        }
        let port = free_port();
        let mut command = Command::new("chromedriver");
        command.arg(format!("--port={port}"));
        let driver = Running::spawn(command);
        wait_bound(false, port);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1100"],
            },
        });
        let client = runtime.block_on(async {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let mut builder = ClientBuilder::new(connector);
            builder.capabilities(capabilities.as_object().unwrap().clone());
            // chromedriver may take a moment after binding its port before it answers.
            let start = Instant::now();
            let client = loop {
                match builder.connect(&format!("http://127.0.0.1:{port}")).await {
                    Ok(client) => break client,
                    Err(e) if start.elapsed() < PATIENCE => {
                        eprintln!("chromedriver not ready: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("cannot start a browser: {e}"),
                }
            };
            client.goto(url).await.unwrap();
            client
        });
        let browser = Browser {
            _driver: driver,
            client,
            runtime,
        };
        browser.wait_for(
            "the live stream",
            "return document.getElementById('status').textContent === 'live'",
        );
        Some(browser)
    }

    /// Runs `script` in the page; returns what it returns.
    fn run(&self, script: &str) -> Value {
        self.runtime
            .block_on(self.client.execute(script, Vec::new()))
            .unwrap()
    }

    /// Polls `script` until it returns true.
    fn wait_for(&self, what: &str, script: &str) -> Duration {
        let start = Instant::now();
        while self.run(script) != Value::Bool(true) {
            assert!(start.elapsed() < PATIENCE, "the page never showed {what}");
            thread::sleep(Duration::from_millis(20));
        }
        start.elapsed()
    }

    fn click(&self, id: &str) {
        self.runtime.block_on(async {
            let element = self.client.find(Locator::Id(id)).await.unwrap();
            element.click().await.unwrap();
        });
    }

    /// Empties the field `id` and types `text`, key by key, as a person
    /// would (WebDriver's own clear fires no input event).
    fn type_into(&self, id: &str, text: &str) {
        const BACKSPACE: char = '\u{E003}';
        self.runtime.block_on(async {
            let element = self.client.find(Locator::Id(id)).await.unwrap();
            let erase = String::from(BACKSPACE).repeat(40);
            element.send_keys(&format!("{erase}{text}")).await.unwrap();
        });
    }

    /// The text of the data rows the filter leaves shown, newest first.
    fn shown_rows(&self) -> Vec<String> {
        let rows = self.run(
            "return Array.from(document.querySelectorAll('#rows tr.data')).filter(r => !r.hidden).map(r => r.children[3].textContent)",
        );
        serde_json::from_value(rows).unwrap()
    }

    fn screenshot(&self) -> Vec<u8> {
        self.runtime.block_on(self.client.screenshot()).unwrap()
    }

    /// The text of every data row of the message table, newest first.
    fn rows(&self) -> Vec<String> {
        let rows = self.run(
            "return Array.from(document.querySelectorAll('#rows tr.data td:nth-child(4)')).map(td => td.textContent)",
        );
        serde_json::from_value(rows).unwrap()
    }

    /// The messages counted for `peer` in the peer table, if it is there.
    fn peer_messages(&self, peer: &str) -> Option<u64> {
        let script = format!(
            "const row = document.querySelector('#peers tr[data-peer=\"{peer}\"]'); return row ? Number(row.children[2].textContent) : null"
        );
        self.run(&script).as_u64()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let client = self.client.clone();
        let _ = self.runtime.block_on(client.close());
    }
}

#[test]
fn the_page_shows_what_arrives_live_counts_each_peer_and_never_runs_a_payload() {
    let test = "the_page_shows_what_arrives_live_counts_each_peer_and_never_runs_a_payload";
    let (mut server, port, web) = web_listener(&[]);
    let Some(browser) = Browser::open(test, &format!("http://127.0.0.1:{web}/")) else {
        return;
    };
    // The seed's two clients, TCP and UDP.
    for program in [SeedProgram::TcpClient, SeedProgram::UdpClient] {
        let Some((_dir, path)) = seed_program(test, program, port) else {
            return;
        };
        assert!(python(&path).status().unwrap().success());
    }
    browser.wait_for(
        "the seed's two messages",
        "return document.querySelectorAll('#rows tr.data').length === 2",
    );
    assert_eq!(browser.rows(), ["abcdefg!\\n", "abcdefg!\\n"]);

    // nc over TCP; the row is there within a second of the send.
    let sent = Instant::now();
    let mut nc = Command::new("nc")
        .args(["-N", "127.0.0.1", &port.to_string()])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    nc.stdin.take().unwrap().write_all(b"from nc\n").unwrap();
    assert!(nc.wait().unwrap().success());
    browser.wait_for(
        "nc's message",
        "return Array.from(document.querySelectorAll('#rows td')).some(td => td.textContent === 'from nc\\\\n')",
    );
    let shown_after = sent.elapsed();
    assert!(
        shown_after < Duration::from_secs(1),
        "shown after {shown_after:?}"
    );

    // A payload that would run if it were inserted as HTML, and control bytes.
    let attack = "<img src=x onerror=\"document.title='owned'\">\x1b[31m\u{202e}";
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(attack.as_bytes(), ("127.0.0.1", port)).unwrap();
    browser.wait_for(
        "the attack",
        "return document.querySelectorAll('#rows tr.data').length === 4",
    );
    assert_eq!(
        browser.rows()[0],
        "<img src=x onerror=\"document.title='owned'\">\\x1b[31m\\u{202e}"
    );
    assert_eq!(
        browser.run("return document.querySelectorAll('img').length"),
        json!(0)
    );
    assert_ne!(browser.run("return document.title"), json!("owned"));

    // Per-peer counts: 5 from one socket, 3 from another.
    let (a, b) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    for _ in 0..5 {
        a.send_to(b"a", ("127.0.0.1", port)).unwrap();
    }
    for _ in 0..3 {
        b.send_to(b"b", ("127.0.0.1", port)).unwrap();
    }
    let (a, b) = (
        a.local_addr().unwrap().to_string(),
        b.local_addr().unwrap().to_string(),
    );
    browser.wait_for(
        "both peers' counts",
        &format!(
            "const n = p => {{ const r = document.querySelector('#peers tr[data-peer=\"' + p + '\"]'); return r && Number(r.children[2].textContent); }}; return n('{a}') === 5 && n('{b}') === 3"
        ),
    );

    // Paused, nothing new is shown; resumed, it is.
    browser.click("pause");
    let before = browser.rows().len();
    udp.send_to(b"while paused", ("127.0.0.1", port)).unwrap();
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(browser.rows().len(), before, "paused, yet the page changed");
    browser.click("pause");
    udp.send_to(b"after resume", ("127.0.0.1", port)).unwrap();
    browser.wait_for(
        "the message sent after resume",
        "return Array.from(document.querySelectorAll('#rows td')).some(td => td.textContent === 'after resume')",
    );

    // Clicking a row shows its bytes in hex.
    browser.run("document.querySelector('#rows tr.data').click()");
    let hex = browser.run("return document.querySelector('#rows tr.hex td').textContent");
    assert!(hex.as_str().unwrap().contains("61 66 74 65 72"), "{hex}"); // "after"

    // The filter keeps the rows whose peer or text holds what is typed, and
    // applies to rows that come later too.
    browser.type_into("filter", "FROM NC");
    assert_eq!(browser.shown_rows(), ["from nc\\n"]);
    udp.send_to(b"from nc, again", ("127.0.0.1", port)).unwrap();
    udp.send_to(b"something else", ("127.0.0.1", port)).unwrap();
    browser.wait_for(
        "the last message, hidden by the filter",
        "return Array.from(document.querySelectorAll('#rows td')).some(td => td.textContent === 'something else')",
    );
    assert_eq!(browser.shown_rows(), ["from nc, again", "from nc\\n"]);
    browser.type_into("filter", "");
    assert_eq!(browser.shown_rows().len(), browser.rows().len());

    if let Some(path) = std::env::var_os("PORTIER_WEB_SCREENSHOT") {
        std::fs::write(path, browser.screenshot()).unwrap();
    }
    drop(browser);
    server.stop();
}

#[test]
fn a_burst_of_ten_thousand_datagrams_leaves_the_page_responsive_and_the_counts_exact() {
    let test = "a_burst_of_ten_thousand_datagrams_leaves_the_page_responsive_and_the_counts_exact";
    let (mut server, port, web) = web_listener(&["-u"]);
    let Some(browser) = Browser::open(test, &format!("http://127.0.0.1:{web}/")) else {
        return;
    };
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer = socket.local_addr().unwrap().to_string();
    for n in 0..10_000 {
        socket
            .send_to(format!("burst {n}").as_bytes(), ("127.0.0.1", port))
            .unwrap();
        if n % 500 == 499 {
            thread::sleep(Duration::from_millis(5)); // no kernel drops: the counts are to be exact
        }
    }
    browser.wait_for(
        "10,000 messages counted",
        "return document.getElementById('messages-count').textContent === '10000'",
    );
    assert_eq!(browser.peer_messages(&peer), Some(10_000));
    assert_eq!(
        browser.run("return document.getElementById('kernel-drops').textContent"),
        json!("0")
    );
    // Responsive: a script runs at once, and the table holds its bounded number of rows.
    let start = Instant::now();
    let rows = browser.run("return document.querySelectorAll('#rows tr').length");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the page took {:?}",
        start.elapsed()
    );
    assert!(rows.as_u64().is_some_and(|n| n > 0 && n <= 500), "{rows}");
    drop(browser);
    server.stop();
}

#[test]
fn beyond_loopback_the_page_needs_its_token() {
    let web = free_port();
    let mut command = portier();
    command
        .args(["listen", "-u", "-b", "127.0.0.1", &free_port().to_string()])
        .args(["--web", &format!("0.0.0.0:{web}")]);
    let mut server = Running::spawn(command);
    let said = server.stderr.wait_for_text("?token=");
    let token = said
        .split("?token=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    wait_bound(false, web);
    let get = |path: &str| get_whole([127, 0, 0, 1], web, path);
    assert!(get("/").starts_with("HTTP/1.1 401"));
    assert!(get("/?token=0000").starts_with("HTTP/1.1 401"));
    let page = get(&format!("/?token={token}"));
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.to_lowercase()
            .contains("content-security-policy: default-src 'none'")
    );
    server.stop();
}

#[test]
fn with_the_listeners_certificate_the_page_is_served_over_https() {
    if !have_peer("web https", "openssl") {
        return;
    }
    let pki = crate::common::pki::Pki::new();
    let identity = pki.identity("server");
    let mut args: Vec<&str> = vec!["-t"];
    args.extend(identity.iter().map(String::as_str));
    let (mut server, _port, web) = web_listener(&args);
    let mut client = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-CAfile",
            &pki.path("ca.pem"),
            "-verify_return_error",
        ])
        .args([
            "-servername",
            "localhost",
            "-connect",
            &format!("127.0.0.1:{web}"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    client
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = client.wait_with_output().unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("<title>portier: live</title>"));
    assert!(
        server
            .stderr
            .text()
            .contains("web view: https://127.0.0.1:")
    );
    server.stop();
}

#[test]
fn sigterm_ends_a_listener_whose_page_is_open_within_a_second() {
    let (mut server, port, web) = web_listener(&["-u"]);
    // An open event stream that never reads: the browser that went to sleep.
    let mut stream = TcpStream::connect(("127.0.0.1", web)).unwrap();
    write!(stream, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..20_000 {
        udp.send_to(&[b'x'; 512], ("127.0.0.1", port)).unwrap();
    }
    let signalled = Instant::now();
    server.terminate();
    server.wait();
    assert!(
        signalled.elapsed() < Duration::from_secs(1),
        "took {:?}",
        signalled.elapsed()
    );
}

/// The whole answer to `GET path` from the loopback address `source`, the
/// connection closed after it.
fn get_whole(source: [u8; 4], web: u16, path: &str) -> String {
    let mut stream = connect_from(source, web);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    answer
}

/// The first bytes of an answer to `GET path`, on a connection left open.
fn open_get(web: u16, path: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", web)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut stream, &mut head).unwrap();
    (stream, String::from_utf8_lossy(&head).into_owned())
}

/// Whether the server closes `stream` within `wait` (what it sends first, if
/// anything, is read and ignored); `Duration::ZERO` looks without waiting.
fn closed_by_server(mut stream: &TcpStream, wait: Duration) -> bool {
    use std::io::{ErrorKind, Read};
    match wait.is_zero() {
        true => stream.set_nonblocking(true).unwrap(),
        false => stream.set_read_timeout(Some(wait)).unwrap(),
    }
    let mut buf = [0u8; 512];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) => break !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        }
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

fn open_descriptors(run: &Running) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", run.child.id()))
        .unwrap()
        .count()
}

/// Whoever reaches the page cannot take the process's descriptors (the
/// listener needs them) nor make it keep a copy of the history per stream
/// without end: 32 event streams, 128 connections at once.
#[test]
fn the_page_bounds_its_event_streams_and_its_connections() {
    let (mut server, _, web) = web_listener(&["-u"]);
    let before = open_descriptors(&server);
    let mut streams: Vec<TcpStream> = (0..32)
        .map(|_| {
            let (stream, head) = open_get(web, "/events");
            assert_eq!(head, "HTTP/1.1 200");
            stream
        })
        .collect();
    assert_eq!(open_get(web, "/events").1, "HTTP/1.1 503");
    // One browser leaves; its place is free once the server notices (the
    // stream writes its counters every second).
    streams.pop();
    let start = Instant::now();
    loop {
        let (stream, head) = open_get(web, "/events");
        if head == "HTTP/1.1 200" {
            streams.push(stream);
            break;
        }
        assert!(start.elapsed() < PATIENCE, "the place was never given back");
        thread::sleep(Duration::from_millis(200));
    }
    // 120 idle connections more, from three other addresses (each may hold
    // 48): the page takes in up to its 128 (32 are streams), the rest wait
    // in the kernel's queue.
    let idle: Vec<TcpStream> = (0..120)
        .map(|i| connect_from([127, 0, 0, 2 + i % 3], web))
        .collect();
    thread::sleep(Duration::from_millis(300));
    let held = open_descriptors(&server) - before;
    assert!((120..=128).contains(&held), "{held} descriptors more");
    drop(idle);
    drop(streams);
    let start = Instant::now();
    while open_get(web, "/").1 != "HTTP/1.1 200" {
        assert!(start.elapsed() < PATIENCE, "the page never came back");
    }
    server.stop();
}

/// Slowloris: one host that opens many connections and trickles half a
/// request on each holds at most 48 of the page's places, and each only for
/// the header timeout (5 s); anyone else gets the page meanwhile.
#[test]
fn one_host_trickling_requests_cannot_hold_the_page() {
    let (mut server, _, web) = web_listener(&["-u"]);
    let before = open_descriptors(&server);
    let trickling: Vec<TcpStream> = (0..60)
        .map(|_| {
            let mut stream = connect_from([127, 0, 0, 5], web);
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n");
            stream
        })
        .collect();
    let start = Instant::now();
    // Past 48 from one address, closed at once.
    thread::sleep(Duration::from_millis(500));
    let refused = trickling
        .iter()
        .filter(|stream| closed_by_server(stream, Duration::ZERO))
        .count();
    assert_eq!(refused, 12, "of 60 from one address");
    let held = open_descriptors(&server) - before;
    assert!(held <= 48, "{held} descriptors held by one address");
    let page = get_whole([127, 0, 0, 6], web, "/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    // The header timeout gives back the 48 places.
    let still_open = trickling
        .iter()
        .filter(|stream| !closed_by_server(stream, PATIENCE))
        .count();
    assert_eq!(still_open, 0);
    assert!(
        start.elapsed() >= Duration::from_secs(4),
        "closed before the timeout"
    );
    server.stop();
}

/// `--web-allow`: a peer outside the list is disconnected on arrival, before
/// it can take a place or send a byte of HTTP; one inside gets the page.
#[test]
fn peers_outside_web_allow_are_disconnected_on_arrival() {
    let (mut server, _, web) = web_listener(&["-u", "--web-allow", "127.0.0.7/32"]);
    let outside = connect_from([127, 0, 0, 1], web);
    assert!(closed_by_server(&outside, PATIENCE));
    let page = get_whole([127, 0, 0, 7], web, "/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    server.stop();
}
