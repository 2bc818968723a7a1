//! Plans: what it takes to get a profile's credentials, worked out from one snapshot.
//!
//! A [`Plan`] is a tree: an `AssumeRole` node holds the plan of its source profile, an
//! `MfaSession` node the long-term keys it is opened with, and so on down to keys in the
//! file, the daemon's environment, SSO, a web identity token or a `credential_process`.
//! Plans are values: two profiles that resolve to the same calls with the same inputs
//! have equal plans, and the session cache is keyed by plan. So an edit of a profile, or
//! of any profile in its chain, changes exactly the plans (and sessions) that depend on
//! it, and an unrelated edit changes nothing.
//!
//! Rules, as the AWS CLI applies them:
//! - `role_arn` + `source_profile`: assume the role with the source's credentials (chains
//!   of any length; `source_profile` naming the profile itself means its own keys; a cycle
//!   is an error naming the chain). A source profile with `role_arn` is itself assumed.
//! - `role_arn` + `credential_source`: `Environment` is the daemon's own
//!   `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`; `Ec2InstanceMetadata` and
//!   `EcsContainer` name the metadata of a machine or task, which a developer's machine
//!   does not have, so they are refused with that explanation.
//! - `role_arn` + `web_identity_token_file`: `AssumeRoleWithWebIdentity`.
//! - `sso_session` / `sso_start_url`: SSO `GetRoleCredentials`.
//! - long-term keys served to a client are first exchanged with `GetSessionToken`;
//!   long-term keys used as a role's source are used directly, as the CLI does.
//! - `mfa_serial`: the hop that names it is opened with an MFA session
//!   (`GetSessionToken` with the code) on the long-term keys below it. The session comes
//!   from `credport login`, and every role behind the same keys and device shares it, so
//!   one code unlocks them all (as aws-vault does).
//! - a session policy ([`SessionPolicy`], from the binding) scopes the served session down:
//!   it goes on the last call of the chain, the `AssumeRole` (or
//!   `AssumeRoleWithWebIdentity`) that makes the served session, never on a hop before it;
//!   long-term keys are exchanged with `GetFederationToken` instead of `GetSessionToken`,
//!   since only that call takes a policy. A source whose served session no STS call makes
//!   (session keys in the file, SSO, `credential_process`, an MFA session) cannot be
//!   scoped down and is an error naming the profile and the source, never an unscoped
//!   session.

use std::path::PathBuf;
use std::sync::Arc;

use crate::credentials::{Credentials, Secret};
use crate::profiles::{Profile, Snapshot, SourceKind};
use crate::session_policy::SessionPolicy;
use crate::sources::SourceError;
use crate::sources::endpoint::{
    ServiceEndpoint, sso_oidc_endpoint, sso_portal_endpoint, sts_endpoint,
};
use crate::sources::sso::SsoConfig;

/// Default lifetime of an MFA session opened by `credport login`: 12 hours, STS's default
/// for `GetSessionToken`.
pub const MFA_SESSION_SECONDS: u32 = 12 * 60 * 60;

/// How to obtain one set of credentials.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Plan {
    /// Session keys written in the shared files, served as they are. They are part of
    /// the plan, so a rewrite of the file changes every plan built on them.
    FileSession {
        /// The profile holding them.
        profile: String,
        /// The keys, checked (complete, not expired) when the plan was made; shared, so
        /// serving them from a cached plan copies nothing.
        creds: std::sync::Arc<Credentials>,
    },
    /// Long-term keys from the shared files (only ever a source for STS).
    Keys {
        /// The profile holding them.
        profile: String,
        /// `aws_access_key_id`.
        access_key_id: String,
        /// `aws_secret_access_key`.
        secret: Secret,
    },
    /// The daemon's own environment keys (`credential_source = Environment`).
    Environment,
    /// `GetSessionToken` on the source's keys.
    SessionToken {
        /// The keys.
        source: Box<Plan>,
        /// Where STS is.
        endpoint: ServiceEndpoint,
        /// `duration_seconds`, if set.
        duration: Option<u32>,
    },
    /// An MFA session on long-term keys, opened by `credport login`.
    MfaSession {
        /// The keys.
        source: Box<Plan>,
        /// `mfa_serial`.
        serial: String,
        /// Where STS is.
        endpoint: ServiceEndpoint,
    },
    /// `AssumeRole` with the source's credentials.
    AssumeRole {
        /// The profile naming the role.
        profile: String,
        /// The source credentials.
        source: Box<Plan>,
        /// `role_arn`.
        role_arn: String,
        /// `role_session_name`, or credport's default.
        session_name: String,
        /// `external_id`.
        external_id: Option<String>,
        /// `duration_seconds`.
        duration: Option<u32>,
        /// `source_identity`.
        source_identity: Option<String>,
        /// Where STS is.
        endpoint: ServiceEndpoint,
        /// The session policy, on the last hop of the chain only.
        policy: Option<Arc<SessionPolicy>>,
    },
    /// `GetFederationToken` on long-term keys: how keys are exchanged when a session policy
    /// must scope the served session down (`GetSessionToken` takes none).
    FederationToken {
        /// The keys.
        source: Box<Plan>,
        /// `Name`: the scope's session name, cut to the 32 characters STS allows.
        name: String,
        /// `duration_seconds`, if set.
        duration: Option<u32>,
        /// Where STS is.
        endpoint: ServiceEndpoint,
        /// The session policy.
        policy: Arc<SessionPolicy>,
    },
    /// `AssumeRoleWithWebIdentity` with a token file.
    WebIdentity {
        /// The profile.
        profile: String,
        /// `role_arn`.
        role_arn: String,
        /// `web_identity_token_file`.
        token_file: PathBuf,
        /// `role_session_name`, or credport's default.
        session_name: String,
        /// `duration_seconds`.
        duration: Option<u32>,
        /// Where STS is.
        endpoint: ServiceEndpoint,
        /// The session policy (this call makes the served session).
        policy: Option<Arc<SessionPolicy>>,
    },
    /// SSO `GetRoleCredentials`.
    Sso {
        /// The resolved SSO settings.
        config: SsoConfig,
        /// Portal base URL.
        portal: String,
        /// OIDC base URL (token refresh).
        oidc: String,
        /// The token cache directory (`~/.aws/sso/cache`).
        cache_dir: PathBuf,
    },
    /// A `credential_process` command; long-term keys it prints are exchanged through STS.
    Process {
        /// The profile.
        profile: String,
        /// The command line.
        command: String,
        /// Where STS is, for the exchange.
        endpoint: ServiceEndpoint,
    },
}

impl Plan {
    /// Whether the session cache keeps this plan's credentials (everything that calls out).
    pub fn is_cached(&self) -> bool {
        !matches!(
            self,
            Plan::FileSession { .. } | Plan::Keys { .. } | Plan::Environment
        )
    }

    /// The first MFA session in this plan (the one `credport login` opens), if any.
    pub fn mfa_session(&self) -> Option<&Plan> {
        match self {
            Plan::MfaSession { .. } => Some(self),
            Plan::SessionToken { source, .. }
            | Plan::AssumeRole { source, .. }
            | Plan::FederationToken { source, .. } => source.mfa_session(),
            _ => None,
        }
    }

    /// The plan whose credentials this step needs first (its source), for the steps that
    /// sign with them: `SessionToken`, `FederationToken` and `AssumeRole`.
    pub fn fetch_source(&self) -> Option<&Plan> {
        match self {
            Plan::SessionToken { source, .. }
            | Plan::AssumeRole { source, .. }
            | Plan::FederationToken { source, .. } => Some(source),
            _ => None,
        }
    }

    /// A short description for status output (no secrets).
    pub fn describe(&self) -> String {
        match self {
            Plan::FileSession { profile, .. } => format!("session keys in profile '{profile}'"),
            Plan::Keys { profile, .. } => format!("long-term keys of '{profile}'"),
            Plan::Environment => "the daemon's environment keys".into(),
            Plan::SessionToken { source, .. } => {
                format!("GetSessionToken with {}", source.describe())
            }
            Plan::MfaSession { source, serial, .. } => {
                format!("MFA session ({serial}) on {}", source.describe())
            }
            Plan::AssumeRole {
                role_arn,
                source,
                policy,
                ..
            } => {
                format!(
                    "AssumeRole {role_arn}{} with {}",
                    scoped(policy.as_deref()),
                    source.describe()
                )
            }
            Plan::FederationToken { source, policy, .. } => format!(
                "GetFederationToken{} with {}",
                scoped(Some(policy)),
                source.describe()
            ),
            Plan::WebIdentity {
                role_arn, policy, ..
            } => format!(
                "AssumeRoleWithWebIdentity {role_arn}{}",
                scoped(policy.as_deref())
            ),
            Plan::Sso { config, .. } => format!(
                "SSO {}/{} via {}",
                config.account_id, config.role_name, config.start_url
            ),
            Plan::Process { command, .. } => format!(
                "credential_process {}",
                command.split_whitespace().next().unwrap_or("")
            ),
        }
    }
}

/// ` (scoped by POLICY)`, or nothing.
fn scoped(policy: Option<&SessionPolicy>) -> String {
    policy
        .map(|p| format!(" (scoped by {})", p.describe()))
        .unwrap_or_default()
}

/// What a plan is built from besides the snapshot.
pub struct PlanInputs<'a> {
    /// The profiles.
    pub snap: &'a Snapshot,
    /// The daemon's environment (regions, endpoint overrides).
    pub env: &'a dyn crate::env::Env,
    /// The SSO token cache directory.
    pub sso_cache_dir: PathBuf,
    /// Default `role_session_name` (identifies credport and the scope).
    pub default_session_name: String,
    /// The session policy the scope's binding names, if any.
    pub policy: Option<Arc<SessionPolicy>>,
}

/// A valid `role_session_name` for a scope: `credport-PROJECT-STAGE`, at most 64
/// characters of `[\w+=,.@-]`.
pub fn session_name_for(project: &str, stage: &str) -> String {
    let mut name: String = format!("credport-{project}-{stage}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+=,.@-_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(64);
    name
}

/// The plan that serves `profile` to a client, scoped down by the inputs' session policy.
pub fn plan(inputs: &PlanInputs<'_>, profile: &str) -> Result<Plan, SourceError> {
    let unscoped = unscoped_plan(inputs, profile)?;
    match &inputs.policy {
        None => Ok(unscoped),
        Some(policy) => scope_down(unscoped, policy.clone(), profile, inputs),
    }
}

/// Puts `policy` on the call that makes the served session: the last `AssumeRole` (or
/// `AssumeRoleWithWebIdentity`) of the chain; long-term keys' `GetSessionToken` becomes
/// `GetFederationToken`. Anything else cannot take a policy and is refused.
fn scope_down(
    plan: Plan,
    policy: Arc<SessionPolicy>,
    profile: &str,
    inputs: &PlanInputs<'_>,
) -> Result<Plan, SourceError> {
    let refuse = |source: &'static str| SourceError::PolicyUnsupported {
        profile: profile.to_string(),
        source_kind: source,
    };
    match plan {
        Plan::AssumeRole {
            profile,
            source,
            role_arn,
            session_name,
            external_id,
            duration,
            source_identity,
            endpoint,
            policy: _,
        } => Ok(Plan::AssumeRole {
            profile,
            source,
            role_arn,
            session_name,
            external_id,
            duration,
            source_identity,
            endpoint,
            policy: Some(policy),
        }),
        Plan::WebIdentity {
            profile,
            role_arn,
            token_file,
            session_name,
            duration,
            endpoint,
            policy: _,
        } => Ok(Plan::WebIdentity {
            profile,
            role_arn,
            token_file,
            session_name,
            duration,
            endpoint,
            policy: Some(policy),
        }),
        Plan::SessionToken {
            source,
            endpoint,
            duration,
        } => Ok(Plan::FederationToken {
            source,
            name: federation_name(&inputs.default_session_name),
            duration,
            endpoint,
            policy,
        }),
        Plan::MfaSession { .. } => Err(refuse(
            "an MFA session (GetFederationToken, the call that takes a policy for long-term keys, cannot use an MFA device)",
        )),
        Plan::FileSession { .. } => Err(refuse("session keys in the shared files")),
        Plan::Sso { .. } => Err(refuse("SSO role credentials")),
        Plan::Process { .. } => Err(refuse("credential_process")),
        Plan::FederationToken { .. } | Plan::Keys { .. } | Plan::Environment => {
            Err(refuse("this source"))
        }
    }
}

/// A valid `GetFederationToken` `Name` from a session name: 2 to 32 characters of
/// `[\w+=,.@-]` (session names already use only those).
pub fn federation_name(session_name: &str) -> String {
    let mut name: String = session_name.chars().take(32).collect();
    while name.len() < 2 {
        name.push('-');
    }
    name
}

fn unscoped_plan(inputs: &PlanInputs<'_>, profile: &str) -> Result<Plan, SourceError> {
    let p = lookup(inputs, profile)?;
    match p.kind() {
        SourceKind::SessionKeys => file_session(inputs, profile),
        SourceKind::StaticKeys => {
            let keys = keys_of(p)?;
            let endpoint = endpoint_for(inputs, p);
            Ok(match p.get("mfa_serial") {
                Some(serial) => Plan::MfaSession {
                    source: Box::new(keys),
                    serial: serial.into(),
                    endpoint,
                },
                None => Plan::SessionToken {
                    source: Box::new(keys),
                    endpoint,
                    duration: duration(p)?,
                },
            })
        }
        _ => source_plan(inputs, profile, &mut Vec::new()),
    }
}

fn lookup<'a>(inputs: &'a PlanInputs<'_>, name: &str) -> Result<&'a Profile, SourceError> {
    inputs
        .snap
        .profile(name)
        .ok_or_else(|| SourceError::UnknownProfile {
            profile: name.into(),
        })
}

/// The plan of a profile used as a source (or served, for non-key kinds).
fn source_plan(
    inputs: &PlanInputs<'_>,
    name: &str,
    chain: &mut Vec<String>,
) -> Result<Plan, SourceError> {
    let p = lookup(inputs, name)?;
    match p.kind() {
        SourceKind::Role => role_plan(inputs, p, chain),
        SourceKind::SessionKeys => file_session(inputs, name),
        SourceKind::StaticKeys => keys_of(p),
        SourceKind::WebIdentity => Ok(Plan::WebIdentity {
            profile: name.into(),
            role_arn: required(p, "role_arn")?.into(),
            token_file: PathBuf::from(required(p, "web_identity_token_file")?),
            session_name: session_name(inputs, p),
            duration: duration(p)?,
            endpoint: endpoint_for(inputs, p),
            policy: None,
        }),
        SourceKind::Sso => sso_plan(inputs, p),
        SourceKind::Process => Ok(Plan::Process {
            profile: name.into(),
            command: required(p, "credential_process")?.into(),
            endpoint: endpoint_for(inputs, p),
        }),
        SourceKind::None => Err(SourceError::MissingKey {
            profile: name.into(),
            key: "aws_access_key_id",
        }),
    }
}

fn role_plan(
    inputs: &PlanInputs<'_>,
    p: &Profile,
    chain: &mut Vec<String>,
) -> Result<Plan, SourceError> {
    if let Some(i) = chain.iter().position(|n| *n == p.name) {
        let mut cycle = chain[i..].to_vec();
        cycle.push(p.name.clone());
        return Err(SourceError::Cycle {
            chain: cycle.join(" -> "),
        });
    }
    if chain.len() >= 16 {
        return Err(SourceError::BadValue {
            profile: p.name.clone(),
            key: "source_profile",
            problem: "chain is longer than 16 roles",
        });
    }
    chain.push(p.name.clone());
    let role_arn = required(p, "role_arn")?;
    let source = match (p.get("source_profile"), p.get("credential_source")) {
        (Some(_), Some(_)) => {
            return Err(SourceError::BadValue {
                profile: p.name.clone(),
                key: "credential_source",
                problem: "cannot be combined with source_profile",
            });
        }
        (Some(sp), None) if sp == p.name => keys_of(p)?,
        (Some(sp), None) => source_plan(inputs, sp, chain)?,
        (None, Some("Environment")) => Plan::Environment,
        (None, Some(other @ ("Ec2InstanceMetadata" | "EcsContainer"))) => {
            return Err(SourceError::UnsupportedCredentialSource {
                profile: p.name.clone(),
                value: other.into(),
            });
        }
        (None, Some(_)) => {
            return Err(SourceError::BadValue {
                profile: p.name.clone(),
                key: "credential_source",
                problem: "must be Environment, Ec2InstanceMetadata or EcsContainer",
            });
        }
        (None, None) => {
            if p.get("web_identity_token_file").is_some() {
                return source_plan(inputs, &p.name, &mut Vec::new());
            }
            return Err(SourceError::MissingKey {
                profile: p.name.clone(),
                key: "source_profile (or credential_source)",
            });
        }
    };
    let source = match p.get("mfa_serial") {
        None => source,
        Some(serial) => match source {
            keys @ Plan::Keys { .. } => {
                let keys_profile = match &keys {
                    Plan::Keys { profile, .. } => profile.clone(),
                    _ => unreachable!("matched Keys"),
                };
                let kp = lookup(inputs, &keys_profile)?;
                Plan::MfaSession {
                    source: Box::new(keys),
                    serial: serial.into(),
                    endpoint: endpoint_for(inputs, kp),
                }
            }
            _ => {
                return Err(SourceError::BadValue {
                    profile: p.name.clone(),
                    key: "mfa_serial",
                    problem: "is only supported on a role whose source_profile has long-term keys",
                });
            }
        },
    };
    Ok(Plan::AssumeRole {
        profile: p.name.clone(),
        source: Box::new(source),
        role_arn: role_arn.into(),
        session_name: session_name(inputs, p),
        external_id: p.get("external_id").map(Into::into),
        duration: duration(p)?,
        source_identity: p.get("source_identity").map(Into::into),
        endpoint: endpoint_for(inputs, p),
        policy: None,
    })
}

fn sso_plan(inputs: &PlanInputs<'_>, p: &Profile) -> Result<Plan, SourceError> {
    let (session_name, start_url, sso_region) = match p.get("sso_session") {
        Some(s) => {
            let section = inputs
                .snap
                .sso_sessions
                .get(s)
                .ok_or_else(|| SourceError::BadValue {
                    profile: p.name.clone(),
                    key: "sso_session",
                    problem: "names an [sso-session] section that does not exist",
                })?;
            let get = |k: &'static str| {
                section.get(k).cloned().ok_or(SourceError::MissingKey {
                    profile: format!("sso-session {s}"),
                    key: k,
                })
            };
            (
                Some(s.to_string()),
                get("sso_start_url")?,
                get("sso_region")?,
            )
        }
        None => (
            None,
            required(p, "sso_start_url")?.to_string(),
            required(p, "sso_region")?.to_string(),
        ),
    };
    let config = SsoConfig {
        profile: p.name.clone(),
        session_name,
        start_url,
        account_id: required(p, "sso_account_id")?.into(),
        role_name: required(p, "sso_role_name")?.into(),
        sso_region: sso_region.clone(),
    };
    let (svc_sso, svc_oidc) = (
        service_endpoint(inputs, p, "sso"),
        service_endpoint(inputs, p, "sso_oidc"),
    );
    let profile_url = p.get("endpoint_url");
    Ok(Plan::Sso {
        portal: sso_portal_endpoint(&sso_region, profile_url, svc_sso.as_deref(), inputs.env).url,
        oidc: sso_oidc_endpoint(&sso_region, profile_url, svc_oidc.as_deref(), inputs.env).url,
        config,
        cache_dir: inputs.sso_cache_dir.clone(),
    })
}

fn file_session(inputs: &PlanInputs<'_>, name: &str) -> Result<Plan, SourceError> {
    Ok(Plan::FileSession {
        profile: name.into(),
        creds: std::sync::Arc::new(super::file_credentials(
            inputs.snap,
            name,
            time::OffsetDateTime::now_utc(),
        )?),
    })
}

fn keys_of(p: &Profile) -> Result<Plan, SourceError> {
    let id = required(p, "aws_access_key_id")?;
    let secret = required(p, "aws_secret_access_key")?;
    for (key, value) in [("aws_access_key_id", id), ("aws_secret_access_key", secret)] {
        if value.contains(char::is_whitespace) {
            return Err(SourceError::BadValue {
                profile: p.name.clone(),
                key,
                problem: "contains whitespace (comments are not allowed after a value in AWS shared files)",
            });
        }
    }
    Ok(Plan::Keys {
        profile: p.name.clone(),
        access_key_id: id.into(),
        secret: Secret::new(secret),
    })
}

fn required<'a>(p: &'a Profile, key: &'static str) -> Result<&'a str, SourceError> {
    p.get(key).ok_or_else(|| SourceError::MissingKey {
        profile: p.name.clone(),
        key,
    })
}

fn duration(p: &Profile) -> Result<Option<u32>, SourceError> {
    match p.get("duration_seconds") {
        None => Ok(None),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|d| (900..=129_600).contains(d))
            .map(Some)
            .ok_or_else(|| SourceError::BadValue {
                profile: p.name.clone(),
                key: "duration_seconds",
                problem: "must be a whole number of seconds from 900 to 129600",
            }),
    }
}

fn session_name(inputs: &PlanInputs<'_>, p: &Profile) -> String {
    p.get("role_session_name")
        .map(Into::into)
        .unwrap_or_else(|| inputs.default_session_name.clone())
}

/// `endpoint_url` for `service` from the profile's `services = NAME` section, if any.
fn service_endpoint(inputs: &PlanInputs<'_>, p: &Profile, service: &str) -> Option<String> {
    let section = inputs.snap.services.get(p.get("services")?)?;
    let nested = section.get(service)?;
    nested.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("endpoint_url")).then(|| v.trim().to_string())
    })
}

fn endpoint_for(inputs: &PlanInputs<'_>, p: &Profile) -> ServiceEndpoint {
    let svc = service_endpoint(inputs, p, "sts");
    sts_endpoint(
        p.region(),
        p.get("endpoint_url"),
        svc.as_deref(),
        inputs.env,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::{merge, parse::parse};

    fn snap(creds: &str, config: &str) -> Snapshot {
        merge(&parse(creds).unwrap(), &parse(config).unwrap())
    }

    fn plan_of(s: &Snapshot, profile: &str) -> Result<Plan, SourceError> {
        scoped_plan_of(s, profile, None)
    }

    fn scoped_plan_of(
        s: &Snapshot,
        profile: &str,
        policy: Option<Arc<SessionPolicy>>,
    ) -> Result<Plan, SourceError> {
        let env = |_: &str| None;
        let inputs = PlanInputs {
            snap: s,
            env: &env,
            sso_cache_dir: PathBuf::from("/cache"),
            default_session_name: "credport-orders-api-production-eu-west".into(),
            policy,
        };
        plan(&inputs, profile)
    }

    fn policy(statement: &str) -> Arc<SessionPolicy> {
        let spec = crate::session_policy::PolicySpec {
            policy: Some(format!("{{\"Statement\": \"{statement}\"}}")),
            policy_arns: vec!["arn:aws:iam::aws:policy/ReadOnlyAccess".into()],
        };
        Arc::new(
            SessionPolicy::load(&spec, std::path::Path::new("/"), "test")
                .unwrap()
                .unwrap(),
        )
    }

    #[test]
    fn policies_go_on_the_last_hop_only() {
        let s = snap(
            BASE,
            "[profile a]\nrole_arn = arn:aws:iam::111111111111:role/A\nsource_profile = base\n[profile b]\nrole_arn = arn:aws:iam::222222222222:role/B\nsource_profile = a\n",
        );
        let p = scoped_plan_of(&s, "b", Some(policy("x"))).unwrap();
        let Plan::AssumeRole {
            role_arn,
            policy: last,
            source,
            ..
        } = &p
        else {
            panic!("{p:?}")
        };
        assert_eq!(role_arn, "arn:aws:iam::222222222222:role/B");
        assert_eq!(last.as_deref(), Some(policy("x").as_ref()));
        let Plan::AssumeRole {
            policy: first,
            role_arn,
            ..
        } = source.as_ref()
        else {
            panic!("{source:?}")
        };
        assert_eq!(role_arn, "arn:aws:iam::111111111111:role/A");
        assert_eq!(*first, None, "the first hop of a chain is not scoped");
        assert!(
            p.describe()
                .contains("scoped by session policy inline in test")
        );
        // A policy is part of the plan, so of the cache key.
        let unscoped = plan_of(&s, "b").unwrap();
        let other = scoped_plan_of(&s, "b", Some(policy("y"))).unwrap();
        assert_ne!(p, unscoped);
        assert_ne!(p, other);
        assert_eq!(p, scoped_plan_of(&s, "b", Some(policy("x"))).unwrap());
        // The source session (first hop) is shared with the unscoped plan.
        assert_eq!(p.fetch_source(), unscoped.fetch_source());
    }

    #[test]
    fn long_term_keys_with_a_policy_use_get_federation_token() {
        let s = snap(BASE, "");
        let p = scoped_plan_of(&s, "base", Some(policy("x"))).unwrap();
        let Plan::FederationToken { name, source, .. } = &p else {
            panic!("{p:?}")
        };
        assert_eq!(name, "credport-orders-api-production-e");
        assert_eq!(name.len(), 32);
        assert!(matches!(source.as_ref(), Plan::Keys { .. }));
        assert!(p.is_cached());
        assert!(p.describe().starts_with("GetFederationToken (scoped by"));
        assert_eq!(federation_name("x"), "x-");
    }

    #[test]
    fn sources_that_cannot_take_a_policy_are_refused() {
        let s = snap(
            "[sess]\naws_access_key_id = ASIA1\naws_secret_access_key = S\naws_session_token = T\n[mfa]\naws_access_key_id = AKIA1\naws_secret_access_key = S\nmfa_serial = arn:aws:iam::1:mfa/me\n",
            "[profile sso]\nsso_start_url = https://x/start\nsso_region = us-east-1\nsso_account_id = 111111111111\nsso_role_name = R\n[profile proc]\ncredential_process = /bin/true\n[profile web]\nrole_arn = arn:aws:iam::1:role/W\nweb_identity_token_file = /t\n",
        );
        for (profile, says) in [
            ("sess", "session keys in the shared files"),
            ("sso", "SSO role credentials"),
            ("proc", "credential_process"),
            ("mfa", "an MFA session"),
        ] {
            let e = scoped_plan_of(&s, profile, Some(policy("x")))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("profile '{profile}' cannot be scoped down"))
                    && e.contains(says),
                "{profile}: {e}"
            );
            assert!(plan_of(&s, profile).is_ok(), "{profile} without a policy");
        }
        let p = scoped_plan_of(&s, "web", Some(policy("x"))).unwrap();
        assert!(
            matches!(
                p,
                Plan::WebIdentity {
                    policy: Some(_),
                    ..
                }
            ),
            "{p:?}"
        );
    }

    const BASE: &str = "[base]\naws_access_key_id = AKIABASE\naws_secret_access_key = S\n";

    #[test]
    fn long_term_keys_are_exchanged() {
        let s = snap(BASE, "");
        assert!(matches!(
            plan_of(&s, "base").unwrap(),
            Plan::SessionToken { .. }
        ));
    }

    #[test]
    fn role_chain_three_hops() {
        let s = snap(
            BASE,
            "[profile a]\nrole_arn = arn:aws:iam::111111111111:role/A\nsource_profile = base\n[profile b]\nrole_arn = arn:aws:iam::222222222222:role/B\nsource_profile = a\n[profile c]\nrole_arn = arn:aws:iam::333333333333:role/C\nsource_profile = b\nrole_session_name = mine\nexternal_id = ext\nduration_seconds = 900\n",
        );
        let p = plan_of(&s, "c").unwrap();
        let Plan::AssumeRole {
            role_arn,
            source,
            session_name,
            external_id,
            duration,
            ..
        } = &p
        else {
            panic!("{p:?}")
        };
        assert_eq!(role_arn, "arn:aws:iam::333333333333:role/C");
        assert_eq!(
            (session_name.as_str(), external_id.as_deref(), *duration),
            ("mine", Some("ext"), Some(900))
        );
        let Plan::AssumeRole {
            source,
            session_name,
            ..
        } = source.as_ref()
        else {
            panic!()
        };
        assert_eq!(session_name, "credport-orders-api-production-eu-west");
        let Plan::AssumeRole { source, .. } = source.as_ref() else {
            panic!()
        };
        assert!(matches!(source.as_ref(), Plan::Keys { profile, .. } if profile == "base"));
    }

    #[test]
    fn cycle_names_the_chain() {
        let s = snap(
            "",
            "[profile a]\nrole_arn = r\nsource_profile = b\n[profile b]\nrole_arn = r\nsource_profile = a\n",
        );
        let e = plan_of(&s, "a").unwrap_err().to_string();
        assert_eq!(e, "role chain loops: a -> b -> a");
    }

    #[test]
    fn self_source_and_credential_source() {
        let s = snap(
            "[selfie]\naws_access_key_id = AKIA\naws_secret_access_key = S\n",
            "[profile selfie]\nrole_arn = r\nsource_profile = selfie\n[profile envy]\nrole_arn = r\ncredential_source = Environment\n[profile ec2]\nrole_arn = r\ncredential_source = Ec2InstanceMetadata\n",
        );
        let Plan::AssumeRole { source, .. } = plan_of(&s, "selfie").unwrap() else {
            panic!()
        };
        assert!(matches!(*source, Plan::Keys { .. }));
        let Plan::AssumeRole { source, .. } = plan_of(&s, "envy").unwrap() else {
            panic!()
        };
        assert_eq!(*source, Plan::Environment);
        let e = plan_of(&s, "ec2").unwrap_err().to_string();
        assert!(
            e.contains("Ec2InstanceMetadata") && e.contains("not available"),
            "{e}"
        );
    }

    #[test]
    fn mfa_sessions_are_shared_across_roles() {
        let s = snap(
            BASE,
            "[profile dev]\nrole_arn = arn:aws:iam::111111111111:role/Dev\nsource_profile = base\nmfa_serial = arn:aws:iam::000000000000:mfa/me\n[profile prod]\nrole_arn = arn:aws:iam::222222222222:role/Prod\nsource_profile = base\nmfa_serial = arn:aws:iam::000000000000:mfa/me\n",
        );
        let dev = plan_of(&s, "dev").unwrap();
        let prod = plan_of(&s, "prod").unwrap();
        assert!(dev.mfa_session().is_some());
        assert_eq!(
            dev.mfa_session(),
            prod.mfa_session(),
            "one code unlocks both roles"
        );
    }

    #[test]
    fn edits_change_exactly_dependent_plans() {
        let cfg = "[profile dev]\nrole_arn = arn:aws:iam::111111111111:role/Dev\nsource_profile = base\n[profile other]\nrole_arn = arn:aws:iam::3:role/O\nsource_profile = base2\n";
        let creds =
            format!("{BASE}[base2]\naws_access_key_id = AKIA2\naws_secret_access_key = S2\n");
        let before = snap(&creds, cfg);
        let after_key_edit = snap(&creds.replace("AKIA2", "AKIA3"), cfg);
        assert_eq!(
            plan_of(&before, "dev").unwrap(),
            plan_of(&after_key_edit, "dev").unwrap()
        );
        assert_ne!(
            plan_of(&before, "other").unwrap(),
            plan_of(&after_key_edit, "other").unwrap()
        );
        let after_role_edit = snap(&creds, &cfg.replace("111111111111", "444444444444"));
        assert_ne!(
            plan_of(&before, "dev").unwrap(),
            plan_of(&after_role_edit, "dev").unwrap()
        );
    }

    #[test]
    fn sso_forms_and_services_endpoints() {
        let s = snap(
            "",
            "[profile new]\nsso_session = corp\nsso_account_id = 111111111111\nsso_role_name = Dev\n[sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\nsso_region = eu-west-1\n[profile old]\nsso_start_url = https://old/start\nsso_region = us-east-1\nsso_account_id = 2\nsso_role_name = R\nservices = local\n[services local]\nsso =\n  endpoint_url = http://127.0.0.1:7000\n[profile broken]\nsso_session = nope\nsso_account_id = 1\nsso_role_name = R\n",
        );
        let Plan::Sso { config, portal, .. } = plan_of(&s, "new").unwrap() else {
            panic!()
        };
        assert_eq!(config.session_name.as_deref(), Some("corp"));
        assert_eq!(portal, "https://portal.sso.eu-west-1.amazonaws.com");
        let Plan::Sso { config, portal, .. } = plan_of(&s, "old").unwrap() else {
            panic!()
        };
        assert_eq!(config.session_name, None);
        assert_eq!(portal, "http://127.0.0.1:7000");
        assert!(
            plan_of(&s, "broken")
                .unwrap_err()
                .to_string()
                .contains("[sso-session]")
        );
    }

    #[test]
    fn bad_values_are_named() {
        let s = snap(
            BASE,
            "[profile r]\nrole_arn = x\nsource_profile = base\nduration_seconds = forever\n[profile m]\nrole_arn = x\nsource_profile = r\nmfa_serial = s\n[profile lone]\nrole_arn = x\n",
        );
        assert!(
            plan_of(&s, "r")
                .unwrap_err()
                .to_string()
                .contains("duration_seconds must be")
        );
        assert_eq!(
            plan_of(&s, "lone").unwrap_err().to_string(),
            "profile 'lone': missing source_profile (or credential_source)"
        );
        assert_eq!(
            plan_of(&s, "missing").unwrap_err().to_string(),
            "profile 'missing' is not in the AWS credentials or config file"
        );
    }

    #[test]
    fn session_names_are_valid() {
        assert_eq!(
            session_name_for("orders api", "dev"),
            "credport-orders-api-dev"
        );
        assert_eq!(session_name_for(&"x".repeat(100), "dev").len(), 64);
    }
}
