//! What every request shares ([`AppState`]): the live stores, the token key, the resolver,
//! the per-scope cache, metrics, journal and guard; the served-lifetime policy's two
//! numbers; and the `Host` values a listener accepts.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use time::OffsetDateTime;

use crate::config::ConfigStore;
use crate::profiles::store::ProfileStore;
use crate::sources::Resolver;
use crate::tokens::TokenKey;

/// Everything a request handler needs.
pub struct AppState {
    /// The live profile store.
    pub profiles: Arc<ProfileStore>,
    /// The live credport config.
    pub config: Arc<ConfigStore>,
    /// Projects registered by directory (`<state dir>/projects.toml`).
    pub registered: Arc<ConfigStore>,
    /// The trusted project-file mappings (`<state dir>/trust.toml`), kept in memory.
    pub trust: Arc<crate::trust::TrustStore>,
    /// The token key (replaced when rotated; `None` if it could not be loaded).
    pub tokens: ArcSwapOption<TokenKey>,
    /// Profile name to credentials.
    pub resolver: Resolver,
    /// Lowercased `Host` header values accepted.
    pub allowed_hosts: HashSet<String>,
    /// Request metrics, and each scope's last issuance.
    pub metrics: crate::metrics::Metrics,
    /// The audit journal `credport log` reads (issuances, refusals, unlocks, trust).
    pub journal: crate::journal::Journal,
    /// This daemon's random instance id, echoed by `/healthz` and written to
    /// `daemon.json`, so clients can tell it from whatever else answers on the port.
    pub instance: String,
    /// The daemon's environment, taken once at start (for `${env:...}` in project files and
    /// `credential_source = Environment`): the request path never reads `std::env`.
    pub env: crate::env::Snapshot,
    /// Per scope: the binding, plan and rendered answer, kept until a file behind them
    /// changes.
    pub scopes: super::scopes::Scopes,
    /// Called after every reload of a file the daemon serves from (set by `serve`, to keep
    /// `env`'s stand-in files fresh; unset in an embedded server).
    pub on_reload: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Where the issuance audit line is written directly, without `tracing`'s formatter,
    /// when the daemon logs plain text (set once by `serve`; unset, the line is a
    /// `tracing` event like every other, as JSON logs need).
    pub audit_text: std::sync::OnceLock<crate::logline::LineSink>,
    /// Protected stages' unlock windows (see `guard`).
    pub guard: Arc<crate::guard::Guard>,
}

/// What an [`AppState`] is made from; everything else (metrics, the per-scope cache, the
/// journal, the unlock windows, the reload hook) starts empty.
pub struct Parts {
    /// The live profile store.
    pub profiles: Arc<ProfileStore>,
    /// The live credport config.
    pub config: Arc<ConfigStore>,
    /// Projects registered by directory.
    pub registered: Arc<ConfigStore>,
    /// The trusted project-file mappings.
    pub trust: Arc<crate::trust::TrustStore>,
    /// The token key.
    pub tokens: TokenKey,
    /// Profile name to credentials.
    pub resolver: Resolver,
    /// Lowercased `Host` header values accepted (see [`allowed_hosts`]).
    pub allowed_hosts: HashSet<String>,
    /// The environment taken once at start.
    pub env: crate::env::Snapshot,
    /// The instance id `/healthz` answers.
    pub instance: String,
}

impl AppState {
    /// The state for `parts`, with unlocks, locks and trust decisions going into the audit
    /// journal, and a window that opens or closes counting as a reload (it changes what
    /// `env`'s stand-in files may hold).
    pub fn new(parts: Parts) -> Arc<Self> {
        let Parts {
            profiles,
            config,
            registered,
            trust,
            tokens,
            resolver,
            allowed_hosts,
            env,
            instance,
        } = parts;
        let state = Arc::new(AppState {
            profiles,
            config,
            registered,
            trust,
            tokens: ArcSwapOption::from_pointee(tokens),
            resolver,
            allowed_hosts,
            metrics: Default::default(),
            journal: Default::default(),
            instance,
            env,
            scopes: Default::default(),
            on_reload: Default::default(),
            audit_text: Default::default(),
            guard: Default::default(),
        });
        let weak = Arc::downgrade(&state);
        state.guard.on_event(move |e| {
            if let Some(s) = weak.upgrade() {
                s.journal.record(e);
            }
        });
        let weak = Arc::downgrade(&state);
        state.trust.on_event(move |e| {
            if let Some(s) = weak.upgrade() {
                s.journal.record(e);
            }
        });
        let weak = Arc::downgrade(&state);
        state.guard.on_change(move || {
            if let Some(s) = weak.upgrade() {
                s.reloaded();
            }
        });
        state
    }
}

impl AppState {
    /// Tells whoever registered [`on_reload`](Self::on_reload) that a file was reloaded.
    pub fn reloaded(&self) {
        if let Some(f) = self.on_reload.get() {
            f();
        }
    }
}

impl AppState {
    /// The `Expiration` to serve for credentials that truly expire at `expiry`.
    pub fn served_expiration(
        &self,
        expiry: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> OffsetDateTime {
        let lifetime = self.config.get().server.served_lifetime();
        let cap = now + Duration::from_secs(lifetime);
        match expiry {
            Some(e) if e < cap => e,
            _ => cap,
        }
    }
}

impl AppState {
    /// How early cached sessions are refreshed: the served lifetime plus five minutes, so a
    /// served session always has the full served lifetime left.
    pub fn refresh_margin(&self) -> Duration {
        Duration::from_secs(self.config.get().server.served_lifetime() + 300)
    }
}

/// The `Host` header values a daemon listening on `addrs` accepts: `ip:port` for each, the
/// bare ip where the port is 80, `localhost:port` for loopback listeners,
/// `host.docker.internal:port` for each (the name a relay in a container forwards to, see
/// [`crate::relay`]; a token is still required, and a browser cannot attach one), plus
/// `extra`.
pub fn allowed_hosts(addrs: &[SocketAddr], extra: &[String]) -> HashSet<String> {
    let mut set = HashSet::new();
    for a in addrs {
        let ip = match a {
            SocketAddr::V4(v4) => v4.ip().to_string(),
            SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        };
        set.insert(format!("{ip}:{}", a.port()));
        if a.port() == 80 {
            set.insert(ip.clone());
        }
        if a.ip().is_loopback() {
            set.insert(format!("localhost:{}", a.port()));
        }
        set.insert(format!("{RELAY_HOST}:{}", a.port()));
    }
    set.extend(extra.iter().map(|h| h.to_ascii_lowercase()));
    set
}

/// The name a relay container reaches the host's daemon by (Docker Desktop provides it;
/// Linux engines map it with `--add-host host.docker.internal:host-gateway`).
pub const RELAY_HOST: &str = "host.docker.internal";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_for_listeners() {
        let h = allowed_hosts(
            &[
                "127.0.0.1:9911".parse().unwrap(),
                "169.254.170.2:80".parse().unwrap(),
                "[::1]:5".parse().unwrap(),
            ],
            &["Relay.local:1".into()],
        );
        for ok in [
            "127.0.0.1:9911",
            "localhost:9911",
            "169.254.170.2",
            "169.254.170.2:80",
            "[::1]:5",
            "relay.local:1",
            "host.docker.internal:9911",
            "host.docker.internal:80",
        ] {
            assert!(h.contains(ok), "{ok}");
        }
        assert!(!h.contains("127.0.0.1"));
        assert!(!h.contains("evil.com:9911"));
        assert!(!h.contains("host.docker.internal"));
        assert!(!h.contains("host.docker.internal:9912"));
    }
}
