//! The zero-copy data path on Linux: `splice(2)` moves bytes between a pipe
//! and a socket (or file) inside the kernel, without copying them through
//! user space. Used for bulk transfers, where it is the difference between
//! keeping up with the network and not; everywhere else the ordinary path
//! (read, frame, format, write) is used.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use tokio::io::Interest;

use rustix::event::{PollFd, PollFlags, poll};
use rustix::fs::{FileType, OFlags, fcntl_getfl, fstat};
use rustix::io::Errno;
use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_setpipe_size, pipe_with, splice};

/// How much one splice call asks for, and the pipe size asked for.
const CHUNK: usize = 1 << 20;

/// True when `fd` can take part in a splice: a pipe, a socket, a character
/// device such as /dev/null, or a regular file not opened for appending.
pub fn spliceable(fd: BorrowedFd<'_>) -> bool {
    match file_type(fd) {
        Some(FileType::Fifo | FileType::Socket) => true,
        Some(FileType::RegularFile) => !status_flag(fd, OFlags::APPEND),
        Some(FileType::CharacterDevice) => !rustix::termios::isatty(fd),
        _ => false,
    }
}

/// True when `flag` (O_APPEND, O_NONBLOCK...) is set on the open file `fd`.
fn status_flag(fd: BorrowedFd<'_>, flag: OFlags) -> bool {
    fcntl_getfl(fd).is_ok_and(|flags| flags.contains(flag))
}

fn is_pipe(fd: BorrowedFd<'_>) -> bool {
    file_type(fd) == Some(FileType::Fifo)
}

/// What `fd` is open on; `None` if fstat fails.
fn file_type(fd: BorrowedFd<'_>) -> Option<FileType> {
    fstat(fd)
        .ok()
        .map(|stat| FileType::from_raw_mode(stat.st_mode))
}

/// Waits until `fd` is ready for `events` (it is non-blocking and said
/// EAGAIN). A splice whose destination breaks meanwhile (its reader gone)
/// stops waiting for its source: then `unless_broken` makes it a broken pipe.
fn wait(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    unless_broken: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    // Errors and hang-ups are always reported, so asking for no events waits for those.
    let other = unless_broken.unwrap_or(fd);
    let mut polls = [
        PollFd::new(&fd, events),
        PollFd::new(&other, PollFlags::empty()),
    ];
    let watched = if unless_broken.is_some() { 2 } else { 1 };
    loop {
        match poll(&mut polls[..watched], None) {
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) if watched == 2 && !polls[1].revents().is_empty() => {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            Ok(_) => return Ok(()),
        }
    }
}

/// One splice of up to `len` bytes; waits and retries while an end is not ready.
fn splice_once(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    loop {
        // No offsets: from and to the current file positions.
        match splice(from, None, to, None, len, SpliceFlags::MOVE) {
            Ok(moved) => return Ok(moved),
            Err(Errno::INTR) => continue,
            // A non-blocking socket end is not ready: wait for it, in both directions.
            Err(Errno::AGAIN) => {
                wait(from, PollFlags::IN, Some(to))?;
                wait(to, PollFlags::OUT, None)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A pipe to splice through, as large as the kernel allows us (up to [`CHUNK`]).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = pipe_with(PipeFlags::CLOEXEC)?;
    // Best effort: a bigger pipe means fewer calls; the default (64 KiB) works too.
    let _ = fcntl_setpipe_size(&write, CHUNK);
    Ok((read, write))
}

/// A socket tokio drives, that a splice can read or write: TCP and UNIX streams.
pub trait ReadySocket: AsFd {
    /// Waits until the socket may be ready for `interest`.
    fn ready_for(&self, interest: Interest) -> impl Future<Output = io::Result<()>>;
    /// Runs `io` on the socket; a `WouldBlock` clears the readiness tokio saw.
    fn try_io_for<R>(
        &self,
        interest: Interest,
        io: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R>;
}

macro_rules! ready_socket {
    ($type:ty) => {
        impl ReadySocket for $type {
            async fn ready_for(&self, interest: Interest) -> io::Result<()> {
                self.ready(interest).await.map(drop)
            }
            fn try_io_for<R>(
                &self,
                interest: Interest,
                io: impl FnOnce() -> io::Result<R>,
            ) -> io::Result<R> {
                self.try_io(interest, io)
            }
        }
    };
}
ready_socket!(tokio::net::TcpStream);
ready_socket!(tokio::net::UnixStream);

/// One non-blocking splice (or write) on `socket` once tokio says it is ready, retried until it moves.
async fn splice_when_ready(
    socket: &impl ReadySocket,
    interest: Interest,
    splice_once: impl Fn() -> io::Result<usize>,
) -> io::Result<usize> {
    loop {
        socket.ready_for(interest).await?;
        match socket.try_io_for(interest, &splice_once) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            moved => return moved,
        }
    }
}

/// Moves what `from` sends to `to` inside the kernel until `from` ends,
/// then half-closes `to`; for a relay, one direction of a connection, as a
/// task among thousands (no thread of its own). `moved` counts the bytes that
/// reached `to`; `touch` is called after each move. A pipe is held only
/// while bytes keep coming: a quiet connection holds two descriptors, not six.
pub async fn splice_sockets(
    from: &impl ReadySocket,
    to: &impl ReadySocket,
    moved: &AtomicU64,
    touch: impl Fn(),
) -> io::Result<()> {
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    loop {
        from.ready_for(Interest::READABLE).await?;
        // A wake-up may be the end already, or nothing: then no pipe is made.
        match peek(from)? {
            Some(0) => return socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write),
            Some(_) => {}
            None => continue,
        }
        let (pipe_read, pipe_write) = match relay_pipe() {
            Ok(pipe) => pipe,
            // Out of descriptors: this burst goes through a buffer instead.
            Err(_) => match copy_burst(from, to, moved).await? {
                true => return socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write),
                false => continue,
            },
        };
        // Until `from` has nothing more for now; the pipe is closed then.
        loop {
            let fill = || Ok(splice(from, None, &pipe_write, None, RELAY_CHUNK, flags)?);
            let filled = match from.try_io_for(Interest::READABLE, fill) {
                Ok(filled) => filled,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if filled == 0 {
                return socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write);
            }
            let mut left = filled;
            while left > 0 {
                let sent = splice_when_ready(to, Interest::WRITABLE, || {
                    Ok(splice(&pipe_read, None, to, None, left, flags)?)
                })
                .await?;
                left -= sent;
                moved.fetch_add(sent as u64, Ordering::Relaxed);
            }
            touch();
        }
    }
}

/// Copies what `from` has for now to `to` through a buffer; true at its end.
async fn copy_burst(
    from: &impl ReadySocket,
    to: &impl ReadySocket,
    moved: &AtomicU64,
) -> io::Result<bool> {
    let mut buf = vec![0u8; 16 * 1024]; // on the heap: a task the size of a buffer, times 10,000, is resident
    loop {
        let read = || Ok(rustix::io::read(from, &mut buf)?);
        let filled = match from.try_io_for(Interest::READABLE, read) {
            Ok(filled) => filled,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if filled == 0 {
            return Ok(true);
        }
        let mut sent = 0;
        while sent < filled {
            let chunk = &buf[sent..filled];
            sent += splice_when_ready(to, Interest::WRITABLE, || Ok(rustix::io::write(to, chunk)?))
                .await?;
        }
        moved.fetch_add(filled as u64, Ordering::Relaxed);
    }
}

/// Peeks one byte: `Some(0)` when `socket` has ended, `Some(1)` when a byte
/// waits, `None` when there is nothing yet (tokio's readiness is then cleared).
fn peek(socket: &impl ReadySocket) -> io::Result<Option<usize>> {
    let mut byte = [std::mem::MaybeUninit::uninit()];
    let peek = || socket2::SockRef::from(socket).peek(&mut byte);
    match socket.try_io_for(Interest::READABLE, peek) {
        Ok(len) => Ok(Some(len)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
        Err(e) => Err(e),
    }
}

/// How much one relay splice asks for, and the pipe size asked for.
const RELAY_CHUNK: usize = 256 * 1024;

fn relay_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = pipe_with(PipeFlags::CLOEXEC)?;
    let _ = fcntl_setpipe_size(&write, RELAY_CHUNK); // best effort: 64 KiB works too
    Ok((read, write))
}

/// A splice that failed part way: why, and how many bytes had reached `to`.
#[derive(Debug)]
pub struct SpliceError {
    pub moved: u64,
    pub error: io::Error,
}

impl From<SpliceError> for io::Error {
    fn from(failed: SpliceError) -> io::Error {
        failed.error
    }
}

impl SpliceError {
    /// The kernel refused to splice these files before any byte moved.
    fn refused_at_once(&self) -> bool {
        self.moved == 0 && refused(&self.error)
    }
}

/// Makes an error into a [`SpliceError`] after `moved` bytes.
fn after(moved: u64) -> impl FnOnce(io::Error) -> SpliceError {
    move |error| SpliceError { moved, error }
}

/// Moves everything from `from` to `to` until `from` ends, inside the kernel.
/// Blocks: run it on a thread of its own. Non-blocking sockets are waited for
/// with poll(2). Returns the bytes moved, or `Ok(None)` if the kernel refused
/// to splice these files before any byte moved (use the ordinary path then);
/// meanwhile `moved` counts the bytes that have reached `to`, for statistics.
pub fn splice_all(
    from: impl AsFd,
    to: impl AsFd,
    moved: &AtomicU64,
) -> Result<Option<u64>, SpliceError> {
    let (from, to) = (from.as_fd(), to.as_fd());
    if is_pipe(from) || is_pipe(to) {
        return match splice_until_end(from, to, moved) {
            Err(failed) if failed.refused_at_once() => Ok(None),
            other => other.map(Some),
        };
    }
    // Two threads only from a non-blocking source: a splice from a blocking
    // socket waits for data holding the pipe's lock, so the other thread could
    // not take what the pipe already holds meanwhile.
    if file_type(to) == Some(FileType::RegularFile) && status_flag(from, OFlags::NONBLOCK) {
        return splice_into_file(from, to, moved);
    }
    let (pipe_read, pipe_write) = pipe().map_err(after(0))?;
    let (pipe_read, pipe_write) = (pipe_read.as_fd(), pipe_write.as_fd());
    let mut to = Destination::new(to, moved);
    loop {
        let filled = match splice_once(from, pipe_write, CHUNK) {
            Ok(0) => return Ok(Some(to.written)),
            Ok(filled) => filled,
            Err(e) if to.written == 0 && refused(&e) => return Ok(None),
            Err(e) => return Err(after(to.written)(e)),
        };
        to.take_from(pipe_read, filled)?;
        if !to.splicing {
            return copy_rest(from, to.fd, to.written, moved).map(Some);
        }
    }
}

/// Where the bytes go, and how many have arrived: spliced into it until the
/// kernel refuses, copied the ordinary way from then on.
struct Destination<'fd> {
    fd: BorrowedFd<'fd>,
    written: u64,
    splicing: bool,
    /// Shared with whoever reports progress.
    moved: &'fd AtomicU64,
}

impl<'fd> Destination<'fd> {
    fn new(fd: BorrowedFd<'fd>, moved: &'fd AtomicU64) -> Destination<'fd> {
        Destination {
            fd,
            written: 0,
            splicing: true,
            moved,
        }
    }

    fn arrived(&mut self, len: usize) {
        self.written += len as u64;
        self.moved.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// Moves the `len` bytes waiting in `pipe` here. If the kernel refuses to
    /// splice before any byte has arrived, they are still in the pipe: they,
    /// and all that follows, are copied the ordinary way.
    fn take_from(&mut self, pipe: BorrowedFd<'_>, len: usize) -> Result<(), SpliceError> {
        let mut left = len;
        while left > 0 && self.splicing {
            match splice_once(pipe, self.fd, left) {
                Ok(0) => return Err(after(self.written)(io::ErrorKind::WriteZero.into())),
                Ok(moved) => {
                    left -= moved;
                    self.arrived(moved);
                }
                Err(e) if self.written == 0 && refused(&e) => self.splicing = false,
                Err(e) => return Err(after(self.written)(e)),
            }
        }
        if left > 0 {
            copy_pipe(pipe, self.fd, left).map_err(after(self.written))?;
            self.arrived(left);
        }
        Ok(())
    }
}

/// The kernel says EINVAL when it cannot splice between these two files.
fn refused(err: &io::Error) -> bool {
    err.raw_os_error() == Some(Errno::INVAL.raw_os_error())
}

/// Splices until `from` ends.
fn splice_until_end(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    moved: &AtomicU64,
) -> Result<u64, SpliceError> {
    let mut to = Destination::new(to, moved);
    loop {
        match splice_once(from, to.fd, CHUNK) {
            Ok(0) => return Ok(to.written),
            Ok(len) => to.arrived(len),
            Err(e) => return Err(after(to.written)(e)),
        }
    }
}

/// How many pipes take turns between the two threads of [`splice_into_file`].
const PIPES: usize = 4;

/// Into a regular file, most of the cost is filling the file's new pages. A
/// second thread takes the bytes off `from` meanwhile, so the socket's work
/// and the file's run on two cores instead of taking turns on one. Each holds
/// a pipe of its own at a time: a splice holds its pipe's lock throughout, and
/// with one shared pipe the filler spun on that lock while the file was written.
fn splice_into_file(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    moved: &AtomicU64,
) -> Result<Option<u64>, SpliceError> {
    let pipes = (0..PIPES).map(|_| pipe()).collect::<io::Result<Vec<_>>>();
    let (reads, writes): (Vec<OwnedFd>, Vec<OwnedFd>) =
        pipes.map_err(after(0))?.into_iter().unzip();
    let (full_tx, full_rx) = mpsc::sync_channel(PIPES);
    let (empty_tx, empty_rx) = mpsc::channel();
    for pipe in 0..PIPES {
        let _ = empty_tx.send(pipe);
    }
    std::thread::scope(|scope| {
        let filler = std::thread::Builder::new()
            .name("splice-fill".into())
            .spawn_scoped(scope, move || fill_pipes(from, &writes, empty_rx, full_tx))
            .map_err(after(0))?;
        let written = write_pipes(reads, full_rx, empty_tx, Destination::new(to, moved));
        match (filler.join().expect("the filling thread panicked"), written) {
            (Err(failed), _) if failed.refused_at_once() => Ok(None),
            (_, Err(failed)) => Err(failed),
            (Err(failed), Ok(written)) => Err(after(written)(failed.error)),
            (Ok(_), Ok(written)) => Ok(Some(written)),
        }
    })
}

/// The filling thread: takes an empty pipe, splices what `from` has into it,
/// and hands it on with the count; ends with `from`, or when the writer is gone.
fn fill_pipes(
    from: BorrowedFd<'_>,
    writes: &[OwnedFd],
    empty: mpsc::Receiver<usize>,
    full: mpsc::SyncSender<(usize, usize)>,
) -> Result<u64, SpliceError> {
    let mut total = 0u64;
    for pipe in empty {
        match splice_once(from, writes[pipe].as_fd(), CHUNK) {
            Ok(0) => break,
            Ok(filled) => {
                total += filled as u64;
                if full.send((pipe, filled)).is_err() {
                    break;
                }
            }
            Err(e) => return Err(after(total)(e)),
        }
    }
    Ok(total)
}

/// The writing thread: splices each full pipe into `to` and hands it back.
/// Returning closes the pipes' read ends, which ends a filler waiting for `from`.
fn write_pipes(
    reads: Vec<OwnedFd>,
    full: mpsc::Receiver<(usize, usize)>,
    empty: mpsc::Sender<usize>,
    mut to: Destination<'_>,
) -> Result<u64, SpliceError> {
    for (pipe, filled) in full {
        to.take_from(reads[pipe].as_fd(), filled)?;
        let _ = empty.send(pipe);
    }
    Ok(to.written)
}

/// Reads `len` bytes from a pipe and writes them to `to`.
fn copy_pipe(pipe: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<()> {
    let mut buf = vec![0u8; len];
    read_exact(pipe, &mut buf)?;
    write_all(to, &buf)
}

/// Copies the rest of `from` to `to` with read and write; `so_far` bytes already moved.
fn copy_rest(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    so_far: u64,
    moved: &AtomicU64,
) -> Result<u64, SpliceError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = so_far;
    loop {
        let n = read(from, &mut buf).map_err(after(total))?;
        if n == 0 {
            return Ok(total);
        }
        write_all(to, &buf[..n]).map_err(after(total))?;
        total += n as u64;
        moved.fetch_add(n as u64, Ordering::Relaxed);
    }
}

fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => wait(fd, PollFlags::IN, None)?,
            Err(e) => return Err(e.into()),
        }
    }
}

fn read_exact(fd: BorrowedFd<'_>, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match read(fd, buf)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf = &mut buf[n..],
        }
    }
    Ok(())
}

fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => wait(fd, PollFlags::OUT, None)?,
            Err(e) => return Err(e.into()),
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
        let moved = splice_all(&file, &a, &AtomicU64::new(0)).unwrap();
        drop(a);
        assert_eq!(moved, Some(data.len() as u64));
        assert!(reader.join().unwrap() == data);
    }

    /// Sends 3 MB through a socket pair into a fresh file, `from` blocking or not.
    fn socket_into_file(non_blocking: bool) {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(non_blocking).unwrap();
        let writer = std::thread::spawn({
            let data = data.clone();
            move || b.write_all(&data).unwrap()
        });
        let mut file = tempfile::tempfile().unwrap();
        let moved = AtomicU64::new(0);
        assert_eq!(
            splice_all(&a, &file, &moved).unwrap(),
            Some(data.len() as u64)
        );
        assert_eq!(moved.into_inner(), data.len() as u64);
        writer.join().unwrap();
        std::io::Seek::rewind(&mut file).unwrap();
        let mut got = Vec::new();
        file.read_to_end(&mut got).unwrap();
        assert!(got == data);
    }

    #[test]
    fn moves_a_socket_into_a_regular_file_exactly() {
        socket_into_file(true); // as portier's sockets are: two threads, pipes in turns
    }

    #[test]
    fn moves_a_blocking_socket_into_a_regular_file_exactly() {
        socket_into_file(false); // one thread, one pipe
    }

    #[test]
    fn a_failed_file_write_ends_without_waiting_for_the_peer() {
        use rustix::fs::{MemfdFlags, SealFlags, fcntl_add_seals, memfd_create};
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.write_all(b"more than nothing").unwrap();
        // A file that may not grow: the first write fails once bytes have come.
        let file = memfd_create(c"sealed", MemfdFlags::ALLOW_SEALING).unwrap();
        fcntl_add_seals(&file, SealFlags::GROW).unwrap();
        let file = std::fs::File::from(file);
        // The peer stays open and quiet: the filler must be stopped, not awaited.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(splice_all(&a, &file, &AtomicU64::new(0)).is_err()));
        let failed = finished.recv_timeout(std::time::Duration::from_secs(20));
        assert_eq!(failed, Ok(true), "the splice should fail, and not hang");
        drop(b);
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
