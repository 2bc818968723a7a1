//! [`Resolver`]: what the server asks for "credentials for profile X, for this scope,
//! now". It works out the profile's [`Plan`] from the current snapshot, then reads session
//! keys straight from the file or asks the [`Sessions`] cache.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::cache::Sessions;
use super::plan::{self, Plan, PlanInputs};
use crate::credentials::Credentials;
use crate::profiles::Snapshot;
use crate::profiles::store::ProfileStore;
use crate::session_policy::SessionPolicy;

use super::error::SourceError;

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
            sso_cache_dir: super::sso::default_cache_dir(&home),
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
