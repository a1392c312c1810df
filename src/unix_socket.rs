//! UNIX sockets, by file or abstract name (`@name`, Linux): listened on (by
//! `listen` and `relay`) and connected to. A socket file to listen on is
//! claimed only if nothing uses it, given its mode and group, and removed on
//! exit.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{UnixDatagram, UnixListener, UnixStream};

use crate::address::UnixName;
use crate::error::{Error, IoContext, Result};
use crate::message::{Addr, Credentials, UnixAddr};

/// Who may use a socket file: its mode (`--mode 660`) and group (`--group`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileAccess {
    /// The file's permission bits.
    pub mode: Option<u32>,
    /// The file's group id.
    pub group: Option<u32>,
}

/// Binds a UNIX stream listener.
pub(crate) fn bind_stream(
    name: &UnixName,
    access: FileAccess,
) -> Result<(UnixListener, Option<SocketFile>)> {
    use std::os::unix::net::UnixListener as Std;
    let shown = || format!("cannot listen on {}", shown(name, false));
    let (listener, file) = bind(name, access, shown, |p| Std::bind(p), Std::bind_addr)?;
    listener.set_nonblocking(true).context(shown)?;
    Ok((UnixListener::from_std(listener).context(shown)?, file))
}

/// Binds a UNIX datagram socket to receive on.
pub(crate) fn bind_datagram(
    name: &UnixName,
    access: FileAccess,
) -> Result<(UnixDatagram, Option<SocketFile>)> {
    use std::os::unix::net::UnixDatagram as Std;
    let shown = || format!("cannot listen on {}", shown(name, true));
    let (socket, file) = bind(name, access, shown, |p| Std::bind(p), Std::bind_addr)?;
    socket.set_nonblocking(true).context(shown)?;
    Ok((UnixDatagram::from_std(socket).context(shown)?, file))
}

/// Binds either type of socket: to a file once it is free ([`claim`]), then
/// given its access; or to an abstract name, which has no file.
fn bind<S>(
    name: &UnixName,
    access: FileAccess,
    shown: impl Fn() -> String,
    to_path: impl FnOnce(&Path) -> io::Result<S>,
    to_name: impl FnOnce(&std::os::unix::net::SocketAddr) -> io::Result<S>,
) -> Result<(S, Option<SocketFile>)> {
    match name {
        UnixName::Path(path) => {
            claim(path)?;
            let socket = to_path(path).context(shown)?;
            Ok((socket, Some(settle(path, access)?)))
        }
        UnixName::Abstract(name) => Ok((to_name(&abstract_name(name)?).context(shown)?, None)),
    }
}

fn shown(name: &UnixName, datagram: bool) -> String {
    let scheme = if datagram { "unix-dgram" } else { "unix" };
    match name {
        UnixName::Path(path) => format!("{scheme}:{}", path.display()),
        UnixName::Abstract(name) => format!("{scheme}:@{name}"),
    }
}

/// A stream connection to a UNIX socket, by file or abstract name.
pub(crate) async fn connect_stream(name: &UnixName) -> Result<UnixStream> {
    let failed = || format!("cannot connect to {}", shown(name, false));
    match name {
        UnixName::Path(path) => UnixStream::connect(path).await.context(failed),
        UnixName::Abstract(name) => {
            let address = abstract_name(name)?;
            let stream = std::os::unix::net::UnixStream::connect_addr(&address).context(failed)?;
            stream.set_nonblocking(true).context(failed)?;
            UnixStream::from_std(stream).context(failed)
        }
    }
}

/// A datagram socket connected to a UNIX socket (a syslog socket, say):
/// unnamed, as `logger` sends from.
pub(crate) fn connect_datagram(name: &UnixName) -> Result<UnixDatagram> {
    let failed = || format!("cannot send to {}", shown(name, true));
    let socket = std::os::unix::net::UnixDatagram::unbound().context(failed)?;
    match name {
        UnixName::Path(path) => socket.connect(path).context(failed)?,
        UnixName::Abstract(name) => socket.connect_addr(&abstract_name(name)?).context(failed)?,
    }
    socket.set_nonblocking(true).context(failed)?;
    UnixDatagram::from_std(socket).context(failed)
}

/// A Linux abstract socket name (`unix:@name`).
fn abstract_name(name: &str) -> Result<std::os::unix::net::SocketAddr> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .context(|| format!("unix:@{name} is not a usable abstract name"))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    Err(Error::Usage(format!(
        "unix:@{name}: abstract names exist on Linux only"
    )))
}

/// A connected client: who it is, as the kernel says (SO_PEERCRED).
pub(crate) fn stream_peer(stream: &UnixStream) -> Addr {
    let credentials = stream.peer_cred().ok().map(|cred| Credentials {
        pid: cred.pid(),
        uid: cred.uid(),
        gid: cred.gid(),
    });
    Addr::Unix(UnixAddr {
        name: None,
        credentials,
    })
}

/// A socket's own name.
pub(crate) fn name_of(addr: &tokio::net::unix::SocketAddr) -> Addr {
    named(addr.as_pathname(), addr.as_abstract_name())
}

/// A datagram's sender: most are unnamed (`logger`), some bound a name.
pub(crate) fn sender_of(addr: &socket2::SockAddr) -> Addr {
    named(addr.as_pathname(), addr.as_abstract_namespace())
}

fn named(path: Option<&Path>, abstract_name: Option<&[u8]>) -> Addr {
    let name = match (path, abstract_name) {
        (Some(path), _) => Some(Arc::from(path.to_string_lossy())),
        (None, Some(name)) => Some(Arc::from(format!("@{}", String::from_utf8_lossy(name)))),
        (None, None) => None,
    };
    Addr::Unix(UnixAddr {
        name,
        credentials: None,
    })
}

/// The socket file, removed when dropped, so no stale file is left behind.
#[derive(Debug)]
pub(crate) struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Makes `path` free to bind: a stale socket file (nothing bound to it
/// answers) is removed; a live socket, of either type, or a file that is not
/// a socket is an error, and is left alone.
fn claim(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(()); // nothing there
    };
    if !meta.file_type().is_socket() {
        return Err(Error::Usage(format!(
            "{} exists and is not a socket: not removed",
            path.display()
        )));
    }
    // Stale only when a connect is refused. A socket of the other type (a
    // syslog datagram socket, say) is live too.
    let stream = std::os::unix::net::UnixStream::connect(path).map(drop);
    let answer = match stream {
        Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
            std::os::unix::net::UnixDatagram::unbound().and_then(|socket| socket.connect(path))
        }
        other => other,
    };
    match answer {
        Ok(()) => Err(Error::Usage(format!(
            "something already listens on {}",
            path.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)
            .context(|| format!("cannot remove the stale socket {}", path.display())),
        Err(e) => Err(Error::Usage(format!(
            "cannot tell whether {} is in use ({}): not removed",
            path.display(),
            crate::error::describe(&e)
        ))),
    }
}

/// Gives the bound socket file its group and mode; it is removed when the result is dropped.
fn settle(path: &Path, FileAccess { mode, group }: FileAccess) -> Result<SocketFile> {
    let file = SocketFile(path.to_path_buf());
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))
            .context(|| format!("cannot give {} to group {gid}", path.display()))?;
    }
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .context(|| format!("cannot set the mode of {}", path.display()))?;
    }
    Ok(file)
}
