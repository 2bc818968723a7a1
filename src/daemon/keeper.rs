//! Keeps `credport env`'s serverless stand-in files fresh in the daemon (see `standin` for
//! what they hold and why that is safe): each `<runtime>/standin/PROJECT/` directory with a
//! `dir` record is a subscription; its `credentials` file is rewritten at start, after every
//! reload, and before the earliest session in it reaches the refresh margin. No timer runs
//! while nothing is kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::projects::Selection;
use crate::scope::serverless_file;
use crate::server::AppState;
use crate::standin::{dir_record, entries, env_file, known_stages, policy_for_stage, render};

/// Keeps the stand-in files of `<runtime>/standin/*/` fresh in the daemon: each directory
/// names a project (`credport env` creates it); its file is rewritten at start, after every
/// reload ([`Keeper::poke`]), and before the earliest session in it nears expiry.
pub struct Keeper {
    poke: tokio::sync::mpsc::UnboundedSender<Option<tokio::sync::oneshot::Sender<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Keeper {
    /// Starts keeping the files under `runtime_dir/standin` for `state` (held weakly: the
    /// keeper stops with the daemon's state).
    pub fn spawn(state: &Arc<AppState>, runtime_dir: PathBuf) -> Keeper {
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<Option<tokio::sync::oneshot::Sender<String>>>();
        let state = Arc::downgrade(state);
        let task = tokio::spawn(async move {
            let mut hashes: HashMap<String, u64> = HashMap::new();
            let mut wait: Option<Duration> = None;
            loop {
                let report = rx_or_timeout(&mut rx, wait).await;
                let Some(report) = report else { return };
                let Some(state) = state.upgrade() else { return };
                let (next, summary) = refresh_all(&state, &runtime_dir, &mut hashes).await;
                wait = next;
                if let Some(r) = report {
                    let _ = r.send(summary);
                }
            }
        });
        let k = Keeper { poke: tx, task };
        k.poke();
        k
    }

    /// Refreshes every file soon (after a reload).
    pub fn poke(&self) {
        let _ = self.poke.send(None);
    }

    /// Refreshes every file now and returns a summary of problems (empty when none).
    pub async fn refresh_now(&self) -> String {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.poke.send(Some(tx)).is_err() {
            return "the stand-in keeper has stopped".into();
        }
        rx.await.unwrap_or_default()
    }
}

/// The next request, or `Some(None)` when `wait` passed; `None` when the keeper is dropped.
async fn rx_or_timeout(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Option<tokio::sync::oneshot::Sender<String>>>,
    wait: Option<Duration>,
) -> Option<Option<tokio::sync::oneshot::Sender<String>>> {
    match wait {
        Some(d) => match tokio::time::timeout(d, rx.recv()).await {
            Ok(v) => v,
            Err(_) => Some(None),
        },
        None => rx.recv().await,
    }
}

/// Rewrites every kept file; returns when to look again and the problems met.
async fn refresh_all(
    state: &AppState,
    runtime_dir: &Path,
    hashes: &mut HashMap<String, u64>,
) -> (Option<Duration>, String) {
    let root = runtime_dir.join("standin");
    let Ok(dirs) = std::fs::read_dir(&root) else {
        return (None, String::new());
    };
    let mut earliest: Option<OffsetDateTime> = None;
    let mut problems = Vec::new();
    for d in dirs.flatten() {
        let Some(project) = d.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let mut locked = Vec::new();
        let result = refresh_one(state, runtime_dir, &project, hashes, &mut locked).await;
        problems.extend(locked.into_iter().map(|l| format!("{project}: {l}")));
        match result {
            Ok(Some(exp)) => earliest = Some(earliest.map_or(exp, |e: OffsetDateTime| e.min(exp))),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(project = %project, error = %e, "stand-in profiles not written");
                problems.push(format!("{project}: {e}"));
            }
        }
    }
    let next = earliest.map(|e| {
        let at = e - state.refresh_margin();
        let secs = (at - OffsetDateTime::now_utc()).whole_seconds().max(30);
        Duration::from_secs(secs as u64)
    });
    (next, problems.join("; "))
}

/// Rewrites one project's file; returns the earliest expiry in it. Protected stages that are
/// locked are left out and named in `locked` (not a failure: the rest is kept fresh).
async fn refresh_one(
    state: &AppState,
    runtime_dir: &Path,
    project: &str,
    hashes: &mut HashMap<String, u64>,
    locked: &mut Vec<String>,
) -> Result<Option<OffsetDateTime>, String> {
    let file = env_file(runtime_dir, project);
    let config = state.config.get();
    let registered = state.registered.get();
    // No record yet: `env` is creating it (it makes the directory first); look next time.
    let Ok(record) = std::fs::read_to_string(dir_record(runtime_dir, project)) else {
        return Ok(None);
    };
    let dir = PathBuf::from(record.trim_end_matches('\n'));
    if !dir.is_dir() {
        // The project directory is gone: so is its file.
        let _ = std::fs::remove_dir_all(file.parent().unwrap_or(&file));
        hashes.remove(project);
        return Ok(None);
    }
    let Some(sls) = serverless_file(&dir) else {
        return Err(format!("no serverless service file in {}", dir.display()));
    };
    let env = |k: &str| state.env.get(k);
    let sel = Selection::default();
    let stages = known_stages(project, &dir, &config, &sel, &env);
    let list = entries(
        &sls,
        &sel,
        &stages,
        // Untrusted project-file mappings get no stand-in (see `trust`).
        &|s| {
            state
                .trust
                .trusted_profile_for_stage(&dir, project, s, &config, &registered, &env)
        },
        &env,
        false,
        "a later command",
    )
    .map_err(|e| e.to_string())?;
    let mut with_creds = Vec::new();
    let mut earliest: Option<OffsetDateTime> = None;
    let mut failed = Vec::new();
    for e in list {
        // A protected stage's session is written only while it is unlocked (the guard
        // pokes the keeper when a window opens or closes).
        if let Err(refused) = state
            .guard
            .admit_scope(&config, &registered, project, &e.stage)
        {
            locked.push(refused.to_string());
            continue;
        }
        let policy =
            match policy_for_stage(&dir, project, &e.stage, &sel, &config, &registered, &env) {
                Ok(p) => p,
                Err(err) => {
                    failed.push(format!("stage {}: {err}", e.stage));
                    continue;
                }
            };
        match state
            .resolver
            .resolve_scoped(
                &e.profile,
                project,
                &e.stage,
                policy.as_ref(),
                state.refresh_margin(),
            )
            .await
        {
            Ok(c) if c.session_token.is_some() => {
                if let Some(x) = c.expiration {
                    earliest = Some(earliest.map_or(x, |m: OffsetDateTime| m.min(x)));
                }
                with_creds.push((e, crate::credentials::Credentials::clone(&c)));
            }
            Ok(_) => failed.push(format!("stage {}: no session token", e.stage)),
            Err(err) => failed.push(format!("stage {}: {err}", e.stage)),
        }
    }
    let text = render(project, &with_creds);
    let hash = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        h.finish()
    };
    if hashes.get(project) != Some(&hash) || !file.exists() {
        crate::fsutil::write_private(&file, text.as_bytes()).map_err(|e| e.to_string())?;
        hashes.insert(project.to_string(), hash);
        tracing::info!(
            project,
            stages = with_creds.len(),
            "stand-in profiles written"
        );
    }
    if failed.is_empty() {
        Ok(earliest)
    } else {
        Err(failed.join("; "))
    }
}
