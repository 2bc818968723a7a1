//! The HTTP surface: `GET /v1/credentials/{project}/{stage}`, `GET /healthz`, and the
//! guards in front of them.
//!
//! Every request first passes [`check_request`]: a `Host` that is one of the daemon's own addresses
//! (DNS rebinding), no browser headers (`Origin`, `Referer`, `Sec-Fetch-Site`, `-Dest`,
//! `-User`; a lone `Sec-Fetch-Mode` is Node's `fetch()` and passes), GET only.
//! Values a client sends (User-Agent, path) are logged as quoted, escaped strings
//! (`user_agent="x project=evil"` in text, a JSON string in JSON logs), never as bare
//! text that could forge a field.
//! The credentials route then parses the raw path itself (no percent-decoding: `%2F`,
//! `..` and friends simply do not name a scope), checks the token against exactly that
//! scope, binds the scope to a profile, and answers the container-credentials JSON.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use time::OffsetDateTime;

use super::AppState;
use super::error::{ApiError, echo};
use crate::config::check_name;
use crate::peer::Peer;
use crate::tokens::Verdict;

/// The credentials route prefix.
pub const CREDENTIALS_PREFIX: &str = "/v1/credentials/";

/// Every request's way through the daemon (the accept loop's and the fuzz target's): the
/// [`check_request`] guard first; then a `/v1/credentials/` path goes straight to the
/// credentials answer (the hot path: no route matching, no boxed middleware, no copied
/// headers, no request extensions), and everything else through the router.
#[derive(Clone)]
pub struct App {
    state: Arc<AppState>,
    router: Router,
}

impl App {
    /// The daemon's HTTP answers over `state`.
    pub fn new(state: Arc<AppState>) -> App {
        let router = Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .fallback(not_found)
            .with_state(state.clone());
        App { state, router }
    }

    /// Answers `req`, which came from `peer` (its process is looked up once per
    /// connection, for the audit; `None` when the connection's ends are unknown).
    pub async fn respond<B>(&self, req: axum::http::Request<B>, peer: Option<Arc<Peer>>) -> Response
    where
        B: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        if let Err(e) = check_request(&self.state, req.method(), req.headers()) {
            tracing::debug!(code = e.code, "request refused");
            return e.into_response();
        }
        if req.uri().path().starts_with(CREDENTIALS_PREFIX) {
            let (parts, _body) = req.into_parts();
            return credentials(&self.state, peer, &parts).await;
        }
        match tower::ServiceExt::oneshot(self.router.clone(), req.map(axum::body::Body::new)).await
        {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
}

fn check_request(state: &AppState, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    for name in headers.keys() {
        let n = name.as_str();
        // What browsers send on every request they make for a page: Origin and/or Referer,
        // and Sec-Fetch-Site (with -Dest, -User). A lone Sec-Fetch-Mode is what Node's
        // fetch() (undici) sends, so it is allowed; the Host check still stops rebinding.
        if matches!(
            n,
            "origin" | "referer" | "sec-fetch-site" | "sec-fetch-dest" | "sec-fetch-user"
        ) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "BrowserRequestRefused",
                format!("requests carrying a browser header ({n}) are refused"),
            ));
        }
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) => h.to_str().unwrap_or("").to_ascii_lowercase(),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidHost",
                "exactly one Host header is required",
            ));
        }
    };
    if !state.allowed_hosts.contains(&host) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "InvalidHost",
            format!(
                "Host '{}' is not an address this daemon listens on",
                echo(&host)
            ),
        ));
    }
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "only GET is supported",
        ));
    }
    Ok(())
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let snap = state.profiles.snapshot();
    let body = serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "profiles": snap.profiles.len(),
        "generation": snap.generation,
        "instance": state.instance,
        "pid": std::process::id(),
    });
    json_response(StatusCode::OK, body.to_string())
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = &state.resolver.sessions().stats;
    let now = OffsetDateTime::now_utc();
    let mut session_expiry = Vec::new();
    let config = state.config.get();
    for (project, p) in &config.projects {
        for stage in p.stages.keys() {
            let key = format!("{project}/{stage}");
            let entry = super::lookup::lookup(&state, &key, project, stage).await;
            let Ok(hot) = &entry.outcome else { continue };
            if !hot.plan.is_cached() {
                continue;
            }
            let expires = state.resolver.sessions().info(&hot.plan).expires;
            if let Some(t) = expires.and_then(|e| crate::credentials::parse_timestamp(&e)) {
                session_expiry.push((project.clone(), stage.clone(), (t - now).whole_seconds()));
            }
        }
    }
    let out = state.metrics.render(&crate::metrics::Readings {
        reloads: state.profiles.reloads.load(Relaxed),
        reload_errors: state.profiles.reload_errors.load(Relaxed),
        upstream_calls: stats.fetches.load(Relaxed),
        upstream_errors: stats.fetch_errors.load(Relaxed),
        profiles: state.profiles.snapshot().profiles.len(),
        file_reads: crate::fsutil::reads(),
        env_lookups: crate::env::lookups(),
        project_file_changes: state.scopes.files_generation(),
        session_expiry,
    });
    let mut resp = (StatusCode::OK, out).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        "no such route; credentials are at /v1/credentials/{project}/{stage}",
    )
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Splits the raw path into (project, stage), or explains why it names no scope.
fn parse_scope(path: &str) -> Result<(&str, &str), ApiError> {
    let rest = path.strip_prefix(CREDENTIALS_PREFIX).unwrap_or("");
    let mut parts = rest.split('/');
    let (Some(project), Some(stage), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "expected /v1/credentials/{project}/{stage}",
        ));
    };
    for (what, name) in [("project", project), ("stage", stage)] {
        check_name(what, name).map_err(|_| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("'{}' is not a valid {what} name", echo(name)),
            )
        })?;
    }
    Ok((project, stage))
}

fn presented_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (None, _) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "MissingToken",
            "an Authorization header with the scope's token is required (see `credport token`)",
        )),
        (Some(_), Some(_)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidToken",
            "more than one Authorization header",
        )),
        (Some(v), None) => v.to_str().map_err(|_| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "InvalidToken",
                "the token is not valid",
            )
        }),
    }
}

async fn credentials(
    state: &Arc<AppState>,
    peer: Option<Arc<Peer>>,
    req: &axum::http::request::Parts,
) -> Response {
    let started = std::time::Instant::now();
    super::audit::begin(peer.as_ref());
    let mut authenticated = None;
    let path = req.uri.path();
    let result = issue(state, path, &req.headers, &mut authenticated).await;
    // Who asked and what they got: the log line, `credport log`, `status`.
    let (result, outcome) = match result {
        Ok((resp, issuance)) => (Ok(resp), Ok(issuance)),
        Err(e) => {
            let outcome = Err(super::audit::Refusal::of(&e, path, authenticated));
            (Err(e), outcome)
        }
    };
    super::audit::record(state, peer, &req.headers, outcome).await;
    match result {
        Ok(r) => {
            state.metrics.took(started.elapsed());
            r
        }
        Err(e) => {
            state
                .metrics
                .refused(authenticated, e.code, started.elapsed());
            e.into_response()
        }
    }
}

/// Answers one credentials request, or says why not. `authenticated` is set once the
/// token is known to be valid for the scope (errors after that are counted by scope).
async fn issue<'a>(
    state: &Arc<AppState>,
    path: &'a str,
    headers: &HeaderMap,
    authenticated: &mut Option<(&'a str, &'a str)>,
) -> Result<(Response, super::audit::Issuance), ApiError> {
    let (project, stage) = parse_scope(path)?;
    let token = presented_token(headers)?;
    let Some(key) = state.tokens.load_full() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NoTokenKey",
            "the daemon has no token key; see its log",
        ));
    };
    match key.verify(token, project, stage) {
        Verdict::Valid => *authenticated = Some((project, stage)),
        Verdict::OtherScope => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                format!("this token is not valid for {project}/{stage}"),
            ));
        }
        Verdict::Invalid => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "InvalidToken",
                "the token is not valid (tokens change when rotated; get a new one with `credport token`)",
            ));
        }
    }
    // `project/stage`, as the path spells it: the cache's key.
    let scope_key = &path[CREDENTIALS_PREFIX.len()..];
    let entry = super::lookup::lookup(state, scope_key, project, stage).await;
    let hot = entry.outcome.as_ref().map_err(Clone::clone)?;
    let binding = &hot.binding;
    // A protected stage is served only while it is unlocked (a check in memory).
    let admission = state
        .guard
        .admit(&hot.protection, &binding.project, &binding.stage)
        .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, "Locked", e.to_string()))?;
    let creds = state
        .resolver
        .fetch(&hot.plan, &binding.profile, state.refresh_margin())
        .await
        .map_err(|e| super::error::source_error(&binding.project, &binding.stage, e))?;
    let now = OffsetDateTime::now_utc();
    let served = admission.cap(state.served_expiration(creds.expiration, now));
    let answer = hot.render(&creds, served)?;
    let mut resp = Response::new(axum::body::Body::from(answer.body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The audit (log line, journal, status) is written by the caller, with the process.
    let issuance = super::audit::Issuance {
        hot: hot.clone(),
        key: answer.key,
        expires: answer.expires,
        at: now,
    };
    Ok((resp, issuance))
}

/// A project-file mapping the user has not trusted: 403 `Untrusted`, naming the fix.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_paths() {
        assert_eq!(
            parse_scope("/v1/credentials/orders/dev").unwrap(),
            ("orders", "dev")
        );
        for bad in [
            "/v1/credentials/orders",
            "/v1/credentials/orders/dev/",
            "/v1/credentials/orders/dev/x",
            "/v1/credentials/orders%2Fdev",
            "/v1/credentials/orders/%64ev",
            "/v1/credentials/../dev",
            "/v1/credentials/orders/..",
            "/v1/credentials//dev",
        ] {
            assert_eq!(
                parse_scope(bad).unwrap_err().status,
                StatusCode::NOT_FOUND,
                "{bad}"
            );
        }
    }
}
