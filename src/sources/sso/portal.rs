//! The SSO portal's `GetRoleCredentials` (`GET /federation/credentials`, bearer token in
//! `x-amz-sso_bearer_token`): exchanging a usable access token for the role's credentials.

use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::error::SsoError;
use super::profile::SsoConfig;
use super::transport::{Transport, error_message, invalid_endpoint, parse_url, take_string};
use crate::credentials::{Credentials, Secret};

/// `GetRoleCredentials` for `cfg`'s account and role against the portal base URL `portal`.
/// A 401 or 403 is [`SsoError::LoginRequired`]: the token was refused.
pub(super) async fn role_credentials(
    transport: &Transport,
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
    let http = transport.client()?;
    let (status, body) = transport
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

#[cfg(test)]
mod tests {
    use super::*;

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
