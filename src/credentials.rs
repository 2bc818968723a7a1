//! Credentials and the secret strings inside them.
//!
//! [`Secret`] is the only type that holds key material: its `Debug` and `Display` print
//! `<redacted>`, and its memory is zeroed on drop. [`Credentials`] is one resolved set of AWS
//! credentials, and [`Credentials::to_container_json`] renders the container-credentials body
//! that every SDK understands (see docs/PROTOCOL.md).

use std::fmt;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

/// A secret string (secret access key, session token, bearer token). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret itself, for the few places that must send it somewhere.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::hash::Hash for Secret {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.as_str().hash(state)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One set of AWS credentials.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// The access key id (`AKIA...` for long-term keys, `ASIA...` for session keys). Not a
    /// secret by AWS's own rules, but only ever logged by its last four characters.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// The session token, present for temporary credentials.
    pub session_token: Option<Secret>,
    /// When the credentials stop working, if known.
    pub expiration: Option<OffsetDateTime>,
    /// The account the credentials belong to, if known.
    pub account_id: Option<String>,
}

impl Credentials {
    /// Whether these are temporary (session) credentials.
    pub fn is_session(&self) -> bool {
        self.session_token.is_some()
    }

    /// The access key id reduced to its last four characters, for logs.
    pub fn key_hint(&self) -> String {
        let tail: String = self
            .access_key_id
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("...{tail}")
    }

    /// The container-credentials response body, with `Expiration` set to `served_expiration`
    /// (which may be earlier than the true expiry; see `server`'s lifetime policy).
    ///
    /// Returns `None` when there is no session token: SDKs reject a body without `Token`.
    pub fn to_container_json(&self, served_expiration: OffsetDateTime) -> Option<String> {
        // Serialized straight from borrowed fields (no serde_json::Value map), in the order
        // the Value map produced (sorted keys).
        #[derive(serde::Serialize)]
        struct Body<'a> {
            #[serde(rename = "AccessKeyId")]
            access_key_id: &'a str,
            #[serde(rename = "AccountId", skip_serializing_if = "Option::is_none")]
            account_id: Option<&'a str>,
            #[serde(rename = "Expiration")]
            expiration: String,
            #[serde(rename = "SecretAccessKey")]
            secret_access_key: &'a str,
            #[serde(rename = "Token")]
            token: &'a str,
        }
        let token = self.session_token.as_ref()?;
        serde_json::to_string(&Body {
            access_key_id: &self.access_key_id,
            account_id: self.account_id.as_deref(),
            expiration: format_expiration(served_expiration),
            secret_access_key: self.secret_access_key.expose(),
            token: token.expose(),
        })
        .ok()
    }
}

/// Formats a timestamp as `YYYY-MM-DDTHH:MM:SSZ` in UTC, the only form every SDK accepts
/// (the JS SDK rejects `+00:00`, the Rust SDK requires `Z`).
pub fn format_expiration(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Parses an expiry timestamp as the tools that write credentials files do: RFC 3339
/// (`2026-11-27T10:00:00Z`, `...+00:00`, with fractional seconds), or RFC 3339 without the
/// `T` separator.
pub fn parse_timestamp(value: &str) -> Option<OffsetDateTime> {
    let value = value.trim();
    if let Ok(t) = OffsetDateTime::parse(value, &Rfc3339) {
        return Some(t);
    }
    // `2026-11-27 10:00:00+00:00` (Python's str(datetime)) and a bare `...Z` without `T`.
    let replaced = value.replacen(' ', "T", 1);
    OffsetDateTime::parse(&replaced, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("wJalrXUtnFEMI");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        let c = Credentials {
            access_key_id: "ASIAEXAMPLE1234".into(),
            secret_access_key: s,
            session_token: Some(Secret::new("tok")),
            expiration: None,
            account_id: None,
        };
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("wJalrXUtnFEMI") && !dbg.contains("tok\""),
            "{dbg}"
        );
        assert_eq!(c.key_hint(), "...1234");
    }

    #[test]
    fn expiration_is_utc_with_z() {
        let t = datetime!(2026-11-27 10:05:09 +02:00);
        assert_eq!(format_expiration(t), "2026-11-27T08:05:09Z");
    }

    #[test]
    fn parses_common_expiry_forms() {
        let want = datetime!(2026-11-27 10:00:00 UTC);
        for v in [
            "2026-11-27T10:00:00Z",
            "2026-11-27T10:00:00+00:00",
            "2026-11-27T10:00:00.000Z",
            "2026-11-27 10:00:00+00:00",
            "2026-11-27T12:00:00+02:00",
        ] {
            assert_eq!(parse_timestamp(v), Some(want), "{v}");
        }
        assert_eq!(parse_timestamp("tomorrow"), None);
    }

    #[test]
    fn json_requires_token() {
        let mut c = Credentials {
            access_key_id: "AKIA".into(),
            secret_access_key: Secret::new("s"),
            session_token: None,
            expiration: None,
            account_id: Some("111111111111".into()),
        };
        let t = datetime!(2026-11-27 10:00:00 UTC);
        assert!(c.to_container_json(t).is_none());
        c.session_token = Some(Secret::new("tok"));
        let v: serde_json::Value = serde_json::from_str(&c.to_container_json(t).unwrap()).unwrap();
        assert_eq!(v["Expiration"], "2026-11-27T10:00:00Z");
        assert_eq!(v["AccountId"], "111111111111");
        assert_eq!(v["Token"], "tok");
    }
}
