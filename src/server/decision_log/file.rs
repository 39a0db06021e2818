//! The decision log file itself: append a batch of whole lines and make them durable, rotate by
//! size, reopen for an external rotator. Used only by the writer thread ([`super::writer`]), so
//! nothing here is shared or locked.
//!
//! Every line is one complete JSON object, whatever happens:
//!
//! - a batch is written with one `write` of whole lines, then `fdatasync`; only then is it
//!   acknowledged;
//! - a batch that fails (disk full, I/O error) is cut off again (`ftruncate` to the last good
//!   length), so a partial batch never stays behind a later good one;
//! - a file opened (at start-up, after a rotation or a reopen) that does not end with a line end
//!   was cut by a crash mid-write: the partial line, never acknowledged and so never relied on,
//!   is cut off, and the bytes dropped are logged.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Owner read and write only: the log names who saw what.
pub const MODE: u32 = 0o600;

/// Where and how big the decision log may grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub path: PathBuf,
    /// Rotate before a batch would take the file past this many bytes (0: never).
    pub max_bytes: u64,
    /// Rotated files kept (`FILE.1` newest .. `FILE.N` oldest); older ones are deleted.
    pub max_files: usize,
}

/// The open log file and its length as far as acknowledged writes go.
pub struct LogFile {
    settings: Settings,
    file: File,
    len: u64,
}

impl LogFile {
    pub fn open(settings: Settings) -> std::io::Result<Self> {
        let (file, len) = open_repaired(&settings.path)?;
        Ok(Self { settings, file, len })
    }

    pub fn path(&self) -> &Path {
        &self.settings.path
    }

    /// Appends `batch` (whole lines, each ending in `\n`) and makes it durable, rotating first
    /// when it would take the file past the size limit. On error nothing of the batch is left in
    /// the file, as far as the file system lets us cut it off again.
    pub fn append(&mut self, batch: &[u8]) -> std::io::Result<()> {
        let max = self.settings.max_bytes;
        if max > 0 && self.len > 0 && self.len + batch.len() as u64 > max {
            // A rotation that fails leaves the current file in place: the records still go
            // somewhere durable, and the failure is logged for the operator.
            if let Err(e) = self.rotate() {
                tracing::error!(path = %self.settings.path.display(), error = %e, "decision log rotation failed; appending to the current file");
            }
        }
        let written = self.file.write_all(batch).and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += batch.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut off whatever part of the batch reached the file: a torn line must never
                // sit before the next good one. Should that fail too, the next open repairs it.
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }

    /// Opens the file at the path again (an external rotator moved it away).
    pub fn reopen(&mut self) -> std::io::Result<()> {
        let (file, len) = open_repaired(&self.settings.path)?;
        self.file = file;
        self.len = len;
        Ok(())
    }

    /// `FILE.N-1` -> `FILE.N`, ..., `FILE` -> `FILE.1`, then a new, empty `FILE`.
    fn rotate(&mut self) -> std::io::Result<()> {
        let path = &self.settings.path;
        let keep = self.settings.max_files.max(1);
        for i in (1..keep).rev() {
            let from = numbered(path, i);
            if from.exists() {
                std::fs::rename(&from, numbered(path, i + 1))?;
            }
        }
        std::fs::rename(path, numbered(path, 1))?;
        let (file, len) = open_repaired(path)?;
        self.file = file;
        self.len = len;
        sync_dir(path);
        Ok(())
    }
}

/// `FILE.n`: a rotated decision log.
pub fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Opens (creating, mode 0600) for appending, and cuts off a partial last line.
fn open_repaired(path: &Path) -> std::io::Result<(File, u64)> {
    let existed = path.exists();
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(MODE)
        .open(path)?;
    let mut len = file.metadata()?.len();
    let whole = whole_lines_len(&file, len)?;
    if whole < len {
        file.set_len(whole)?;
        file.sync_data()?;
        tracing::warn!(
            path = %path.display(),
            bytes = len - whole,
            "decision log ended inside a line (a write cut short by a crash): the unacknowledged partial line was removed"
        );
        len = whole;
    }
    if !existed {
        sync_dir(path);
    }
    Ok((file, len))
}

/// The length of the file up to and including its last line end.
fn whole_lines_len(file: &File, len: u64) -> std::io::Result<u64> {
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Makes a new or renamed directory entry durable (best effort: some file systems refuse).
fn sync_dir(path: &Path) {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn settings(dir: &Path, max_bytes: u64, max_files: usize) -> Settings {
        Settings {
            path: dir.join("decisions.log"),
            max_bytes,
            max_files,
        }
    }

    #[test]
    fn a_new_file_is_private_and_a_partial_last_line_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 0, 3);
        let mut log = LogFile::open(s.clone()).unwrap();
        let mode = std::fs::metadata(&s.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        log.append(b"{\"a\":1}\n").unwrap();
        drop(log);
        // A crash mid-write leaves a line without its end.
        let mut f = OpenOptions::new().append(true).open(&s.path).unwrap();
        f.write_all(b"{\"b\":").unwrap();
        let mut log = LogFile::open(s.clone()).unwrap();
        log.append(b"{\"c\":3}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&s.path).unwrap(), "{\"a\":1}\n{\"c\":3}\n");
        // A file holding only a partial line is emptied.
        std::fs::write(&s.path, b"{\"x\"").unwrap();
        log.reopen().unwrap();
        log.append(b"{\"d\":4}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&s.path).unwrap(), "{\"d\":4}\n");
    }

    #[test]
    fn rotation_keeps_the_newest_files_and_never_splits_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 20, 2);
        let mut log = LogFile::open(s.clone()).unwrap();
        for i in 0..6 {
            log.append(format!("{{\"n\":{i:05}}}\n").as_bytes()).unwrap(); // 12 bytes a line
        }
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        assert_eq!(read(s.path.clone()), "{\"n\":00005}\n");
        assert_eq!(read(numbered(&s.path, 1)), "{\"n\":00004}\n");
        assert_eq!(read(numbered(&s.path, 2)), "{\"n\":00003}\n");
        assert!(!numbered(&s.path, 3).exists(), "only two rotated files are kept");
        for p in [numbered(&s.path, 1), numbered(&s.path, 2)] {
            assert_eq!(std::fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn reopen_follows_an_external_rotator() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 0, 1);
        let mut log = LogFile::open(s.clone()).unwrap();
        log.append(b"{\"a\":1}\n").unwrap();
        std::fs::rename(&s.path, dir.path().join("moved")).unwrap();
        log.append(b"{\"b\":2}\n").unwrap(); // still the moved file, until told
        log.reopen().unwrap();
        log.append(b"{\"c\":3}\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("moved")).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n"
        );
        assert_eq!(std::fs::read_to_string(&s.path).unwrap(), "{\"c\":3}\n");
    }
}
