//! Copies SOURCE to stdout with two threads: one reads into 8 buffers of 128 KiB,
//! the other writes them, so reading the source and filling the new file's
//! pages run on two cores. The two-core counterpart of `dd if=SOURCE bs=128K`
//! for bench/file_ceiling.sh, which builds it with plain rustc: a
//! ceiling for any transfer of the same bytes through a socket on this machine.
//!
//! Usage: two_thread_copy SOURCE > DEST

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::mpsc;

const BUFFERS: usize = 8;
const SIZE: usize = 128 * 1024;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, source] = &args[..] else {
        eprintln!("usage: two_thread_copy SOURCE > DEST");
        std::process::exit(2);
    };
    let mut source = File::open(source)?;
    // stdout itself, unbuffered (std's Stdout would scan each buffer for newlines).
    let mut dest = File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(BUFFERS);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..BUFFERS {
        empty_tx.send(vec![0; SIZE]).expect("the receiver is here");
    }
    let reader = std::thread::spawn(move || -> std::io::Result<()> {
        while let Ok(mut buffer) = empty_rx.recv() {
            let n = source.read(&mut buffer)?;
            if n == 0 || full_tx.send((buffer, n)).is_err() {
                return Ok(());
            }
        }
        Ok(())
    });
    for (buffer, n) in full_rx {
        dest.write_all(&buffer[..n])?;
        let _ = empty_tx.send(buffer);
    }
    reader.join().expect("the reading thread panicked")
}
