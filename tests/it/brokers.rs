//! `--to`: what a listener receives, published to real brokers started here on
//! loopback (mosquitto, nats-server, a three-node NATS cluster), read back by
//! real subscribers (mosquitto_sub, the official NATS client); a broker away at
//! start, a full queue and SIGTERM under a stalled broker, each accounted for.

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{PATIENCE, Running, free_port, have_peer, portier, wait_bound};

/// `mosquitto` on a free loopback port, anonymous; with persistence in `dir` if given.
fn mosquitto(port: u16, dir: &Path, persist: bool) -> Running {
    let conf = dir.join("mosquitto.conf");
    let mut text = format!("listener {port} 127.0.0.1\nallow_anonymous true\n");
    if persist {
        // Run as root, mosquitto drops to its own user: it must be able to write there.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        // No cap on what is held for an offline subscriber (1,000 by default).
        text += &format!(
            "persistence true\npersistence_location {}/\nmax_queued_messages 0\n",
            dir.display()
        );
    }
    std::fs::write(&conf, text).unwrap();
    let mut command = Command::new("mosquitto");
    command.arg("-c").arg(&conf);
    let run = Running::spawn(command);
    wait_bound(false, port);
    run
}

/// `mosquitto_sub -v` on `topic`, with `args` (a persistent session, a QoS).
fn mosquitto_sub(port: u16, topic: &str, args: &[&str]) -> Running {
    let mut command = Command::new("mosquitto_sub");
    command
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-v",
            "-t",
            topic,
        ])
        .args(args);
    Running::spawn(command)
}

/// Publishes probes with `mosquitto_pub` until `sub` shows one: it is subscribed.
fn wait_subscribed(port: u16, sub: &Running, probe_topic: &str) {
    let start = Instant::now();
    while !sub.stdout.text().contains("probe") {
        assert!(start.elapsed() < PATIENCE, "mosquitto_sub never subscribed");
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-t", probe_topic, "-m", "probe"])
            .status()
            .unwrap();
        assert!(status.success());
        thread::sleep(Duration::from_millis(50));
    }
}

/// `portier listen -u PORT ARGS`, started and listening.
fn udp_collector(port: u16, args: &[&str]) -> Running {
    let mut command = portier();
    command
        .args(["listen", "-u", "-b", "127.0.0.1", &port.to_string()])
        .args(args);
    let run = Running::spawn(command);
    run.stderr.wait_for_listening(1);
    run
}

fn send_datagrams(port: u16, texts: impl IntoIterator<Item = String>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for text in texts {
        socket
            .send_to(text.as_bytes(), ("127.0.0.1", port))
            .unwrap();
    }
}

/// The number before `what` in the report line of the broker named `to`.
fn reported(stderr: &str, to: &str, what: &str) -> u64 {
    let line = stderr
        .lines()
        .rev()
        .find(|line| line.starts_with(&format!("portier: to {to}")))
        .unwrap_or_else(|| panic!("no report for {to} in {stderr}"));
    line.split(", ")
        .chain(line.rsplit(": ").next())
        .find_map(|part| {
            part.trim()
                .strip_suffix(what)?
                .trim()
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[test]
fn datagrams_reach_a_mosquitto_subscriber_on_topics_named_after_their_sender() {
    let test = "datagrams_reach_a_mosquitto_subscriber_on_topics_named_after_their_sender";
    if !have_peer(test, "mosquitto") || !have_peer(test, "mosquitto_sub") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker_port = free_port();
    let _broker = mosquitto(broker_port, dir.path(), false);
    let mut sub = mosquitto_sub(broker_port, "sensors/#", &[]);
    wait_subscribed(broker_port, &sub, "sensors/probe");
    let port = free_port();
    let to = format!("mqtt://127.0.0.1:{broker_port}/sensors/{{proto}}/{{peer_ip}}");
    let mut collector = udp_collector(port, &["--to", &to]);
    send_datagrams(port, (1..=3).map(|i| format!("reading {i}")));
    sub.stdout.wait_for("3 readings", |out| {
        String::from_utf8_lossy(out)
            .matches("sensors/udp/127.0.0.1 reading")
            .count()
            == 3
    });
    collector.stop();
    sub.stop();
    // mosquitto_sub -v: TOPIC PAYLOAD, in order.
    let lines: Vec<String> = sub.stdout.text().lines().map(String::from).collect();
    let readings: Vec<&String> = lines.iter().filter(|l| l.contains("reading")).collect();
    assert_eq!(
        readings,
        [
            "sensors/udp/127.0.0.1 reading 1",
            "sensors/udp/127.0.0.1 reading 2",
            "sensors/udp/127.0.0.1 reading 3"
        ]
    );
    let stderr = collector.stderr.text();
    let name = format!("mqtt://127.0.0.1:{broker_port}/sensors/{{proto}}/{{peer_ip}}");
    assert_eq!(reported(&stderr, &name, "delivered"), 3, "{stderr}");
}

#[test]
fn a_broker_away_at_start_gets_every_queued_message_once_it_is_up() {
    // More than all the queues on the way hold (4 + 64 in the MQTT client + 256 to the writer).
    const LINES: usize = 3000;
    let test = "a_broker_away_at_start_gets_every_queued_message_once_it_is_up";
    if !have_peer(test, "mosquitto") || !have_peer(test, "mosquitto_sub") {
        return;
    }
    // A subscriber with a persistent session (QoS 1), saved by the broker when it stops.
    let dir = tempfile::tempdir().unwrap();
    let broker_port = free_port();
    let mut broker = mosquitto(broker_port, dir.path(), true);
    let session = ["-c", "-i", "portier-test-sub", "-q", "1"];
    let mut sub = mosquitto_sub(broker_port, "tcp/#", &session);
    wait_subscribed(broker_port, &sub, "tcp/probe");
    sub.stop();
    broker.stop();

    // The broker is away: portier keeps receiving and queues.
    let port = free_port();
    let to = format!("mqtt://127.0.0.1:{broker_port}/tcp/{{peer_port}}");
    let mut command = portier();
    command.args([
        "listen",
        "-t",
        "-b",
        "127.0.0.1",
        &port.to_string(),
        "--frame",
        "lines",
    ]);
    // A queue of 4 that blocks when full: the TCP sender is held back, nothing is dropped.
    command.args(["--to", &to, "--to-qos", "1", "--to-format", "json"]);
    command.args(["--to-queue", "4", "--to-on-full", "block"]);
    let mut collector = Running::spawn(command);
    collector.stderr.wait_for_listening(1);
    let lines: String = (1..=LINES).map(|i| format!("line {i}\n")).collect();
    {
        use std::io::Write;
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        client.write_all(lines.as_bytes()).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
    }
    collector.stderr.wait_for_text("queueing and retrying");

    // Back up: the queued messages reach the subscriber's saved session.
    let _broker = mosquitto(broker_port, dir.path(), true);
    collector.stderr.wait_for_text("connected");
    let mut sub = mosquitto_sub(broker_port, "tcp/#", &session);
    sub.stdout.wait_for("every record", |out| {
        String::from_utf8_lossy(out)
            .matches("\"text\":\"line ")
            .count()
            == LINES
    });
    collector.stop();
    sub.stop();
    let texts: Vec<String> = sub
        .stdout
        .text()
        .lines()
        .filter_map(|line| {
            let (_topic, record) = line.split_once(' ')?;
            let record: serde_json::Value = serde_json::from_str(record).ok()?;
            Some(record["text"].as_str()?.to_string())
        })
        .collect();
    let expected: Vec<String> = (1..=LINES).map(|i| format!("line {i}\n")).collect();
    assert_eq!(texts, expected, "each line once, whole, in order");
    let name = format!("mqtt://127.0.0.1:{broker_port}/tcp/{{peer_port}}");
    let stderr = collector.stderr.text();
    assert_eq!(
        reported(&stderr, &name, "delivered"),
        LINES as u64,
        "{stderr}"
    );
    assert!(!stderr.contains("dropped"), "{stderr}");
}

#[test]
fn a_full_queue_drops_and_counts_and_everything_received_is_accounted_for() {
    // Nothing listens on the broker's port: it stays away for the whole test.
    let broker_port = free_port();
    let port = free_port();
    let to = format!("mqtt://127.0.0.1:{broker_port}/t");
    let mut collector = udp_collector(
        port,
        &[
            "--to",
            &to,
            "--to-queue",
            "5",
            "-f",
            "json",
            "--stats",
            "60",
        ],
    );
    send_datagrams(port, (0..300).map(|i| format!("m{i}")));
    collector.stdout.wait_for("300 datagrams", |out| {
        String::from_utf8_lossy(out)
            .matches("\"event\":\"data\"")
            .count()
            == 300
    });
    collector.stop();
    let stderr = collector.stderr.text();
    let name = format!("mqtt://127.0.0.1:{broker_port}/t");
    let dropped = reported(&stderr, &name, "dropped (queue full)");
    let unsent = reported(
        &stderr,
        &name,
        "not delivered (the broker did not take them before exit)",
    );
    assert_eq!(reported(&stderr, &name, "delivered"), 0, "{stderr}");
    assert!(dropped > 0, "{stderr}");
    let refused = reported(&stderr, &name, "refused by the broker");
    let report: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("error udp"))
        .collect();
    assert_eq!(
        dropped + unsent + refused,
        300,
        "every message accounted for: {report:?}"
    );
    assert_eq!(refused, 0, "{report:?}");
    // Each drop is an event in the JSON stream too (the first ten, then powers of two).
    let out = collector.stdout.text();
    let drop_events = out
        .lines()
        .filter(|l| l.contains("message dropped"))
        .count();
    assert!(drop_events >= 10.min(dropped as usize), "{out}");
}

#[test]
fn sigterm_ends_a_listener_blocked_on_a_stalled_broker_within_a_second() {
    // A "broker" that accepts and never answers: the client waits, the queue fills, TCP blocks.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let broker_port = stalled.local_addr().unwrap().port();
    let port = free_port();
    let to = format!("mqtt://127.0.0.1:{broker_port}/t");
    let mut command = portier();
    command.args(["listen", "-t", "-b", "127.0.0.1", &port.to_string()]);
    command.args(["--to", &to, "--to-queue", "1", "--to-on-full", "block"]);
    let mut collector = Running::spawn(command);
    collector.stderr.wait_for_listening(1);
    let writer = thread::spawn(move || {
        use std::io::Write;
        let Ok(mut client) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return;
        };
        let chunk = [b'x'; 4096];
        let start = Instant::now();
        // Bounded: the listener stops taking bytes long before this ends.
        while start.elapsed() < Duration::from_secs(5) && client.write_all(&chunk).is_ok() {}
    });
    thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    collector.terminate();
    collector.wait();
    assert!(
        signalled.elapsed() < Duration::from_secs(1),
        "took {:?}",
        signalled.elapsed()
    );
    let stderr = collector.stderr.text();
    assert!(stderr.contains("not delivered"), "{stderr}");
    // Blocking, nothing overflows: what waited for room at the stop is said as such.
    assert!(!stderr.contains("dropped (queue full)"), "{stderr}");
    drop(stalled);
    writer.join().unwrap();
}

/// `nats-server` on loopback with `args`, its client port bound.
fn nats_server(port: u16, args: &[&str]) -> Running {
    let mut command = Command::new("nats-server");
    command
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    let run = Running::spawn(command);
    wait_bound(false, port);
    run
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Subscribes on `port` to `subject`; returns the texts of what arrives until
/// `done` says so, after `start` (run once subscribed) has been run.
fn nats_receive(
    port: u16,
    subject: &str,
    start: impl FnOnce(),
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    use futures_util::StreamExt;
    runtime().block_on(async {
        let client = async_nats::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        let mut sub = client.subscribe(subject.to_string()).await.unwrap();
        client.flush().await.unwrap();
        start();
        let mut texts = Vec::new();
        while !done(&texts) {
            let message = tokio::time::timeout(PATIENCE, sub.next())
                .await
                .unwrap_or_else(|_| panic!("waited in vain; got {texts:?}"))
                .unwrap();
            texts.push(format!(
                "{} {}",
                message.subject,
                String::from_utf8_lossy(&message.payload)
            ));
        }
        texts
    })
}

#[test]
fn json_records_reach_a_nats_subscriber_with_one_subject_token_per_field() {
    let test = "json_records_reach_a_nats_subscriber_with_one_subject_token_per_field";
    if !have_peer(test, "nats-server") {
        return;
    }
    let nats_port = free_port();
    let _server = nats_server(nats_port, &[]);
    let port = free_port();
    let to = format!("nats://127.0.0.1:{nats_port}/readings.{{proto}}.{{peer_ip}}");
    let mut collector = udp_collector(port, &["--to", &to, "--to-format", "json"]);
    let got = nats_receive(
        nats_port,
        "readings.>",
        || send_datagrams(port, (1..=5).map(|i| format!("t={i}"))),
        |texts| texts.len() == 5,
    );
    collector.stop();
    for (i, line) in got.iter().enumerate() {
        let (subject, record) = line.split_once(' ').unwrap();
        assert_eq!(subject, "readings.udp.127_0_0_1");
        let record: serde_json::Value = serde_json::from_str(record).unwrap();
        assert_eq!(record["text"], format!("t={}", i + 1));
        assert_eq!(record["proto"], "udp");
    }
    let name = format!("nats://127.0.0.1:{nats_port}/readings.{{proto}}.{{peer_ip}}");
    assert_eq!(reported(&collector.stderr.text(), &name, "delivered"), 5);
}

#[test]
fn two_collectors_feed_a_three_node_nats_cluster_and_one_subscriber_gets_everything() {
    let test = "two_collectors_feed_a_three_node_nats_cluster_and_one_subscriber_gets_everything";
    if !have_peer(test, "nats-server") {
        return;
    }
    let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let all_routes: Vec<String> = routes
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect();
    let _nodes: Vec<Running> = (0..3)
        .map(|i| {
            let cluster = format!("nats://127.0.0.1:{}", routes[i]);
            let args = [
                "--cluster_name",
                "portier-test",
                "--cluster",
                &cluster,
                "--routes",
                &all_routes.join(","),
            ];
            nats_server(clients[i], &args)
        })
        .collect();
    let ports = [free_port(), free_port()];
    let mut collectors: Vec<Running> = (0..2)
        .map(|i| {
            let to = format!("nats://127.0.0.1:{}/readings.c{i}", clients[i]);
            udp_collector(ports[i], &["--to", &to])
        })
        .collect();
    let per_collector = 200;
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probing = ready.clone();
    let sent = std::sync::atomic::AtomicBool::new(false);
    let is_probe = |text: &String| text.contains(" probe ");
    let got = nats_receive(
        clients[2],
        "readings.>",
        || {
            // Until the routes carry the subscription to the other nodes, what
            // those get is lost (core NATS): probe until both probes come through.
            thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                let start = Instant::now();
                while !probing.load(std::sync::atomic::Ordering::Relaxed)
                    && start.elapsed() < PATIENCE
                {
                    for (i, &port) in ports.iter().enumerate() {
                        let probe = format!("probe {i}");
                        socket
                            .send_to(probe.as_bytes(), ("127.0.0.1", port))
                            .unwrap();
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            });
        },
        |texts| {
            let probed = (0..2).all(|i| texts.iter().any(|t| t.ends_with(&format!(" probe {i}"))));
            if probed && !sent.swap(true, std::sync::atomic::Ordering::Relaxed) {
                ready.store(true, std::sync::atomic::Ordering::Relaxed);
                for (i, &port) in ports.iter().enumerate() {
                    send_datagrams(port, (0..per_collector).map(|n| format!("c{i} n{n}")));
                }
            }
            texts.iter().filter(|t| !is_probe(t)).count() >= 2 * per_collector
        },
    );
    for collector in &mut collectors {
        collector.stop();
    }
    for i in 0..2 {
        let mine: Vec<&String> = got
            .iter()
            .filter(|t| t.contains(&format!(" c{i} n")))
            .collect();
        let expected: Vec<String> = (0..per_collector)
            .map(|n| format!("readings.c{i} c{i} n{n}"))
            .collect();
        assert_eq!(
            mine,
            expected.iter().collect::<Vec<_>>(),
            "collector {i}: all, once, in order"
        );
    }
}

#[test]
fn jetstream_acknowledges_every_message_and_a_subject_without_a_stream_is_counted_as_refused() {
    let test =
        "jetstream_acknowledges_every_message_and_a_subject_without_a_stream_is_counted_as_refused";
    if !have_peer(test, "nats-server") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nats_port = free_port();
    let store = dir.path().to_str().unwrap();
    let _server = nats_server(nats_port, &["-js", "-sd", store]);
    let address = format!("127.0.0.1:{nats_port}");
    let stored = |count: u64| {
        runtime().block_on(async {
            let client = async_nats::connect(&address).await.unwrap();
            let jetstream = async_nats::jetstream::new(client);
            let config = async_nats::jetstream::stream::Config {
                name: "READINGS".into(),
                subjects: vec!["readings.>".into()],
                ..Default::default()
            };
            let stream = jetstream.get_or_create_stream(config).await.unwrap();
            let start = Instant::now();
            loop {
                let messages = stream.get_info().await.unwrap().state.messages;
                if messages >= count || start.elapsed() > PATIENCE {
                    return messages;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    assert_eq!(stored(0), 0);
    let port = free_port();
    let kept = format!("nats://127.0.0.1:{nats_port}/readings.{{proto}}");
    let lost = format!("nats://127.0.0.1:{nats_port}/elsewhere");
    let mut collector = udp_collector(port, &["--to", &kept, "--to", &lost, "--to-ack"]);
    send_datagrams(port, (0..50).map(|n| format!("n{n}")));
    assert_eq!(stored(50), 50);
    collector.stop();
    let stderr = collector.stderr.text();
    let kept = format!("nats://127.0.0.1:{nats_port}/readings.{{proto}}");
    assert_eq!(reported(&stderr, &kept, "delivered"), 50, "{stderr}");
    let lost = format!("nats://127.0.0.1:{nats_port}/elsewhere");
    assert_eq!(
        reported(&stderr, &lost, "refused by the broker"),
        50,
        "{stderr}"
    );
}

#[test]
fn mqtts_checks_the_broker_against_the_given_ca_and_refuses_another() {
    let test = "mqtts_checks_the_broker_against_the_given_ca_and_refuses_another";
    if !have_peer(test, "mosquitto") || !have_peer(test, "mosquitto_sub") {
        return;
    }
    let pki = crate::common::pki::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    {
        // mosquitto drops root for its own user: it must be able to read these.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for name in ["server.pem", "server.key"] {
            let copy = dir.path().join(name);
            std::fs::copy(pki.path(name), &copy).unwrap();
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let (plain, tls) = (free_port(), free_port());
    let conf = dir.path().join("mosquitto.conf");
    let d = dir.path().display();
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\nallow_anonymous true\nlistener {plain} 127.0.0.1\n\
             listener {tls} 127.0.0.1\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n"
        ),
    )
    .unwrap();
    let mut command = Command::new("mosquitto");
    command.arg("-c").arg(&conf);
    let _broker = Running::spawn(command);
    wait_bound(false, plain);
    wait_bound(false, tls);
    let mut sub = mosquitto_sub(plain, "secure/#", &[]);
    wait_subscribed(plain, &sub, "secure/probe");

    let to = format!("mqtts://localhost:{tls}/secure/{{proto}}");
    let port = free_port();
    let mut trusted = udp_collector(port, &["--to", &to, "--to-ca", &pki.path("ca.pem")]);
    send_datagrams(port, ["over tls".to_string()]);
    sub.stdout.wait_for("the message", |out| {
        String::from_utf8_lossy(out).contains("secure/udp over tls")
    });
    trusted.stop();

    // A broker whose certificate this CA did not issue gets nothing.
    let other = free_port();
    let mut doubting = udp_collector(other, &["--to", &to, "--to-ca", &pki.path("own.pem")]);
    send_datagrams(other, ["must not go".to_string()]);
    doubting.stderr.wait_for_text("certificate");
    doubting.stop();
    sub.stop();
    assert!(!sub.stdout.text().contains("must not go"));
    let stderr = doubting.stderr.text();
    let name = format!("mqtts://localhost:{tls}/secure/{{proto}}");
    assert_eq!(reported(&stderr, &name, "delivered"), 0, "{stderr}");
    assert_eq!(
        reported(
            &stderr,
            &name,
            "not delivered (the broker did not take them before exit)"
        ),
        1,
        "{stderr}"
    );
}
