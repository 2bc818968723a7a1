//! The control socket: how local commands talk to a running daemon.
//!
//! `serve` listens on `<runtime dir>/control.sock`, a Unix socket created 0600 inside a
//! 0700 directory, so only the same user (and root) can reach it; no token is needed and
//! nothing of it is reachable over TCP or from a browser. The protocol is one JSON object
//! per line each way:
//!
//! - `{"op":"login","profile":"dev","code":"123456"}` opens the MFA session that the profile
//!   needs (the daemon calls STS itself; only the one-time code crosses the socket);
//! - `{"op":"status"}` answers the daemon's status (see `cli::status`);
//! - `{"op":"reload"}` re-reads every file;
//! - `{"op":"standin"}` writes `credport env`'s serverless stand-in files now.
//!
//! Answers are `{"ok":true,...}` or `{"ok":false,"error":"..."}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::server::AppState;

/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;

/// A request on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Open an MFA session for a profile.
    Login {
        /// The profile (its role chain names the `mfa_serial`).
        profile: String,
        /// The one-time code.
        code: String,
    },
    /// Report status.
    Status,
    /// Reload every file.
    Reload,
    /// Write the kept serverless stand-in files now (`credport env`); answers the
    /// problems met, if any, in `problems`.
    Standin,
}

/// Errors talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No daemon listens on the socket.
    #[error(
        "no credport daemon is running (nothing listens on {path}); start one with `credport serve`"
    )]
    NotRunning {
        /// The socket path.
        path: PathBuf,
    },
    /// The exchange failed.
    #[error("control socket {path}: {reason}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The daemon answered an error.
    #[error("{0}")]
    Daemon(String),
}

/// Sends one request and returns the daemon's answer (`ok` checked).
pub async fn call(path: &Path, req: &Request) -> Result<serde_json::Value, ControlError> {
    let io = |reason: String| ControlError::Io {
        path: path.to_path_buf(),
        reason,
    };
    let stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ControlError::NotRunning {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io(e.to_string())),
    };
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_string(req).map_err(|e| io(e.to_string()))?;
    line.push('\n');
    w.write_all(line.as_bytes())
        .await
        .map_err(|e| io(e.to_string()))?;
    let mut answer = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(r).read_line(&mut answer),
    )
    .await
    .map_err(|_| io("no answer within 30 s".into()))?
    .map_err(|e| io(e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_str(&answer).map_err(|e| io(format!("bad answer: {e}")))?;
    if v["ok"] == true {
        Ok(v)
    } else {
        Err(ControlError::Daemon(
            v["error"].as_str().unwrap_or("unknown error").to_string(),
        ))
    }
}

/// Binds the control socket at `path` (replacing a stale one) with mode 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        crate::fsutil::ensure_private_dir(dir).map_err(std::io::Error::other)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// What a status request answers; filled by the daemon.
pub type StatusFn = Arc<dyn Fn() -> crate::daemon::StatusReport + Send + Sync>;

/// Serves the control socket until the task is dropped.
pub async fn serve(listener: UnixListener, state: Arc<AppState>, status: StatusFn) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let state = state.clone();
        let status = status.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(r.take(MAX_LINE as u64));
            let read =
                tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await;
            let answer = match read {
                Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
                    Ok(req) => handle(&state, &status, req).await,
                    Err(e) => {
                        serde_json::json!({"ok": false, "error": format!("bad request: {e}")})
                    }
                },
                _ => return,
            };
            let mut out = answer.to_string();
            out.push('\n');
            let _ = w.write_all(out.as_bytes()).await;
        });
    }
}

async fn handle(state: &AppState, status: &StatusFn, req: Request) -> serde_json::Value {
    match req {
        Request::Login { profile, code } => {
            let code = code.trim();
            if code.is_empty()
                || code.len() > 64
                || !code.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return serde_json::json!({"ok": false, "error": "the MFA code must be the digits your device shows"});
            }
            match state.resolver.login(&profile, code).await {
                Ok(expires) => {
                    tracing::info!(profile = %profile, expires = %crate::credentials::format_expiration(expires), "MFA session opened");
                    serde_json::json!({"ok": true, "expires": crate::credentials::format_expiration(expires)})
                }
                Err(e) => {
                    tracing::warn!(profile = %profile, error = %e, "MFA login failed");
                    serde_json::json!({"ok": false, "error": e.to_string()})
                }
            }
        }
        Request::Status => {
            let mut v = serde_json::to_value(status()).unwrap_or_default();
            v["ok"] = serde_json::Value::Bool(true);
            v
        }
        Request::Reload => {
            state.profiles.reload();
            state.config.reload();
            state.registered.reload();
            state.poke_standins();
            serde_json::json!({"ok": true})
        }
        Request::Standin => match state.standins.get() {
            Some(k) => {
                state.registered.reload();
                serde_json::json!({"ok": true, "problems": k.refresh_now().await})
            }
            None => {
                serde_json::json!({"ok": false, "error": "this server keeps no stand-in files"})
            }
        },
    }
}
