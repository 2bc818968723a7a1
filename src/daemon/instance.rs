//! One daemon per user, and how clients tell it from a stale state file.
//!
//! `serve` holds an exclusive `flock` on `<runtime dir>/daemon.lock` for its whole life
//! ([`InstanceLock`]); a second `serve` on the same state cannot take it and refuses,
//! naming the running daemon. Only the lock holder writes or removes `daemon.json` and the
//! control socket, so no instance ever overwrites or deletes another's (a lock, not a
//! check-then-write). The kernel drops the lock when the process dies, even by
//! `kill -9`, so a crashed daemon never blocks its successor. `--replace` (and socket
//! activation) asks the holder to stop (SIGTERM) and takes the lock once it is free.
//!
//! `daemon.json` carries a random instance id that `/healthz` echoes. A client trusts the
//! file only when the lock is held *and* the URL answers `/healthz` with that id
//! ([`find`]); a file whose lock is free is stale (a crash, a reused pid) and is removed
//! under the lock, so the removal cannot race a starting daemon.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::info::DaemonInfo;
use crate::fsutil;

/// The lock file's name in the runtime directory.
pub const LOCK_FILE: &str = "daemon.lock";

/// How long a client waits for `/healthz`.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(1500);

/// Errors taking the instance lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another daemon holds the lock.
    #[error(
        "another credport daemon already runs for this user{}; see `credport status`, stop it first, or take over with `credport serve --replace`",
        describe(.info.as_ref())
    )]
    Held {
        /// What it published about itself, when readable.
        info: Option<DaemonInfo>,
    },
    /// The daemon that held the lock did not stop in time (`--replace`).
    #[error(
        "the running credport daemon{} did not stop within {waited:?} after SIGTERM; stop it by hand",
        describe(.info.as_ref())
    )]
    StillRunning {
        /// What it published about itself, when readable.
        info: Option<DaemonInfo>,
        /// How long we waited.
        waited: Duration,
    },
    /// The lock file could not be created or locked.
    #[error("{path}: cannot lock: {reason}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The runtime directory could not be created.
    #[error(transparent)]
    Fs(#[from] fsutil::FsError),
}

fn describe(info: Option<&DaemonInfo>) -> String {
    match info {
        Some(i) => format!(
            " (pid {}, listening on {})",
            i.pid,
            i.listen
                .iter()
                .map(|a| super::info::base_url(*a))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => String::new(),
    }
}

/// The exclusive lock of the running daemon; released when dropped (or when the process
/// ends, however it ends).
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

fn lock_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join(LOCK_FILE)
}

fn open_lock(runtime_dir: &Path) -> Result<File, LockError> {
    fsutil::ensure_private_dir(runtime_dir)?;
    let path = lock_path(runtime_dir);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| LockError::Io {
            path,
            reason: e.to_string(),
        })
}

/// Tries a non-blocking exclusive lock on `file`: `Ok(true)` when taken.
fn try_lock(file: &File, path: &Path) -> Result<bool, LockError> {
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(LockError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

impl InstanceLock {
    /// Takes the lock in `runtime_dir`. When another daemon holds it: with `replace`,
    /// sends it SIGTERM and waits (up to 10 s) for it to let go; otherwise refuses with
    /// [`LockError::Held`], naming it.
    pub fn acquire(runtime_dir: &Path, replace: bool) -> Result<InstanceLock, LockError> {
        let file = open_lock(runtime_dir)?;
        let path = lock_path(runtime_dir);
        if try_lock(&file, &path)? {
            return Ok(InstanceLock { _file: file });
        }
        let info = DaemonInfo::read(&runtime_dir.join("daemon.json"));
        if !replace {
            return Err(LockError::Held { info });
        }
        match &info {
            Some(i) if i.pid != std::process::id() => {
                tracing::info!(pid = i.pid, "--replace: asking the running daemon to stop");
                unsafe { libc::kill(i.pid as libc::pid_t, libc::SIGTERM) };
            }
            _ => tracing::info!("--replace: waiting for the starting daemon to let go"),
        }
        let waited = Duration::from_secs(10);
        let start = Instant::now();
        while start.elapsed() < waited {
            if try_lock(&file, &path)? {
                return Ok(InstanceLock { _file: file });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(LockError::StillRunning { info, waited })
    }
}

/// Whether some process holds the daemon lock in `runtime_dir` (a daemon is running or
/// starting). `false` when the directory or the lock file does not exist.
pub fn is_held(runtime_dir: &Path) -> bool {
    let path = lock_path(runtime_dir);
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
    else {
        return false;
    };
    match try_lock(&file, &path) {
        Ok(true) => {
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
            false
        }
        Ok(false) => true,
        Err(_) => false,
    }
}

/// A fresh random instance id (16 hex digits).
pub fn new_instance_id() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No randomness: the pid and the time still tell instances apart.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        b = (t ^ u64::from(std::process::id())).to_be_bytes();
    }
    hex::encode(b)
}

/// What a client found when it looked for the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A daemon answers as itself at this base URL.
    Running {
        /// Its base URL.
        url: String,
    },
    /// No `daemon.json` (and no `CREDPORT_URL`).
    NotRunning,
    /// `daemon.json` was there but nothing answers as that daemon; `removed` says whether
    /// the file was deleted (it is only when no daemon holds the lock).
    Stale {
        /// Why it is not trusted (for a warning).
        reason: String,
        /// Whether the stale file was removed.
        removed: bool,
    },
    /// `CREDPORT_URL` is set but nothing answers there as credport.
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Finds the daemon: `CREDPORT_URL` when set (it must answer `/healthz`), else
/// `daemon.json` in `runtime_dir`, trusted only when the daemon lock is held and its URL
/// answers `/healthz` with the file's instance id. A stale file (lock free) is removed,
/// with the control socket, while holding the lock.
pub fn find(runtime_dir: &Path, credport_url: Option<&str>) -> Lookup {
    if let Some(url) = credport_url.filter(|u| !u.is_empty()) {
        let url = url.trim_end_matches('/').to_string();
        if !url.starts_with("http://") {
            // An https relay cannot be probed with a plain socket: trust the user's choice.
            return Lookup::Running { url };
        }
        return match healthz(&url) {
            Ok(_) => Lookup::Running { url },
            Err(reason) => Lookup::Unreachable { url, reason },
        };
    }
    let state = runtime_dir.join("daemon.json");
    if !state.exists() {
        return Lookup::NotRunning;
    }
    let info = DaemonInfo::read(&state);
    if is_held(runtime_dir) {
        let Some(info) = info else {
            return Lookup::Stale {
                reason: format!("{} is unreadable", state.display()),
                removed: false,
            };
        };
        return match healthz(&info.url) {
            Ok(h) if h["instance"].as_str() == Some(info.instance.as_str()) => {
                Lookup::Running { url: info.url }
            }
            Ok(h) => Lookup::Stale {
                reason: format!(
                    "{} answers as another credport instance ({}), not the one in {} (pid {})",
                    info.url,
                    h["instance"].as_str().unwrap_or("none"),
                    state.display(),
                    info.pid
                ),
                removed: false,
            },
            Err(reason) => Lookup::Stale {
                reason: format!(
                    "the daemon in {} (pid {}) does not answer at {}: {reason}",
                    state.display(),
                    info.pid,
                    info.url
                ),
                removed: false,
            },
        };
    }
    let who = info
        .map(|i| format!(" (pid {}, {})", i.pid, i.url))
        .unwrap_or_default();
    let removed = remove_stale(runtime_dir);
    Lookup::Stale {
        reason: format!(
            "{}{who} was left by a daemon that no longer runs",
            state.display()
        ),
        removed,
    }
}

/// Removes `daemon.json` and the control socket while holding the lock (so a daemon
/// starting meanwhile is not affected). Returns whether the state file is gone.
fn remove_stale(runtime_dir: &Path) -> bool {
    let Ok(file) = open_lock(runtime_dir) else {
        return false;
    };
    if !matches!(try_lock(&file, &lock_path(runtime_dir)), Ok(true)) {
        return false;
    }
    let _ = std::fs::remove_file(runtime_dir.join("control.sock"));
    let gone = match std::fs::remove_file(runtime_dir.join("daemon.json")) {
        Ok(()) => true,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    drop(file);
    gone
}

/// `GET {base}/healthz` with a short timeout, over a plain blocking socket (clients call
/// this from sync and async code alike). Returns the parsed body of a 200 answer.
pub fn healthz(base: &str) -> Result<serde_json::Value, String> {
    let (host, path_prefix) = split_http_url(base)?;
    let addrs: Vec<SocketAddr> = host
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let addr = addrs
        .first()
        .ok_or_else(|| format!("{host} resolves to no address"))?;
    let mut s = TcpStream::connect_timeout(addr, HEALTH_TIMEOUT).map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(HEALTH_TIMEOUT));
    let _ = s.set_write_timeout(Some(HEALTH_TIMEOUT));
    let req = format!(
        "GET {path_prefix}/healthz HTTP/1.1\r\nHost: {host}\r\nUser-Agent: credport/{}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let _ = s.take(64 * 1024).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "not an HTTP answer".to_string())?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("/healthz answered {status}"));
    }
    let v: serde_json::Value =
        serde_json::from_str(body.trim()).map_err(|_| "/healthz is not credport's".to_string())?;
    if v["status"] != "ok" {
        return Err("/healthz is not credport's".into());
    }
    Ok(v)
}

/// `http://host:port/prefix` into (`host:port`, `/prefix`).
fn split_http_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs can be checked"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let has_port = match authority.rfind(']') {
        Some(i) => authority[i..].contains(':'),
        None => authority.contains(':'),
    };
    let host = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((host, path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let t = tempfile::tempdir().unwrap();
        assert!(!is_held(t.path()));
        let l = InstanceLock::acquire(t.path(), false).unwrap();
        assert!(is_held(t.path()));
        let e = InstanceLock::acquire(t.path(), false).unwrap_err();
        assert!(e.to_string().contains("already runs"), "{e}");
        drop(l);
        assert!(!is_held(t.path()));
        InstanceLock::acquire(t.path(), false).unwrap();
    }

    #[test]
    fn urls_split() {
        assert_eq!(
            split_http_url("http://127.0.0.1:9911").unwrap(),
            ("127.0.0.1:9911".into(), "".into())
        );
        assert_eq!(
            split_http_url("http://169.254.170.2/").unwrap(),
            ("169.254.170.2:80".into(), "".into())
        );
        assert_eq!(
            split_http_url("http://[::1]:5/x/").unwrap(),
            ("[::1]:5".into(), "/x".into())
        );
        assert!(split_http_url("https://x").is_err());
    }

    #[test]
    fn stale_state_is_removed_when_unlocked() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(find(t.path(), None), Lookup::NotRunning);
        std::fs::write(
            t.path().join("daemon.json"),
            r#"{"url":"http://127.0.0.1:9","listen":["127.0.0.1:9"],"pid":1,"instance":"x"}"#,
        )
        .unwrap();
        match find(t.path(), None) {
            Lookup::Stale { removed, .. } => assert!(removed),
            other => panic!("{other:?}"),
        }
        assert!(!t.path().join("daemon.json").exists());
    }
}
