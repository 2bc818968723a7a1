//! Which (project, stage, profile) a command run in a directory means.
//!
//! [`resolve`] is what `resolve`, `exec` and `env` share. Flags read from a wrapped command
//! line (`serverless invoke local -s prod`) come first, credport's own flags override
//! them; then an explicit `--project` that credport's config (or the registered table)
//! knows is bound there, and otherwise the nearest project file above the directory
//! decides. credport's config wins over project files: when the project file names a
//! project the config declares, the config's stage map answers.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::projects::registry::{self, RegistryError};
use crate::projects::{ProjectError, ProjectKind, Selection, parse_wrapped_args, resolve_dir};

/// What a command asked for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Where to look for a project file.
    pub dir: PathBuf,
    /// `--project`.
    pub project: Option<String>,
    /// `--stage`.
    pub stage: Option<String>,
    /// `--aws-profile` (overrides the profile, as serverless's flag does).
    pub aws_profile: Option<String>,
    /// `--param k=v`.
    pub params: Vec<(String, String)>,
    /// The wrapped command line, if any (`-- serverless invoke local -s prod`).
    pub wrapped: Vec<String>,
}

/// The answer: one scope and its profile, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Scope {
    /// The project.
    pub project: String,
    /// The stage.
    pub stage: String,
    /// The AWS profile.
    pub profile: String,
    /// The region, when the project or profile says.
    pub region: Option<String>,
    /// The file that decided (project file or credport config).
    pub file: Option<PathBuf>,
    /// The kind of project file, when one decided.
    pub kind: Option<ProjectKind>,
    /// Which rule decided, in words.
    pub rule: String,
    /// The project's directory when it came from a project file (to register it).
    #[serde(skip)]
    pub project_dir: Option<PathBuf>,
}

/// Why no scope could be determined.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    /// The project file could not be resolved.
    #[error(transparent)]
    Project(#[from] ProjectError),
    /// The registry could not bind the scope.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A name is not allowed.
    #[error("{0}")]
    Name(String),
}

/// The selection after merging the wrapped command's flags with credport's own.
pub fn selection(req: &Request) -> Selection {
    let mut sel = if req.wrapped.is_empty() {
        Selection::default()
    } else {
        parse_wrapped_args(&req.wrapped)
    };
    if req.stage.is_some() {
        sel.stage = req.stage.clone();
    }
    if req.aws_profile.is_some() {
        sel.aws_profile = req.aws_profile.clone();
    }
    sel.params.extend(req.params.iter().cloned());
    sel
}

/// Resolves `req` against credport's `config`, the `registered` projects and the
/// project files, with `env` for `${env:...}` variables.
pub fn resolve(
    req: &Request,
    config: &Config,
    registered: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Scope, ScopeError> {
    let sel = selection(req);
    for (what, name) in [("project", &req.project), ("stage", &sel.stage)] {
        if let Some(n) = name {
            crate::config::check_name(what, n).map_err(ScopeError::Name)?;
        }
    }
    let known = |p: &str| config.projects.contains_key(p) || registered.projects.contains_key(p);
    if let Some(project) = &req.project
        && known(project)
    {
        let b = registry::bind(config, registered, project, sel.stage.as_deref(), env)?;
        return Ok(from_binding(b, sel.aws_profile));
    }
    let res = resolve_dir(&req.dir, &sel, env)?;
    if let Some(project) = &req.project
        && *project != res.project
    {
        return Err(ScopeError::Registry(RegistryError::UnknownProject {
            project: project.clone(),
            known: config.projects.keys().cloned().collect(),
        }));
    }
    crate::config::check_name("project", &res.project).map_err(|e| {
        ScopeError::Name(format!(
            "{} (from {}); set `project` in .credport.toml",
            e,
            res.file.display()
        ))
    })?;
    crate::config::check_name("stage", &res.stage).map_err(ScopeError::Name)?;
    if let Some(p) = config.projects.get(&res.project) {
        // The config wins for the stages it maps.
        let stage = sel
            .stage
            .clone()
            .or_else(|| p.default_stage.clone())
            .unwrap_or_else(|| res.stage.clone());
        if p.stages.contains_key(&stage) {
            let b = registry::bind(config, registered, &res.project, Some(&stage), env)?;
            return Ok(from_binding(b, sel.aws_profile));
        }
    }
    let dir = res
        .file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| req.dir.clone());
    Ok(Scope {
        project: res.project,
        stage: res.stage,
        profile: res.profile,
        region: res.region,
        file: Some(res.file),
        kind: Some(res.kind),
        rule: res.rule,
        project_dir: Some(dir),
    })
}

fn from_binding(b: registry::Binding, aws_profile: Option<String>) -> Scope {
    let (profile, rule) = match aws_profile {
        Some(p) => (p, format!("--aws-profile (overrides {})", b.decided_by)),
        None => (b.profile, b.decided_by),
    };
    Scope {
        project: b.project,
        stage: b.stage,
        profile,
        region: b.region,
        file: None,
        kind: None,
        rule,
        project_dir: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "service: orders\ncustom:\n  myStage: ${opt:stage, self:provider.stage}\n  myProfile:\n    prod: prodAccount\n    dev: devAccount\nprovider:\n  name: aws\n  stage: dev\n  profile: ${self:custom.myProfile.${self:custom.myStage}}\n";

    fn req(dir: &Path, wrapped: &[&str]) -> Request {
        Request {
            dir: dir.to_path_buf(),
            wrapped: wrapped.iter().map(|s| s.to_string()).collect(),
            ..Request::default()
        }
    }

    #[test]
    fn wrapped_flags_and_overrides() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("serverless.yml"), SEED).unwrap();
        let none = Config::default();
        let env = |_: &str| None;
        let s = resolve(&req(t.path(), &[]), &none, &none, &env).unwrap();
        assert_eq!(
            (s.project.as_str(), s.stage.as_str(), s.profile.as_str()),
            ("orders", "dev", "devAccount")
        );
        let s = resolve(
            &req(
                t.path(),
                &["serverless", "invoke", "local", "-f", "hello", "-s", "prod"],
            ),
            &none,
            &none,
            &env,
        )
        .unwrap();
        assert_eq!(s.profile, "prodAccount");
        let mut r = req(t.path(), &["serverless", "invoke", "local", "-s", "prod"]);
        r.stage = Some("dev".into());
        assert_eq!(
            resolve(&r, &none, &none, &env).unwrap().profile,
            "devAccount",
            "credport's flag wins"
        );
        let e = resolve(&req(t.path(), &["sls", "-s", "qa"]), &none, &none, &env).unwrap_err();
        assert!(e.to_string().contains("'qa'"), "{e}");
    }

    #[test]
    fn config_wins_over_project_file() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("serverless.yml"), SEED).unwrap();
        let config =
            crate::config::parse("[projects.orders]\nstages = { prod = \"fromConfig\" }\n")
                .unwrap();
        let none = Config::default();
        let env = |_: &str| None;
        let mut r = req(t.path(), &[]);
        r.stage = Some("prod".into());
        let s = resolve(&r, &config, &none, &env).unwrap();
        assert_eq!(s.profile, "fromConfig");
        assert!(s.rule.contains("config"), "{}", s.rule);
        r.stage = Some("dev".into());
        assert_eq!(
            resolve(&r, &config, &none, &env).unwrap().profile,
            "devAccount",
            "unmapped stage falls back to the file"
        );
    }

    #[test]
    fn explicit_project_from_config_without_files() {
        let t = tempfile::tempdir().unwrap();
        let config = crate::config::parse(
            "[projects.billing]\ndefault_stage = \"dev\"\nstages = { dev = \"b\" }\n",
        )
        .unwrap();
        let mut r = req(t.path(), &[]);
        r.project = Some("billing".into());
        let s = resolve(&r, &config, &Config::default(), &|_| None).unwrap();
        assert_eq!((s.stage.as_str(), s.profile.as_str()), ("dev", "b"));
        r.aws_profile = Some("other".into());
        assert_eq!(
            resolve(&r, &config, &Config::default(), &|_| None)
                .unwrap()
                .profile,
            "other"
        );
        r.project = Some("nope".into());
        assert!(resolve(&r, &config, &Config::default(), &|_| None).is_err());
    }
}
