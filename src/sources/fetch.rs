//! The provider chain, executed: one step of a [`Plan`] at a time, with the clients each
//! step calls (STS, SSO, a `credential_process`, a web identity token file). This is the
//! one seam where credentials are obtained from outside; [`super::cache`] decides when a
//! step runs and supplies its source's credentials, so nothing here caches or recurses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::SourceError;
use super::plan::{MFA_SESSION_SECONDS, Plan};
use super::process::run_credential_process;
use super::sso::SsoClient;
use super::sts::{AssumeRoleRequest, StsClient};
use super::web_identity::read_token_file;
use crate::credentials::Credentials;
use crate::sources::endpoint::ServiceEndpoint;

/// The clients a plan's steps call.
pub struct Providers {
    sts: StsClient,
    sso: SsoClient,
    process_timeout_ms: AtomicU64,
}

impl Providers {
    /// Providers calling through `sts` and `sso`; a `credential_process` may run 60 s.
    pub fn new(sts: StsClient, sso: SsoClient) -> Self {
        Providers {
            sts,
            sso,
            process_timeout_ms: AtomicU64::new(60_000),
        }
    }

    /// Sets how long a `credential_process` may run.
    pub fn set_process_timeout(&self, timeout: Duration) {
        self.process_timeout_ms
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// Runs the one step `plan` names, with `source`: its source's credentials (for
    /// `SessionToken` and `AssumeRole`, resolved by the cache; `None` otherwise).
    pub async fn step(
        &self,
        plan: &Plan,
        source: Option<&Credentials>,
    ) -> Result<Credentials, SourceError> {
        let missing_source = || SourceError::Internal("a step ran without its source".into());
        let sts_err = |e: super::sts::StsError| SourceError::Sts {
            profile: describe_profile(plan),
            unreachable: is_unreachable(&e),
            error: e.to_string(),
        };
        match plan {
            Plan::SessionToken {
                source: source_plan,
                endpoint,
                duration,
            } => {
                let _ = source_plan;
                let keys = source.ok_or_else(missing_source)?;
                self.sts
                    .get_session_token(endpoint, keys, *duration, None)
                    .await
                    .map_err(sts_err)
            }
            Plan::FederationToken {
                name,
                duration,
                endpoint,
                policy,
                ..
            } => {
                let keys = source.ok_or_else(missing_source)?;
                self.sts
                    .get_federation_token(endpoint, keys, name, *duration, policy)
                    .await
                    .map_err(sts_err)
            }
            Plan::AssumeRole {
                role_arn,
                session_name,
                external_id,
                duration,
                source_identity,
                endpoint,
                policy,
                ..
            } => {
                let creds = source.ok_or_else(missing_source)?;
                let req = AssumeRoleRequest {
                    role_arn: role_arn.clone(),
                    session_name: session_name.clone(),
                    external_id: external_id.clone(),
                    duration_seconds: *duration,
                    mfa: None,
                    source_identity: source_identity.clone(),
                    policy: policy.clone(),
                };
                self.sts
                    .assume_role(endpoint, creds, &req)
                    .await
                    .map_err(sts_err)
            }
            Plan::WebIdentity {
                profile,
                role_arn,
                token_file,
                session_name,
                duration,
                endpoint,
                policy,
            } => {
                let token = read_token_file(token_file)
                    .await
                    .map_err(|e| SourceError::Other {
                        profile: profile.clone(),
                        error: e.to_string(),
                    })?;
                self.sts
                    .assume_role_with_web_identity(
                        endpoint,
                        role_arn,
                        session_name,
                        &token,
                        *duration,
                        policy.as_deref(),
                    )
                    .await
                    .map_err(sts_err)
            }
            Plan::Sso {
                config,
                portal,
                oidc,
                cache_dir,
            } => self
                .sso
                .get_role_credentials_at(cache_dir, config, portal, oidc)
                .await
                .map_err(|e| {
                    let login = matches!(e, super::sso::SsoError::LoginRequired { .. });
                    SourceError::Sso {
                        profile: config.profile.clone(),
                        error: e.to_string(),
                        login_required: login,
                    }
                }),
            Plan::Process {
                profile,
                command,
                endpoint,
            } => {
                let creds = run_credential_process(
                    command,
                    Duration::from_millis(self.process_timeout_ms.load(Ordering::Relaxed)),
                )
                .await
                .map_err(|e| SourceError::Other {
                    profile: profile.clone(),
                    error: e.to_string(),
                })?;
                if creds.session_token.is_some() {
                    Ok(creds)
                } else {
                    self.sts
                        .get_session_token(endpoint, &creds, None, None)
                        .await
                        .map_err(sts_err)
                }
            }
            Plan::MfaSession { serial, .. } => Err(SourceError::NoMfaSession {
                serial: serial.clone(),
            }),
            Plan::FileSession { .. } | Plan::Keys { .. } | Plan::Environment => {
                Err(SourceError::Internal("uncached plan reached fetch".into()))
            }
        }
    }

    /// Opens the MFA session `plan` names: GetSessionToken on `keys` with the device
    /// `serial` and its one-time `code`.
    pub async fn mfa_session(
        &self,
        plan: &Plan,
        endpoint: &ServiceEndpoint,
        keys: &Credentials,
        serial: &str,
        code: &str,
    ) -> Result<Credentials, SourceError> {
        self.sts
            .get_session_token(
                endpoint,
                keys,
                Some(MFA_SESSION_SECONDS),
                Some((serial, code)),
            )
            .await
            .map_err(|e| SourceError::Sts {
                profile: describe_profile(plan),
                unreachable: is_unreachable(&e),
                error: e.to_string(),
            })
    }
}

/// The profile a plan step serves, for messages.
pub(super) fn describe_profile(plan: &Plan) -> String {
    match plan {
        Plan::AssumeRole { profile, .. }
        | Plan::WebIdentity { profile, .. }
        | Plan::Process { profile, .. }
        | Plan::FileSession { profile, .. }
        | Plan::Keys { profile, .. } => profile.clone(),
        Plan::Sso { config, .. } => config.profile.clone(),
        Plan::SessionToken { source, .. }
        | Plan::MfaSession { source, .. }
        | Plan::FederationToken { source, .. } => describe_profile(source),
        Plan::Environment => "environment".into(),
    }
}

/// Whether an STS error means STS could not be reached (or throttled us).
pub(super) fn is_unreachable(e: &super::sts::StsError) -> bool {
    matches!(
        e,
        super::sts::StsError::Unreachable { .. } | super::sts::StsError::Throttled { .. }
    )
}
