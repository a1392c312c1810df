//! Helpers for tests that drive the real `portier` binary over real sockets:
//! servers on sockets the tests bound and handed in, peers that must exist in CI, the seed's programs.

pub mod pki;

use std::io::Read;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long any wait in a test may take before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The binary under test: this build's, or `PORTIER_BIN` (to run the tests
/// against another build, e.g. to see a regression test fail before its fix).
pub fn portier() -> Command {
    match std::env::var_os("PORTIER_BIN") {
        Some(bin) => Command::new(bin),
        None => Command::new(env!("CARGO_BIN_EXE_portier")),
    }
}

/// Collects everything a child writes to one pipe, as it arrives.
#[derive(Clone, Default)]
pub struct Capture {
    bytes: Arc<Mutex<Vec<u8>>>,
    ended: Arc<std::sync::atomic::AtomicBool>,
}

impl Capture {
    pub fn from(mut pipe: impl Read + Send + 'static) -> Self {
        let capture = Capture::default();
        let (sink, ended) = (capture.bytes.clone(), capture.ended.clone());
        thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            ended.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        capture
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }

    /// Waits (a little) until the pipe has reached its end.
    fn wait_end(&self) {
        let start = Instant::now();
        while !self.ended.load(std::sync::atomic::Ordering::SeqCst)
            && start.elapsed() < Duration::from_secs(2)
        {
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Waits until `done` holds for what was captured; panics after [`PATIENCE`].
    pub fn wait_for(&self, what: &str, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let start = Instant::now();
        loop {
            let bytes = self.bytes();
            if done(&bytes) {
                return bytes;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "gave up waiting for {what}; got {:?}",
                String::from_utf8_lossy(&bytes)
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every line as a JSON value (the `json` format).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The data records of the `json` format: each text and whether it is flagged `cut`.
    pub fn json_texts(&self) -> Vec<(String, bool)> {
        self.json_lines()
            .into_iter()
            .filter(|r| r["event"] == "data")
            .map(|r| (r["text"].as_str().unwrap().to_string(), r["cut"] == true))
            .collect()
    }

    pub fn wait_for_text(&self, needle: &str) -> String {
        let found = |b: &[u8]| String::from_utf8_lossy(b).contains(needle);
        String::from_utf8_lossy(&self.wait_for(needle, found)).into_owned()
    }

    /// Waits until `count` whole lines say "listening on"; returns all so far.
    /// Whole lines: a writer may print one in pieces (`eprintln!` does), and
    /// the port comes last.
    pub fn wait_for_listening(&self, count: usize) -> String {
        let whole_lines = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .split_inclusive('\n')
                .filter(|line| line.ends_with('\n') && line.contains("listening on"))
                .count()
                >= count
        };
        String::from_utf8_lossy(&self.wait_for("listening on", whole_lines)).into_owned()
    }
}

/// A child process with its output captured; killed when dropped.
pub struct Running {
    pub child: Child,
    pub stdout: Capture,
    pub stderr: Capture,
}

impl Running {
    pub fn spawn(mut command: Command) -> Running {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stdout = Capture::from(child.stdout.take().unwrap());
        let stderr = Capture::from(child.stderr.take().unwrap());
        Running {
            child,
            stdout,
            stderr,
        }
    }

    /// Follows a child whose stdout is not a pipe to capture (a file, or closed).
    pub fn stderr_only(mut child: Child) -> Running {
        let stderr = Capture::from(child.stderr.take().unwrap());
        Running {
            child,
            stdout: Capture::default(),
            stderr,
        }
    }

    /// Sends SIGTERM, the way a service manager stops a server.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// `kill -SIGNAL` (e.g. "-INT", Ctrl-C's).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit; panics after [`PATIENCE`].
    pub fn wait(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.stdout.wait_end();
                self.stderr.wait_end();
                return status;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "still running; stderr: {}",
                self.stderr.text()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then the exit status, which must be success.
    pub fn stop(&mut self) {
        self.terminate();
        let status = self.wait();
        assert!(
            status.success(),
            "exit {status}; stderr: {}",
            self.stderr.text()
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `portier listen` serving sockets the test bound, ready when it returns.
pub struct Server {
    pub run: Running,
    pub port: u16,
}

impl Server {
    /// Starts [`listen_command`] and waits for its "listening" lines.
    pub fn start(args: &[&str]) -> Server {
        let (command, port, sockets) = listen_command(args);
        let run = Running::spawn(command);
        run.stderr.wait_for_listening(sockets);
        Server { run, port }
    }

    /// Starts `portier listen PORT ARGS...` on a free port that portier binds
    /// itself, as a user starts it: for the tests of what it binds. Waits for
    /// `sockets` "listening" lines.
    pub fn bound_by_itself(args: &[&str], sockets: usize) -> Server {
        let port = free_port();
        let mut command = portier();
        command.arg("listen").arg(port.to_string()).args(args);
        let run = Running::spawn(command);
        run.stderr.wait_for_listening(sockets);
        Server { run, port }
    }

    /// Waits until stdout holds `n` lines.
    pub fn wait_lines(&self, n: usize) -> String {
        let bytes = self.run.stdout.wait_for(&format!("{n} lines"), |b| {
            b.iter().filter(|&&c| c == b'\n').count() >= n
        });
        String::from_utf8(bytes).unwrap()
    }
}

/// A TCP connection to 127.0.0.1:`port` from another loopback address
/// (`source`, e.g. 127.0.0.5): a second host, as far as the server can tell.
pub fn connect_from(source: [u8; 4], port: u16) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let source = std::net::SocketAddr::from((source, 0));
    socket.bind(&source.into()).unwrap();
    let server = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    socket.connect(&server.into()).unwrap();
    socket.into()
}

/// A port free for TCP and UDP on loopback (IPv4, and IPv6 for TCP) right
/// now, for peers that need a number. It is drawn below the kernel's
/// ephemeral range, which the sockets bound to port 0 and every outgoing
/// connection take from: so none of those can take it while a test leaves
/// it free for a while (a collector restarted, a peer not yet up).
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWN: AtomicU64 = AtomicU64::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (ephemeral_low.saturating_sub(16384).max(1024), ephemeral_low);
    let seed = RandomState::new();
    loop {
        let draw = seed.hash_one((std::process::id(), DRAWN.fetch_add(1, Ordering::Relaxed)));
        let port = low + (draw % u64::from(high - low)) as u16;
        // Free on IPv6 loopback too: a client of "localhost" tries ::1 first,
        // and must not reach another test's server there.
        let ipv6_free = match TcpListener::bind(("::1", port)) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::AddrNotAvailable, // no IPv6 here
        };
        if ipv6_free
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
}

/// `portier listen ARGS...` on sockets bound here and handed in as systemd
/// does (`LISTEN_FDS`), so the test knows the port without reading it from
/// the server's output, and a client may connect before the server is up
/// (it waits in the backlog). Bound as `portier listen` would bind them: TCP
/// and UDP on one port (TCP only with `-t`, `--broker`, `--chat`; UDP only
/// with `-u`), on `-b ADDRESS` or else on `[::]` for IPv4 and IPv6. Returns
/// the command, the port and how many sockets it serves.
pub fn listen_command(args: &[&str]) -> (Command, u16, usize) {
    let mut command = portier();
    command.arg("listen").args(args);
    let (port, count) = hand_in_sockets(&mut command, args);
    (command, port, count)
}

/// Binds the sockets `portier listen ARGS` would serve and hands them to
/// `command` (portier, or a program that runs it: they pass through), as
/// fds 3 and 4 with `LISTEN_FDS`; the port and how many sockets.
pub fn hand_in_sockets(command: &mut Command, args: &[&str]) -> (u16, usize) {
    let tcp_only = ["-t", "--broker", "--chat"];
    let udp = !args.iter().any(|arg| tcp_only.contains(arg));
    let tcp = !args.contains(&"-u");
    let address = match args.iter().position(|&arg| arg == "-b") {
        Some(at) => args[at + 1].parse().unwrap(),
        None => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let (sockets, port) = bind_for_listen(address, tcp, udp);
    let count = sockets.len();
    command
        .env("LISTEN_FDS", count.to_string())
        .env("LISTEN_FDS_FIRST_FD", "3")
        .env_remove("LISTEN_PID");
    let mappings = sockets
        .into_iter()
        .zip(3..)
        .map(|(socket, child_fd)| command_fds::FdMapping {
            parent_fd: socket.into(),
            child_fd,
        })
        .collect();
    command_fds::CommandFdExt::fd_mappings(command, mappings).unwrap();
    (port, count)
}

/// A listening TCP socket and a UDP socket on the same free port of
/// `address` (or only one of them); both IPv4 and IPv6 on `[::]`.
fn bind_for_listen(address: std::net::IpAddr, tcp: bool, udp: bool) -> (Vec<socket2::Socket>, u16) {
    use socket2::{Domain, Socket, Type};
    let domain = Domain::for_address((address, 0).into());
    let socket = |kind: Type, port: u16| -> std::io::Result<Socket> {
        let socket = Socket::new(domain, kind, None)?;
        if address.is_ipv6() {
            socket.set_only_v6(false)?;
        }
        if kind == Type::STREAM {
            socket.set_reuse_address(true)?;
        }
        socket.bind(&std::net::SocketAddr::new(address, port).into())?;
        Ok(socket)
    };
    let port_of = |socket: &Socket| socket.local_addr().unwrap().as_socket().unwrap().port();
    loop {
        let first = socket(if tcp { Type::STREAM } else { Type::DGRAM }, 0).unwrap();
        let port = port_of(&first);
        if tcp {
            first.listen(4096).unwrap();
        }
        if !(tcp && udp) {
            return (vec![first], port);
        }
        // The same number for UDP: free unless another test took it meanwhile.
        if let Ok(second) = socket(Type::DGRAM, port) {
            return (vec![first, second], port);
        }
    }
}

/// Waits until a peer program has bound `port` (TCP: is listening), read
/// from the kernel's socket tables so no test connection disturbs the peer.
pub fn wait_bound(udp: bool, port: u16) {
    let tables: &[&str] = if udp {
        &["/proc/net/udp", "/proc/net/udp6"]
    } else {
        &["/proc/net/tcp", "/proc/net/tcp6"]
    };
    let wanted = format!(":{port:04X}");
    let start = Instant::now();
    loop {
        let bound = tables.iter().any(|table| {
            std::fs::read_to_string(table).is_ok_and(|text| {
                text.lines().skip(1).any(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    fields.len() > 3 && fields[1].ends_with(&wanted) && (udp || fields[3] == "0A")
                })
            })
        });
        if bound {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "nothing bound port {port} (udp: {udp})"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `command` with `input` on stdin to its end; returns its stdout.
pub fn run_with_input(mut command: Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = wait_output(child);
    writer.join().unwrap();
    output
}

/// Waits for `child` to exit, within [`PATIENCE`], and collects its output.
pub fn wait_output(mut child: Child) -> std::process::Output {
    let stdout = Capture::from(child.stdout.take().unwrap());
    let stderr = Capture::from(child.stderr.take().unwrap());
    let mut run = Running {
        child,
        stdout,
        stderr,
    };
    let status = run.wait();
    std::process::Output {
        status,
        stdout: run.stdout.bytes(),
        stderr: run.stderr.bytes(),
    }
}

fn peers_required() -> bool {
    std::env::var("PORTIER_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// Skips (with a printed reason) or, under `PORTIER_REQUIRE_PEERS=1`, fails.
pub fn skip(test: &str, reason: &str) {
    skip_unless_required(test, reason, peers_required());
}

fn skip_unless_required(test: &str, reason: &str, required: bool) {
    assert!(!required, "{test}: {reason} (PORTIER_REQUIRE_PEERS=1)");
    eprintln!("SKIPPED {test}: {reason}");
}

/// True when the peer program `name` runs here; otherwise skips or fails.
/// `nc` must be OpenBSD netcat (Debian `netcat-openbsd`).
pub fn have_peer(test: &str, name: &str) -> bool {
    let output = Command::new(name)
        .arg(if name == "socat" { "-V" } else { "-h" })
        .output();
    let ok = match (&output, name) {
        (Ok(out), "nc") => String::from_utf8_lossy(&out.stderr).contains("OpenBSD"),
        (Ok(_), _) => true,
        (Err(_), _) => false,
    };
    if !ok {
        skip(
            test,
            &format!("peer `{name}` is not installed (or not the expected one)"),
        );
    }
    ok
}

/// Where the seed tutorial is: `PORTIER_SEED_DIR`, or `../shared/seed/` beside the project.
pub fn seed_dir() -> PathBuf {
    match std::env::var_os("PORTIER_SEED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/seed"),
    }
}

/// The seed tutorial's text (the file with its Python programs) in `dir`.
fn seed_text(dir: &Path) -> Option<String> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
        .find(|text| text.contains("```python") && text.contains("socket"))
}

/// The seed's four programs.
#[derive(Debug, Clone, Copy)]
pub enum SeedProgram {
    UdpClient,
    TcpClient,
    UdpServer,
    TcpServer,
}

/// Writes the seed's program to a temporary file, on `port` instead of 8888
/// (so tests can run in parallel); `None`, after saying so, if the seed is absent.
pub fn seed_program(
    test: &str,
    program: SeedProgram,
    port: u16,
) -> Option<(tempfile::TempDir, PathBuf)> {
    if !have_peer(test, "python3") {
        return None;
    }
    seed_program_in(test, program, port, &seed_dir(), peers_required())
}

/// [`seed_program`] from the seed in `dir`; a missing seed fails the test when `required`.
pub fn seed_program_in(
    test: &str,
    program: SeedProgram,
    port: u16,
    dir: &Path,
    required: bool,
) -> Option<(tempfile::TempDir, PathBuf)> {
    let Some(text) = seed_text(dir) else {
        let why = format!(
            "no seed tutorial in {} (set PORTIER_SEED_DIR to its folder)",
            dir.display()
        );
        skip_unless_required(test, &why, required);
        return None;
    };
    let wanted: &[&str] = match program {
        SeedProgram::UdpClient => &["SOCK_DGRAM", "sendto"],
        SeedProgram::TcpClient => &["SOCK_STREAM", ".connect("],
        SeedProgram::UdpServer => &["SOCK_DGRAM", "recvfrom"],
        SeedProgram::TcpServer => &["SOCK_STREAM", ".accept("],
    };
    let code = text
        .split("```python")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|code| wanted.iter().all(|w| code.contains(w)))
        .unwrap_or_else(|| panic!("no {program:?} in the seed"));
    assert!(
        code.contains("PORT = 8888"),
        "the seed's {program:?} changed"
    );
    let code = code.replace("PORT = 8888", &format!("PORT = {port}"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.py");
    std::fs::write(&path, code).unwrap();
    Some((dir, path))
}

/// `python3 -u PROGRAM` (unbuffered, so prints arrive before the program ends).
pub fn python(path: &Path) -> Command {
    let mut command = Command::new("python3");
    command.arg("-u").arg(path);
    command
}
