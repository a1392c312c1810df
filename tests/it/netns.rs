//! portier across hosts: test hosts in network namespaces joined by a bridge,
//! made by each test and always removed. Needs root, iproute2 and nftables;
//! elsewhere the tests say they skipped (and fail under PORTIER_REQUIRE_PEERS=1).
//! Addresses are private ranges that exist only inside these namespaces.

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crate::common::{Running, skip};

static LABS: AtomicUsize = AtomicUsize::new(0);

/// The port servers listen on in a lab (nothing else runs in its namespaces).
const LAB_PORT: u16 = 7000;

/// Hosts `h0..hN` on one Ethernet segment: 10.77.0.(i+1)/24 and fd77::(i+1)/64 on `eth0`.
struct Lab {
    prefix: String,
    hosts: usize,
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().unwrap()
}

fn must(output: Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Lab {
    fn new(test: &str, hosts: usize) -> Option<Lab> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout == b"0\n");
        if !root {
            skip(test, "network namespaces need root");
            return None;
        }
        if Command::new("ip").arg("-V").output().is_err() {
            skip(test, "iproute2 (`ip`) is not installed");
            return None;
        }
        let prefix = format!(
            "pt{}x{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::SeqCst)
        );
        let lab = Lab { prefix, hosts };
        let sw = lab.switch();
        must(ip(&["netns", "add", &sw]), "netns add");
        must(
            ip(&[
                "-n",
                &sw,
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ]),
            "bridge",
        );
        must(ip(&["-n", &sw, "link", "set", "br0", "up"]), "bridge up");
        for i in 0..hosts {
            let host = lab.host(i);
            let port = format!("port{i}");
            must(ip(&["netns", "add", &host]), "netns add");
            lab.sysctl(i, "net.ipv6.conf.all.accept_dad=0");
            lab.sysctl(i, "net.ipv6.conf.default.accept_dad=0");
            must(
                ip(&[
                    "link", "add", "eth0", "netns", &host, "type", "veth", "peer", "name", &port,
                    "netns", &sw,
                ]),
                "veth",
            );
            must(
                ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"]),
                "port",
            );
            must(
                ip(&[
                    "-n",
                    &host,
                    "addr",
                    "add",
                    &format!("{}/24", lab.addr(i)),
                    "dev",
                    "eth0",
                ]),
                "addr",
            );
            must(
                ip(&[
                    "-n",
                    &host,
                    "addr",
                    "add",
                    &format!("{}/64", lab.addr6(i)),
                    "dev",
                    "eth0",
                    "nodad",
                ]),
                "addr6",
            );
            must(ip(&["-n", &host, "link", "set", "eth0", "up"]), "eth0 up");
            must(ip(&["-n", &host, "link", "set", "lo", "up"]), "lo up");
        }
        Some(lab)
    }

    fn switch(&self) -> String {
        format!("{}sw", self.prefix)
    }

    fn host(&self, i: usize) -> String {
        format!("{}h{i}", self.prefix)
    }

    fn addr(&self, i: usize) -> String {
        format!("10.77.0.{}", i + 1)
    }

    fn addr6(&self, i: usize) -> String {
        format!("fd77::{}", i + 1)
    }

    fn sysctl(&self, i: usize, setting: &str) {
        let status = Command::new("ip")
            .args(["netns", "exec", &self.host(i), "sysctl", "-qw", setting])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// A lab whose hosts run nftables rules ([`Lab::nft`]).
    fn with_firewall(test: &str, hosts: usize) -> Option<Lab> {
        if Command::new("nft").arg("--version").output().is_err() {
            skip(test, "nftables (`nft`) is not installed");
            return None;
        }
        Lab::new(test, hosts)
    }

    /// `nft RULE` on host `i`; what it printed.
    fn nft(&self, i: usize, rule: &str) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.host(i), "nft", rule])
            .output()
            .unwrap();
        assert!(output.status.success(), "nft {rule}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `portier ARGS` on host `i`.
    fn portier(&self, i: usize, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                &self.host(i),
                env!("CARGO_BIN_EXE_portier"),
            ])
            .args(args);
        command
    }

    /// `portier listen LAB_PORT ARGS` on host `i`, ready when it returns.
    /// Each host is a network namespace of its own: the port is free there.
    fn listen(&self, i: usize, args: &[&str]) -> (Running, u16) {
        let mut command = self.portier(i, &["listen", &LAB_PORT.to_string()]);
        command.args(args);
        let run = Running::spawn(command);
        let one = ["-t", "-u"].iter().any(|only| args.contains(only));
        run.stderr.wait_for_listening(if one { 1 } else { 2 });
        (run, LAB_PORT)
    }

    /// Runs a command on host `i` and returns its output.
    fn run(&self, i: usize, args: &[&str]) -> Output {
        self.portier(i, args).stdin(Stdio::null()).output().unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..self.hosts {
            let _ = ip(&["netns", "del", &self.host(i)]);
        }
        let _ = ip(&["netns", "del", &self.switch()]);
    }
}

fn ok(output: &Output) -> String {
    let events = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{events}");
    events
}

#[test]
fn tcp_and_udp_from_another_host() {
    let Some(lab) = Lab::new("tcp_and_udp_from_another_host", 2) else {
        return;
    };
    let (mut server, port) = lab.listen(0, &["-f", "lines"]);
    let port = port.to_string();
    let server_addr = lab.addr(0);
    ok(&lab.run(1, &["send", &server_addr, &port, "over", "tcp"]));
    ok(&lab.run(1, &["send", "-u", &server_addr, &port, "over", "udp"]));
    ok(&lab.run(1, &["send", &lab.addr6(0), &port, "over", "ipv6"]));
    server.stdout.wait_for_text("over ipv6");
    server.stop();
    let shown = server.stdout.text();
    assert!(
        shown.contains(" tcp 10.77.0.2:") && shown.contains(" over tcp\n"),
        "{shown}"
    );
    assert!(
        shown.contains(" udp 10.77.0.2:") && shown.contains(" over udp\n"),
        "{shown}"
    );
    assert!(shown.contains(" tcp [fd77::2]:"), "{shown}");
}

#[test]
fn broadcast_reaches_every_host_on_the_segment() {
    let Some(lab) = Lab::new("broadcast_reaches_every_host_on_the_segment", 3) else {
        return;
    };
    let (mut first, port) = lab.listen(0, &["-u"]);
    let (mut third, _) = lab.listen(2, &["-u"]);
    let port = port.to_string();
    let refused = lab.run(1, &["send", "-u", "10.77.0.255", &port, "hello all"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("add --broadcast"));
    ok(&lab.run(
        1,
        &[
            "send",
            "-u",
            "--broadcast",
            "10.77.0.255",
            &port,
            "hello all",
        ],
    ));
    first.stdout.wait_for_text("hello all\n");
    third.stdout.wait_for_text("hello all\n");
    first.stop();
    third.stop();
}

#[test]
fn a_broadcast_reply_hears_from_every_host() {
    let Some(lab) = Lab::new("a_broadcast_reply_hears_from_every_host", 3) else {
        return;
    };
    let (mut first, port) = lab.listen(0, &["-u", "--echo"]);
    let (mut third, _) = lab.listen(2, &["-u", "--echo"]);
    let port = port.to_string();
    let output = lab.run(
        1,
        &[
            "send",
            "-u",
            "--broadcast",
            "--reply",
            "--reply-timeout",
            "500ms",
            "10.77.0.255",
            &port,
            "who is there",
        ],
    );
    let events = ok(&output);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "who is there\n".repeat(2)
    );
    assert!(
        events.contains(&format!("from 10.77.0.1:{port}")),
        "{events}"
    );
    assert!(
        events.contains(&format!("from 10.77.0.3:{port}")),
        "{events}"
    );
    assert!(events.contains("1 sent, 1 received, 0.0% loss"), "{events}");
    assert!(events.contains("1 extra replies"), "{events}");
    first.stop();
    third.stop();
}

#[test]
fn multicast_reaches_joined_hosts_and_not_others() {
    let Some(lab) = Lab::new("multicast_reaches_joined_hosts_and_not_others", 3) else {
        return;
    };
    let joined = [
        "--join",
        "239.1.2.3",
        "--join",
        "ff02::1234",
        "--iface",
        "eth0",
        "-f",
        "lines",
    ];
    let (mut member, port) = lab.listen(0, &joined);
    let (mut outsider, _) = lab.listen(2, &["-u", "-f", "lines"]);
    let port = port.to_string();
    ok(&lab.run(
        1,
        &[
            "send",
            "-u",
            "--ttl",
            "1",
            "--iface",
            "eth0",
            "239.1.2.3",
            &port,
            "to v4 group",
        ],
    ));
    ok(&lab.run(
        1,
        &[
            "send",
            "-u",
            "--iface",
            "eth0",
            "ff02::1234",
            &port,
            "to v6 group",
        ],
    ));
    member.stdout.wait_for_text("to v4 group");
    member.stdout.wait_for_text("to v6 group");
    thread::sleep(Duration::from_millis(300));
    member.stop();
    outsider.stop();
    assert_eq!(
        outsider.stdout.text(),
        "",
        "a host that did not join got the group's datagrams"
    );
}

#[test]
fn reply_pings_another_host() {
    let Some(lab) = Lab::new("reply_pings_another_host", 2) else {
        return;
    };
    let (mut echo, port) = lab.listen(0, &["-u", "--echo"]);
    let port = port.to_string();
    let output = lab.run(
        1,
        &[
            "send",
            "-u",
            "--reply",
            "--count",
            "5",
            "--interval",
            "20ms",
            &lab.addr(0),
            &port,
            "ping",
        ],
    );
    let events = ok(&output);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ping\n".repeat(5));
    assert!(events.contains("5 sent, 5 received, 0.0% loss"), "{events}");
    echo.stop();
}

#[test]
fn loss_on_a_lossy_link_is_measured_and_reported_exactly() {
    let test = "loss_on_a_lossy_link_is_measured_and_reported_exactly";
    let Some(lab) = Lab::with_firewall(test, 2) else {
        return;
    };
    let (mut echo, port) = lab.listen(0, &["-u", "--echo", "-f", "lines"]);
    // Drop one datagram in ten to the echo port, at random, on the way in.
    lab.nft(0, "add table inet lossy");
    lab.nft(
        0,
        "add chain inet lossy input { type filter hook input priority 0; policy accept; }",
    );
    lab.nft(
        0,
        &format!("add rule inet lossy input udp dport {port} numgen random mod 10 0 drop"),
    );
    let port = port.to_string();
    let output = lab.run(
        1,
        &[
            "send",
            "-u",
            "--reply",
            "--count",
            "200",
            "--interval",
            "5ms",
            "--reply-timeout",
            "500ms",
            &lab.addr(0),
            &port,
            "ping",
        ],
    );
    let events = String::from_utf8_lossy(&output.stderr).into_owned();
    let replies = String::from_utf8_lossy(&output.stdout).lines().count();
    echo.stop();
    let arrived = echo.stdout.text().lines().count();
    assert!(
        replies < 200 && replies > 100,
        "{replies} replies: {events}"
    );
    assert_eq!(
        arrived, replies,
        "the echo saw {arrived}, the pinger {replies}"
    );
    let loss = 100.0 * (200 - replies) as f64 / 200.0;
    let expected = format!("200 sent, {replies} received, {loss:.1}% loss");
    assert!(
        events.contains(&expected),
        "expected {expected:?} in {events}"
    );
    assert_eq!(events.matches("no reply to request").count(), 200 - replies);
}

#[test]
fn check_tells_open_closed_and_filtered_apart_on_another_host() {
    let test = "check_tells_open_closed_and_filtered_apart_on_another_host";
    let Some(lab) = Lab::with_firewall(test, 2) else {
        return;
    };
    let (mut server, open) = lab.listen(0, &["-t"]);
    // Port 9 drops what comes (a firewall); port 10 has nobody.
    lab.nft(0, "add table inet wall");
    lab.nft(
        0,
        "add chain inet wall input { type filter hook input priority 0; policy accept; }",
    );
    lab.nft(0, "add rule inet wall input tcp dport 9 drop");
    // One at a time, so the socket refused on 10 is the one that tries 9.
    let ports = format!("10,9,{open}");
    let output = lab.run(1, &["check", "-c", "1", "-w", "0.3", &lab.addr(0), &ports]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let state = |port: &str| {
        let line = text.lines().find(|l| l.contains(&format!(" {port}/tcp ")));
        line.and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or("missing")
    };
    assert_eq!(state("10"), "closed", "{text}");
    assert_eq!(state("9"), "filtered", "{text}");
    assert_eq!(state(&open.to_string()), "open", "{text}");
    assert_eq!(output.status.code(), Some(1), "not every port is open");
    server.stop();
}

#[test]
fn a_relayed_reply_the_firewall_refuses_is_counted_not_lost_silently() {
    let test = "a_relayed_reply_the_firewall_refuses_is_counted_not_lost_silently";
    let Some(lab) = Lab::with_firewall(test, 2) else {
        return;
    };
    // Host 0: an echo behind a relay on 5000, whose replies its firewall drops.
    let (mut echo, echo_port) = lab.listen(0, &["-u", "-b", "127.0.0.1", "--echo"]);
    let upstream = format!("udp://127.0.0.1:{echo_port}");
    let mut relay = Running::spawn(lab.portier(0, &["relay", "udp://:5000", &upstream]));
    relay.stderr.wait_for_text("relay listening on");
    lab.nft(0, "add table inet wall");
    lab.nft(
        0,
        "add chain inet wall output { type filter hook output priority 0; policy accept; }",
    );
    lab.nft(0, "add rule inet wall output udp sport 5000 counter drop");
    ok(&lab.run(1, &["send", "-u", &lab.addr(0), "5000", "hello"]));
    echo.stdout.wait_for_text("hello");
    let start = std::time::Instant::now();
    while !lab
        .nft(0, "list chain inet wall output")
        .contains("packets 1 ")
    {
        assert!(
            start.elapsed() < crate::common::PATIENCE,
            "the reply never came"
        );
        thread::sleep(Duration::from_millis(10));
    }
    relay.stop();
    echo.stop();
    let summary = relay.stderr.text();
    assert!(
        summary.contains("(1 datagrams up, 0 back)")
            && summary.contains("1 replies not sent back (the send failed)"),
        "{summary}"
    );
}
