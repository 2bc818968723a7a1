//! The CLI's side of the daemon: finding it, registering projects with it, asking it for
//! credentials, and, when none runs, an embedded server for one command's lifetime.

pub mod launch;
pub mod rundirs;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Config, ConfigStore, DEFAULT_LISTEN, ProjectConfig};
use crate::daemon::instance::Lookup;
use crate::daemon::{Daemon, base_url};
use crate::fsutil;
use crate::paths::Paths;
use crate::scope::Scope;
use crate::session_policy::SessionPolicy;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A file could not be written.
    #[error(transparent)]
    Fs(#[from] fsutil::FsError),
    /// The registered-projects file is not valid.
    #[error("{path}: {reason}")]
    Registry {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Starting the embedded server failed.
    #[error("embedded server: {0}")]
    Embedded(String),
    /// The daemon refused or failed.
    #[error("{0}")]
    Daemon(String),
    /// A stage's session policy cannot be read or is not valid.
    #[error("stage {stage}: {reason}")]
    Policy {
        /// The stage.
        stage: String,
        /// What is wrong, naming the policy's file.
        reason: String,
    },
}

/// Finds the daemon and checks that it answers as itself (see [`crate::daemon::instance::find`]):
/// `CREDPORT_URL` when set, else `daemon.json` verified against `/healthz`'s instance id.
pub fn find_daemon(paths: &Paths, env: &dyn crate::env::Env) -> Lookup {
    crate::daemon::instance::find(&paths.runtime_dir, env("CREDPORT_URL").as_deref())
}

/// Why a lookup found no daemon, in words for a warning; `None` when none was expected
/// (no state file, no `CREDPORT_URL`).
fn lookup_problem(lookup: &Lookup) -> Option<String> {
    match lookup {
        Lookup::Running { .. } | Lookup::NotRunning => None,
        Lookup::Stale { reason, removed } => Some(format!(
            "{reason}{}",
            if *removed {
                " (stale state file removed)"
            } else {
                ""
            }
        )),
        Lookup::Unreachable { url, reason } => Some(format!(
            "CREDPORT_URL={url} does not answer as credport: {reason}"
        )),
    }
}

/// The URL of a running daemon that answered as itself: `CREDPORT_URL`, else the one in
/// `daemon.json`; `None` when no daemon runs (a stale state file is warned about and
/// removed).
pub fn running_daemon(paths: &Paths, env: &dyn crate::env::Env) -> Option<String> {
    let lookup = find_daemon(paths, env);
    if let Some(p) = lookup_problem(&lookup) {
        tracing::warn!("{p}");
    }
    match lookup {
        Lookup::Running { url } => Some(url),
        _ => None,
    }
}

/// [`running_daemon`] for `exec`: when the state file or `CREDPORT_URL` names a daemon
/// that does not answer, says that the command gets an embedded server instead.
pub fn daemon_for_exec(paths: &Paths, env: &dyn crate::env::Env) -> Option<String> {
    let lookup = find_daemon(paths, env);
    if let Some(p) = lookup_problem(&lookup) {
        tracing::warn!("{p}; using an embedded server for this command");
    }
    match lookup {
        Lookup::Running { url } => Some(url),
        _ => None,
    }
}

/// The URL clients should keep using across daemon restarts: `CREDPORT_URL`, else a
/// running daemon's, else the configured listen address (default `127.0.0.1:9911`).
/// Warns when nothing answers there (a socket-activated address that starts the daemon
/// on connection counts as answering), since the printed URL works only once one does.
pub fn stable_url(paths: &Paths, config: &Config, env: &dyn crate::env::Env) -> String {
    let lookup = find_daemon(paths, env);
    if let Lookup::Running { url } = lookup {
        return url;
    }
    let url = match env("CREDPORT_URL").filter(|u| !u.is_empty()) {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let addr: SocketAddr = config
                .server
                .listen
                .first()
                .copied()
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default address"));
            base_url(addr)
        }
    };
    let problem = lookup_problem(&lookup);
    if problem.is_some() || crate::daemon::instance::healthz(&url).is_err() {
        let why = problem.map(|p| format!(" ({p})")).unwrap_or_default();
        tracing::warn!(
            "no credport daemon answers at {url}{why}; these settings work once one runs there: start it with `credport serve` or `credport service install`"
        );
    }
    url
}

/// The credentials URL of a scope under `base`.
pub fn credentials_url(base: &str, project: &str, stage: &str) -> String {
    format!("{base}/v1/credentials/{project}/{stage}")
}

/// Loads the registered-projects table (missing file: empty).
pub fn registered(paths: &Paths) -> Config {
    ConfigStore::open(paths.registered_projects())
        .get()
        .as_ref()
        .clone()
}

/// Records that `project` lives in `dir`, so the daemon can resolve its stages. Does
/// nothing when it is already registered there or declared in `config`.
pub fn register(
    paths: &Paths,
    config: &Config,
    project: &str,
    dir: &Path,
) -> Result<bool, ClientError> {
    if config.projects.contains_key(project) {
        return Ok(false);
    }
    let file = paths.registered_projects();
    let mut table = registry_file(&file)?;
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let old = table.projects.get(project).and_then(|p| p.path.clone());
    if old.as_deref() == Some(dir.as_path()) {
        return Ok(false);
    }
    if let Some(old) = old {
        tracing::warn!(project, old = %old.display(), new = %dir.display(), "project name registered for another directory; replacing it");
    }
    table.projects.insert(
        project.into(),
        ProjectConfig {
            path: Some(dir),
            ..ProjectConfig::default()
        },
    );
    write_registry_file(&file, &table)?;
    Ok(true)
}

/// The registered-projects file, read with the same type the daemon reads it with
/// (missing: empty).
fn registry_file(file: &Path) -> Result<Config, ClientError> {
    let text = fsutil::read_text(file)?.unwrap_or_default();
    crate::config::parse(&text).map_err(|e| ClientError::Registry {
        path: file.to_path_buf(),
        reason: e.to_string(),
    })
}

fn write_registry_file(file: &Path, table: &Config) -> Result<(), ClientError> {
    let text = toml::to_string(table).map_err(|e| ClientError::Registry {
        path: file.to_path_buf(),
        reason: e.to_string(),
    })?;
    fsutil::write_private(file, text.as_bytes())?;
    Ok(())
}

/// Removes a registered project. Returns whether it was there.
pub fn unregister(paths: &Paths, project: &str) -> Result<bool, ClientError> {
    let file = paths.registered_projects();
    let mut table = registry_file(&file)?;
    let removed = table.projects.remove(project).is_some();
    if removed {
        write_registry_file(&file, &table)?;
    }
    Ok(removed)
}

/// An in-process server for one scope, for `exec` when no daemon runs. Stops on drop.
pub struct Embedded {
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _daemon: Daemon,
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Embedded {
    /// The embedded server's unlock windows (`exec` opens its scope's for the run).
    pub fn guard(&self) -> &std::sync::Arc<crate::guard::Guard> {
        &self._daemon.state.guard
    }
}

/// Starts an embedded server on `127.0.0.1:0` that serves exactly `scope`, plus the
/// `other` stages of its project (stage, profile, session policy) that serverless's
/// stand-in profiles need; `protected` are the project's protected stages (see `guard`).
pub async fn embedded(
    paths: &Paths,
    scope: &Scope,
    other: &[(String, String, Option<Arc<SessionPolicy>>)],
    protected: Vec<String>,
) -> Result<Embedded, ClientError> {
    let mut config = Config::default();
    let mut stages = std::collections::BTreeMap::new();
    // Policies already read: inline, so the embedded server needs no file.
    let mut policies = std::collections::BTreeMap::new();
    for (stage, profile, policy) in other {
        stages.insert(stage.clone(), profile.clone());
        if let Some(p) = policy {
            policies.insert(stage.clone(), p.to_spec());
        }
    }
    stages.insert(scope.stage.clone(), scope.profile.clone());
    match &scope.policy {
        Some(p) => policies.insert(scope.stage.clone(), p.to_spec()),
        None => policies.remove(&scope.stage),
    };
    config.projects.insert(
        scope.project.clone(),
        ProjectConfig {
            default_stage: Some(scope.stage.clone()),
            stages,
            region: scope.region.clone(),
            path: None,
            policies,
            protected: Some(protected),
            ..ProjectConfig::default()
        },
    );
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
    let mut daemon = Daemon::start_with(paths, &[listen], false, Some(config))
        .await
        .map_err(|e| ClientError::Embedded(e.to_string()))?;
    let url = base_url(daemon.addrs[0]);
    let listeners = std::mem::take(&mut daemon.listeners);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(crate::server::serve(
        listeners,
        daemon.state.clone(),
        crate::server::Limits::default(),
        async {
            let _ = rx.await;
        },
    ));
    Ok(Embedded {
        url,
        stop: Some(tx),
        _daemon: daemon,
    })
}

/// Fetches a scope's credentials from `base` (used to hand serverless session keys).
pub async fn fetch_credentials(
    base: &str,
    project: &str,
    stage: &str,
    token: &str,
) -> Result<crate::credentials::Credentials, ClientError> {
    let client = crate::sources::http::client_builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| ClientError::Daemon(e.to_string()))?;
    let resp = client
        .get(credentials_url(base, project, stage))
        .header("Authorization", token)
        .send()
        .await
        .map_err(|e| ClientError::Daemon(format!("cannot reach credport at {base}: {e}")))?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| ClientError::Daemon(format!("bad answer from {base}: {e}")))?;
    if !status.is_success() {
        return Err(ClientError::Daemon(format!(
            "{}: {}",
            body["Code"].as_str().unwrap_or("error"),
            body["Message"].as_str().unwrap_or("")
        )));
    }
    let s = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    Ok(crate::credentials::Credentials {
        access_key_id: s("AccessKeyId"),
        secret_access_key: crate::credentials::Secret::new(s("SecretAccessKey")),
        session_token: Some(crate::credentials::Secret::new(s("Token"))),
        expiration: crate::credentials::parse_timestamp(&s("Expiration")),
        account_id: body["AccountId"].as_str().map(Into::into),
    })
}
