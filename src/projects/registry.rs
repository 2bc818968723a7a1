//! The project registry: which profile serves a (project, stage).
//!
//! Projects are declared in credport's config (`[projects.NAME]`, see `config`). A request
//! names a project and a stage; [`bind`] answers the profile, or an error that lists what
//! exists. A request without a stage gets the project's `default_stage`, or its only stage.

use crate::config::Config;

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
    pub decided_by: String,
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

/// Finds the profile for `project` and `stage` (or its default stage).
pub fn bind(config: &Config, project: &str, stage: Option<&str>) -> Result<Binding, RegistryError> {
    let Some(p) = config.projects.get(project) else {
        return Err(RegistryError::UnknownProject {
            project: project.to_string(),
            known: config.projects.keys().cloned().collect(),
        });
    };
    let known = || p.stages.keys().cloned().collect::<Vec<_>>();
    let stage = match stage {
        Some(s) => s.to_string(),
        None => match (&p.default_stage, p.stages.len()) {
            (Some(d), _) => d.clone(),
            (None, 1) => p.stages.keys().next().cloned().unwrap_or_default(),
            _ => {
                return Err(RegistryError::NoStage {
                    project: project.to_string(),
                    known: known(),
                });
            }
        },
    };
    match p.stages.get(&stage) {
        Some(profile) => Ok(Binding {
            project: project.to_string(),
            profile: profile.clone(),
            region: p.region.clone(),
            decided_by: format!("config [projects.{project}] stages.{stage}"),
            stage,
        }),
        None => Err(RegistryError::UnknownStage {
            project: project.to_string(),
            stage,
            known: known(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
