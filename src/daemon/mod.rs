//! Assembling a running daemon: stores, watchers, the token key, listeners and the state
//! file that lets other commands find it.
//!
//! [`Daemon::start`] builds everything from [`Paths`]; the watchers live inside the
//! returned value and stop when it is dropped. [`DaemonInfo`] is what `serve` writes to
//! `<runtime dir>/daemon.json` (0600) and what `status`, `env` and `exec` read.

pub mod activation;
pub mod control;
pub mod follow;
pub mod info;
pub mod instance;
pub mod keeper;
pub mod protocol;
pub mod readiness;
pub mod status;

pub use info::{DaemonInfo, base_url};
pub use status::{FileReport, IssuedReport, ScopeReport, StatusReport, TokenKeyReport};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::ConfigStore;
use crate::paths::Paths;
use crate::profiles::store::ProfileStore;
use crate::server::{AppState, Parts, allowed_hosts};
use crate::sources::Resolver;
use crate::sources::cache::Sessions;
use crate::sources::http::HttpConfig;
use crate::sources::sso::SsoClient;
use crate::sources::sts::StsClient;
use crate::tokens::TokenKey;
use crate::watch::{FileWatcher, WatchError, WatchGroup};

/// Errors starting the daemon.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address is not loopback and was not allowed.
    #[error(
        "refusing to listen on {0}: not a loopback address (pass --allow-non-loopback for a container network)"
    )]
    NonLoopback(SocketAddr),
    /// Binding failed.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why, with what to do about it.
        reason: String,
    },
    /// A listener passed by the service manager has no local address.
    #[error("cannot use a socket passed by the service manager: {0}")]
    Adopted(std::io::Error),
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

/// A bind failure in words a person can act on (the OS message once, plus a hint).
fn bind_error(addr: SocketAddr, e: &std::io::Error) -> StartError {
    let reason = match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "the address is already in use (is credport already running? `credport status`; or pick another with --listen {}:PORT)",
            addr.ip()
        ),
        std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => format!(
            "permission denied: port {} needs root or CAP_NET_BIND_SERVICE (or `sysctl net.ipv4.ip_unprivileged_port_start={}`)",
            addr.port(),
            addr.port()
        ),
        std::io::ErrorKind::AddrNotAvailable => "no network interface has this address".to_string(),
        _ => e.to_string(),
    };
    StartError::Bind { addr, reason }
}

/// How often a missing non-loopback address is probed again.
const ADDRESS_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Binds `addr`. A non-loopback address that no interface has yet (a container bridge
/// that `docker compose up` creates later) is waited for: logged once, then bound as soon
/// as it appears. Loopback addresses never wait.
async fn bind_when_present(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let mut logged = false;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => {
                if logged {
                    tracing::info!(%addr, "the address appeared; listening");
                }
                return Ok(l);
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrNotAvailable && !addr.ip().is_loopback() =>
            {
                if !logged {
                    tracing::warn!(
                        %addr,
                        "no network interface has this address yet; waiting for it (e.g. for `docker compose up` to create the bridge)"
                    );
                    logged = true;
                }
                tokio::time::sleep(ADDRESS_POLL).await;
            }
            Err(e) => return Err(bind_error(addr, &e)),
        }
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
        Self::start_with_poll(
            paths,
            listen,
            Vec::new(),
            allow_non_loopback,
            fixed_config,
            None,
        )
        .await
    }

    /// Like [`start_with`](Self::start_with); with `poll`, watches the files by polling at
    /// that interval instead of by kernel events (for mounts that deliver none). `adopted`
    /// are listeners already bound (socket activation, from
    /// [`crate::daemon::activation::activated_listeners`]): they are served first, as
    /// they are, before the newly bound `listen` addresses.
    pub async fn start_with_poll(
        paths: &Paths,
        listen: &[SocketAddr],
        adopted: Vec<std::net::TcpListener>,
        allow_non_loopback: bool,
        fixed_config: Option<crate::config::Config>,
        poll: Option<std::time::Duration>,
    ) -> Result<Daemon, StartError> {
        let adopted = adopted
            .into_iter()
            .map(|l| Ok((l.local_addr()?, l)))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(StartError::Adopted)?;
        for a in adopted.iter().map(|(a, _)| a).chain(listen) {
            if !a.ip().is_loopback() && !allow_non_loopback {
                return Err(StartError::NonLoopback(*a));
            }
        }
        let profiles = Arc::new(ProfileStore::open(paths.aws.clone()));
        for f in profiles.status() {
            if f.state == crate::fsutil::FileState::Missing {
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
        let trust = Arc::new(match &fixed_config {
            Some(_) => crate::trust::TrustStore::empty(),
            None => crate::trust::TrustStore::open(crate::trust::records_file(&paths.state_dir)),
        });
        let key = TokenKey::load_or_create(&paths.token_key())?;

        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for (a, l) in adopted {
            listeners.push(TcpListener::from_std(l).map_err(|e| bind_error(a, &e))?);
            addrs.push(a);
        }
        for a in listen {
            let l = bind_when_present(*a).await?;
            addrs.push(l.local_addr().map_err(|e| bind_error(*a, &e))?);
            listeners.push(l);
        }
        let http = HttpConfig::default();
        // The environment is read once, here; requests read this snapshot.
        let env = crate::env::Snapshot::of_process();
        let sessions = Sessions::new(
            StsClient::new(http.clone()).map_err(|e| StartError::Client(e.to_string()))?,
            SsoClient::new(http).map_err(|e| StartError::Client(e.to_string()))?,
            env.clone(),
        );
        let sessions_for_config = sessions.clone();
        let state = AppState::new(Parts {
            resolver: Resolver::new(profiles.clone(), sessions, paths.home.clone(), env.clone()),
            profiles: profiles.clone(),
            allowed_hosts: allowed_hosts(&addrs, &config.get().server.allow_hosts),
            config: config.clone(),
            registered: registered.clone(),
            trust: trust.clone(),
            tokens: key,
            instance: crate::daemon::instance::new_instance_id(),
            env: env.clone(),
        });

        let p = profiles.clone();
        let weak = Arc::downgrade(&state);
        let mut groups = vec![WatchGroup::new(
            vec![paths.aws.credentials.clone(), paths.aws.config.clone()],
            move |probe| {
                let mark = probe.mark();
                if p.reload_unless(&|| !probe.quiet_since(mark))
                    && let Some(s) = weak.upgrade()
                {
                    s.reloaded();
                }
            },
        )];
        sessions_for_config.set_process_timeout(config.get().server.process_timeout());
        if fixed_config.is_none() {
            let c = config.clone();
            let weak = Arc::downgrade(&state);
            groups.push(WatchGroup::new(vec![paths.config.clone()], move |_| {
                if c.reload() {
                    sessions_for_config.set_process_timeout(c.get().server.process_timeout());
                    if let Some(s) = weak.upgrade() {
                        s.reloaded();
                    }
                }
            }));
            let r = registered.clone();
            let weak = Arc::downgrade(&state);
            groups.push(WatchGroup::new(
                vec![paths.registered_projects()],
                move |_| {
                    if r.reload()
                        && let Some(s) = weak.upgrade()
                    {
                        s.reloaded();
                    }
                },
            ));
            let (t, weak) = (trust.clone(), Arc::downgrade(&state));
            groups.push(WatchGroup::new(vec![t.file().to_path_buf()], move |_| {
                // A deny must also take the stage out of `env`'s stand-in files.
                if t.reload()
                    && let Some(s) = weak.upgrade()
                {
                    s.reloaded();
                }
            }));
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
        let _ = self.state.trust.reload();
    }
}

/// The daemon's status as JSON: listeners, watched files, every scope (declared and
/// registered projects, each stage) with its profile, source kind, cached session expiry,
/// last issuance and the error a request would get now, the token key's rotation grace,
/// and fetch counters. No secrets. The shape is documented in README ("credport status").
pub fn status_report(state: &AppState, addrs: &[SocketAddr]) -> StatusReport {
    use std::sync::atomic::Ordering;
    let config = state.config.get();
    let registered = state.registered.get();
    let snap = state.profiles.snapshot();
    let file_status = state.profiles.status();
    let broken: Vec<String> = file_status
        .iter()
        .filter_map(|f| match &f.state {
            crate::fsutil::FileState::Error { line, .. } => Some(format!(
                "{} line {} is broken (serving its last good version)",
                f.path.display(),
                line.unwrap_or(0)
            )),
            _ => None,
        })
        .collect();
    let mut files: Vec<FileReport> = file_status
        .into_iter()
        .map(|f| FileReport {
            kind: serde_json::to_value(f.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            path: f.path,
            state: f.state,
            reloaded_at: f.reloaded_at.map(crate::credentials::format_expiration),
        })
        .collect();
    files.push(FileReport {
        kind: "credport-config".into(),
        path: state.config.path().to_path_buf(),
        state: state.config.state(),
        reloaded_at: None,
    });
    let issued = state.metrics.last_issued();
    let issued_scopes: Vec<(String, String)> = issued.keys().cloned().collect();
    let env = |k: &str| state.env.get(k);
    let mut scopes = Vec::new();
    for sc in crate::inventory::scopes(&config, &registered, &issued_scopes, &env) {
        let mut entry = ScopeReport {
            project: sc.project.clone(),
            stage: sc.stage.clone(),
            origin: sc.origin.to_string(),
            default: sc.default,
            profile: None,
            rule: None,
            kind: None,
            source: None,
            expires: None,
            last_error: None,
            error: None,
            guard: state
                .guard
                .describe(&config, &registered, &sc.project, &sc.stage),
            last_issued: issued
                .get(&(sc.project.clone(), sc.stage.clone()))
                .map(|i| IssuedReport {
                    at: crate::credentials::format_expiration(i.at),
                    user_agent: i.user_agent.clone(),
                    process: i.client.as_deref().map(crate::peer::Client::summary),
                    client: i.client.as_deref().cloned(),
                    count: i.count,
                }),
        };
        let b = match sc.binding {
            Ok(b) => b,
            Err(e) => {
                entry.error = Some(e);
                scopes.push(entry);
                continue;
            }
        };
        entry.profile = Some(b.profile.clone());
        entry.rule = Some(b.rule.clone());
        let profile = &b.profile;
        match snap.profile(profile) {
            None => {
                let mut e = format!("profile '{profile}' is not in the AWS files");
                if !broken.is_empty() {
                    e.push_str(&format!(" ({})", broken.join("; ")));
                }
                entry.error = Some(e);
            }
            Some(pr) => {
                entry.kind = serde_json::to_value(pr.kind())
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string));
                match state
                    .resolver
                    .plan_scoped(profile, &b.project, &b.stage, b.policy.as_ref())
                {
                    Ok(plan) => {
                        entry.source = Some(plan.describe());
                        if plan.is_cached() {
                            let info = state.resolver.sessions().info(&plan);
                            entry.expires = info.expires;
                            entry.last_error = info.last_error;
                        } else if let Ok(Some(e)) = pr.written_expiry() {
                            entry.expires = Some(crate::credentials::format_expiration(e));
                        }
                    }
                    Err(e) => entry.error = Some(e.to_string()),
                }
            }
        }
        if let Some(e) = state.trust.refusal(&config.trust, &b) {
            entry.error = Some(format!("403 Untrusted: {e}"));
        }
        scopes.push(entry);
    }
    let grace = state
        .tokens
        .load_full()
        .and_then(|k| k.grace_until())
        .and_then(|u| time::OffsetDateTime::from_unix_timestamp(u).ok())
        .map(crate::credentials::format_expiration);
    let stats = &state.resolver.sessions().stats;
    StatusReport {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        instance: state.instance.clone(),
        listen: addrs.iter().map(|a| base_url(*a)).collect(),
        files,
        profiles: snap.profiles.len(),
        generation: snap.generation,
        scopes,
        token_key: TokenKeyReport {
            previous_valid_until: grace,
        },
        fetches: stats.fetches.load(Ordering::Relaxed),
        fetch_errors: stats.fetch_errors.load(Ordering::Relaxed),
        unlocks: state.guard.unlocks(),
    }
}
