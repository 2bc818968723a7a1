//! Assembling a running daemon: stores, watchers, the token key, listeners and the state
//! file that lets other commands find it.
//!
//! [`Daemon::start`] builds everything from [`Paths`]; the watchers live inside the
//! returned value and stop when it is dropped. [`DaemonInfo`] is what `serve` writes to
//! `<runtime dir>/daemon.json` (0600) and what `status`, `env` and `exec` read.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::net::TcpListener;

use crate::config::ConfigStore;
use crate::fsutil;
use crate::paths::Paths;
use crate::profiles::store::ProfileStore;
use crate::profiles::watch::{FileWatcher, WatchError, WatchGroup};
use crate::server::{AppState, allowed_hosts};
use crate::sources::Resolver;
use crate::sources::cache::Sessions;
use crate::sources::http::HttpConfig;
use crate::sources::sso::SsoClient;
use crate::sources::sts::StsClient;
use crate::tokens::TokenKey;

/// Errors starting the daemon.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address is not loopback and was not allowed.
    #[error(
        "refusing to listen on {0}: not a loopback address (pass --allow-non-loopback for a container network)"
    )]
    NonLoopback(SocketAddr),
    /// Binding failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The token key could not be loaded or created.
    #[error(transparent)]
    Tokens(#[from] crate::tokens::TokenError),
    /// The HTTP client for STS and SSO could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// Watching files failed.
    #[error(transparent)]
    Watch(#[from] WatchError),
}

/// What a running daemon publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DaemonInfo {
    /// Base URL of the first listener, e.g. `http://127.0.0.1:9911`.
    pub url: String,
    /// Every listen address.
    pub listen: Vec<SocketAddr>,
    /// The daemon's process id.
    pub pid: u32,
}

impl DaemonInfo {
    /// Reads `daemon.json`; `None` when absent or unreadable.
    pub fn read(path: &Path) -> Option<Self> {
        let text = fsutil::read_text(path).ok()??;
        serde_json::from_str(&text).ok()
    }
}

/// The URL form of a socket address (`http://127.0.0.1:9911`, `http://[::1]:9911`,
/// `http://169.254.170.2` for port 80).
pub fn base_url(addr: SocketAddr) -> String {
    let host = match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    if addr.port() == 80 {
        format!("http://{host}")
    } else {
        format!("http://{host}:{}", addr.port())
    }
}

/// A started daemon: shared state plus the watchers that keep it current.
pub struct Daemon {
    /// The state the server reads.
    pub state: Arc<AppState>,
    /// Bound listeners, ready for [`crate::server::serve`].
    pub listeners: Vec<TcpListener>,
    /// The addresses actually bound (port 0 resolved).
    pub addrs: Vec<SocketAddr>,
    _watchers: Vec<FileWatcher>,
}

impl Daemon {
    /// Loads everything under `paths`, binds `listen`, and starts watching.
    pub async fn start(
        paths: &Paths,
        listen: &[SocketAddr],
        allow_non_loopback: bool,
    ) -> Result<Daemon, StartError> {
        Self::start_with(paths, listen, allow_non_loopback, None).await
    }

    /// Like [`start`](Self::start); with `fixed_config`, serves that config instead of the
    /// config file and registered projects (an embedded server for one scope).
    pub async fn start_with(
        paths: &Paths,
        listen: &[SocketAddr],
        allow_non_loopback: bool,
        fixed_config: Option<crate::config::Config>,
    ) -> Result<Daemon, StartError> {
        Self::start_with_poll(paths, listen, allow_non_loopback, fixed_config, None).await
    }

    /// Like [`start_with`](Self::start_with); with `poll`, watches the files by polling at
    /// that interval instead of by kernel events (for mounts that deliver none).
    pub async fn start_with_poll(
        paths: &Paths,
        listen: &[SocketAddr],
        allow_non_loopback: bool,
        fixed_config: Option<crate::config::Config>,
        poll: Option<std::time::Duration>,
    ) -> Result<Daemon, StartError> {
        for a in listen {
            if !a.ip().is_loopback() && !allow_non_loopback {
                return Err(StartError::NonLoopback(*a));
            }
        }
        let profiles = Arc::new(ProfileStore::open(paths.aws.clone()));
        for f in profiles.status() {
            if f.state == crate::profiles::store::FileState::Missing {
                tracing::info!(file = %f.path.display(), "not found yet; it will be loaded when it appears");
            }
        }
        let (config, registered) = match &fixed_config {
            Some(c) => (
                Arc::new(ConfigStore::fixed(c.clone())),
                Arc::new(ConfigStore::fixed(Default::default())),
            ),
            None => (
                Arc::new(ConfigStore::open(paths.config.clone())),
                Arc::new(ConfigStore::open(paths.registered_projects())),
            ),
        };
        let key = TokenKey::load_or_create(&paths.token_key())?;

        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for a in listen {
            // An adopted (socket-activated) listener for this address, else a new bind.
            let l = crate::service::bind(*a)
                .await
                .map_err(|source| StartError::Bind { addr: *a, source })?;
            addrs.push(
                l.local_addr()
                    .map_err(|source| StartError::Bind { addr: *a, source })?,
            );
            listeners.push(l);
        }
        let http = HttpConfig::default();
        let sessions = Sessions::new(
            StsClient::new(http.clone()).map_err(|e| StartError::Client(e.to_string()))?,
            SsoClient::new(http).map_err(|e| StartError::Client(e.to_string()))?,
        );
        let sessions_for_config = sessions.clone();
        let state = Arc::new(AppState {
            resolver: Resolver::new(profiles.clone(), sessions, paths.home.clone()),
            profiles: profiles.clone(),
            allowed_hosts: allowed_hosts(&addrs, &config.get().server.allow_hosts),
            config: config.clone(),
            registered: registered.clone(),
            tokens: ArcSwapOption::from_pointee(key),
            metrics: Default::default(),
        });

        let p = profiles.clone();
        let mut groups = vec![WatchGroup::new(
            vec![paths.aws.credentials.clone(), paths.aws.config.clone()],
            move |probe| {
                let mark = probe.mark();
                p.reload_unless(&|| !probe.quiet_since(mark));
            },
        )];
        sessions_for_config.set_process_timeout(config.get().server.process_timeout());
        if fixed_config.is_none() {
            let c = config.clone();
            groups.push(WatchGroup::new(vec![paths.config.clone()], move |_| {
                if c.reload() {
                    sessions_for_config.set_process_timeout(c.get().server.process_timeout());
                }
            }));
            let r = registered.clone();
            groups.push(WatchGroup::new(
                vec![paths.registered_projects()],
                move |_| {
                    r.reload();
                },
            ));
            let s = state.clone();
            let key_path = paths.token_key();
            groups.push(WatchGroup::new(vec![key_path.clone()], move |_| {
                match TokenKey::load(&key_path) {
                    Ok(Some(k)) => {
                        s.tokens.store(Some(Arc::new(k)));
                        tracing::info!("token key reloaded");
                    }
                    Ok(None) => tracing::warn!(file = %key_path.display(), "token key removed; keeping the current one"),
                    Err(e) => tracing::warn!(error = %e, "token key reload failed; keeping the current one"),
                }
            }));
        }
        let watchers = vec![match poll {
            Some(interval) => {
                tracing::info!(
                    interval_ms = interval.as_millis() as u64,
                    "watching files by polling"
                );
                FileWatcher::spawn_polling(groups, interval)?
            }
            None => FileWatcher::spawn_groups(groups)?,
        }];
        Ok(Daemon {
            state,
            listeners,
            addrs,
            _watchers: watchers,
        })
    }

    /// Reloads every file now (SIGHUP).
    pub fn reload_all(&self) {
        self.state.profiles.reload();
        self.state.config.reload();
        self.state.registered.reload();
    }
}

/// The daemon's status as JSON: listeners, watched files, every project's stages with
/// their profile, source and cached session expiry, and fetch counters. No secrets.
pub fn status_json(state: &AppState, addrs: &[SocketAddr]) -> serde_json::Value {
    use std::sync::atomic::Ordering;
    let config = state.config.get();
    let snap = state.profiles.snapshot();
    let mut files: Vec<serde_json::Value> = state
        .profiles
        .status()
        .into_iter()
        .map(|f| serde_json::to_value(f).unwrap_or_default())
        .collect();
    let mut cfg = serde_json::to_value(state.config.state()).unwrap_or_default();
    cfg["kind"] = "credport-config".into();
    cfg["path"] = state.config.path().display().to_string().into();
    files.push(cfg);
    let mut scopes = Vec::new();
    for (project, p) in &config.projects {
        for (stage, profile) in &p.stages {
            let mut entry = serde_json::json!({
                "project": project,
                "stage": stage,
                "profile": profile,
                "default": p.default_stage.as_deref() == Some(stage.as_str()),
            });
            match snap.profile(profile) {
                None => {
                    entry["error"] = format!("profile '{profile}' is not in the AWS files").into()
                }
                Some(pr) => {
                    entry["kind"] = serde_json::to_value(pr.kind()).unwrap_or_default();
                    match state.resolver.plan(profile, project, stage) {
                        Ok(plan) => {
                            entry["source"] = plan.describe().into();
                            if plan.is_cached() {
                                let info = state.resolver.sessions().info(&plan);
                                entry["expires"] = info.expires.into();
                                if let Some(e) = info.last_error {
                                    entry["last_error"] = e.into();
                                }
                            } else if let Ok(Some(e)) = pr.written_expiry() {
                                entry["expires"] = crate::credentials::format_expiration(e).into();
                            }
                        }
                        Err(e) => entry["error"] = e.to_string().into(),
                    }
                }
            }
            scopes.push(entry);
        }
    }
    let stats = &state.resolver.sessions().stats;
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "listen": addrs.iter().map(|a| base_url(*a)).collect::<Vec<_>>(),
        "files": files,
        "profiles": snap.profiles.len(),
        "generation": snap.generation,
        "scopes": scopes,
        "fetches": stats.fetches.load(Ordering::Relaxed),
        "fetch_errors": stats.fetch_errors.load(Ordering::Relaxed),
    })
}
