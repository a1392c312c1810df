//! The least any receiver of a TCP stream into a file must do, and less: one
//! thread drains the connection into /dev/null inside the kernel (splice, no
//! copy), while the main thread fills SIZE bytes of new file pages on stdout
//! from one 128 KiB buffer that stays in the cache. It writes none of the bytes
//! it receives, so a real receiver can only be slower: a ceiling for
//! bench/file_ceiling.sh and bench/run.sh, which build it with plain rustc.
//!
//! Usage: receive_floor PORT SIZE > DEST   (listens on 127.0.0.1:PORT, one connection)

use std::fs::File;
use std::io::{Error, Result, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, RawFd};

// Only std is at hand under plain rustc, and std does not splice; libc does.
unsafe extern "C" {
    fn pipe(fds: *mut RawFd) -> i32;
    fn splice(
        from: RawFd,
        from_offset: *mut i64,
        to: RawFd,
        to_offset: *mut i64,
        len: usize,
        flags: u32,
    ) -> isize;
}

/// One splice of up to `len` bytes, at the current positions.
fn splice_once(from: RawFd, to: RawFd, len: usize) -> Result<usize> {
    let none = std::ptr::null_mut();
    // SAFETY: both descriptors stay open for the call; null offsets mean "current position".
    let moved = unsafe { splice(from, none, to, none, len, 0) };
    if moved < 0 {
        Err(Error::last_os_error())
    } else {
        Ok(moved as usize)
    }
}

/// Moves everything from `from` to `to` through a pipe, until `from` ends.
fn drain(from: RawFd, to: RawFd) -> Result<()> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe writes.
    if unsafe { pipe(fds.as_mut_ptr()) } != 0 {
        return Err(Error::last_os_error());
    }
    loop {
        let mut left = match splice_once(from, fds[1], 1 << 16)? {
            0 => return Ok(()),
            filled => filled,
        };
        while left > 0 {
            left -= splice_once(fds[0], to, left)?;
        }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(port), Some(size)) = (args.get(1), args.get(2).and_then(|s| s.parse::<u64>().ok()))
    else {
        eprintln!("usage: receive_floor PORT SIZE > DEST");
        std::process::exit(2);
    };
    let listener = TcpListener::bind(format!("127.0.0.1:{port}"))?;
    // stdout itself, unbuffered (std's Stdout would scan each buffer for newlines).
    let mut dest = File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let (stream, _) = listener.accept()?;
    let drainer = std::thread::spawn(move || {
        let null = File::create("/dev/null")?;
        drain(stream.as_raw_fd(), null.as_raw_fd())
    });
    let buffer = vec![0x5a; 128 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(buffer.len() as u64) as usize;
        dest.write_all(&buffer[..n])?;
        left -= n as u64;
    }
    drainer.join().expect("the draining thread panicked")
}
