//! The zero-copy data path on Linux: `splice(2)` moves bytes between a pipe
//! and a socket (or file) inside the kernel, without copying them through
//! user space. Used for bulk transfers, where it is the difference between
//! keeping up with the network and not; everywhere else the ordinary path
//! (read, frame, format, write) is used.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// How much one splice call asks for, and the pipe size asked for.
const CHUNK: usize = 1 << 20;

/// True when `fd` can take part in a splice: a pipe, a socket, a character
/// device such as /dev/null, or a regular file not opened for appending.
pub fn spliceable(fd: BorrowedFd<'_>) -> bool {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl and isatty only read the descriptor's state.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    let append = flags >= 0 && flags & libc::O_APPEND != 0;
    match file_type(fd) {
        Some(libc::S_IFIFO | libc::S_IFSOCK) => true,
        Some(libc::S_IFREG) => !append,
        Some(libc::S_IFCHR) => (unsafe { libc::isatty(fd) }) == 0,
        _ => false,
    }
}

fn is_pipe(fd: RawFd) -> bool {
    file_type(fd) == Some(libc::S_IFIFO)
}

/// The `S_IFMT` bits of what `fd` is open on; `None` if fstat fails.
fn file_type(fd: RawFd) -> Option<libc::mode_t> {
    // SAFETY: fstat only writes the descriptor's state into `stat`.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(fd, &mut stat) } == 0).then_some(stat.st_mode & libc::S_IFMT)
}

/// Waits until `fd` is ready for `events` (it is non-blocking and said EAGAIN).
fn wait(fd: RawFd, events: libc::c_short) -> io::Result<()> {
    let mut poll = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd, no timeout.
        match unsafe { libc::poll(&mut poll, 1, -1) } {
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
            -1 => return Err(io::Error::last_os_error()),
            _ => return Ok(()),
        }
    }
}

/// One splice of up to `len` bytes; waits and retries while an end is not ready.
fn splice_once(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: both descriptors are open for the duration of the call; null
        // offsets mean "the current file position".
        let moved = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE,
            )
        };
        if moved >= 0 {
            return Ok(moved as usize);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            // A non-blocking socket end is not ready: wait for it, in both directions.
            Some(libc::EAGAIN) => {
                wait(from, libc::POLLIN)?;
                wait(to, libc::POLLOUT)?;
            }
            _ => return Err(err),
        }
    }
}

/// A pipe to splice through, as large as the kernel allows us (up to [`CHUNK`]).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors we now own.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Best effort: a bigger pipe means fewer calls; the default (64 KiB) works too.
    unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
    Ok((read, write))
}

/// Moves everything from `from` to `to` until `from` ends, inside the kernel.
/// Blocks: run it on a thread of its own. Non-blocking sockets are waited for
/// with poll(2). Returns the bytes moved, or `Ok(None)` if the kernel refused
/// to splice these files before any byte moved (use the ordinary path then).
pub fn splice_all(from: impl AsFd, to: impl AsFd) -> io::Result<Option<u64>> {
    let (from, to) = (from.as_fd().as_raw_fd(), to.as_fd().as_raw_fd());
    let refused = |err: &io::Error| err.raw_os_error() == Some(libc::EINVAL);
    let mut total = 0u64;
    if is_pipe(from) || is_pipe(to) {
        loop {
            match splice_once(from, to, CHUNK) {
                Ok(0) => return Ok(Some(total)),
                Ok(moved) => total += moved as u64,
                Err(e) if total == 0 && refused(&e) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
    let (pipe_read, pipe_write) = pipe()?;
    let (pipe_read, pipe_write) = (pipe_read.as_raw_fd(), pipe_write.as_raw_fd());
    loop {
        let filled = match splice_once(from, pipe_write, CHUNK) {
            Ok(0) => return Ok(Some(total)),
            Ok(filled) => filled,
            Err(e) if total == 0 && refused(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut left = filled;
        while left > 0 {
            match splice_once(pipe_read, to, left) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(moved) => left -= moved,
                // Nothing has reached `to` yet: the bytes are still in our pipe,
                // so they are copied the ordinary way and splicing stops here.
                Err(e) if total == 0 && refused(&e) => {
                    copy_pipe(pipe_read, to, left)?;
                    return copy_rest(from, to, filled as u64);
                }
                Err(e) => return Err(e),
            }
        }
        total += filled as u64;
    }
}

/// Reads `len` bytes from a pipe and writes them to `to`.
fn copy_pipe(pipe: RawFd, to: RawFd, len: usize) -> io::Result<()> {
    let mut buf = vec![0u8; len];
    read_exact(pipe, &mut buf)?;
    write_all(to, &buf)
}

/// Copies the rest of `from` to `to` with read and write; `so_far` bytes already moved.
fn copy_rest(from: RawFd, to: RawFd, so_far: u64) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = so_far;
    loop {
        let n = read(from, &mut buf)?;
        if n == 0 {
            return Ok(Some(total));
        }
        write_all(to, &buf[..n])?;
        total += n as u64;
    }
}

fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => wait(fd, libc::POLLIN)?,
            _ => return Err(err),
        }
    }
}

fn read_exact(fd: RawFd, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match read(fd, buf)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf = &mut buf[n..],
        }
    }
    Ok(())
}

fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf = &buf[n as usize..];
            continue;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) => wait(fd, libc::POLLOUT)?,
            _ => return Err(err),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn moves_a_file_through_a_socket_pair_exactly() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        std::io::Seek::rewind(&mut file).unwrap();
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        let moved = splice_all(&file, &a).unwrap();
        drop(a);
        assert_eq!(moved, Some(data.len() as u64));
        assert!(reader.join().unwrap() == data);
    }

    #[test]
    fn terminals_and_appending_files_are_not_spliced() {
        let appending = std::fs::OpenOptions::new()
            .append(true)
            .open(tempfile::NamedTempFile::new().unwrap().path())
            .unwrap();
        assert!(!spliceable(appending.as_fd()));
        let plain = tempfile::tempfile().unwrap();
        assert!(spliceable(plain.as_fd()));
    }
}
