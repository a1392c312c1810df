//! `--exec` and `--sh-exec`: a program with a connection on its stdin and
//! stdout (like ncat's `--exec` and socat's `EXEC:`): per TCP client of a
//! listener, against the remote end for `connect`; per UDP datagram of a
//! listener, the datagram on its stdin and its output sent back.
//!
//! The child learns who it talks to from its environment; it is killed when
//! the server stops, when the client is dropped, or when nothing moves either
//! way for `--idle-timeout`; its exit status is in the disconnect event. A
//! listener's programs lead process groups of their own ([`Group`]), so what
//! they start (`sh -c` runs its commands as children) ends with them.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::message::{Addr, SocketKind};

/// How long a program run for one datagram may take, unless `--idle-timeout` says otherwise.
pub(crate) const DATAGRAM_PROGRAM_TIMEOUT: Duration = Duration::from_secs(10);

/// UDP: runs the program with `datagram` on its stdin; its output (up to
/// `max_reply` bytes: one datagram) and how it ended, or why it could not run.
pub(crate) async fn answer(
    program: &Program,
    datagram: &[u8],
    (peer, local): (SocketAddr, Option<SocketAddr>),
    max_reply: usize,
    timeout: Duration,
) -> Result<(Vec<u8>, String), String> {
    let (peer, local) = (Addr::Inet(peer), local.map(Addr::Inet));
    let (mut child, _group) = program.spawn(SocketKind::Udp, &peer, local.as_ref(), true)?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("the program has no stdin or stdout".into());
    };
    let mut reply = Vec::new();
    let run = async {
        let feed = async move {
            let _ = stdin.write_all(datagram).await; // a program may not read it all
        };
        let mut limited = stdout.take(max_reply as u64 + 1);
        let (_, read) = tokio::join!(feed, limited.read_to_end(&mut reply));
        read.map_err(|e| crate::error::describe(&e))?;
        Ok::<_, String>(describe_exit(child.wait().await))
    };
    let exit = match tokio::time::timeout(timeout, run).await {
        Ok(done) => done?,
        Err(_) => {
            let _ = child.kill().await;
            let waited = humantime::format_duration(timeout);
            return Err(format!("program killed after {waited} (--idle-timeout)"));
        }
    };
    if reply.len() > max_reply {
        return Err(format!(
            "the program's answer is over {max_reply} bytes, the largest datagram; not sent"
        ));
    }
    Ok((reply, exit))
}

/// The program run for each client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// A program and its arguments, run directly (`--exec "cat -n"`).
    Argv(Vec<String>),
    /// A command line for `sh -c` (`--sh-exec "sort | uniq -c"`).
    Shell(String),
}

impl Program {
    /// The command for one client, its environment naming both ends.
    fn command(&self, proto: SocketKind, peer: &Addr, local: Option<&Addr>) -> Command {
        let mut command = match self {
            Program::Argv(argv) => {
                let mut command = Command::new(argv.first().map_or("", String::as_str));
                command.args(argv.iter().skip(1));
                command
            }
            Program::Shell(line) => {
                let mut command = Command::new("sh");
                command.arg("-c").arg(line);
                command
            }
        };
        command
            .env("PORTIER_PROTO", proto.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        if let Some(peer) = peer.inet() {
            command.env("PORTIER_PEER_ADDR", peer.ip().to_string());
            command.env("PORTIER_PEER_PORT", peer.port().to_string());
        }
        // A UNIX client: who it is, as the kernel says.
        if let Some(credentials) = peer.credentials() {
            if let Some(pid) = credentials.pid {
                command.env("PORTIER_PEER_PID", pid.to_string());
            }
            command.env("PORTIER_PEER_UID", credentials.uid.to_string());
            command.env("PORTIER_PEER_GID", credentials.gid.to_string());
        }
        if let Some(local) = local.and_then(Addr::inet) {
            command.env("PORTIER_LOCAL_PORT", local.port().to_string());
        }
        command
    }

    /// Starts the program for one connection (TCP) or datagram (UDP), or says
    /// why it cannot. With `own_group` (a listener's clients), it leads a
    /// process group of its own, ended whole when the [`Group`] is dropped;
    /// without (`connect`), it stays in portier's, so Ctrl-C reaches it too.
    pub(crate) fn spawn(
        &self,
        proto: SocketKind,
        peer: &Addr,
        local: Option<&Addr>,
        own_group: bool,
    ) -> Result<(Child, Group), String> {
        let mut command = self.command(proto, peer, local);
        #[cfg(target_os = "linux")]
        if own_group {
            command.process_group(0);
        }
        let child = command.spawn().map_err(|e| {
            let why = crate::error::describe(&e);
            format!("cannot run {}: {why}", self.name())
        })?;
        let leader = child
            .id()
            .filter(|_| own_group && cfg!(target_os = "linux"));
        Ok((child, Group(leader)))
    }

    /// What the program is called in messages.
    fn name(&self) -> &str {
        match self {
            Program::Argv(argv) => argv.first().map_or("", String::as_str),
            Program::Shell(_) => "sh",
        }
    }
}

/// The process group a listener's program leads: when dropped (the session
/// over, however it ended), whatever is still in it is killed, so nothing the
/// program started outlives its client.
pub(crate) struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(leader) = self
            .0
            .and_then(|id| rustix::process::Pid::from_raw(id as i32))
        {
            // Gone already (ESRCH) is the usual case.
            let _ = rustix::process::kill_process_group(leader, rustix::process::Signal::KILL);
        }
    }
}

/// How a client's program ended, as said in its disconnect event.
fn describe_exit(status: std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "ended".into(),
        },
        Err(e) => format!("not waited for: {}", crate::error::describe(&e)),
    }
}

/// How one connection's program session ended.
pub(crate) struct Ended {
    /// Bytes read from the peer (and handed to the program).
    pub received: u64,
    /// How the program ended: `exit 0`, `killed by signal 9`.
    pub exit: String,
    /// Why the session was cut short, if it was.
    pub cut_short: Option<String>,
}

/// Runs one connection's program: what `reader` gives (`counted` as it
/// comes) to the child's stdin, its stdout to `writer`, until it exits. Once
/// it has, nothing more is read: a peer that stays connected and silent does
/// not keep the session (and its `-m` slot) open.
pub(crate) async fn serve(
    (mut child, _group): (Child, Group),
    mut reader: impl AsyncRead + Unpin,
    mut writer: impl AsyncWrite + Unpin,
    idle: Option<Duration>,
    kick: &CancellationToken,
    counted: impl Fn(usize),
) -> Ended {
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill().await;
        return Ended {
            received: 0,
            exit: "not started".into(),
            cut_short: Some("the program has no stdin or stdout".into()),
        };
    };
    let moved = Notify::new();
    let received = AtomicU64::new(0);
    let exited = CancellationToken::new();
    // The peer's bytes into the program, until either ends; then its stdin closes.
    let feed = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let read = tokio::select! {
                _ = exited.cancelled() => break,
                read = reader.read(&mut buf) => read,
            };
            let Ok(read @ 1..) = read else { break };
            moved.notify_one();
            counted(read);
            received.fetch_add(read as u64, Ordering::Relaxed);
            if stdin.write_all(&buf[..read]).await.is_err() {
                break; // the program stopped reading: it will end
            }
        }
        drop(stdin);
    };
    // The program's output to the peer, then the end of the connection.
    let answer = async {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(read @ 1..) = stdout.read(&mut buf).await {
            moved.notify_one();
            if writer.write_all(&buf[..read]).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    };
    let waited = async {
        let status = child.wait().await;
        exited.cancel();
        status
    };
    let cut = async {
        tokio::select! {
            _ = kick.cancelled() => "the server is stopping, or the client was dropped".to_string(),
            _ = quiet_for(idle, &moved) => format!(
                "killed after {} with nothing moving (--idle-timeout)",
                humantime::format_duration(idle.unwrap_or_default())
            ),
        }
    };
    let ended = tokio::select! {
        (_, _, status) = async { tokio::join!(feed, answer, waited) } => Ok(status),
        why = cut => Err(why),
    };
    let (exit, cut_short) = match ended {
        Ok(status) => (describe_exit(status), None),
        Err(why) => {
            // Killed and reaped here, so no zombie is left behind.
            let _ = child.kill().await;
            (describe_exit(child.wait().await), Some(why))
        }
    };
    Ended {
        received: received.into_inner(),
        exit,
        cut_short,
    }
}

/// Ends once nothing has moved for `idle`; never without a timeout.
async fn quiet_for(idle: Option<Duration>, moved: &Notify) {
    let Some(idle) = idle else {
        return std::future::pending().await;
    };
    while tokio::time::timeout(idle, moved.notified()).await.is_ok() {}
}
