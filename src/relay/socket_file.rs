//! A UNIX socket file the relay listens on: claimed only if nothing uses it,
//! given its mode and group, removed on exit.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// The socket file, removed when dropped, so a relay leaves no stale file.
pub(super) struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Makes `path` free to bind: a stale socket file (nothing bound to it
/// answers) is removed; a live socket, of either type, or a file that is not
/// a socket is an error, and is left alone.
pub(super) fn claim(path: &Path) -> Result<()> {
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
pub(super) fn settle(path: &Path, mode: Option<u32>, group: Option<u32>) -> Result<SocketFile> {
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
