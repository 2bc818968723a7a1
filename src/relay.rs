//! The relay: a tiny forwarder that a container network reaches at `169.254.170.2`, passing
//! each credentials request on to the host's daemon.
//!
//! SDKs accept plain http only from a loopback literal, `169.254.170.2`, `169.254.170.23` or
//! `fd00:ec2::23` (docs/PROTOCOL.md, ARCHITECTURE.md "The relay"). On Docker Desktop no host
//! process can listen on a container network's address, and `host.docker.internal` is not
//! one of those hosts. So `credport relay` runs in a container at `169.254.170.2` and
//! forwards to the daemon at `http://host.docker.internal:PORT` (on Linux engines
//! `--add-host host.docker.internal:host-gateway`).
//!
//! The relay holds no secret and checks nothing a caller could bypass: the token, the scope,
//! trust and guard stay in the daemon, which keeps the MFA sessions, the SSO cache and
//! `credential_process` helpers that a container cannot have. It forwards only `GET`/`HEAD`
//! of `/healthz` and `/v1/credentials/...`, only the `Authorization` header (with the
//! upstream's `Host`) plus the client's address in `X-Credport-Relay-Client` (so the
//! daemon's audit names the container, see [`crate::peer`]), and only the status,
//! `Content-Type` and a bounded body back. It
//! refuses browser headers and foreign `Host` values itself (as the daemon does), bounds
//! connections, header size and header time, and never logs a token or a response body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::server::error::ApiError;

/// Largest response body passed back from the daemon.
const MAX_BODY: usize = 64 * 1024;

/// Errors starting the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The upstream URL is not `http://HOST[:PORT]`.
    #[error(
        "invalid upstream '{0}': expected http://HOST[:PORT] (e.g. http://host.docker.internal:9911)"
    )]
    Upstream(String),
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// What the relay forwards to: the daemon's base URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `http://host[:port]`, without a trailing slash.
    pub base: String,
    /// `host[:port]` as sent in the `Host` header (the daemon accepts
    /// `host.docker.internal:PORT` for each port it listens on).
    pub authority: String,
}

impl Upstream {
    /// Parses `http://HOST[:PORT]` (a trailing `/` is allowed; no path, user or query).
    pub fn parse(url: &str) -> Result<Upstream, RelayError> {
        let bad = || RelayError::Upstream(crate::server::error::echo(url));
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty()
            || authority
                .chars()
                .any(|c| !(c.is_ascii_alphanumeric() || "-.:[]".contains(c)))
        {
            return Err(bad());
        }
        Ok(Upstream {
            base: format!("http://{authority}"),
            authority: authority.to_ascii_lowercase(),
        })
    }
}

/// Settings of one relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Where containers reach the relay (normally `169.254.170.2:80`).
    pub listen: SocketAddr,
    /// The daemon.
    pub upstream: Upstream,
    /// Deadline for one forwarded request (connect included).
    pub timeout: Duration,
}

struct Relay {
    upstream: Upstream,
    client: reqwest::Client,
    allowed_hosts: std::collections::HashSet<String>,
}

/// Binds the relay's address; returns the listener and its bound address.
pub async fn bind(cfg: &RelayConfig) -> Result<(tokio::net::TcpListener, SocketAddr), RelayError> {
    let l = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| RelayError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = l.local_addr().map_err(|source| RelayError::Bind {
        addr: cfg.listen,
        source,
    })?;
    Ok((l, addr))
}

/// Serves the relay on `listener` until `shutdown` completes.
pub async fn run(
    cfg: &RelayConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RelayError> {
    let addr = listener.local_addr().map_err(|source| RelayError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let client = crate::sources::http::client_builder()
        .no_proxy()
        .connect_timeout(cfg.timeout)
        .timeout(cfg.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| RelayError::Client(e.to_string()))?;
    let relay = Arc::new(Relay {
        upstream: cfg.upstream.clone(),
        client,
        allowed_hosts: crate::server::allowed_hosts(&[addr], &[]),
    });
    let app = Router::new().fallback(forward).with_state(relay).layer(
        tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            cfg.timeout + Duration::from_secs(1),
        ),
    );
    serve_bounded(listener, app, shutdown).await;
    Ok(())
}

/// Open connections at most; further ones wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;
/// Deadline for a request's headers, also closing idle keep-alive connections.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// HTTP/1.1 with bounded connections, header size and header time, so slow or idle
/// clients on the container network cannot pile up.
async fn serve_bounded(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            c = listener.accept() => match c {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES)
            .keep_alive(true);
        // The client's address, for the daemon's audit (`peer::RELAY_CLIENT_HEADER`).
        let app = app.clone();
        let service = tower::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ClientAddr(peer));
            tower::ServiceExt::oneshot(app.clone(), req)
        });
        let conn =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::trace!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// The address of the client a request came from (set by the accept loop).
#[derive(Debug, Clone, Copy)]
struct ClientAddr(SocketAddr);

/// Whether the relay forwards this path at all.
fn forwarded_path(path: &str) -> bool {
    path == "/healthz" || path.starts_with("/v1/credentials/")
}

async fn forward(State(relay): State<Arc<Relay>>, req: Request) -> Response {
    match check(&relay, &req) {
        Ok(()) => {}
        Err(e) => return e.into_response(),
    }
    let path = req.uri().path().to_string();
    let mut out = relay
        .client
        .request(
            req.method().clone(),
            format!("{}{path}", relay.upstream.base),
        )
        .header(header::HOST, relay.upstream.authority.as_str());
    if let Some(auth) = req.headers().get(header::AUTHORIZATION) {
        out = out.header(header::AUTHORIZATION, auth.clone());
    }
    // Who the daemon's audit should name: the container client, by its address.
    if let Some(ClientAddr(client)) = req.extensions().get::<ClientAddr>() {
        out = out.header(crate::peer::RELAY_CLIENT_HEADER, client.to_string());
    }
    let resp = match out.send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(upstream = %relay.upstream.base, error = %without_url(&e), "daemon unreachable");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "DaemonUnavailable",
                format!(
                    "the relay cannot reach the credport daemon at {} ({}); is `credport serve` running and listening where the relay points?",
                    relay.upstream.base,
                    without_url(&e)
                ),
            )
            .into_response();
        }
    };
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let body = match read_bounded(resp).await {
        Ok(b) => b,
        Err(msg) => {
            return ApiError::new(StatusCode::BAD_GATEWAY, "DaemonUnavailable", msg)
                .into_response();
        }
    };
    tracing::debug!(%path, status = status.as_u16(), "forwarded");
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    if let Some(ct) = content_type {
        h.insert(header::CONTENT_TYPE, ct);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn check(relay: &Relay, req: &Request) -> Result<(), ApiError> {
    for name in req.headers().keys() {
        let n = name.as_str();
        if n == "origin" || n == "referer" || n.starts_with("sec-fetch-") {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "BrowserRequestRefused",
                format!("requests carrying a browser header ({n}) are refused"),
            ));
        }
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !relay.allowed_hosts.contains(&host) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "InvalidHost",
            format!(
                "Host '{}' is not an address this relay listens on",
                crate::server::error::echo(&host)
            ),
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "only GET is supported",
        ));
    }
    if req.uri().query().is_some() || !forwarded_path(req.uri().path()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the relay forwards only /healthz and /v1/credentials/PROJECT/STAGE",
        ));
    }
    Ok(())
}

async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if body.len() + c.len() > MAX_BODY {
                    return Err(format!(
                        "the daemon's answer exceeds {MAX_BODY} bytes; refused"
                    ));
                }
                body.extend_from_slice(&c);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(format!("reading the daemon's answer: {}", without_url(&e))),
        }
    }
}

/// A reqwest error's description without its URL (which holds only the scope, but keep
/// messages short) and without its source chain's duplicates.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        detail = s.to_string();
        src = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_parsing() {
        let u = Upstream::parse("http://host.docker.internal:9911/").unwrap();
        assert_eq!(u.base, "http://host.docker.internal:9911");
        assert_eq!(u.authority, "host.docker.internal:9911");
        for bad in [
            "https://x:1",
            "http://",
            "http://a/b",
            "http://u@h:1",
            "h:1",
            "http://a?x",
        ] {
            let e = Upstream::parse(bad).unwrap_err().to_string();
            assert!(e.contains("invalid upstream"), "{bad}: {e}");
        }
    }

    #[test]
    fn only_the_endpoint_paths_are_forwarded() {
        assert!(forwarded_path("/healthz"));
        assert!(forwarded_path("/v1/credentials/orders/dev"));
        assert!(!forwarded_path("/metrics"));
        assert!(!forwarded_path("/"));
        assert!(!forwarded_path("/v1/credentialsX"));
    }

    /// A relay in front of a tiny stand-in upstream (a real TCP server) forwards the token
    /// and the Host the daemon accepts, and passes status, type and body back.
    #[tokio::test]
    async fn forwards_token_and_host_and_refuses_the_rest() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = up.local_addr().unwrap();
        let seen = Arc::new(tokio::sync::Mutex::new(String::new()));
        let s2 = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = up.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = c.read(&mut buf).await.unwrap_or(0);
                *s2.lock().await = String::from_utf8_lossy(&buf[..n]).to_string();
                let body = r#"{"Code":"AccessDenied","Message":"x"}"#;
                let _ = c
                    .write_all(
                        format!(
                            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        let cfg = RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: Upstream::parse(&format!("http://{up_addr}")).unwrap(),
            timeout: Duration::from_secs(2),
        };
        let (l, addr) = bind(&cfg).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            run(&cfg, l, async {
                let _ = rx.await;
            })
            .await
        });
        let get = |path: &str, headers: &[(&str, &str)]| {
            let mut raw = format!("GET {path} HTTP/1.1\r\n");
            for (k, v) in headers {
                raw.push_str(&format!("{k}: {v}\r\n"));
            }
            raw.push_str("Connection: close\r\n\r\n");
            async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(raw.as_bytes()).await.unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).await.unwrap();
                out
            }
        };
        let host = addr.to_string();
        let r = get(
            "/v1/credentials/o/dev",
            &[("Host", &host), ("Authorization", "tok"), ("X-Other", "1")],
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 403"), "{r}");
        assert!(r.contains("application/json"), "{r}");
        assert!(
            r.ends_with(r#"{"Code":"AccessDenied","Message":"x"}"#),
            "{r}"
        );
        let upstream_saw = seen.lock().await.to_ascii_lowercase();
        assert!(
            upstream_saw.contains("authorization: tok"),
            "{upstream_saw}"
        );
        assert!(
            upstream_saw.contains(&format!("host: {up_addr}")),
            "{upstream_saw}"
        );
        assert!(!upstream_saw.contains("x-other"), "{upstream_saw}");
        // The relay names its client (this test's socket) for the daemon's audit.
        assert!(
            upstream_saw.contains("x-credport-relay-client: 127.0.0.1:"),
            "{upstream_saw}"
        );

        let r = get("/metrics", &[("Host", &host)]).await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        let r = get("/healthz", &[("Host", "evil.example")]).await;
        assert!(
            r.starts_with("HTTP/1.1 403") && r.contains("InvalidHost"),
            "{r}"
        );
        let r = get("/healthz", &[("Host", &host), ("Origin", "http://x")]).await;
        assert!(r.contains("BrowserRequestRefused"), "{r}");
        let _ = tx.send(());
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn unreachable_daemon_is_a_json_503() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A port that was free a moment ago: nothing listens.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let cfg = RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: Upstream::parse(&format!("http://{dead}")).unwrap(),
            timeout: Duration::from_secs(2),
        };
        let (l, addr) = bind(&cfg).await.unwrap();
        let task = tokio::spawn(async move { run(&cfg, l, std::future::pending()).await });
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        assert!(out.contains("DaemonUnavailable"), "{out}");
        assert!(out.contains(&dead.to_string()), "{out}");
        task.abort();
    }
}
