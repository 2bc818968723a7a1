//! `exec`'s per-run directories in the runtime directory, and their cleanup.
//!
//! Each `credport exec` keeps its token file and isolated shared files in
//! `<runtime dir>/exec-<PID>-<hex>` (0700) and removes it when the command ends. A wrapper
//! killed with SIGKILL cannot, so [`sweep_stale`] removes the directories whose PID no
//! longer runs; the daemon calls it at start and `exec` before each run. A directory whose
//! PID is alive is left alone (a reused PID only delays the cleanup). [`rewrite_tokens`]
//! gives the token files of running `exec`s the new key's token after a rotation.
//! [`RunDir`] is one run's directory.

use std::path::{Path, PathBuf};

use crate::tokens::TokenKey;

/// The prefix of a per-run directory's name.
pub const PREFIX: &str = "exec-";

/// The PID in a per-run directory name (`exec-<PID>-<random>`), if it is one.
pub fn pid_of(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, suffix) = rest.split_once('-')?;
    if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    pid.parse().ok().filter(|p| *p > 0)
}

/// One `exec`'s per-run directory, `<runtime dir>/exec-<PID>-<random>` (0700), removed
/// with everything in it when dropped (and by [`sweep_stale`] if this process is killed).
pub struct RunDir {
    dir: tempfile::TempDir,
}

impl RunDir {
    /// Creates a new per-run directory in `runtime_dir` (made private first).
    pub fn create(runtime_dir: &Path) -> Result<Self, crate::fsutil::FsError> {
        crate::fsutil::ensure_private_dir(runtime_dir)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", std::process::id()))
            .rand_bytes(12)
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(runtime_dir)
            .map_err(|source| crate::fsutil::FsError::Io {
                path: runtime_dir.to_path_buf(),
                source,
            })?;
        crate::fsutil::ensure_private_dir(dir.path())?;
        Ok(RunDir { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `token` to the run's token file (0600, no trailing newline); returns its path.
    pub fn write_token(&self, token: &str) -> Result<PathBuf, crate::fsutil::FsError> {
        let f = self.path().join("token");
        crate::fsutil::write_private_ephemeral(&f, token.as_bytes())?;
        Ok(f)
    }
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // EPERM: it exists but belongs to someone else (still alive).
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The per-run directories in `runtime_dir`, with their PIDs.
fn run_dirs(runtime_dir: &Path) -> Vec<(PathBuf, u32)> {
    let Ok(entries) = std::fs::read_dir(runtime_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let pid = pid_of(&e.file_name().to_string_lossy())?;
            Some((e.path(), pid))
        })
        .collect()
}

/// Removes the `exec-<PID>-<hex>` directories in `runtime_dir` whose PID is not running
/// (left by a wrapper killed with SIGKILL), with the token files in them. Returns how many
/// it removed; failures are logged at debug level and skipped.
pub fn sweep_stale(runtime_dir: &Path) -> usize {
    let mut removed = 0;
    for (dir, pid) in run_dirs(runtime_dir) {
        if alive(pid) {
            continue;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::debug!(dir = %dir.display(), pid, "removed the run directory of a dead exec");
                removed += 1;
            }
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "cannot remove a stale run directory")
            }
        }
    }
    removed
}

/// Rewrites the token file of every running `exec` in `runtime_dir` that holds a token of
/// `old` with `new`'s token for the same scope. Returns how many it rewrote.
pub fn rewrite_tokens(runtime_dir: &Path, old: &TokenKey, new: &TokenKey) -> usize {
    let mut n = 0;
    for (dir, _) in run_dirs(runtime_dir) {
        let file = dir.join("token");
        let Ok(Some(text)) = crate::fsutil::read_text(&file) else {
            continue;
        };
        let Some((project, stage)) = old.scope_of(text.trim()) else {
            continue;
        };
        if crate::fsutil::write_private(&file, new.token(&project, &stage).expose().as_bytes())
            .is_ok()
        {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(pid_of("exec-123-abcdef"), Some(123));
        assert_eq!(
            pid_of("exec-123-aZ09xYq2Lm4k"),
            Some(123),
            "tempfile's suffix"
        );
        for bad in [
            "exec-123",
            "exec--ab",
            "exec-x-ab",
            "exec-1-z.z",
            "exec-1-a-b",
            "other-1-ab",
        ] {
            assert_eq!(pid_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_run_dir_is_private_named_for_its_pid_and_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let run = RunDir::create(&t.path().join("rt")).unwrap();
        let name = run
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(pid_of(&name), Some(std::process::id()), "{name}");
        let mode = std::fs::metadata(run.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let token = run.write_token("tok").unwrap();
        assert_eq!(std::fs::read_to_string(&token).unwrap(), "tok");
        let mode = std::fs::metadata(&token).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir = run.path().to_path_buf();
        drop(run);
        assert!(!dir.exists());
    }

    #[test]
    fn sweeps_only_dead_pids() {
        let t = tempfile::tempdir().unwrap();
        let mine = t.path().join(format!("exec-{}-ab12", std::process::id()));
        // PIDs above the kernel's pid_max (4194304 at most) never run.
        let dead = t.path().join("exec-99999999-ab12");
        let other = t.path().join("something-else");
        for d in [&mine, &dead, &other] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(dead.join("token"), "x").unwrap();
        assert_eq!(sweep_stale(t.path()), 1);
        assert!(mine.exists() && other.exists() && !dead.exists());
        assert_eq!(sweep_stale(&t.path().join("missing")), 0);
    }
}
