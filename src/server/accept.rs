//! The accept loop: [`serve`] takes already-bound listeners and a shutdown future (so tests
//! bind `127.0.0.1:0` and stop the server cleanly) and serves HTTP/1.1 with hard limits
//! ([`Limits`]): a bounded number of connections, a bounded header size, a deadline for
//! reading request headers (which also closes idle keep-alive connections), and a deadline
//! per request.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::routes;
use super::state::AppState;

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
    let app = routes::App::new(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let table = Arc::new(ConnTable::default());
    let lookups = crate::peer::Lookups::new();
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
                    .map(|local| crate::peer::Peer::new(crate::peer::Conn { peer, local }, &lookups));
                let conn_state = Arc::new(ConnState::new(table.epoch));
                let (app, cs) = (app.clone(), conn_state.clone());
                let timeout = limits.request_timeout;
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (app, cs, ends) = (app.clone(), cs.clone(), ends.clone());
                        async move {
                            cs.begin();
                            let resp = within(timeout, app.respond(req, ends)).await;
                            cs.end();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    },
                );
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

/// `answer`, or a 503 `Timeout` when it is not done `timeout` after it first has to wait.
/// An answer ready at its first poll (the hot path) never arms a timer.
async fn within(
    timeout: Duration,
    answer: impl Future<Output = axum::response::Response>,
) -> axum::response::Response {
    use std::task::Poll;
    let mut answer = std::pin::pin!(answer);
    let mut deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = answer.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        let d = deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        d.as_mut().poll(cx).map(|()| {
            axum::response::IntoResponse::into_response(super::error::ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "Timeout",
                format!("no answer within {} s", timeout.as_secs_f64()),
            ))
        })
    })
    .await
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
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    /// The request deadline: an answer ready at once is served, a slow one within the
    /// deadline too, one that never comes is a 503 `Timeout` when the deadline passes.
    #[tokio::test(start_paused = true)]
    async fn the_request_deadline_starts_when_an_answer_first_waits() {
        let t = Duration::from_secs(10);
        let r = within(t, async { StatusCode::OK.into_response() }).await;
        assert_eq!(r.status(), StatusCode::OK);
        let start = tokio::time::Instant::now();
        let r = within(t, async {
            tokio::time::sleep(Duration::from_secs(9)).await;
            StatusCode::OK.into_response()
        })
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(start.elapsed(), Duration::from_secs(9));
        let start = tokio::time::Instant::now();
        let r = within(t, std::future::pending()).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(start.elapsed(), t);
        let body = axum::body::to_bytes(r.into_body(), 4096).await.unwrap();
        assert!(
            String::from_utf8_lossy(&body).contains("Timeout"),
            "{body:?}"
        );
    }

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
}
