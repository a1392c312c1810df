//! `-o FILE`: a log that does not fill the disk. It is rotated by size
//! (`--rotate-size`, keeping `--keep` old files: FILE.1 the newest), only
//! between two messages, so no message is ever split across files; and it is
//! reopened when asked (SIGHUP), so `logrotate` can move it away.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{IoContext, Result};

/// How `-o FILE` is kept.
#[derive(Debug, Clone, Default)]
pub struct LogFileConfig {
    /// The file appended to.
    pub path: PathBuf,
    /// Rotate once the file holds this many bytes.
    pub rotate_size: Option<u64>,
    /// Old files kept by rotation (FILE.1 … FILE.N).
    pub keep: usize,
    /// Set (by a SIGHUP handler) to have the file reopened before the next message.
    pub reopen: Option<Arc<AtomicBool>>,
}

/// Old files kept unless told otherwise.
pub const DEFAULT_KEEP: usize = 5;

/// The open log file.
pub(super) struct LogFile {
    config: LogFileConfig,
    file: BufWriter<File>,
    size: u64,
}

impl LogFile {
    pub(super) fn open(config: &LogFileConfig) -> Result<LogFile> {
        let (file, size) =
            append(&config.path).context(|| format!("cannot open {}", config.path.display()))?;
        Ok(LogFile {
            config: config.clone(),
            file,
            size,
        })
    }

    /// The file to write the next message to: rotated or reopened first if due.
    pub(super) fn next(&mut self) -> io::Result<&mut LogFile> {
        let reopen = self
            .config
            .reopen
            .as_ref()
            .is_some_and(|flag| flag.swap(false, Ordering::Relaxed));
        let full = self.config.rotate_size.is_some_and(|max| self.size >= max);
        if full {
            self.file.flush()?;
            rotate(&self.config.path, self.config.keep)?;
        }
        if full || reopen {
            self.file.flush()?;
            (self.file, self.size) = append(&self.config.path)?;
        }
        Ok(self)
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Opens `path` for appending; returns it with its size.
fn append(path: &Path) -> io::Result<(BufWriter<File>, u64)> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok((BufWriter::new(file), size))
}

/// FILE.N-1 -> FILE.N … FILE -> FILE.1; the oldest beyond `keep` is removed.
fn rotate(path: &Path, keep: usize) -> io::Result<()> {
    let numbered = |n: usize| {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    };
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    match std::fs::remove_file(numbered(keep)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    for n in (1..keep).rev() {
        match std::fs::rename(numbered(n), numbered(n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    std::fs::rename(path, numbered(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_newest_files_and_never_splits_a_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let config = LogFileConfig {
            path: path.clone(),
            rotate_size: Some(10),
            keep: 2,
            reopen: None,
        };
        let mut log = LogFile::open(&config).unwrap();
        for n in 0..7 {
            let file = log.next().unwrap();
            file.write_all(format!("message {n}\n").as_bytes()).unwrap();
            file.flush().unwrap();
        }
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read("log"), "message 6\n");
        assert_eq!(read("log.1"), "message 5\n");
        assert_eq!(read("log.2"), "message 4\n");
        assert!(!dir.path().join("log.3").exists());
    }

    #[test]
    fn a_reopen_request_starts_a_new_file_where_the_old_was_moved_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let flag = Arc::new(AtomicBool::new(false));
        let config = LogFileConfig {
            path: path.clone(),
            reopen: Some(flag.clone()),
            ..LogFileConfig::default()
        };
        let mut log = LogFile::open(&config).unwrap();
        log.next().unwrap().write_all(b"before\n").unwrap();
        log.flush().unwrap();
        std::fs::rename(&path, dir.path().join("moved")).unwrap();
        flag.store(true, Ordering::Relaxed);
        log.next().unwrap().write_all(b"after\n").unwrap();
        log.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("moved")).unwrap(),
            "before\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
    }
}
