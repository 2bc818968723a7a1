//! Error responses in the shape every SDK understands.
//!
//! Non-2xx, `Content-Type: application/json`, body `{"Code": "...", "Message": "..."}`
//! (docs/PROTOCOL.md). Messages never contain a secret; text that came from the request is
//! escaped and truncated before it is echoed.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error answer: status, machine code, human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A short machine-readable code (`InvalidToken`, `NotFound`, ...).
    pub code: &'static str,
    /// A message for the person reading the SDK's error.
    pub message: String,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "Code": self.code, "Message": self.message }).to_string();
        let mut resp = (self.status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

/// The 403 for a project-file mapping the user has not trusted.
pub(super) fn untrusted_error(e: crate::trust::TrustError) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "Untrusted", e.to_string())
}

/// The answer for a scope whose credentials could not be had: 503 when a login or the
/// upstream is missing, 502 when the upstream failed, else 500; the message names the scope.
pub(super) fn source_error(project: &str, stage: &str, e: crate::sources::SourceError) -> ApiError {
    let (status, code) = if e.needs_login() {
        (StatusCode::SERVICE_UNAVAILABLE, "LoginRequired")
    } else if e.is_unreachable() {
        (StatusCode::SERVICE_UNAVAILABLE, "UpstreamUnavailable")
    } else if e.is_upstream() {
        (StatusCode::BAD_GATEWAY, "UpstreamError")
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "CredentialsUnavailable")
    };
    ApiError::new(status, code, format!("{project}/{stage}: {e}"))
}

/// Makes request-supplied text safe to echo: printable ASCII, at most 80 characters.
pub fn echo(text: &str) -> String {
    let mut out: String = text.escape_default().collect();
    if out.len() > 80 {
        out.truncate(77);
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_is_bounded_and_escaped() {
        assert_eq!(echo("a\r\nb"), "a\\r\\nb");
        assert_eq!(echo(&"x".repeat(500)).len(), 80);
    }
}
