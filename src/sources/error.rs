//! [`SourceError`]: why a profile yields no credentials, and how the server classes it
//! (a login needed, the upstream unreachable or failing, or a fault in the profile).

use crate::profiles::SourceKind;

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
