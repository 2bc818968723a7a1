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

pub mod audit;
pub mod error;
pub mod routes;
pub mod scopes;

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
    pub scopes: scopes::Scopes,
    /// Called after every reload of a file the daemon serves from (set by `serve`, to keep
    /// `env`'s stand-in files fresh; unset in an embedded server).
    pub on_reload: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Protected stages' unlock windows (see `guard`).
    pub guard: Arc<crate::guard::Guard>,
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
/// finish (up to the request timeout) and returns. At the connection limit, a new
/// connection closes the one idle the longest (never one with a request in flight).
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
    let table = Arc::new(ConnTable::default());
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
                let permit = match permits.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        // Full: make room by closing the connection idle the longest
                        // (never one with a request in flight), so idle or slow
                        // connections cannot lock clients out.
                        if !table.evict_idlest() {
                            tracing::warn!(%peer, "connection limit reached and every connection is busy; closing");
                            continue;
                        }
                        match tokio::time::timeout(Duration::from_millis(250), permits.clone().acquire_owned()).await {
                            Ok(Ok(p)) => p,
                            _ => {
                                tracing::warn!(%peer, "connection limit reached; closing connection");
                                continue;
                            }
                        }
                    }
                };
                let _ = stream.set_nodelay(true);
                // Who is at the other end: looked up once per connection, when it first asks.
                let ends = stream
                    .local_addr()
                    .ok()
                    .map(|local| crate::peer::Peer::new(crate::peer::Conn { peer, local }));
                let conn_state = Arc::new(ConnState::new(table.epoch));
                let (r, cs) = (router.clone(), conn_state.clone());
                let service = TowerToHyperService::new(tower::service_fn(
                    move |mut req: hyper::Request<hyper::body::Incoming>| {
                        let (r, cs) = (r.clone(), cs.clone());
                        if let Some(ends) = &ends {
                            req.extensions_mut().insert(ends.clone());
                        }
                        async move {
                            cs.begin();
                            let resp = tower::ServiceExt::oneshot(r, req).await;
                            cs.end();
                            resp
                        }
                    },
                ));
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_timeout)
                    .max_buf_size(limits.max_header_bytes.max(8192))
                    .keep_alive(true);
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                let id = table.next_id();
                let t = table.clone();
                let task = tokio::spawn(async move {
                    let _permit = permit;
                    let _entry = ConnGuard { table: t, id };
                    if let Err(e) = conn.await {
                        tracing::trace!(%peer, error = %e, "connection ended with an error");
                    }
                });
                table.insert(id, conn_state, task.abort_handle());
            }
        }
    }
    for t in accept_tasks {
        t.abort();
    }
    let _ = tokio::time::timeout(limits.request_timeout, graceful.shutdown()).await;
}

/// What the accept loop knows about one open connection.
struct ConnState {
    epoch: std::time::Instant,
    busy: std::sync::atomic::AtomicUsize,
    /// Milliseconds since `epoch` of the last request start or end (or the accept).
    last_active: std::sync::atomic::AtomicU64,
}

impl ConnState {
    fn new(epoch: std::time::Instant) -> Self {
        let s = ConnState {
            epoch,
            busy: Default::default(),
            last_active: Default::default(),
        };
        s.touch();
        s
    }
    fn touch(&self) {
        self.last_active.store(
            self.epoch.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    fn begin(&self) {
        self.busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.touch();
    }
    fn end(&self) {
        self.busy.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.touch();
    }
}

/// Open connections, so the idlest can be closed when the limit is reached.
struct ConnTable {
    epoch: std::time::Instant,
    next: std::sync::atomic::AtomicU64,
    conns: std::sync::Mutex<
        std::collections::HashMap<u64, (Arc<ConnState>, tokio::task::AbortHandle)>,
    >,
    /// Since the heap was last trimmed: the most connections open at once, and how many
    /// were opened (see [`TRIM_AFTER_PEAK`]).
    since_trim: std::sync::Mutex<(usize, u64)>,
}

/// When the last open connection closes, the freed heap is handed back to the system
/// ([`crate::memory::release_freed`]) if, since the last time, this many connections were
/// open at once (each left a read buffer and its state, about 20 KiB, in glibc's arenas)
/// or [`TRIM_AFTER_CONNECTIONS`] were opened. A client that opens one connection at a time
/// reuses the same freed memory, so it triggers a trim rarely; a burst triggers one when it
/// ends. No timer is involved: an idle daemon stays asleep.
const TRIM_AFTER_PEAK: usize = 8;
/// See [`TRIM_AFTER_PEAK`].
const TRIM_AFTER_CONNECTIONS: u64 = 1000;

impl Default for ConnTable {
    fn default() -> Self {
        ConnTable {
            epoch: std::time::Instant::now(),
            next: Default::default(),
            conns: Default::default(),
            since_trim: Default::default(),
        }
    }
}

impl ConnTable {
    fn next_id(&self) -> u64 {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
    fn insert(&self, id: u64, state: Arc<ConnState>, abort: tokio::task::AbortHandle) {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        // The task may have finished already (its guard found nothing to remove).
        if !abort.is_finished() {
            conns.insert(id, (state, abort));
        }
        let open = conns.len();
        drop(conns);
        let mut since = self.since_trim.lock().unwrap_or_else(|e| e.into_inner());
        since.0 = since.0.max(open);
        since.1 += 1;
    }
    fn remove(&self, id: u64) {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.remove(&id);
        if conns.is_empty() {
            drop(conns);
            self.trim_if_a_burst_ended();
        }
    }
    /// Called when no connection is open: trims the heap on a blocking thread if enough
    /// connections came and went since the last trim (see [`TRIM_AFTER_PEAK`]).
    fn trim_if_a_burst_ended(&self) {
        {
            let mut since = self.since_trim.lock().unwrap_or_else(|e| e.into_inner());
            if since.0 < TRIM_AFTER_PEAK && since.1 < TRIM_AFTER_CONNECTIONS {
                return;
            }
            *since = (0, 0);
        }
        // The connection's task is still being dropped (outside a runtime at shutdown:
        // nothing to do then).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            drop(rt.spawn_blocking(crate::memory::release_freed));
        }
    }
    /// Closes the connection idle the longest, if any is idle. Returns whether one was.
    fn evict_idlest(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let victim = conns
            .iter()
            .filter(|(_, (s, _))| s.busy.load(Relaxed) == 0)
            .min_by_key(|(_, (s, _))| s.last_active.load(Relaxed))
            .map(|(id, _)| *id);
        match victim.and_then(|id| conns.remove(&id)) {
            Some((_, abort)) => {
                abort.abort();
                true
            }
            None => false,
        }
    }
}

/// Removes a connection from the table when its task ends.
struct ConnGuard {
    table: Arc<ConnTable>,
    id: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.table.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_idlest_idle_connection_only() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let table = ConnTable::default();
            let mk = |last: u64, busy: usize| {
                let s = Arc::new(ConnState::new(table.epoch));
                s.last_active
                    .store(last, std::sync::atomic::Ordering::Relaxed);
                s.busy.store(busy, std::sync::atomic::Ordering::Relaxed);
                s
            };
            let tasks: Vec<_> = (0..3)
                .map(|_| tokio::spawn(std::future::pending::<()>()))
                .collect();
            table.insert(1, mk(10, 1), tasks[0].abort_handle()); // oldest, but busy
            table.insert(2, mk(20, 0), tasks[1].abort_handle()); // idlest idle
            table.insert(3, mk(30, 0), tasks[2].abort_handle());
            assert!(table.evict_idlest());
            tokio::task::yield_now().await;
            assert!(tasks[1].is_finished() && !tasks[0].is_finished() && !tasks[2].is_finished());
            assert!(table.evict_idlest());
            assert!(!table.evict_idlest(), "only busy connections left");
        });
    }

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
