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
//! - `{"op":"standin"}` writes `credport env`'s serverless stand-in files now;
//! - `{"op":"unlock","project":"p","stage":"prod","seconds":900}` and
//!   `{"op":"lock","project":"p","stage":"prod"}` (no scope: every window) open and close
//!   protected stages' windows (see `guard`), answering the line to show in `note`.
//! - `{"op":"log","project":"orders","stage":"prod","limit":20,"follow":true}` answers the
//!   audit journal's recent events (`credport log`); with `follow`, one more answer line
//!   per later event until the client hangs up (see [`super::follow`]).
//!
//! Answers are one typed [`Answer`]: `{"ok":true,...}` with what was asked for, or
//! `{"ok":false,"error":"..."}`. The wire types and the client's side live in
//! [`super::protocol`] (shared with [`super::follow`]); this module is the daemon's side.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use crate::server::AppState;

use super::protocol::MAX_LINE;
pub use super::protocol::{Answer, Command, ControlError, call, connect};

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
/// `standins` answers `standin` requests (`None`: this server keeps no stand-in files).
pub async fn serve(
    listener: UnixListener,
    state: Arc<AppState>,
    status: StatusFn,
    standins: Option<Arc<super::keeper::Keeper>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let state = state.clone();
        let status = status.clone();
        let standins = standins.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(r.take(MAX_LINE as u64));
            let read =
                tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await;
            let answer = match read {
                Ok(Ok(_)) => match serde_json::from_str::<Command>(&line) {
                    Ok(Command::Log(q)) if q.follow => {
                        return super::follow::stream(&state.journal, &q, reader, w).await;
                    }
                    Ok(req) => handle(&state, &status, standins.as_deref(), req).await,
                    Err(e) => Answer::error(format!("bad request: {e}")),
                },
                _ => return,
            };
            let mut out = serde_json::to_string(&answer).unwrap_or_default();
            out.push('\n');
            let _ = w.write_all(out.as_bytes()).await;
        });
    }
}

async fn handle(
    state: &AppState,
    status: &StatusFn,
    standins: Option<&super::keeper::Keeper>,
    req: Command,
) -> Answer {
    match req {
        Command::Login { profile, code } => {
            let code = code.trim();
            if code.is_empty()
                || code.len() > 64
                || !code.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return Answer::error("the MFA code must be the digits your device shows");
            }
            match state.resolver.login(&profile, code).await {
                Ok(expires) => {
                    tracing::info!(profile = %profile, expires = %crate::credentials::format_expiration(expires), "MFA session opened");
                    Answer {
                        expires: Some(crate::credentials::format_expiration(expires)),
                        ..Answer::ok()
                    }
                }
                Err(e) => {
                    tracing::warn!(profile = %profile, error = %e, "MFA login failed");
                    Answer::error(e.to_string())
                }
            }
        }
        Command::Status => Answer {
            status: Some(Box::new(status())),
            ..Answer::ok()
        },
        Command::Reload => {
            state.profiles.reload();
            state.config.reload();
            state.registered.reload();
            state.reloaded();
            Answer::ok()
        }
        Command::Standin => match standins {
            Some(k) => {
                state.registered.reload();
                Answer {
                    problems: Some(k.refresh_now().await),
                    ..Answer::ok()
                }
            }
            None => Answer::error("this server keeps no stand-in files"),
        },
        Command::Unlock {
            project,
            stage,
            seconds,
        } => match state.guard.request_unlock(
            &state.config.get(),
            &state.registered.get(),
            &project,
            &stage,
            seconds.map(Duration::from_secs),
        ) {
            Ok(note) => Answer {
                note: Some(note),
                ..Answer::ok()
            },
            Err(e) => Answer::error(e.to_string()),
        },
        Command::Lock { project, stage } => Answer {
            note: Some(
                state
                    .guard
                    .request_lock(project.as_deref().zip(stage.as_deref())),
            ),
            ..Answer::ok()
        },
        Command::Log(q) => Answer {
            events: Some(state.journal.recent(&q.filter, q.limit)),
            ..Answer::ok()
        },
    }
}
