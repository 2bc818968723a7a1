//! The credentials endpoint: shared state, the lifetime policy, and the accept loop.
//!
//! [`serve`] takes already-bound listeners and a shutdown future (so tests bind
//! `127.0.0.1:0` and stop the server cleanly) and serves HTTP/1.1 with hard limits: a
//! bounded number of connections, a bounded header size, a deadline for reading request
//! headers (which also closes idle keep-alive connections), and a deadline per request.
//!
//! ## Served lifetime policy
//! The `Expiration` served is `min(true expiry, now + served_lifetime)`, with
//! `served_lifetime` 16 minutes by default (`[server] served_lifetime`). Clients cache what
//! they get until it nears expiry: botocore refreshes with under 15 minutes left, the JS
//! SDK with under 5, the Rust SDK shortly before expiry. So a running botocore process asks
//! again about once a minute and a JS one about every 11 minutes, and each then sees a
//! rewritten credentials file without a restart, while no SDK re-fetches on every call.
//! The true expiry is never exceeded.

pub mod error;
pub mod routes;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

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
    /// The token key (replaced when rotated; `None` if it could not be loaded).
    pub tokens: ArcSwapOption<TokenKey>,
    /// Profile name to credentials.
    pub resolver: Resolver,
    /// Lowercased `Host` header values accepted.
    pub allowed_hosts: HashSet<String>,
    /// Request metrics.
    pub metrics: crate::metrics::Metrics,
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
/// bare ip where the port is 80, `localhost:port` for loopback listeners, plus `extra`.
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
    }
    set.extend(extra.iter().map(|h| h.to_ascii_lowercase()));
    set
}

/// Connection and request limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most; further ones are closed at once.
    pub max_connections: usize,
    /// Largest request head (request line plus headers), in bytes (at least 8192).
    pub max_header_bytes: usize,
    /// Deadline to receive a request's headers, and how long an idle connection is kept.
    pub header_timeout: Duration,
    /// Deadline for a whole request.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `state` on `listeners` until `shutdown` completes, then lets in-flight requests
/// finish (up to the request timeout) and returns.
pub async fn serve(
    listeners: Vec<TcpListener>,
    state: Arc<AppState>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let router = routes::router(state).layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        limits.request_timeout,
    ));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::net::TcpStream, SocketAddr)>(64);
    let mut accept_tasks = Vec::new();
    for l in listeners {
        let tx = tx.clone();
        accept_tasks.push(tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok(conn) => {
                        if tx.send(conn).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    drop(tx);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            conn = rx.recv() => {
                let Some((stream, peer)) = conn else { break };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "connection limit reached; closing connection");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(router.clone());
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_timeout)
                    .max_buf_size(limits.max_header_bytes.max(8192))
                    .keep_alive(true);
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = conn.await {
                        tracing::trace!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    for t in accept_tasks {
        t.abort();
    }
    let _ = tokio::time::timeout(limits.request_timeout, graceful.shutdown()).await;
}

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
        ] {
            assert!(h.contains(ok), "{ok}");
        }
        assert!(!h.contains("127.0.0.1"));
        assert!(!h.contains("evil.com:9911"));
    }
}
