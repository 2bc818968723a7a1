//! Credential sources: how a profile becomes credentials.
//!
//! [`Resolver`] is what the server asks: "credentials for profile X, for this scope, now".
//! It works out the profile's [`plan::Plan`] from the current snapshot, then either reads
//! session keys straight from the file or asks the [`cache::Sessions`] cache, which calls
//! STS ([`sts`]), SSO ([`sso`]), a `credential_process` ([`process`]) or a web identity
//! token ([`web_identity`]) and refreshes ahead of expiry. Endpoints are resolved by
//! [`endpoint`]; the HTTP plumbing shared by STS and SSO is in [`http`]. A long-term key
//! is never handed to a client: it is exchanged through STS first.

pub mod cache;
pub mod endpoint;
pub mod fetch;
pub mod http;
pub mod plan;
pub mod process;
pub mod sso;
pub mod sts;
pub mod web_identity;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::credentials::{Credentials, Secret};
use crate::profiles::store::ProfileStore;
use crate::profiles::{Snapshot, SourceKind};
use crate::session_policy::SessionPolicy;
use cache::Sessions;
use plan::{Plan, PlanInputs};

/// Why a profile yields no credentials. Messages name the profile and never hold a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The profile is in neither file.
    #[error("profile '{profile}' is not in the AWS credentials or config file")]
    UnknownProfile {
        /// The profile.
        profile: String,
    },
    /// A key the profile's kind needs is missing.
    #[error("profile '{profile}': missing {key}")]
    MissingKey {
        /// The profile.
        profile: String,
        /// The missing key.
        key: &'static str,
    },
    /// A value is malformed.
    #[error("profile '{profile}': {key} {problem}")]
    BadValue {
        /// The profile.
        profile: String,
        /// The key.
        key: &'static str,
        /// What is wrong with it (never the value).
        problem: &'static str,
    },
    /// The profile's kind is not served (yet).
    #[error("profile '{profile}': {kind} profiles are not supported yet")]
    Unsupported {
        /// The profile.
        profile: String,
        /// Its kind.
        kind: SourceKind,
    },
    /// Long-term keys are never handed to a process.
    #[error(
        "profile '{profile}' has long-term keys only (no aws_session_token); credport serves session credentials, so long-term keys must be exchanged through STS first"
    )]
    LongTermKeys {
        /// The profile.
        profile: String,
    },
    /// `source_profile` links loop.
    #[error("role chain loops: {chain}")]
    Cycle {
        /// The profiles in the loop, `a -> b -> a`.
        chain: String,
    },
    /// A `credential_source` that means nothing on a developer's machine.
    #[error(
        "profile '{profile}': credential_source = {value} is not available to credport (it names the metadata service of an EC2 instance or ECS task, which a developer machine does not have); use source_profile or credential_source = Environment"
    )]
    UnsupportedCredentialSource {
        /// The profile.
        profile: String,
        /// The value.
        value: String,
    },
    /// An MFA session is needed and there is none (or it expired).
    #[error("profile '{profile}' needs an MFA session: run `credport login {profile}`")]
    MfaRequired {
        /// The profile to log in with.
        profile: String,
    },
    /// The plan step for an MFA device has no open session; [`Resolver::resolve`] names
    /// the profile to log in with ([`SourceError::MfaRequired`]).
    #[error("no MFA session is open for device {serial}: run `credport login PROFILE`")]
    NoMfaSession {
        /// The device's `mfa_serial`.
        serial: String,
    },
    /// STS refused or could not be reached.
    #[error("profile '{profile}': {error}")]
    Sts {
        /// The profile whose call failed.
        profile: String,
        /// What STS said (never a secret).
        error: String,
        /// Whether STS could not be reached at all (or kept throttling).
        unreachable: bool,
    },
    /// SSO failed.
    #[error("profile '{profile}': {error}")]
    Sso {
        /// The profile.
        profile: String,
        /// What went wrong (names the `aws sso login` command when a login is needed).
        error: String,
        /// Whether the user must log in again.
        login_required: bool,
    },
    /// Another source (credential_process, web identity token file) failed.
    #[error("profile '{profile}': {error}")]
    Other {
        /// The profile.
        profile: String,
        /// What went wrong.
        error: String,
    },
    /// The environment has no keys for `credential_source = Environment`.
    #[error(
        "credential_source = Environment: the daemon's environment has no AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )]
    NoEnvironmentKeys,
    /// A bug: a state that should not happen.
    #[error("internal error: {0}")]
    Internal(String),
    /// A session policy is configured for a profile whose source cannot take one.
    #[error(
        "profile '{profile}' cannot be scoped down by the session policy: its credentials come from {source_kind}, and STS takes a policy only on AssumeRole, AssumeRoleWithWebIdentity and GetFederationToken; map the stage to a role profile (role_arn) or to long-term keys, or remove its policy"
    )]
    PolicyUnsupported {
        /// The profile served.
        profile: String,
        /// What its credentials come from.
        source_kind: &'static str,
    },
    /// The session credentials in the file have expired.
    #[error(
        "profile '{profile}': session credentials expired at {at}; refresh them with the tool that wrote them"
    )]
    Expired {
        /// The profile.
        profile: String,
        /// When they expired (`YYYY-MM-DDTHH:MM:SSZ`).
        at: String,
    },
}

impl SourceError {
    /// Whether the error comes from outside (STS, SSO, a process) rather than from the
    /// profile's configuration.
    pub fn is_upstream(&self) -> bool {
        matches!(
            self,
            SourceError::Sts { .. } | SourceError::Sso { .. } | SourceError::Other { .. }
        )
    }

    /// Whether the user has to log in (MFA or SSO) before this can work.
    pub fn needs_login(&self) -> bool {
        matches!(
            self,
            SourceError::MfaRequired { .. }
                | SourceError::NoMfaSession { .. }
                | SourceError::Sso {
                    login_required: true,
                    ..
                }
        )
    }

    /// Whether STS could not be reached.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            SourceError::Sts {
                unreachable: true,
                ..
            }
        )
    }
}

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

/// Turns profile names into credentials using the live profile store and the session
/// cache.
pub struct Resolver {
    profiles: Arc<ProfileStore>,
    sessions: Arc<Sessions>,
    sso_cache_dir: PathBuf,
    /// The environment plans read (endpoint overrides, `AWS_REGION`).
    env: crate::env::Snapshot,
}

impl Resolver {
    /// A resolver over `profiles`, fetching into `sessions`. `home` locates the SSO token
    /// cache (`~/.aws/sso/cache`).
    pub fn new(
        profiles: Arc<ProfileStore>,
        sessions: Arc<Sessions>,
        home: PathBuf,
        env: crate::env::Snapshot,
    ) -> Self {
        Resolver {
            profiles,
            sessions,
            sso_cache_dir: sso::default_cache_dir(&home),
            env,
        }
    }

    /// The session cache.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// The plan for `profile` serving `(project, stage)`, from the current snapshot.
    pub fn plan(&self, profile: &str, project: &str, stage: &str) -> Result<Plan, SourceError> {
        self.plan_scoped(profile, project, stage, None)
    }

    /// [`plan`](Self::plan), scoped down by the binding's session `policy`.
    pub fn plan_scoped(
        &self,
        profile: &str,
        project: &str,
        stage: &str,
        policy: Option<&Arc<SessionPolicy>>,
    ) -> Result<Plan, SourceError> {
        let snap = self.profiles.snapshot();
        self.plan_in(&snap, profile, project, stage, policy)
    }

    /// The plan for `profile` serving `(project, stage)` in `snap`. The server keeps it
    /// per scope until the snapshot changes.
    pub fn plan_in(
        &self,
        snap: &Snapshot,
        profile: &str,
        project: &str,
        stage: &str,
        policy: Option<&Arc<SessionPolicy>>,
    ) -> Result<Plan, SourceError> {
        let env = |k: &str| self.env.get(k);
        let inputs = PlanInputs {
            snap,
            env: &env,
            sso_cache_dir: self.sso_cache_dir.clone(),
            default_session_name: plan::session_name_for(project, stage),
            policy: policy.cloned(),
        };
        plan::plan(&inputs, profile)
    }

    /// Credentials for `profile`, serving `(project, stage)`. `margin` is the
    /// refresh-ahead margin for cached sessions.
    pub async fn resolve(
        &self,
        profile: &str,
        project: &str,
        stage: &str,
        margin: Duration,
    ) -> Result<Arc<Credentials>, SourceError> {
        self.resolve_scoped(profile, project, stage, None, margin)
            .await
    }

    /// [`resolve`](Self::resolve), scoped down by the binding's session `policy` (a
    /// different policy is a different plan, so a different cached session).
    pub async fn resolve_scoped(
        &self,
        profile: &str,
        project: &str,
        stage: &str,
        policy: Option<&Arc<SessionPolicy>>,
        margin: Duration,
    ) -> Result<Arc<Credentials>, SourceError> {
        let plan = self.plan_scoped(profile, project, stage, policy)?;
        self.fetch(&plan, profile, margin).await
    }

    /// Credentials for an already made `plan` of `profile` (the name errors give).
    pub async fn fetch(
        &self,
        plan: &Plan,
        profile: &str,
        margin: Duration,
    ) -> Result<Arc<Credentials>, SourceError> {
        let result = self.sessions.get(plan, margin).await;
        result.map_err(|e| match e {
            // The step knows the device; the profile to log in with is the one asked for.
            SourceError::NoMfaSession { .. } => SourceError::MfaRequired {
                profile: profile.to_string(),
            },
            e => e,
        })
    }

    /// Opens the MFA session that `profile` needs, with a one-time `code`. Returns when the
    /// session expires.
    pub async fn login(&self, profile: &str, code: &str) -> Result<OffsetDateTime, SourceError> {
        let plan = self.plan(profile, "login", "mfa")?;
        let Some(mfa) = plan.mfa_session() else {
            return Err(SourceError::BadValue {
                profile: profile.to_string(),
                key: "mfa_serial",
                problem: "is not set on this profile or its role chain, so it needs no login",
            });
        };
        let creds = self.sessions.login(mfa, code).await?;
        Ok(creds.expiration.unwrap_or_else(|| {
            OffsetDateTime::now_utc() + Duration::from_secs(plan::MFA_SESSION_SECONDS.into())
        }))
    }
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
