//! Credentials that need no call: the daemon's environment keys
//! (`credential_source = Environment`) and session keys written in the shared files.

use time::OffsetDateTime;

use super::error::SourceError;
use crate::credentials::{Credentials, Secret};
use crate::profiles::{Snapshot, SourceKind};

/// The daemon's environment keys (`credential_source = Environment`).
pub fn environment_credentials(env: &dyn crate::env::Env) -> Result<Credentials, SourceError> {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    let (Some(id), Some(secret)) = (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) else {
        return Err(SourceError::NoEnvironmentKeys);
    };
    Ok(Credentials {
        access_key_id: id,
        secret_access_key: Secret::new(secret),
        session_token: get("AWS_SESSION_TOKEN").map(Secret::new),
        expiration: None,
        account_id: None,
    })
}

/// Credentials written in the shared files for `name`, checked against `now`.
pub fn file_credentials(
    snap: &Snapshot,
    name: &str,
    now: OffsetDateTime,
) -> Result<Credentials, SourceError> {
    let profile = snap
        .profile(name)
        .ok_or_else(|| SourceError::UnknownProfile {
            profile: name.to_string(),
        })?;
    let kind = profile.kind();
    match kind {
        SourceKind::SessionKeys | SourceKind::StaticKeys => {}
        SourceKind::None => {
            return Err(SourceError::MissingKey {
                profile: name.to_string(),
                key: "aws_access_key_id",
            });
        }
        other => {
            return Err(SourceError::Unsupported {
                profile: name.to_string(),
                kind: other,
            });
        }
    }
    let get = |key: &'static str| {
        profile.get(key).ok_or_else(|| SourceError::MissingKey {
            profile: name.to_string(),
            key,
        })
    };
    let id = get("aws_access_key_id")?;
    let secret = get("aws_secret_access_key")?;
    for (key, value) in [("aws_access_key_id", id), ("aws_secret_access_key", secret)] {
        if value.contains(char::is_whitespace) {
            return Err(SourceError::BadValue {
                profile: name.to_string(),
                key,
                problem: "contains whitespace (comments are not allowed after a value in AWS shared files)",
            });
        }
    }
    let Some(token) = profile.session_token() else {
        return Err(SourceError::LongTermKeys {
            profile: name.to_string(),
        });
    };
    let expiration = profile
        .written_expiry()
        .map_err(|key| SourceError::BadValue {
            profile: name.to_string(),
            key,
            problem: "is not a timestamp (expected e.g. 2026-11-27T10:00:00Z)",
        })?;
    if let Some(at) = expiration
        && at <= now
    {
        return Err(SourceError::Expired {
            profile: name.to_string(),
            at: crate::credentials::format_expiration(at),
        });
    }
    Ok(Credentials {
        access_key_id: id.to_string(),
        secret_access_key: Secret::new(secret),
        session_token: Some(Secret::new(token)),
        expiration,
        account_id: profile.get("aws_account_id").map(Into::into),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::{merge, parse::parse};
    use time::macros::datetime;

    fn snap(creds: &str) -> Snapshot {
        merge(&parse(creds).unwrap(), &[])
    }
    const NOW: OffsetDateTime = datetime!(2026-11-27 10:00:00 UTC);

    #[test]
    fn session_keys_served_with_written_expiry() {
        let s = snap(
            "[a]\naws_access_key_id=ASIA1\naws_secret_access_key=S\naws_session_token=T\nx_security_token_expires=2026-11-27T11:00:00Z\n",
        );
        let c = file_credentials(&s, "a", NOW).unwrap();
        assert_eq!(c.expiration, Some(datetime!(2026-11-27 11:00:00 UTC)));
        assert_eq!(c.session_token.unwrap().expose(), "T");
    }

    #[test]
    fn errors_name_profile_and_key() {
        let s = snap(
            "[lt]\naws_access_key_id=AKIA\naws_secret_access_key=S\n[half]\naws_access_key_id=A\naws_session_token=T\n[old]\naws_access_key_id=A\naws_secret_access_key=S\naws_session_token=T\naws_expiration=2026-11-27T09:00:00Z\n[c]\naws_access_key_id=A # note\naws_secret_access_key=S\naws_session_token=T\n",
        );
        let e = |n| file_credentials(&s, n, NOW).unwrap_err().to_string();
        assert!(
            e("lt").starts_with("profile 'lt' has long-term keys only"),
            "{}",
            e("lt")
        );
        assert_eq!(e("half"), "profile 'half': missing aws_secret_access_key");
        assert!(e("old").contains("expired at 2026-11-27T09:00:00Z"));
        assert!(e("c").contains("aws_access_key_id contains whitespace"));
        assert_eq!(
            e("zz"),
            "profile 'zz' is not in the AWS credentials or config file"
        );
    }

    #[test]
    fn other_kinds_are_named() {
        let s = merge(&[], &parse("[profile r]\nrole_arn=arn:aws:iam::1:role/x\nsource_profile=b\n[profile n]\nregion=x\n").unwrap());
        let e = file_credentials(&s, "r", NOW).unwrap_err().to_string();
        assert_eq!(e, "profile 'r': role profiles are not supported yet");
        let e = file_credentials(&s, "n", NOW).unwrap_err().to_string();
        assert_eq!(e, "profile 'n': missing aws_access_key_id");
    }
}
