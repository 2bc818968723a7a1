//! The HTTP side the portal and SSO OIDC share: [`Transport`] (one lazily built client and
//! the retry policy), sending through the one retry loop (`sources::http::with_retries`),
//! the endpoint URL check, and reading JSON bodies without echoing them.

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::error::SsoError;
use crate::sources::http::{
    BodyError, Failure, GaveUp, HttpConfig, LazyClient, MAX_RESPONSE_BYTES,
    describe_transport_error, read_body, retryable_status, sanitize_message, with_retries,
};

/// The HTTP client and retry policy for SSO calls. Cheap to clone.
#[derive(Clone, Debug)]
pub(super) struct Transport {
    http: LazyClient,
    config: HttpConfig,
}

/// One attempt's outcome when it got an HTTP response that may be retried.
enum AttemptError {
    Status(u16, Zeroizing<Vec<u8>>),
    Other(SsoError),
}

impl Transport {
    /// A transport with the given timeouts and retry policy; the client is built on first use.
    pub(super) fn new(config: HttpConfig) -> Self {
        let http = LazyClient::new(&config);
        Transport { http, config }
    }

    /// The HTTP client, built now if this is its first use.
    pub(super) fn client(&self) -> Result<&reqwest::Client, SsoError> {
        self.http
            .get()
            .map_err(|reason| SsoError::Client { reason })
    }

    /// Sends a request with retries (5xx, 429, connection failures) and returns the final
    /// status and body.
    pub(super) async fn send(
        &self,
        endpoint: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<(u16, Zeroizing<Vec<u8>>), SsoError> {
        match with_retries(&self.config, |_| self.attempt(endpoint, build())).await {
            Ok(v) => Ok(v),
            // A final HTTP status is an answer the caller reads; anything else is an error.
            Err(GaveUp::Fatal(e) | GaveUp::Exhausted(e, _)) => match e {
                AttemptError::Status(status, body) => Ok((status, body)),
                AttemptError::Other(e) => Err(e),
            },
        }
    }

    /// One attempt: send, read the body, classify.
    async fn attempt(
        &self,
        endpoint: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Zeroizing<Vec<u8>>), Failure<AttemptError>> {
        let cfg = &self.config;
        let unreachable = |e: &reqwest::Error| {
            let t = describe_transport_error(e, cfg);
            let err = AttemptError::Other(SsoError::Unreachable {
                endpoint: endpoint.to_string(),
                reason: t.reason,
            });
            if t.retryable {
                Failure::Retry(err)
            } else {
                Failure::Fatal(err)
            }
        };
        let resp = request.send().await.map_err(|e| unreachable(&e))?;
        let status = resp.status().as_u16();
        let body = match read_body(resp, MAX_RESPONSE_BYTES).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                return Err(Failure::Fatal(AttemptError::Other(SsoError::Malformed {
                    reason: format!("response body larger than {MAX_RESPONSE_BYTES} bytes"),
                })));
            }
            Err(BodyError::Transport(e)) => return Err(unreachable(&e)),
        };
        if retryable_status(status) {
            return Err(Failure::Retry(AttemptError::Status(status, body)));
        }
        Ok((status, body))
    }
}

/// Parses an endpoint base URL, which must be http(s) with a host.
pub(super) fn parse_url(url: &str) -> Result<reqwest::Url, SsoError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(u),
        _ => Err(invalid_endpoint(url)),
    }
}

/// The error for an endpoint that is not a valid http(s) URL (or cannot take a path).
pub(super) fn invalid_endpoint(url: &str) -> SsoError {
    SsoError::Client {
        reason: format!("endpoint {url} is not a valid http(s) URL"),
    }
}

/// Removes a non-empty string value from `doc`, moving it out without copying.
pub(super) fn take_string(doc: &mut Map<String, Value>, key: &str) -> Option<String> {
    match doc.remove(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// A short, sanitized error description from a JSON error body (`message`, `Message`,
/// `error`/`error_description`), or a generic one. Never the raw body.
pub(super) fn error_message(body: &[u8], secrets: &[&str]) -> String {
    let doc: Option<Map<String, Value>> = serde_json::from_slice(body).ok();
    let pick = |k: &str| {
        doc.as_ref()
            .and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let msg = match (pick("error"), pick("error_description")) {
        (Some(e), Some(d)) => Some(format!("{e}: {d}")),
        (Some(e), None) => Some(e),
        _ => pick("message").or_else(|| pick("Message")),
    };
    match msg {
        Some(m) => sanitize_message(&m, secrets),
        None => "no error message".to_string(),
    }
}
