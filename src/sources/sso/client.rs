//! [`SsoClient`]: from a profile's SSO settings to role credentials. Loads the cached token
//! (`cache`), refreshes it with SSO OIDC when fewer than [`REFRESH_WINDOW`] remain
//! (`oidc`, falling back to the cached token while it is still usable), and exchanges it at
//! the portal (`portal`).

use std::path::Path;

use time::{Duration as TimeDuration, OffsetDateTime};

use super::cache::{cache_file_name, load_cache, write_cache};
use super::error::SsoError;
use super::oidc::{RefreshError, apply_refresh, create_token, refresh_inputs};
use super::portal::role_credentials;
use super::profile::SsoConfig;
use super::transport::Transport;
use crate::credentials::{Credentials, format_expiration};
use crate::sources::endpoint::{sso_oidc_endpoint, sso_portal_endpoint};
use crate::sources::http::HttpConfig;

/// Try to refresh a token with less than this left (botocore's `_REFRESH_WINDOW`).
pub const REFRESH_WINDOW: TimeDuration = TimeDuration::minutes(15);
/// A token with less than this left is treated as expired.
pub const EXPIRY_MARGIN: TimeDuration = TimeDuration::minutes(5);

/// A client for SSO OIDC and the SSO portal. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SsoClient {
    transport: Transport,
}

impl SsoClient {
    /// Builds a client with the given timeouts and retry policy.
    pub fn new(config: HttpConfig) -> Result<Self, SsoError> {
        Ok(SsoClient {
            transport: Transport::new(config),
        })
    }

    /// Loads (and if needed refreshes) the cached token for `cfg` from `cache_dir` (usually
    /// [`default_cache_dir`](super::default_cache_dir)) and exchanges it for the role's
    /// credentials. `env` supplies `AWS_ENDPOINT_URL_SSO`, `AWS_ENDPOINT_URL_SSO_OIDC`,
    /// `AWS_ENDPOINT_URL` and `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`; it is consulted before
    /// the returned future is first polled, so the future is `Send` and does not borrow `env`.
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
                    match create_token(&self.transport, oidc_url, &inputs).await {
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

        role_credentials(&self.transport, portal_url, cfg, &token.access_token).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::cache::parse_cache_time;
    use super::super::profile::examples::{legacy_cfg, session_cfg};
    use super::*;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};

    const CLIENT_SECRET: &str = "CLIENTSECRET-abcdef";
    const REFRESH_TOKEN: &str = "REFRESHTOKEN-abcdef";

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
}
