//! The control socket's wire: one JSON [`Command`] per line from the client, one JSON
//! [`Answer`] per line back, and the client's side ([`connect`], [`call`]). The daemon's
//! side is `control`; `log --follow`'s open-ended answer is `follow`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Longest request line accepted.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// A request on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Command {
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
    /// Open a protected stage's window (`seconds`: its length; default 15 minutes).
    Unlock {
        /// The project.
        project: String,
        /// The stage.
        stage: String,
        /// The window's length.
        #[serde(default)]
        seconds: Option<u64>,
    },
    /// Close one window, or every window when no scope is given.
    Lock {
        /// The project.
        #[serde(default)]
        project: Option<String>,
        /// The stage.
        #[serde(default)]
        stage: Option<String>,
    },
    /// The audit journal's recent events, in `events` (and, with `follow`, later ones).
    Log(crate::journal::Query),
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

/// An answer on the control socket: `ok`, or the `error`, and what the request asked for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Answer {
    /// Whether the request succeeded.
    pub ok: bool,
    /// Why it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `login`: when the MFA session expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// `standin`: the problems met writing the files (empty when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems: Option<String>,
    /// `unlock`, `lock`: what happened, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// `status`: the daemon's report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Box<crate::daemon::StatusReport>>,
    /// `log`: events of the audit journal, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<crate::journal::Event>>,
}

impl Answer {
    /// A success with nothing else set.
    pub(crate) fn ok() -> Self {
        Answer {
            ok: true,
            ..Answer::default()
        }
    }

    /// A failure carrying `e`.
    pub(crate) fn error(e: impl Into<String>) -> Self {
        Answer {
            error: Some(e.into()),
            ..Answer::default()
        }
    }
}

/// Connects to the control socket at `path`: `NotRunning` when nothing listens there.
pub async fn connect(path: &Path) -> Result<UnixStream, ControlError> {
    match UnixStream::connect(path).await {
        Ok(s) => Ok(s),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Err(ControlError::NotRunning {
                path: path.to_path_buf(),
            })
        }
        Err(e) => Err(ControlError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// Sends one request and returns the daemon's answer (`ok` checked).
pub async fn call(path: &Path, req: &Command) -> Result<Answer, ControlError> {
    let io = |reason: String| ControlError::Io {
        path: path.to_path_buf(),
        reason,
    };
    let stream = connect(path).await?;
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
    let a: Answer = serde_json::from_str(&answer).map_err(|e| io(format!("bad answer: {e}")))?;
    if a.ok {
        Ok(a)
    } else {
        Err(ControlError::Daemon(
            a.error.unwrap_or_else(|| "unknown error".into()),
        ))
    }
}
