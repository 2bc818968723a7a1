//! Every scope credport knows, for `status` and `doctor`: the stages of declared projects
//! (config.toml) and of registered ones (their own files, as the daemon reads them).
//!
//! A project file does not always list its stages: a Serverless stage map does
//! (`custom.myProfile`), `samconfig.toml` environments and `.credport.toml` do, a plain
//! `provider.profile` serves any stage. So a project's stages are its default stage, the
//! stages its file names (found by asking the resolver for a stage no file uses and reading
//! the "known stages" of its answer), and the stages a client was issued. Each scope is
//! then bound exactly as a request would be ([`crate::projects::registry::bind`]), so its
//! profile or error is the one a request would get now.

use std::collections::BTreeSet;
use std::path::Path;

use crate::config::Config;
use crate::projects::registry::{self, Binding};
use crate::projects::{ProjectError, Selection, resolve_dir};

/// A stage name no project uses: resolving it makes a resolver list the stages it knows.
const PROBE_STAGE: &str = "credport-stage-probe";

/// One (project, stage) and what serves it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeEntry {
    /// The project.
    pub project: String,
    /// The stage (empty when the project's default stage cannot be determined).
    pub stage: String,
    /// `config` (declared in config.toml) or `registered` (a project directory).
    pub origin: &'static str,
    /// Whether this is the project's default stage.
    pub default: bool,
    /// The binding, or the error a request for this scope would get.
    pub binding: Result<Binding, String>,
}

/// The stages a project directory's files name: (default stage, every stage named), or
/// the error resolving its default gives.
pub fn project_stages(
    dir: &Path,
    env: &dyn crate::env::Env,
) -> (Result<String, String>, BTreeSet<String>) {
    let mut named = BTreeSet::new();
    let default = resolve_dir(dir, &Selection::default(), env)
        .map(|r| r.stage)
        .map_err(|e| e.to_string());
    if let Ok(d) = &default {
        named.insert(d.clone());
    }
    let probe = Selection {
        stage: Some(PROBE_STAGE.into()),
        ..Selection::default()
    };
    let list = match resolve_dir(dir, &probe, env) {
        Err(ProjectError::StageNotInMap { has, .. }) => has,
        Err(ProjectError::Stage { known, .. }) => known,
        _ => String::new(),
    };
    named.extend(
        list.split(',')
            .map(str::trim)
            .filter(|s| {
                !s.is_empty() && *s != "none" && crate::config::check_name("stage", s).is_ok()
            })
            .map(String::from),
    );
    (default, named)
}

/// Every scope of every declared and registered project, plus `issued` scopes (those a
/// client fetched), each bound as a request would be, sorted by project and stage.
pub fn scopes(
    config: &Config,
    registered: &Config,
    issued: &[(String, String)],
    env: &dyn crate::env::Env,
) -> Vec<ScopeEntry> {
    let mut out = Vec::new();
    let mut projects: BTreeSet<&String> = config.projects.keys().collect();
    projects.extend(registered.projects.keys());
    for project in projects {
        let declared = config.projects.get(project);
        let origin = if declared.is_some() {
            "config"
        } else {
            "registered"
        };
        let mut stages: BTreeSet<String> = declared
            .map(|p| p.stages.keys().cloned().collect())
            .unwrap_or_default();
        let dir = declared
            .and_then(|p| p.path.as_deref())
            .or_else(|| registered.projects.get(project)?.path.as_deref());
        let mut default = declared.and_then(|p| p.default_stage.clone());
        if let Some(dir) = dir {
            let (d, named) = project_stages(dir, env);
            stages.extend(named);
            match d {
                Ok(d) => {
                    default.get_or_insert(d);
                }
                Err(e) if stages.is_empty() => {
                    out.push(ScopeEntry {
                        project: project.clone(),
                        stage: String::new(),
                        origin,
                        default: true,
                        binding: Err(format!("project '{project}': {e}")),
                    });
                }
                Err(_) => {}
            }
        }
        stages.extend(
            issued
                .iter()
                .filter(|(p, _)| p == project)
                .map(|(_, s)| s.clone()),
        );
        for stage in stages {
            let binding = registry::bind(config, registered, project, Some(&stage), env)
                .map_err(|e| e.to_string());
            out.push(ScopeEntry {
                project: project.clone(),
                default: default.as_deref() == Some(stage.as_str()),
                stage,
                origin,
                binding,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_serverless_stages_come_from_the_stage_map() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("serverless.yml"),
            "service: orders\ncustom:\n  myStage: ${opt:stage, self:provider.stage}\n  myProfile:\n    prod: prodAccount\n    dev: devAccount\nprovider:\n  name: aws\n  stage: dev\n  profile: ${self:custom.myProfile.${self:custom.myStage}}\n",
        )
        .unwrap();
        let registered = crate::config::parse(&format!(
            "[projects.orders]\npath = \"{}\"\n",
            t.path().display()
        ))
        .unwrap();
        let config =
            crate::config::parse("[projects.billing]\nstages = { dev = \"b\" }\n").unwrap();
        let all = scopes(&config, &registered, &[], &|_| None);
        let names: Vec<(String, String, bool)> = all
            .iter()
            .map(|s| (s.project.clone(), s.stage.clone(), s.default))
            .collect();
        assert_eq!(
            names,
            vec![
                ("billing".into(), "dev".into(), false),
                ("orders".into(), "dev".into(), true),
                ("orders".into(), "prod".into(), false),
            ]
        );
        assert_eq!(all[2].binding.as_ref().unwrap().profile, "prodAccount");
        assert_eq!(all[1].origin, "registered");
    }
}
