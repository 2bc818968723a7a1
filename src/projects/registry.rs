//! The project registry: which profile serves a (project, stage).
//!
//! Two tables feed it. credport's config declares projects (`[projects.NAME]`, see
//! `config`) with a stage map and optionally a `path`; the *registered* table
//! (`<state dir>/projects.toml`, written by `credport project add`, `exec` and `env`) maps
//! project names to directories. [`bind`] answers a (project, stage) from the config's stage
//! map first, then by resolving the project's own files in its directory (`.credport.toml`,
//! `serverless.yml`, ... see `detect`), which are read again on every bind, so an edit of
//! a project file counts at once. A request without a stage gets the project's
//! `default_stage`, or its only stage.

use std::path::Path;
use std::sync::Arc;

use super::{ProjectError, Selection, resolve_dir};
use crate::config::{Config, ProjectConfig};
use crate::session_policy::{SessionPolicy, spec_for};

/// The profile bound to one scope, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Binding {
    /// The project.
    pub project: String,
    /// The stage.
    pub stage: String,
    /// The AWS profile that serves it.
    pub profile: String,
    /// Region override for the scope, if configured.
    pub region: Option<String>,
    /// Human-readable origin of the mapping (file and table).
    pub rule: String,
    /// The session policy that scopes the scope's sessions down, read and checked: the
    /// config's for this stage, else the project file's.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::session_policy::serialize_shared"
    )]
    pub policy: Option<Arc<SessionPolicy>>,
    /// The project file that decided the mapping; `None` when credport's config did (a
    /// project file's mapping needs the user's trust, see `trust`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<std::path::PathBuf>,
}

/// Why a scope has no profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No such project is declared.
    #[error("unknown project '{project}' (known: {})", list(known))]
    UnknownProject {
        /// The requested project.
        project: String,
        /// The declared projects.
        known: Vec<String>,
    },
    /// The project has no such stage.
    #[error("project '{project}' has no stage '{stage}' (stages: {})", list(known))]
    UnknownStage {
        /// The project.
        project: String,
        /// The requested stage.
        stage: String,
        /// Its stages.
        known: Vec<String>,
    },
    /// The project's own files could not be resolved.
    #[error("project '{project}': {error}")]
    Project {
        /// The project.
        project: String,
        /// What went wrong (names the file and rule).
        error: String,
    },
    /// The session policy the config names for the scope cannot be used.
    #[error("project '{project}': {error}")]
    Policy {
        /// The project.
        project: String,
        /// What is wrong (names the file).
        error: String,
    },
    /// No stage was given and the project has no default.
    #[error(
        "project '{project}' has no default_stage; pass --stage (stages: {})",
        list(known)
    )]
    NoStage {
        /// The project.
        project: String,
        /// Its stages.
        known: Vec<String>,
    },
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Finds the profile for `project` and `stage` (or its default stage), from `config`'s
/// stage maps, then from the project's directory (the config's `path`, else the
/// `registered` table's), resolved with `env`.
pub fn bind(
    config: &Config,
    registered: &Config,
    project: &str,
    stage: Option<&str>,
    env: &dyn crate::env::Env,
) -> Result<Binding, RegistryError> {
    let declared = config.projects.get(project);
    let path = declared.and_then(|p| p.path.as_deref()).or_else(|| {
        registered
            .projects
            .get(project)
            .and_then(|p| p.path.as_deref())
    });
    let Some(p) = declared else {
        return match path {
            Some(dir) => bind_dir(project, dir, stage, env, "registered project"),
            None => Err(RegistryError::UnknownProject {
                project: project.to_string(),
                known: config
                    .projects
                    .keys()
                    .chain(registered.projects.keys())
                    .cloned()
                    .collect(),
            }),
        };
    };
    let known = || p.stages.keys().cloned().collect::<Vec<_>>();
    let stage = match super::pick_stage(stage, p.default_stage.as_deref(), None, p.stages.keys()) {
        Some((s, _)) => s,
        None => match path {
            Some(dir) => return bind_dir(project, dir, None, env, "config path"),
            None => {
                return Err(RegistryError::NoStage {
                    project: project.to_string(),
                    known: known(),
                });
            }
        },
    };
    match (p.stages.get(&stage), path) {
        (Some(profile), _) => Ok(Binding {
            project: project.to_string(),
            profile: profile.clone(),
            region: p.region.clone(),
            rule: format!("config [projects.{project}] stages.{stage}"),
            policy: config_policy(project, p, &stage)?,
            stage,
            file: None,
        }),
        (None, Some(dir)) => {
            let mut b = bind_dir(project, dir, Some(&stage), env, "config path")?;
            b.region = p.region.clone().or(b.region);
            if let Some(policy) = config_policy(project, p, &b.stage)? {
                b.policy = Some(policy);
            }
            Ok(b)
        }
        (None, None) => Err(RegistryError::UnknownStage {
            project: project.to_string(),
            stage,
            known: known(),
        }),
    }
}

fn bind_dir(
    project: &str,
    dir: &Path,
    stage: Option<&str>,
    env: &dyn crate::env::Env,
    via: &str,
) -> Result<Binding, RegistryError> {
    let sel = Selection {
        stage: stage.map(Into::into),
        ..Selection::default()
    };
    let err = |e: ProjectError| RegistryError::Project {
        project: project.to_string(),
        error: e.to_string(),
    };
    let r = resolve_dir(dir, &sel, env).map_err(err)?;
    Ok(Binding {
        project: project.to_string(),
        stage: r.stage,
        profile: r.profile,
        region: r.region,
        rule: format!("{via} {}: {}", r.file.display(), r.rule),
        policy: r.policy,
        file: Some(r.file),
    })
}

/// The session policy credport's config names for `stage` of `project` (its file names
/// were made absolute when the config was loaded).
pub fn config_policy(
    project: &str,
    p: &ProjectConfig,
    stage: &str,
) -> Result<Option<Arc<SessionPolicy>>, RegistryError> {
    let Some(spec) = spec_for(&p.policy, &p.policy_arns, &p.policies, stage) else {
        return Ok(None);
    };
    let named_in = format!("config [projects.{project}]");
    SessionPolicy::load_with(
        &spec,
        Path::new("/"),
        &named_in,
        &super::files::read_policy_file,
    )
    .map(|p| p.map(Arc::new))
    .map_err(|e| RegistryError::Policy {
        project: project.to_string(),
        error: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(c: &Config, p: &str, s: Option<&str>) -> Result<Binding, RegistryError> {
        super::bind(c, &Config::default(), p, s, &|_| None)
    }

    fn cfg() -> Config {
        crate::config::parse(
            "[projects.orders]\ndefault_stage = \"dev\"\nstages = { dev = \"devAccount\", prod = \"prodAccount\" }\n[projects.solo]\nstages = { only = \"x\" }\n[projects.many]\nstages = { a = \"x\", b = \"y\" }\n",
        )
        .unwrap()
    }

    #[test]
    fn binds_stages_and_defaults() {
        let c = cfg();
        assert_eq!(
            bind(&c, "orders", Some("prod")).unwrap().profile,
            "prodAccount"
        );
        assert_eq!(bind(&c, "orders", None).unwrap().stage, "dev");
        assert_eq!(bind(&c, "solo", None).unwrap().profile, "x");
    }

    #[test]
    fn config_policies_reach_the_binding() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("config.toml");
        std::fs::write(
            &file,
            "[projects.orders]\npolicy = \"ro.json\"\nstages = { dev = \"d\", prod = \"p\" }\n[projects.orders.policies.prod]\npolicy_arns = [\"arn:aws:iam::aws:policy/ReadOnlyAccess\"]\n",
        )
        .unwrap();
        std::fs::write(t.path().join("ro.json"), "{\"Statement\": []}").unwrap();
        // Relative to the config file, wherever the daemon runs.
        let c = crate::config::ConfigStore::open(file).get();
        let dev = bind(&c, "orders", Some("dev")).unwrap().policy.unwrap();
        assert_eq!(dev.document.as_deref(), Some("{\"Statement\":[]}"));
        let prod = bind(&c, "orders", Some("prod")).unwrap().policy.unwrap();
        assert_eq!((prod.document.as_deref(), prod.arns.len()), (None, 1));
        std::fs::remove_file(t.path().join("ro.json")).unwrap();
        let e = bind(&c, "orders", Some("dev")).unwrap_err().to_string();
        assert!(
            e.starts_with("project 'orders': session policy file")
                && e.contains("ro.json")
                && e.contains("config [projects.orders]"),
            "{e}"
        );
        assert_eq!(bind(&cfg(), "orders", Some("dev")).unwrap().policy, None);
    }

    #[test]
    fn errors_list_what_exists() {
        let c = cfg();
        let e = bind(&c, "orders", Some("qa")).unwrap_err().to_string();
        assert_eq!(e, "project 'orders' has no stage 'qa' (stages: dev, prod)");
        let e = bind(&c, "nope", None).unwrap_err().to_string();
        assert_eq!(e, "unknown project 'nope' (known: many, orders, solo)");
        assert!(
            bind(&c, "many", None)
                .unwrap_err()
                .to_string()
                .contains("no default_stage")
        );
        assert!(
            bind(&c, "orders", Some("Prod")).is_err(),
            "stage names are case-sensitive"
        );
    }
}
