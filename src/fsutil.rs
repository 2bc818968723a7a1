//! Careful file I/O: bounded reads of files we watch, and atomic private writes.
//!
//! [`read_text`] refuses what is not a regular file (a directory, a FIFO that would block
//! forever), what is too large, and what is not UTF-8, with errors that name the file.
//! [`write_private`] writes a secret-bearing file 0600 inside a 0700 directory through a
//! temporary file, `fsync` and `rename`, so a crash or a full disk leaves either the old
//! file or the new one, never half of one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Largest file [`read_text`] accepts. Real credentials files are a few KiB.
pub const MAX_READ: u64 = 16 * 1024 * 1024;

/// Errors of this module; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The path exists but is not a regular file.
    #[error("{path}: not a regular file")]
    NotAFile {
        /// The file.
        path: PathBuf,
    },
    /// The file is larger than [`MAX_READ`].
    #[error("{path}: too large ({size} bytes; the limit is {limit})")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The file is not valid UTF-8.
    #[error("{path}: line {line}: not valid UTF-8")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line of the first invalid byte.
        line: usize,
    },
    /// Any other I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FsError + '_ {
    move |source| FsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The state of one watched file after the last reload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum FileState {
    /// The file does not exist (it counts as empty).
    Missing,
    /// Parsed; `sections` is how many sections it has.
    Ok {
        /// Number of sections.
        sections: usize,
    },
    /// The last reload failed; the previous good content is still served.
    Error {
        /// 1-based line, when the problem has one.
        line: Option<usize>,
        /// What is wrong (never a value from the file).
        reason: String,
    },
}

/// Files read (or probed) through this module since the process started: the daemon
/// reports it in `/metrics` (`credport_file_reads_total`), and the hot-path test checks
/// that serving a cached scope adds none.
static READS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many files [`read_text`] has read and [`is_file`] has probed in this process.
pub fn reads() -> u64 {
    READS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether `path` is a regular file (following symlinks), counted like a read.
pub fn is_file(path: &Path) -> bool {
    READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.is_file()
}

/// Reads a text file; `Ok(None)` when it does not exist.
pub fn read_text(path: &Path) -> Result<Option<String>, FsError> {
    READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    if !meta.is_file() {
        return Err(FsError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if meta.len() > MAX_READ {
        return Err(FsError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit: MAX_READ,
        });
    }
    // O_NONBLOCK: if the path was swapped for a FIFO after the check, open does not hang.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_READ + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if bytes.len() as u64 > MAX_READ {
        return Err(FsError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit: MAX_READ,
        });
    }
    String::from_utf8(bytes).map(Some).map_err(|e| {
        let upto = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..upto].iter().filter(|b| **b == b'\n').count();
        FsError::NotUtf8 {
            path: path.to_path_buf(),
            line,
        }
    })
}

/// Creates `dir` and every missing parent 0700 (whatever the umask), or makes an
/// existing `dir` 0700. An existing directory that group or others could access is
/// tightened with a warning naming it (credport's directories hold secrets).
pub fn ensure_private_dir(dir: &Path) -> Result<(), FsError> {
    match fs::metadata(dir) {
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            if mode != 0o700 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        "{} was accessible to other users (mode {mode:o}); credport made it 0700",
                        dir.display()
                    );
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err(dir))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))
        }
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// Checks that a secret file is readable by its owner only. Returns the offending mode
/// (`0o644`, ...) when group or others have any access; `None` when private or missing.
pub fn exposed_mode(path: &Path) -> Option<u32> {
    let mode = fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

/// Writes a new file for one command's lifetime (`exec`'s per-run token and isolated
/// files), mode 0600, in a 0700 directory: created exclusively, no `fsync` (the file is
/// removed when the command ends, so durability buys nothing and six fsyncs cost tens of
/// milliseconds on a busy disk).
pub fn write_private_ephemeral(path: &Path, contents: &[u8]) -> Result<(), FsError> {
    if let Some(dir) = path.parent() {
        ensure_private_dir(dir)?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(contents).map_err(io_err(path))
}

/// Atomically replaces `path` with `contents`, mode 0600, in a 0700 directory. Temporary
/// files that an earlier writer left behind (killed between create and rename) are removed
/// once they are a minute old.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), FsError> {
    ensure_private_dir(path.parent().unwrap_or(Path::new(".")))?;
    write_atomic(path, contents, 0o600).map_err(io_err(path))
}

/// Atomically replaces `path` with `contents` (created with `mode`): a temporary file in
/// the same directory, `fsync`, `rename`, then `fsync` of the directory. A crash or a full
/// disk leaves the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    remove_stale_temps(dir, &name);
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(|e| io::Error::other(e.to_string()))?;
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(suffix)));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes `.NAME.*.tmp` files in `dir` older than a minute.
fn remove_stale_temps(dir: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&prefix) && n.ends_with(".tmp") {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(60));
            if old {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_is_none() {
        let t = tempfile::tempdir().unwrap();
        assert!(read_text(&t.path().join("nope")).unwrap().is_none());
    }

    #[test]
    fn refuses_dir_fifo_and_non_utf8() {
        let t = tempfile::tempdir().unwrap();
        assert!(matches!(read_text(t.path()), Err(FsError::NotAFile { .. })));
        let fifo = t.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(read_text(&fifo), Err(FsError::NotAFile { .. })));
        let bad = t.path().join("bad");
        fs::write(&bad, b"[a]\nk=\xff\n").unwrap();
        let e = read_text(&bad).unwrap_err();
        assert!(e.to_string().ends_with("line 2: not valid UTF-8"), "{e}");
    }

    #[test]
    fn private_write_modes_and_replace() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("state").join("secret");
        write_private(&p, b"one").unwrap();
        write_private(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o700);
        let leftovers: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }

    #[test]
    fn private_dirs_create_parents_0700_and_tighten() {
        let t = tempfile::tempdir().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let deep = t.path().join("a/b/c");
        ensure_private_dir(&deep).unwrap();
        for p in [t.path().join("a"), t.path().join("a/b"), deep.clone()] {
            assert_eq!(mode(&p), 0o700, "{}", p.display());
        }
        fs::set_permissions(&deep, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&deep).unwrap();
        assert_eq!(mode(&deep), 0o700);
        let f = deep.join("k");
        fs::write(&f, "x").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(exposed_mode(&f), Some(0o644));
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(exposed_mode(&f), None);
    }
}
