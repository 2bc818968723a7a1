//! Refreshing a cached token with SSO OIDC `CreateToken` (`grantType=refresh_token`), as
//! botocore's `SSOTokenProvider`: whether the cache file allows a refresh, the call, and the
//! new token put back into the cached document.

use serde_json::{Map, Value};
use time::{Duration as TimeDuration, OffsetDateTime};
use zeroize::Zeroizing;

use super::cache::{CachedToken, parse_cache_time};
use super::error::SsoError;
use super::transport::{Transport, error_message, invalid_endpoint, parse_url, take_string};
use crate::credentials::{Secret, format_expiration};

/// What `CreateToken` needs from the cache file.
pub(super) struct RefreshInputs {
    client_id: String,
    client_secret: Secret,
    refresh_token: Secret,
}

/// The refresh inputs, or why there are none (botocore requires all four keys and an
/// unexpired registration).
pub(super) fn refresh_inputs(
    doc: &Map<String, Value>,
    now: OffsetDateTime,
) -> Result<RefreshInputs, String> {
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
pub(super) struct NewToken {
    access_token: Secret,
    expires_in: i64,
    refresh_token: Option<Secret>,
}

/// Why a refresh gave no new token.
pub(super) enum RefreshError {
    /// OIDC refused (4xx): the refresh token or registration is no good.
    Rejected(String),
    /// Transport or server trouble.
    Other(SsoError),
}

/// SSO OIDC `CreateToken` with the refresh token, against the OIDC base URL `oidc`.
pub(super) async fn create_token(
    transport: &Transport,
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
    let http = transport.client().map_err(RefreshError::Other)?;
    let (status, resp) = transport
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

/// The longest `expiresIn` accepted, in seconds: the longest duration credport reads
/// anywhere ([`crate::duration::MAX`], a year; SSO access tokens last hours). Anything
/// longer is an answer to refuse, and far longer overflows the clock.
const MAX_EXPIRES_IN: i64 = crate::duration::MAX.as_secs() as i64;

/// Parses `CreateToken`: `{"accessToken","expiresIn","refreshToken"?}`.
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
        .filter(|s| (1..=MAX_EXPIRES_IN).contains(s))
        .ok_or_else(|| malformed("missing or invalid expiresIn"))?;
    let refresh_token = take_string(&mut doc, "refreshToken").map(Secret::new);
    Ok(NewToken {
        access_token,
        expires_in,
        refresh_token,
    })
}

/// Puts a refreshed token into the cached document (as botocore does: new `accessToken`,
/// `expiresAt` = now + `expiresIn`, and `refreshToken` when a new one was issued).
pub(super) fn apply_refresh(token: &mut CachedToken, new: NewToken, now: OffsetDateTime) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An `expiresIn` past a year (or not positive) is refused as malformed, instead of
    /// being added to the clock (a huge one overflowed it and panicked).
    #[test]
    fn expires_in_must_be_positive_and_at_most_a_year() {
        let body = |n: &str| format!(r#"{{"accessToken":"a","expiresIn":{n}}}"#);
        assert_eq!(
            parse_create_token(body("3600").as_bytes())
                .unwrap()
                .expires_in,
            3600
        );
        for bad in ["0", "-5", "31622401", "9223372036854775807", "\"3600\""] {
            match parse_create_token(body(bad).as_bytes()) {
                Ok(t) => panic!("{bad}: accepted as {} s", t.expires_in),
                Err(e) => assert!(e.to_string().contains("expiresIn"), "{bad}: {e}"),
            }
        }
    }
}
