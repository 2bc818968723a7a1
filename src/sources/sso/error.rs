//! Why SSO gave no credentials: [`SsoError`], the one error type every part of
//! `sources::sso` returns. No message contains a token, client secret or key.

use std::path::PathBuf;

/// Why SSO gave no credentials. No message contains a token, client secret or key.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    /// Only a new `aws sso login` helps.
    #[error("{reason}; run `{command}` to sign in again")]
    LoginRequired {
        /// The exact command, e.g. `aws sso login --sso-session my-sso`.
        command: String,
        /// What is wrong with the cached token.
        reason: String,
    },
    /// No HTTP response from the portal or OIDC endpoint.
    #[error("SSO at {endpoint} is unreachable: {reason}")]
    Unreachable {
        /// The endpoint URL.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// The portal or OIDC endpoint answered with an error other than "sign in again".
    #[error("SSO at {endpoint} returned HTTP {status}: {message}")]
    Service {
        /// The endpoint URL.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The error message, sanitized.
        message: String,
    },
    /// A 2xx response that is not the expected document.
    #[error("SSO returned a malformed response: {reason}")]
    Malformed {
        /// What is wrong, naming keys only.
        reason: String,
    },
    /// The token cache file exists but cannot be read or written.
    #[error("SSO token cache file {}: {reason}", path.display())]
    Cache {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot prepare the SSO request: {reason}")]
    Client {
        /// What went wrong.
        reason: String,
    },
}
