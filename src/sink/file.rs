//! `-o FILE`: a log that does not fill the disk. It is rotated by size
//! (`--rotate-size`) or age (`--rotate-every`), keeping `--keep` old files
//! (FILE.1 the newest, gzipped with `--gzip`), and a name with strftime fields
//! (`readings-%Y%m%d.log`) moves to a new file when the name changes. All of
//! it happens between two messages, so no message is ever split across files.
//! The file is reopened when asked (SIGHUP), so `logrotate` can move it away.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

/// How `-o FILE` is kept.
#[derive(Debug, Clone, Default)]
pub struct LogFileConfig {
    /// The file appended to; strftime fields (`%Y%m%d`) are filled with the local time.
    pub path: PathBuf,
    /// Rotate once the file holds this many bytes.
    pub rotate_size: Option<u64>,
    /// Rotate once the file has been written to for this long.
    pub rotate_every: Option<Duration>,
    /// Old files kept by rotation (FILE.1 … FILE.N).
    pub keep: usize,
    /// With strftime fields in the name: the earlier dated files kept (with
    /// their rotations and `.gz`), the oldest removed. `None`: all kept.
    pub keep_dated: Option<usize>,
    /// Compress rotated files (FILE.1.gz), in a thread of their own.
    pub gzip: bool,
    /// Set (by a SIGHUP handler) to have the file reopened before the next message.
    pub reopen: Option<Arc<AtomicBool>>,
}

/// Old files kept unless told otherwise.
pub const DEFAULT_KEEP: usize = 5;
/// A name with strftime fields is looked at again at most this often.
const NAME_CHECK: Duration = Duration::from_secs(1);

/// The open log file.
pub(super) struct LogFile {
    config: LogFileConfig,
    /// The strftime pattern of the name, if it has fields.
    pattern: Option<String>,
    /// The name written to now.
    current: PathBuf,
    file: BufWriter<File>,
    size: u64,
    opened: Instant,
    name_checked: Instant,
    /// The last rotated file being compressed.
    compressing: Option<JoinHandle<()>>,
    /// Set when the log closes: a compression under way stops and leaves
    /// the rotated file as it was, so closing never waits for a big file.
    stop_compressing: Arc<AtomicBool>,
}

impl LogFile {
    pub(super) fn open(config: &LogFileConfig) -> Result<LogFile> {
        let text = config.path.to_string_lossy();
        let pattern = text.contains('%').then(|| text.into_owned());
        if let Some(pattern) = &pattern {
            check_pattern(pattern)?;
        }
        let current = match &pattern {
            Some(pattern) => fill(pattern),
            None => config.path.clone(),
        };
        let (file, size) =
            append(&current).context(|| format!("cannot open {}", current.display()))?;
        Ok(LogFile {
            config: config.clone(),
            pattern,
            current,
            file,
            size,
            opened: Instant::now(),
            name_checked: Instant::now(),
            compressing: None,
            stop_compressing: Arc::default(),
        })
    }

    /// The file to write the next message to: rotated, renamed or reopened first if due.
    pub(super) fn next(&mut self) -> io::Result<&mut LogFile> {
        let reopen = self
            .config
            .reopen
            .as_ref()
            .is_some_and(|flag| flag.swap(false, Ordering::Relaxed));
        let renamed = match &self.pattern {
            Some(pattern) if self.name_checked.elapsed() >= NAME_CHECK => {
                self.name_checked = Instant::now();
                Some(fill(pattern)).filter(|name| *name != self.current)
            }
            _ => None,
        };
        let full = self.config.rotate_size.is_some_and(|max| self.size >= max);
        let old = self.size > 0
            && (self.config.rotate_every).is_some_and(|every| self.opened.elapsed() >= every);
        if renamed.is_none() && !full && !old && !reopen {
            return Ok(self);
        }
        self.file.flush()?;
        if let Some(name) = renamed {
            let done = std::mem::replace(&mut self.current, name);
            match self.config.keep_dated {
                Some(0) => self.prune(ignore_missing(std::fs::remove_file(&done))),
                _ if self.config.gzip => self.compress(done),
                _ => {}
            }
            if let (Some(keep), Some(pattern)) = (self.config.keep_dated, &self.pattern) {
                self.prune(prune_dated(pattern, &self.current, keep));
            }
        } else if full || old {
            self.rotate()?;
        }
        (self.file, self.size) = append(&self.current)?;
        self.opened = Instant::now();
        Ok(self)
    }

    /// FILE.N-1 -> FILE.N … FILE -> FILE.1 (each `.gz` or not); the oldest beyond `keep` is removed.
    fn rotate(&mut self) -> io::Result<()> {
        // A file still being compressed must be done before it is renamed.
        if let Some(compressing) = self.compressing.take() {
            let _ = compressing.join();
        }
        let numbered = |n: usize, gz: &str| {
            let mut name = self.current.as_os_str().to_owned();
            name.push(format!(".{n}{gz}"));
            PathBuf::from(name)
        };
        if self.config.keep == 0 {
            return std::fs::remove_file(&self.current);
        }
        for gz in ["", ".gz"] {
            ignore_missing(std::fs::remove_file(numbered(self.config.keep, gz)))?;
            for n in (1..self.config.keep).rev() {
                ignore_missing(std::fs::rename(numbered(n, gz), numbered(n + 1, gz)))?;
            }
        }
        std::fs::rename(&self.current, numbered(1, ""))?;
        if self.config.gzip {
            self.compress(numbered(1, ""));
        }
        Ok(())
    }

    /// Says why old dated files could not be removed. Reception goes on: a
    /// file gone meanwhile or one not ours to remove must not stop the listener.
    fn prune(&self, removed: io::Result<()>) {
        if let Err(e) = removed {
            let dir = self.current.parent().unwrap_or(Path::new("."));
            crate::sink::say(&format!(
                "cannot remove old dated files in {}: {e}",
                dir.display()
            ));
        }
    }

    /// Compresses `path` into `path.gz` in a thread (after the last one), then removes it.
    fn compress(&mut self, path: PathBuf) {
        let previous = self.compressing.take();
        let stop = self.stop_compressing.clone();
        self.compressing = Some(std::thread::spawn(move || {
            if let Some(previous) = previous {
                let _ = previous.join();
            }
            if let Err(e) = gzip(&path, &stop) {
                crate::sink::say(&format!("cannot compress {}: {e}", path.display()));
            }
        }));
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        self.stop_compressing.store(true, Ordering::Relaxed);
        if let Some(compressing) = self.compressing.take() {
            let _ = compressing.join();
        }
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

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// `path` -> `path.gz` (written aside, then renamed, so a half-written one
/// is never taken for whole). Stopped by `stop` or by an error, it removes
/// what it wrote aside and leaves `path` as it was.
fn gzip(path: &Path, stop: &AtomicBool) -> io::Result<()> {
    let mut gz = path.as_os_str().to_owned();
    gz.push(".gz");
    let mut partial = gz.clone();
    partial.push(".partial");
    let written = gzip_into(path, Path::new(&partial), stop);
    if !matches!(written, Ok(true)) {
        let _ = std::fs::remove_file(&partial);
        return written.map(drop);
    }
    std::fs::rename(&partial, &gz)?;
    std::fs::remove_file(path)
}

/// Compresses `path` into `into`; false if `stop` was set first.
fn gzip_into(path: &Path, into: &Path, stop: &AtomicBool) -> io::Result<bool> {
    let mut source = File::open(path)?;
    let mut encoder = flate2::write::GzEncoder::new(
        BufWriter::new(File::create(into)?),
        flate2::Compression::default(),
    );
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let read = source.read(&mut buf)?;
        if read == 0 {
            break;
        }
        encoder.write_all(&buf[..read])?;
    }
    encoder.finish()?.flush()?;
    Ok(true)
}

/// The name `pattern` gives now, in local time.
fn fill(pattern: &str) -> PathBuf {
    PathBuf::from(chrono::Local::now().format(pattern).to_string())
}

/// Removes the files of earlier dates beyond the `keep` newest (by last
/// change), with their rotations (`.N`) and `.gz`; `current`, files the
/// pattern cannot have made, and other directories are left alone. The
/// directory part of the pattern is taken as it is (no fields there).
fn prune_dated(pattern: &str, current: &Path, keep: usize) -> io::Result<()> {
    let pattern = Path::new(pattern);
    let (Some(dir), Some(names)) = (pattern.parent(), pattern.file_name()) else {
        return Ok(());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let (names, current) = (names.to_string_lossy(), current.file_name());
    if dir.to_string_lossy().contains('%') {
        return Ok(());
    }
    // Each earlier date: its name, its files, and when the newest of them changed.
    let mut dates: std::collections::HashMap<String, (Vec<PathBuf>, std::time::SystemTime)> =
        Default::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(date) = dated_name(&names, &name) else {
            continue;
        };
        // A file removed meanwhile (by logrotate, say) is not one to wait for.
        let Ok(changed) = entry.metadata().and_then(|meta| meta.modified()) else {
            continue;
        };
        if Some(std::ffi::OsStr::new(date)) == current {
            continue;
        }
        let group = dates
            .entry(date.to_string())
            .or_insert((Vec::new(), changed));
        group.0.push(entry.path());
        group.1 = group.1.max(changed);
    }
    let mut dates: Vec<_> = dates.into_values().collect();
    dates.sort_by_key(|(_, changed)| std::cmp::Reverse(*changed));
    for (files, _) in dates.into_iter().skip(keep) {
        for file in files {
            ignore_missing(std::fs::remove_file(file))?;
        }
    }
    Ok(())
}

/// The dated name `name` belongs to, if `pattern` made it: the name itself,
/// or the name before compression (`.gz`) and rotation (`.N`) added to it
/// (`readings-20261201.log.2.gz` -> `readings-20261201.log`). The name itself
/// is tried first, as the date may end it (`readings.20261201`).
fn dated_name<'a>(pattern: &str, name: &'a str) -> Option<&'a str> {
    let unzipped = name.strip_suffix(".gz").unwrap_or(name);
    let unrotated = match unzipped.rsplit_once('.') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => unzipped,
    };
    [name, unzipped, unrotated]
        .into_iter()
        .find(|candidate| made_by(pattern, candidate))
}

/// Whether the strftime `pattern` could have made `name` (every field read back).
fn made_by(pattern: &str, name: &str) -> bool {
    let mut parsed = chrono::format::Parsed::new();
    chrono::format::parse(
        &mut parsed,
        name,
        chrono::format::StrftimeItems::new(pattern),
    )
    .is_ok()
}

/// Refuses a pattern chrono cannot fill (formatting it would fail at every message).
fn check_pattern(pattern: &str) -> Result<()> {
    use chrono::format::{Item, StrftimeItems};
    match StrftimeItems::new(pattern).any(|item| matches!(item, Item::Error)) {
        true => Err(Error::Usage(format!(
            "-o {pattern}: a strftime field is not understood (use %Y, %m, %d, %H, %M, ...; %% for %)"
        ))),
        false => Ok(()),
    }
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
            ..LogFileConfig::default()
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

    #[test]
    fn names_with_strftime_fields_are_filled_and_checked() {
        let today = chrono::Local::now().format("%Y%m%d").to_string();
        assert_eq!(
            fill("log-%Y%m%d.txt"),
            PathBuf::from(format!("log-{today}.txt"))
        );
        assert!(check_pattern("log-%Y%m%d.txt").is_ok());
        assert!(check_pattern("log-%Q.txt").is_err());
    }

    #[test]
    fn earlier_dated_files_beyond_keep_are_removed_with_their_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let day = |n: u64| std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * n);
        let files = [
            ("r-20260101.log", 1),
            ("r-20260101.log.1.gz", 1),
            ("r-20260102.log.gz", 2),
            ("r-20260103.log", 3),
            ("r-20260103.log.1", 3),
            ("r-2026.log", 0),     // not a name the pattern makes
            ("notes.txt", 0),      // nor this
            ("r-20260104.log", 4), // the current one
        ];
        for (name, n) in files {
            let file = File::create(dir.path().join(name)).unwrap();
            file.set_modified(day(n)).unwrap();
        }
        let pattern = dir.path().join("r-%Y%m%d.log");
        let current = dir.path().join("r-20260104.log");
        prune_dated(&pattern.to_string_lossy(), &current, 2).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let kept = [
            "notes.txt",
            "r-2026.log",
            "r-20260102.log.gz",
            "r-20260103.log",
            "r-20260103.log.1",
            "r-20260104.log",
        ];
        assert_eq!(left, kept);
    }

    #[test]
    fn a_date_at_the_end_of_the_name_is_not_taken_for_a_rotation() {
        let pattern = "r.%Y%m%d";
        assert_eq!(dated_name(pattern, "r.20260101"), Some("r.20260101"));
        assert_eq!(dated_name(pattern, "r.20260101.2.gz"), Some("r.20260101"));
        assert_eq!(dated_name(pattern, "r.notes"), None);
        let pattern = "r-%Y%m%d.log";
        assert_eq!(
            dated_name(pattern, "r-20260101.log.1"),
            Some("r-20260101.log")
        );
        assert_eq!(dated_name(pattern, "r-2026.log"), None);
    }

    #[test]
    fn a_stopped_compression_leaves_the_rotated_file_and_nothing_aside() {
        let dir = tempfile::tempdir().unwrap();
        let rotated = dir.path().join("log.1");
        std::fs::write(&rotated, "message\n").unwrap();
        gzip(&rotated, &AtomicBool::new(true)).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["log.1"]);
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "message\n");
    }

    #[test]
    fn rotated_files_are_gzipped_whole() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let config = LogFileConfig {
            path: dir.path().join("log"),
            rotate_size: Some(10),
            keep: 3,
            gzip: true,
            ..LogFileConfig::default()
        };
        let mut log = LogFile::open(&config).unwrap();
        for n in 0..3 {
            let file = log.next().unwrap();
            file.write_all(format!("message {n}\n").as_bytes()).unwrap();
            file.flush().unwrap();
        }
        if let Some(compressing) = log.compressing.take() {
            compressing.join().unwrap();
        }
        let gunzip = |name: &str| {
            let mut text = String::new();
            let file = File::open(dir.path().join(name)).unwrap();
            flate2::read::GzDecoder::new(file)
                .read_to_string(&mut text)
                .unwrap();
            text
        };
        assert_eq!(gunzip("log.1.gz"), "message 1\n");
        assert_eq!(gunzip("log.2.gz"), "message 0\n");
        assert!(!dir.path().join("log.1").exists());
    }
}
