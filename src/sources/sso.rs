//! IAM Identity Center (SSO) role credentials from the token cache that `aws sso login` writes.
//!
//! As in botocore (`botocore/utils.py` `SSOTokenLoader`, `botocore/tokens.py`
//! `SSOTokenProvider`):
//!
//! * the cache file is `<cache_dir>/<sha1 hex>.json`, hashing the `sso_session` name for
//!   `[sso-session X]` profiles and the `sso_start_url` for legacy profiles;
//! * when fewer than 15 minutes remain and the file holds `refreshToken`, `clientId`,
//!   `clientSecret` and an unexpired `registrationExpiresAt`, the token is refreshed with SSO
//!   OIDC `CreateToken` (`grantType=refresh_token`) and the file rewritten; a failed refresh
//!   falls back to the cached token while it is still usable.
//!
//! A token is usable until 5 minutes before `expiresAt`. The file is rewritten atomically
//! (temporary file in the same directory, mode 0600, then rename), keeping keys it does not
//! know. Role credentials come from the portal's `GetRoleCredentials`
//! (`GET /federation/credentials`, bearer token in `x-amz-sso_bearer_token`).
//!
//! When only a new login helps, the error is [`SsoError::LoginRequired`], whose message names
//! the exact `aws sso login` command to run.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha1::{Digest, Sha1};
use time::{Duration as TimeDuration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::credentials::{Credentials, Secret, format_expiration, parse_timestamp};
use crate::sources::endpoint::{sso_oidc_endpoint, sso_portal_endpoint};
use crate::sources::http::{
    BodyError, Failure, GaveUp, HttpConfig, LazyClient, MAX_RESPONSE_BYTES,
    describe_transport_error, read_body, retryable_status, sanitize_message, with_retries,
};

/// Try to refresh a token with less than this left (botocore's `_REFRESH_WINDOW`).
pub const REFRESH_WINDOW: TimeDuration = TimeDuration::minutes(15);
/// A token with less than this left is treated as expired.
pub const EXPIRY_MARGIN: TimeDuration = TimeDuration::minutes(5);

/// Largest token cache file read.
const MAX_CACHE_BYTES: u64 = 256 * 1024;

/// What an SSO profile says, as resolved by the caller from the config file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SsoConfig {
    /// The profile name (used in the `aws sso login --profile` hint for legacy profiles).
    pub profile: String,
    /// The `sso_session` name, for `[sso-session X]` profiles; `None` for legacy profiles.
    pub session_name: Option<String>,
    /// `sso_start_url`.
    pub start_url: String,
    /// `sso_region`.
    pub sso_region: String,
    /// `sso_account_id`.
    pub account_id: String,
    /// `sso_role_name`.
    pub role_name: String,
}

impl SsoConfig {
    /// The command that signs in again for this profile: `aws sso login --sso-session X` for
    /// session profiles, `aws sso login --profile P` for legacy ones (names shell-quoted when
    /// needed).
    pub fn login_command(&self) -> String {
        let quote = |s: &str| {
            shlex::try_quote(s)
                .map(|q| q.into_owned())
                .unwrap_or_else(|_| s.to_string())
        };
        match &self.session_name {
            Some(s) => format!("aws sso login --sso-session {}", quote(s)),
            None => format!("aws sso login --profile {}", quote(&self.profile)),
        }
    }
}

/// The token cache file name: sha1 hex of the session name, or of the start URL for legacy
/// profiles, plus `.json`.
pub fn cache_file_name(cfg: &SsoConfig) -> String {
    let key = cfg.session_name.as_deref().unwrap_or(&cfg.start_url);
    format!("{}.json", hex::encode(Sha1::digest(key.as_bytes())))
}

/// The AWS CLI's token cache directory under a home directory: `<home>/.aws/sso/cache`.
pub fn default_cache_dir(home: &Path) -> PathBuf {
    home.join(".aws").join("sso").join("cache")
}

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

/// A client for SSO OIDC and the SSO portal. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SsoClient {
    http: LazyClient,
    config: HttpConfig,
}

/// A loaded token cache file.
struct CachedToken {
    /// Every key of the file, so a rewrite keeps the ones we do not use.
    doc: Map<String, Value>,
    access_token: Secret,
    expires_at: OffsetDateTime,
}

/// One attempt's outcome when it got an HTTP response that may be retried.
enum AttemptError {
    Status(u16, Zeroizing<Vec<u8>>),
    Other(SsoError),
}

impl SsoClient {
    /// Builds a client with the given timeouts and retry policy.
    pub fn new(config: HttpConfig) -> Result<Self, SsoError> {
        let http = LazyClient::new(&config);
        Ok(SsoClient { http, config })
    }

    /// Loads (and if needed refreshes) the cached token for `cfg` from `cache_dir` (usually
    /// [`default_cache_dir`]) and exchanges it for the role's credentials. `env` supplies
    /// `AWS_ENDPOINT_URL_SSO`, `AWS_ENDPOINT_URL_SSO_OIDC`, `AWS_ENDPOINT_URL` and
    /// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`; it is consulted before the returned future is
    /// first polled, so the future is `Send` and does not borrow `env`.
    pub fn get_role_credentials<'a>(
        &'a self,
        cache_dir: &'a Path,
        cfg: &'a SsoConfig,
        env: &dyn crate::env::Env,
    ) -> impl Future<Output = Result<Credentials, SsoError>> + Send + use<'a> {
        let portal = sso_portal_endpoint(&cfg.sso_region, None, None, env).url;
        let oidc = sso_oidc_endpoint(&cfg.sso_region, None, None, env).url;
        async move {
            self.get_role_credentials_at(cache_dir, cfg, &portal, &oidc)
                .await
        }
    }

    /// [`get_role_credentials`](Self::get_role_credentials) with explicit portal and OIDC base
    /// URLs (e.g. from [`sso_portal_endpoint`] / [`sso_oidc_endpoint`] with the profile's
    /// `endpoint_url` settings).
    pub async fn get_role_credentials_at(
        &self,
        cache_dir: &Path,
        cfg: &SsoConfig,
        portal_url: &str,
        oidc_url: &str,
    ) -> Result<Credentials, SsoError> {
        let path = cache_dir.join(cache_file_name(cfg));
        let login = |reason: String| SsoError::LoginRequired {
            command: cfg.login_command(),
            reason,
        };
        let mut token = load_cache(&path).await?.map_err(login)?;

        let now = OffsetDateTime::now_utc();
        if token.expires_at - now < REFRESH_WINDOW {
            match refresh_inputs(&token.doc, now) {
                Err(why) => tracing::debug!(why, "SSO token cannot be refreshed"),
                Ok(inputs) => {
                    match self.create_token(oidc_url, &inputs).await {
                        Ok(new) => {
                            apply_refresh(&mut token, new, now);
                            if let Err(e) = write_cache(&path, &token.doc).await {
                                // The new token is still good for this call.
                                tracing::warn!(error = %e, "cannot save the refreshed SSO token");
                            }
                        }
                        Err(RefreshError::Rejected(why)) => {
                            tracing::warn!(why, "SSO token refresh was rejected");
                            if token.expires_at - now < EXPIRY_MARGIN {
                                return Err(login(format!(
                                    "the SSO token expired and refreshing it failed ({why})"
                                )));
                            }
                        }
                        Err(RefreshError::Other(e)) => {
                            tracing::warn!(error = %e, "SSO token refresh failed");
                            if token.expires_at - now < EXPIRY_MARGIN {
                                return Err(e);
                            }
                        }
                    }
                }
            }
        }
        if token.expires_at - now < EXPIRY_MARGIN {
            return Err(login(format!(
                "the cached SSO token {} at {}",
                if token.expires_at <= now {
                    "expired"
                } else {
                    "expires"
                },
                format_expiration(token.expires_at)
            )));
        }

        self.role_credentials(portal_url, cfg, &token.access_token)
            .await
    }

    /// `GetRoleCredentials` against the portal.
    async fn role_credentials(
        &self,
        portal: &str,
        cfg: &SsoConfig,
        access_token: &Secret,
    ) -> Result<Credentials, SsoError> {
        let mut url = parse_url(portal)?;
        url.path_segments_mut()
            .map_err(|_| invalid_endpoint(portal))?
            .pop_if_empty()
            .extend(["federation", "credentials"]);
        url.query_pairs_mut()
            .append_pair("role_name", &cfg.role_name)
            .append_pair("account_id", &cfg.account_id);
        let http = self
            .http
            .get()
            .map_err(|reason| SsoError::Client { reason })?;
        let (status, body) = self
            .send(portal, || {
                http.get(url.clone())
                    .header("x-amz-sso_bearer_token", access_token.expose())
            })
            .await?;
        if status == 401 || status == 403 {
            let msg = error_message(&body, &[access_token.expose()]);
            return Err(SsoError::LoginRequired {
                command: cfg.login_command(),
                reason: format!("the SSO portal rejected the cached token (HTTP {status}: {msg})"),
            });
        }
        if !(200..300).contains(&status) {
            return Err(SsoError::Service {
                endpoint: portal.to_string(),
                status,
                message: error_message(&body, &[access_token.expose()]),
            });
        }
        parse_role_credentials(&body, &cfg.account_id)
    }

    /// SSO OIDC `CreateToken` with the refresh token.
    async fn create_token(
        &self,
        oidc: &str,
        inputs: &RefreshInputs,
    ) -> Result<NewToken, RefreshError> {
        let mut url = parse_url(oidc).map_err(RefreshError::Other)?;
        url.path_segments_mut()
            .map_err(|_| RefreshError::Other(invalid_endpoint(oidc)))?
            .pop_if_empty()
            .push("token");
        let body = Zeroizing::new(
            serde_json::json!({
                "grantType": "refresh_token",
                "clientId": inputs.client_id,
                "clientSecret": inputs.client_secret.expose(),
                "refreshToken": inputs.refresh_token.expose(),
            })
            .to_string(),
        );
        let http = self
            .http
            .get()
            .map_err(|reason| RefreshError::Other(SsoError::Client { reason }))?;
        let (status, resp) = self
            .send(oidc, || {
                http.post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.as_bytes().to_vec())
            })
            .await
            .map_err(RefreshError::Other)?;
        let secrets = [inputs.client_secret.expose(), inputs.refresh_token.expose()];
        if (400..500).contains(&status) {
            // OAuth errors: {"error":"invalid_grant","error_description":"..."}.
            return Err(RefreshError::Rejected(format!(
                "HTTP {status}: {}",
                error_message(&resp, &secrets)
            )));
        }
        if !(200..300).contains(&status) {
            return Err(RefreshError::Other(SsoError::Service {
                endpoint: oidc.to_string(),
                status,
                message: error_message(&resp, &secrets),
            }));
        }
        parse_create_token(&resp).map_err(RefreshError::Other)
    }

    /// Sends a request with retries (5xx, 429, connection failures) and returns the final
    /// status and body.
    async fn send(
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

fn parse_url(url: &str) -> Result<reqwest::Url, SsoError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(u),
        _ => Err(invalid_endpoint(url)),
    }
}

fn invalid_endpoint(url: &str) -> SsoError {
    SsoError::Client {
        reason: format!("endpoint {url} is not a valid http(s) URL"),
    }
}

/// Reads the cache file. The outer error is a file we cannot read; the inner one (a reason
/// for [`SsoError::LoginRequired`]) is a missing or unusable token.
async fn load_cache(path: &Path) -> Result<Result<CachedToken, String>, SsoError> {
    use tokio::io::AsyncReadExt;
    let cache_err = |reason: String| SsoError::Cache {
        path: path.to_path_buf(),
        reason,
    };
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err("there is no cached SSO token".to_string()));
        }
        Err(e) => return Err(cache_err(e.to_string())),
    };
    let mut buf = Zeroizing::new(Vec::new());
    file.take(MAX_CACHE_BYTES + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| cache_err(e.to_string()))?;
    if buf.len() as u64 > MAX_CACHE_BYTES {
        return Err(cache_err(format!("larger than {MAX_CACHE_BYTES} bytes")));
    }
    let doc: Map<String, Value> = match serde_json::from_slice(&buf) {
        Ok(d) => d,
        Err(_) => {
            return Ok(Err(
                "the cached SSO token file is not a JSON object".to_string()
            ));
        }
    };
    let access_token = match doc.get("accessToken") {
        Some(Value::String(s)) if !s.is_empty() => Secret::new(s.as_str()),
        _ => return Ok(Err("the cached SSO token has no accessToken".to_string())),
    };
    let expires_at = match doc
        .get("expiresAt")
        .and_then(Value::as_str)
        .and_then(parse_cache_time)
    {
        Some(t) => t,
        None => {
            return Ok(Err(
                "the cached SSO token has no valid expiresAt".to_string()
            ));
        }
    };
    Ok(Ok(CachedToken {
        doc,
        access_token,
        expires_at,
    }))
}

/// Parses a cache timestamp: RFC 3339, or the `2019-11-14T04:05:45UTC` form that early
/// AWS CLI v2 releases wrote.
fn parse_cache_time(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    match s.strip_suffix("UTC") {
        Some(head) => parse_timestamp(&format!("{head}Z")),
        None => parse_timestamp(s),
    }
}

/// What `CreateToken` needs from the cache file.
struct RefreshInputs {
    client_id: String,
    client_secret: Secret,
    refresh_token: Secret,
}

/// The refresh inputs, or why there are none (botocore requires all four keys and an
/// unexpired registration).
fn refresh_inputs(doc: &Map<String, Value>, now: OffsetDateTime) -> Result<RefreshInputs, String> {
    let get = |k: &str| doc.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let missing: Vec<&str> = [
        "refreshToken",
        "clientId",
        "clientSecret",
        "registrationExpiresAt",
    ]
    .into_iter()
    .filter(|k| get(k).is_none())
    .collect();
    if !missing.is_empty() {
        return Err(format!("missing keys: {}", missing.join(", ")));
    }
    let reg = get("registrationExpiresAt")
        .and_then(parse_cache_time)
        .ok_or("registrationExpiresAt is not a timestamp")?;
    if reg <= now {
        return Err(format!(
            "the client registration expired at {}",
            format_expiration(reg)
        ));
    }
    Ok(RefreshInputs {
        client_id: get("clientId").unwrap_or_default().to_string(),
        client_secret: Secret::new(get("clientSecret").unwrap_or_default()),
        refresh_token: Secret::new(get("refreshToken").unwrap_or_default()),
    })
}

/// A successful `CreateToken`.
struct NewToken {
    access_token: Secret,
    expires_in: i64,
    refresh_token: Option<Secret>,
}

enum RefreshError {
    /// OIDC refused (4xx): the refresh token or registration is no good.
    Rejected(String),
    /// Transport or server trouble.
    Other(SsoError),
}

fn parse_create_token(body: &[u8]) -> Result<NewToken, SsoError> {
    let malformed = |reason: &str| SsoError::Malformed {
        reason: format!("CreateToken: {reason}"),
    };
    let mut doc: Map<String, Value> =
        serde_json::from_slice(body).map_err(|_| malformed("not a JSON object"))?;
    let access_token = take_string(&mut doc, "accessToken")
        .map(Secret::new)
        .ok_or_else(|| malformed("missing accessToken"))?;
    let expires_in = doc
        .get("expiresIn")
        .and_then(Value::as_i64)
        .filter(|s| *s > 0)
        .ok_or_else(|| malformed("missing or invalid expiresIn"))?;
    let refresh_token = take_string(&mut doc, "refreshToken").map(Secret::new);
    Ok(NewToken {
        access_token,
        expires_in,
        refresh_token,
    })
}

/// Removes a non-empty string value from `doc`, moving it out without copying.
fn take_string(doc: &mut Map<String, Value>, key: &str) -> Option<String> {
    match doc.remove(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// Puts a refreshed token into the cached document (as botocore does: new `accessToken`,
/// `expiresAt` = now + `expiresIn`, and `refreshToken` when a new one was issued).
fn apply_refresh(token: &mut CachedToken, new: NewToken, now: OffsetDateTime) {
    let expires_at = now + TimeDuration::seconds(new.expires_in);
    token.doc.insert(
        "accessToken".into(),
        Value::String(new.access_token.expose().to_string()),
    );
    token.doc.insert(
        "expiresAt".into(),
        Value::String(format_expiration(expires_at)),
    );
    if let Some(rt) = &new.refresh_token {
        token.doc.insert(
            "refreshToken".into(),
            Value::String(rt.expose().to_string()),
        );
    }
    token.access_token = new.access_token;
    token.expires_at = expires_at;
}

/// Writes `doc` to `path` through the one atomic private write ([`crate::fsutil::write_atomic`]:
/// a 0600 temporary file in the same directory, synced, renamed over the old file, the
/// directory synced), off the async runtime.
async fn write_cache(path: &Path, doc: &Map<String, Value>) -> Result<(), SsoError> {
    let cache_err = |reason: String| SsoError::Cache {
        path: path.to_path_buf(),
        reason,
    };
    let contents = Zeroizing::new(
        serde_json::to_vec(doc).map_err(|_| cache_err("cannot serialize".to_string()))?,
    );
    let target = path.to_path_buf();
    tokio::task::spawn_blocking(move || crate::fsutil::write_atomic(&target, &contents, 0o600))
        .await
        .map_err(|e| cache_err(format!("cannot rewrite it: {e}")))?
        .map_err(|e| cache_err(format!("cannot rewrite it: {e}")))
}

/// Parses `GetRoleCredentials`:
/// `{"roleCredentials":{"accessKeyId","secretAccessKey","sessionToken","expiration"}}` with
/// `expiration` in epoch milliseconds.
fn parse_role_credentials(body: &[u8], account_id: &str) -> Result<Credentials, SsoError> {
    let malformed = |reason: &str| SsoError::Malformed {
        reason: format!("GetRoleCredentials: {reason}"),
    };
    let mut doc: Map<String, Value> =
        serde_json::from_slice(body).map_err(|_| malformed("not a JSON object"))?;
    let mut rc = match doc.remove("roleCredentials") {
        Some(Value::Object(m)) => m,
        _ => return Err(malformed("missing roleCredentials")),
    };
    let access_key_id =
        take_string(&mut rc, "accessKeyId").ok_or_else(|| malformed("missing accessKeyId"))?;
    let secret = take_string(&mut rc, "secretAccessKey")
        .map(Secret::new)
        .ok_or_else(|| malformed("missing secretAccessKey"))?;
    let token = take_string(&mut rc, "sessionToken")
        .map(Secret::new)
        .ok_or_else(|| malformed("missing sessionToken"))?;
    let millis = rc
        .get("expiration")
        .and_then(Value::as_i64)
        .ok_or_else(|| malformed("missing or invalid expiration"))?;
    let expiration = OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .map_err(|_| malformed("expiration is out of range"))?;
    Ok(Credentials {
        access_key_id,
        secret_access_key: secret,
        session_token: Some(token),
        expiration: Some(expiration),
        account_id: Some(account_id.to_string()),
    })
}

/// A short, sanitized error description from a JSON error body (`message`, `Message`,
/// `error`/`error_description`), or a generic one. Never the raw body.
fn error_message(body: &[u8], secrets: &[&str]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};

    const CLIENT_SECRET: &str = "CLIENTSECRET-abcdef";
    const REFRESH_TOKEN: &str = "REFRESHTOKEN-abcdef";

    fn session_cfg() -> SsoConfig {
        SsoConfig {
            profile: "dev".into(),
            session_name: Some("my-sso".into()),
            start_url: "https://d-123.awsapps.com/start".into(),
            sso_region: "eu-west-1".into(),
            account_id: "111111111111".into(),
            role_name: "ReadOnly".into(),
        }
    }

    fn legacy_cfg() -> SsoConfig {
        SsoConfig {
            session_name: None,
            profile: "legacy".into(),
            ..session_cfg()
        }
    }

    #[test]
    fn cache_file_names_match_botocore() {
        // python3 -c "import hashlib; print(hashlib.sha1(b'my-sso').hexdigest())"
        assert_eq!(
            cache_file_name(&session_cfg()),
            "0ad374308c5a4e22f723adf10145eafad7c4031c.json"
        );
        assert_eq!(
            cache_file_name(&legacy_cfg()),
            "2b829a45f04c9828cb45b7d092d8e4aa30818393.json"
        );
        assert_eq!(
            default_cache_dir(Path::new("/home/u")),
            Path::new("/home/u/.aws/sso/cache")
        );
    }

    #[test]
    fn login_commands() {
        assert_eq!(
            session_cfg().login_command(),
            "aws sso login --sso-session my-sso"
        );
        assert_eq!(
            legacy_cfg().login_command(),
            "aws sso login --profile legacy"
        );
        let odd = SsoConfig {
            profile: "my profile".into(),
            ..legacy_cfg()
        };
        assert_eq!(odd.login_command(), "aws sso login --profile 'my profile'");
    }

    #[test]
    fn cache_times() {
        let want = time::macros::datetime!(2019-11-14 04:05:45 UTC);
        assert_eq!(parse_cache_time("2019-11-14T04:05:45UTC"), Some(want));
        assert_eq!(parse_cache_time("2019-11-14T04:05:45Z"), Some(want));
        assert_eq!(parse_cache_time("2019-11-14T04:05:45+00:00"), Some(want));
        assert_eq!(parse_cache_time("nope"), None);
    }

    /// What the fake portal/OIDC server saw and how it behaves.
    #[derive(Default)]
    struct Fake {
        valid_token: String,
        refresh_calls: u32,
        portal_calls: u32,
        refresh_status: u16,
        portal_status: u16,
        last_refresh_body: Option<serde_json::Value>,
    }

    type Shared = Arc<Mutex<Fake>>;

    async fn token(State(s): State<Shared>, body: String) -> (StatusCode, String) {
        let mut f = s.lock().unwrap();
        f.refresh_calls += 1;
        f.last_refresh_body = serde_json::from_str(&body).ok();
        if f.refresh_status != 200 {
            return (
                StatusCode::from_u16(f.refresh_status).unwrap(),
                format!(r#"{{"error":"invalid_grant","error_description":"bad {REFRESH_TOKEN}"}}"#),
            );
        }
        f.valid_token = "fresh-access-token".into();
        (
            StatusCode::OK,
            r#"{"accessToken":"fresh-access-token","expiresIn":28800,"refreshToken":"rotated-refresh","tokenType":"Bearer"}"#.into(),
        )
    }

    async fn creds(
        State(s): State<Shared>,
        headers: HeaderMap,
        Query(q): Query<std::collections::HashMap<String, String>>,
    ) -> (StatusCode, String) {
        let mut f = s.lock().unwrap();
        f.portal_calls += 1;
        let bearer = headers
            .get("x-amz-sso_bearer_token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if f.portal_status != 200 {
            return (
                StatusCode::from_u16(f.portal_status).unwrap(),
                format!(r#"{{"message":"Session token {bearer} not found or invalid"}}"#),
            );
        }
        if bearer != f.valid_token {
            return (
                StatusCode::UNAUTHORIZED,
                r#"{"message":"Session token not found or invalid"}"#.into(),
            );
        }
        assert_eq!(q.get("role_name").map(String::as_str), Some("ReadOnly"));
        assert_eq!(
            q.get("account_id").map(String::as_str),
            Some("111111111111")
        );
        (
            StatusCode::OK,
            r#"{"roleCredentials":{"accessKeyId":"ASIASSOEXAMPLE","secretAccessKey":"ssosecret","sessionToken":"ssotoken","expiration":1796205600000}}"#.into(),
        )
    }

    /// Starts the fake on 127.0.0.1:0; returns the state and an `env` for the endpoints.
    async fn start_fake(valid_token: &str) -> (Shared, impl Fn(&str) -> Option<String>) {
        let state: Shared = Arc::new(Mutex::new(Fake {
            valid_token: valid_token.into(),
            refresh_status: 200,
            portal_status: 200,
            ..Fake::default()
        }));
        let app = Router::new()
            .route("/token", post(token))
            .route("/federation/credentials", get(creds))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let env = move |k: &str| match k {
            "AWS_ENDPOINT_URL_SSO" | "AWS_ENDPOINT_URL_SSO_OIDC" => Some(base.clone()),
            _ => None,
        };
        (state, env)
    }

    fn client() -> SsoClient {
        SsoClient::new(HttpConfig {
            base_backoff: std::time::Duration::from_millis(1),
            ..HttpConfig::default()
        })
        .unwrap()
    }

    fn iso(t: OffsetDateTime) -> String {
        format_expiration(t)
    }

    fn write_token(dir: &Path, cfg: &SsoConfig, doc: serde_json::Value) -> PathBuf {
        let p = dir.join(cache_file_name(cfg));
        std::fs::write(&p, doc.to_string()).unwrap();
        p
    }

    #[tokio::test]
    async fn valid_token_gets_role_credentials() {
        let (state, env) = start_fake("cached-access-token").await;
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        write_token(
            dir.path(),
            &session_cfg(),
            serde_json::json!({
                "accessToken": "cached-access-token",
                "expiresAt": iso(now + TimeDuration::hours(2)),
                "startUrl": "https://d-123.awsapps.com/start",
                "region": "eu-west-1",
            }),
        );
        let c = client()
            .get_role_credentials(dir.path(), &session_cfg(), &env)
            .await
            .unwrap();
        assert_eq!(c.access_key_id, "ASIASSOEXAMPLE");
        assert_eq!(c.secret_access_key.expose(), "ssosecret");
        assert_eq!(c.session_token.unwrap().expose(), "ssotoken");
        assert_eq!(c.account_id.as_deref(), Some("111111111111"));
        assert_eq!(c.expiration.unwrap().unix_timestamp(), 1_796_205_600);
        let f = state.lock().unwrap();
        assert_eq!((f.portal_calls, f.refresh_calls), (1, 0));
    }

    #[tokio::test]
    async fn expired_token_is_refreshed_and_cache_rewritten_atomically() {
        let (state, env) = start_fake("nothing-valid-yet").await;
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let path = write_token(
            dir.path(),
            &session_cfg(),
            serde_json::json!({
                "accessToken": "stale-access-token",
                "expiresAt": iso(now - TimeDuration::minutes(1)),
                "refreshToken": REFRESH_TOKEN,
                "clientId": "client-id-1",
                "clientSecret": CLIENT_SECRET,
                "registrationExpiresAt": iso(now + TimeDuration::days(30)),
                "region": "eu-west-1",
                "startUrl": "https://d-123.awsapps.com/start",
                "someFutureKey": {"kept": true},
            }),
        );
        let c = client()
            .get_role_credentials(dir.path(), &session_cfg(), &env)
            .await
            .unwrap();
        assert_eq!(c.access_key_id, "ASIASSOEXAMPLE");
        {
            let f = state.lock().unwrap();
            assert_eq!((f.refresh_calls, f.portal_calls), (1, 1));
            let sent = f.last_refresh_body.clone().unwrap();
            assert_eq!(
                sent,
                serde_json::json!({
                    "grantType": "refresh_token",
                    "clientId": "client-id-1",
                    "clientSecret": CLIENT_SECRET,
                    "refreshToken": REFRESH_TOKEN,
                })
            );
        }
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["accessToken"], "fresh-access-token");
        assert_eq!(doc["refreshToken"], "rotated-refresh");
        assert_eq!(doc["clientId"], "client-id-1");
        assert_eq!(doc["clientSecret"], CLIENT_SECRET);
        assert_eq!(doc["startUrl"], "https://d-123.awsapps.com/start");
        assert_eq!(doc["someFutureKey"]["kept"], true);
        let exp = parse_cache_time(doc["expiresAt"].as_str().unwrap()).unwrap();
        let left = exp - OffsetDateTime::now_utc();
        assert!(
            left > TimeDuration::hours(7) && left <= TimeDuration::hours(8),
            "{left}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "temporary files left behind: {names:?}");

        // The next call uses the rewritten cache without refreshing again.
        client()
            .get_role_credentials(dir.path(), &session_cfg(), &env)
            .await
            .unwrap();
        assert_eq!(state.lock().unwrap().refresh_calls, 1);
    }

    #[tokio::test]
    async fn missing_or_unrefreshable_tokens_require_login() {
        let (state, env) = start_fake("x").await;
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();

        // No cache file at all.
        let e = client()
            .get_role_credentials(dir.path(), &session_cfg(), &env)
            .await
            .unwrap_err();
        assert!(matches!(e, SsoError::LoginRequired { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "there is no cached SSO token; run `aws sso login --sso-session my-sso` to sign in again"
        );

        // Expired, no refresh data, legacy profile.
        write_token(
            dir.path(),
            &legacy_cfg(),
            serde_json::json!({"accessToken": "old", "expiresAt": iso(now - TimeDuration::hours(1))}),
        );
        let e = client()
            .get_role_credentials(dir.path(), &legacy_cfg(), &env)
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("the cached SSO token expired at "), "{msg}");
        assert!(
            msg.ends_with("; run `aws sso login --profile legacy` to sign in again"),
            "{msg}"
        );

        // Within the 5-minute margin counts as expired.
        write_token(
            dir.path(),
            &legacy_cfg(),
            serde_json::json!({"accessToken": "x", "expiresAt": iso(now + TimeDuration::minutes(3))}),
        );
        let e = client()
            .get_role_credentials(dir.path(), &legacy_cfg(), &env)
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("the cached SSO token expires at "),
            "{e}"
        );

        // Registration expired: no refresh attempt.
        write_token(
            dir.path(),
            &session_cfg(),
            serde_json::json!({
                "accessToken": "old", "expiresAt": iso(now - TimeDuration::hours(1)),
                "refreshToken": REFRESH_TOKEN, "clientId": "c", "clientSecret": CLIENT_SECRET,
                "registrationExpiresAt": iso(now - TimeDuration::days(1)),
            }),
        );
        let e = client()
            .get_role_credentials(dir.path(), &session_cfg(), &env)
            .await
            .unwrap_err();
        assert!(matches!(e, SsoError::LoginRequired { .. }), "{e}");
        assert!(
            e.to_string().contains("aws sso login --sso-session my-sso"),
            "{e}"
        );

        // Corrupt cache file.
        std::fs::write(
            dir.path().join(cache_file_name(&session_cfg())),
            "{not json",
        )
        .unwrap();
        let e = client()
            .get_role_credentials(dir.path(), &session_cfg(), &env)
            .await
            .unwrap_err();
        assert!(matches!(e, SsoError::LoginRequired { .. }), "{e}");

        let f = state.lock().unwrap();
        assert_eq!((f.refresh_calls, f.portal_calls), (0, 0));
    }

    #[tokio::test]
    async fn rejected_refresh_requires_login_without_leaking_secrets() {
        let (state, env) = start_fake("x").await;
        state.lock().unwrap().refresh_status = 400;
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let doc = serde_json::json!({
            "accessToken": "old-access", "expiresAt": iso(now - TimeDuration::minutes(1)),
            "refreshToken": REFRESH_TOKEN, "clientId": "c", "clientSecret": CLIENT_SECRET,
            "registrationExpiresAt": iso(now + TimeDuration::days(1)),
        });
        let path = write_token(dir.path(), &session_cfg(), doc.clone());
        let e = client()
            .get_role_credentials(dir.path(), &session_cfg(), &env)
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, SsoError::LoginRequired { .. }), "{msg}");
        assert!(
            msg.contains("refreshing it failed (HTTP 400: invalid_grant"),
            "{msg}"
        );
        assert!(
            !msg.contains(REFRESH_TOKEN) && !msg.contains(CLIENT_SECRET),
            "{msg}"
        );
        // The cache is untouched.
        let now_doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(now_doc, doc);
    }

    #[tokio::test]
    async fn failed_refresh_falls_back_to_a_still_usable_token() {
        let (state, env) = start_fake("still-good").await;
        state.lock().unwrap().refresh_status = 400;
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        write_token(
            dir.path(),
            &session_cfg(),
            serde_json::json!({
                "accessToken": "still-good", "expiresAt": iso(now + TimeDuration::minutes(10)),
                "refreshToken": REFRESH_TOKEN, "clientId": "c", "clientSecret": CLIENT_SECRET,
                "registrationExpiresAt": iso(now + TimeDuration::days(1)),
            }),
        );
        let c = client()
            .get_role_credentials(dir.path(), &session_cfg(), &env)
            .await
            .unwrap();
        assert_eq!(c.access_key_id, "ASIASSOEXAMPLE");
        let f = state.lock().unwrap();
        assert_eq!((f.refresh_calls, f.portal_calls), (1, 1));
    }

    #[tokio::test]
    async fn portal_401_and_403_require_login() {
        for status in [401u16, 403] {
            let (state, env) = start_fake("tok-abcdef").await;
            state.lock().unwrap().portal_status = status;
            let dir = tempfile::tempdir().unwrap();
            let now = OffsetDateTime::now_utc();
            write_token(
                dir.path(),
                &session_cfg(),
                serde_json::json!({"accessToken": "tok-abcdef", "expiresAt": iso(now + TimeDuration::hours(1))}),
            );
            let e = client()
                .get_role_credentials(dir.path(), &session_cfg(), &env)
                .await
                .unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, SsoError::LoginRequired { .. }), "{msg}");
            assert!(msg.contains(&format!("HTTP {status}")), "{msg}");
            assert!(msg.ends_with("run `aws sso login --sso-session my-sso` to sign in again"));
            assert!(!msg.contains("tok-abcdef"), "bearer token echoed: {msg}");
        }
    }

    #[tokio::test]
    async fn portal_5xx_is_retried_then_reported() {
        let (state, env) = start_fake("tok").await;
        state.lock().unwrap().portal_status = 503;
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        write_token(
            dir.path(),
            &session_cfg(),
            serde_json::json!({"accessToken": "tok", "expiresAt": iso(now + TimeDuration::hours(1))}),
        );
        let e = client()
            .get_role_credentials(dir.path(), &session_cfg(), &env)
            .await
            .unwrap_err();
        assert!(matches!(e, SsoError::Service { status: 503, .. }), "{e}");
        assert_eq!(state.lock().unwrap().portal_calls, 3);
    }

    #[tokio::test]
    async fn unreachable_portal() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let base = format!("http://127.0.0.1:{port}");
        let env = move |k: &str| (k == "AWS_ENDPOINT_URL_SSO").then(|| base.clone());
        let dir = tempfile::tempdir().unwrap();
        write_token(
            dir.path(),
            &session_cfg(),
            serde_json::json!({"accessToken": "tok", "expiresAt": iso(OffsetDateTime::now_utc() + TimeDuration::hours(1))}),
        );
        let e = client()
            .get_role_credentials(dir.path(), &session_cfg(), &env)
            .await
            .unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "SSO at http://127.0.0.1:{port} is unreachable: connection failed"
            )),
            "{e}"
        );
    }

    #[test]
    fn role_credentials_parsing_never_echoes_values() {
        let e = parse_role_credentials(
            br#"{"roleCredentials":{"accessKeyId":"A","secretAccessKey":"SECRETX"}}"#,
            "1",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "SSO returned a malformed response: GetRoleCredentials: missing sessionToken"
        );
        let e = parse_role_credentials(b"SECRETX", "1")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("SECRETX"), "{e}");
    }
}
