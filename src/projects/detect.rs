//! Walking up from a directory to the nearest project file, and dispatching to the
//! resolver for that file kind. The one place that knows several formats at once: a
//! `.credport.toml` beside a framework file learns that file's service name and default
//! stage from here ([`Sibling`]), so no format module calls into another.

use std::path::{Path, PathBuf};

use super::error::ProjectError;
use super::{ProjectKind, Resolution, Selection, Sibling};

/// File names probed in each directory, in priority order.
pub(crate) const CANDIDATES: &[(&str, ProjectKind)] = &[
    (".credport.toml", ProjectKind::Credport),
    ("serverless.yml", ProjectKind::Serverless),
    ("serverless.yaml", ProjectKind::Serverless),
    ("serverless.json", ProjectKind::Serverless),
    ("serverless.js", ProjectKind::Serverless),
    ("serverless.ts", ProjectKind::Serverless),
    ("serverless.cjs", ProjectKind::Serverless),
    ("serverless.mjs", ProjectKind::Serverless),
    ("samconfig.toml", ProjectKind::Sam),
    ("samconfig.yaml", ProjectKind::Sam),
    ("samconfig.yml", ProjectKind::Sam),
    ("cdk.json", ProjectKind::Cdk),
];

/// Finds the project file by walking up from `start` (nearest directory that has one;
/// within one directory `.credport.toml` wins over serverless.{yml,yaml,json} >
/// samconfig.{toml,yaml,yml} > cdk.json). `serverless.{js,ts,cjs,mjs}` count as
/// Serverless (after the yml/yaml/json forms) so that resolving reports them as
/// unsupported instead of silently using a parent directory's file.
pub fn find_project_file(start: &Path) -> Option<(PathBuf, ProjectKind)> {
    let start = absolute(start);
    for dir in start.ancestors() {
        for (name, kind) in CANDIDATES {
            let p = dir.join(name);
            if super::files::is_file(&p) {
                return Some((p, *kind));
            }
        }
    }
    None
}

/// Resolves (project, stage, profile) for the project containing `dir`. `env` looks up
/// environment variables (tests pass a closure over a map; the CLI passes std::env::var).
pub fn resolve_dir(
    dir: &Path,
    sel: &Selection,
    env: &dyn crate::env::Env,
) -> Result<Resolution, ProjectError> {
    let (file, kind) =
        find_project_file(dir).ok_or_else(|| ProjectError::NoProjectFile { dir: absolute(dir) })?;
    match kind {
        ProjectKind::Credport => {
            super::credport_toml::resolve(&file, sel, &sibling(&file, sel, env))
        }
        ProjectKind::Serverless => super::serverless::resolve(&file, sel, env),
        ProjectKind::Sam => super::sam::resolve(&file, sel),
        ProjectKind::Cdk => super::cdk::resolve(&file, sel),
    }
}

/// Reads the framework file beside `credport_toml`, if any.
pub fn sibling(credport_toml: &Path, sel: &Selection, env: &dyn crate::env::Env) -> Sibling {
    let Some(dir) = credport_toml.parent() else {
        return Sibling::default();
    };
    if let Some(sls) = ["serverless.yml", "serverless.yaml", "serverless.json"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| super::files::is_file(p))
    {
        return Sibling {
            service: super::serverless::service_name_of(&sls, sel, env),
            stage: super::serverless::stage_for(&sls, sel, env)
                .ok()
                .map(|(s, rule)| (s, format!("as serverless runs it ({rule})"))),
        };
    }
    let sam = ["samconfig.toml", "samconfig.yaml", "samconfig.yml"]
        .iter()
        .any(|n| super::files::is_file(&dir.join(n)));
    Sibling {
        service: None,
        stage: sam.then(|| {
            (
                "default".to_string(),
                "as sam runs it (config env 'default')".to_string(),
            )
        }),
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|c| c.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn credport_wins_in_same_dir() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("serverless.yml"), "service: s\n").unwrap();
        fs::write(t.path().join("cdk.json"), "{}").unwrap();
        fs::write(t.path().join(".credport.toml"), "[stages]\ndev='d'\n").unwrap();
        let (f, k) = find_project_file(t.path()).unwrap();
        assert_eq!(k, ProjectKind::Credport);
        assert_eq!(f, t.path().join(".credport.toml"));
    }

    #[test]
    fn priority_serverless_sam_cdk() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("cdk.json"), "{}").unwrap();
        assert_eq!(find_project_file(t.path()).unwrap().1, ProjectKind::Cdk);
        fs::write(t.path().join("samconfig.yaml"), "").unwrap();
        assert_eq!(find_project_file(t.path()).unwrap().1, ProjectKind::Sam);
        fs::write(t.path().join("samconfig.toml"), "").unwrap();
        assert_eq!(
            find_project_file(t.path()).unwrap().0,
            t.path().join("samconfig.toml")
        );
        fs::write(t.path().join("serverless.json"), "{}").unwrap();
        assert_eq!(
            find_project_file(t.path()).unwrap().1,
            ProjectKind::Serverless
        );
        fs::write(t.path().join("serverless.yaml"), "").unwrap();
        fs::write(t.path().join("serverless.yml"), "").unwrap();
        assert_eq!(
            find_project_file(t.path()).unwrap().0,
            t.path().join("serverless.yml")
        );
    }

    #[test]
    fn nearest_directory_wins() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join(".credport.toml"), "[stages]\ndev='d'\n").unwrap();
        let sub = t.path().join("a/b/c");
        fs::create_dir_all(&sub).unwrap();
        fs::write(t.path().join("a/cdk.json"), r#"{"profile":"p"}"#).unwrap();
        let (f, k) = find_project_file(&sub).unwrap();
        assert_eq!((f, k), (t.path().join("a/cdk.json"), ProjectKind::Cdk));
        let r = resolve_dir(&sub, &Selection::default(), &no_env).unwrap();
        assert_eq!(r.profile, "p");
        assert_eq!(r.project, "a");
    }

    #[test]
    fn no_project_file_error() {
        let t = tempfile::tempdir().unwrap();
        // tempdir parents (/tmp) normally have no project files; guard anyway.
        if find_project_file(t.path()).is_some() {
            return;
        }
        let e = resolve_dir(t.path(), &Selection::default(), &no_env).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with(
            "no project file (.credport.toml, serverless.yml, samconfig.toml, cdk.json) in "
        ));
        assert!(msg.ends_with("or its parents"));
    }

    #[test]
    fn dispatch_serverless() {
        let t = tempfile::tempdir().unwrap();
        fs::write(
            t.path().join("serverless.yml"),
            "service: svc\nprovider:\n  name: aws\n  profile: p1\n  region: eu-west-1\n",
        )
        .unwrap();
        let r = resolve_dir(t.path(), &Selection::default(), &no_env).unwrap();
        assert_eq!(r.project, "svc");
        assert_eq!(r.stage, "dev");
        assert_eq!(r.profile, "p1");
        assert_eq!(r.region.as_deref(), Some("eu-west-1"));
        assert_eq!(r.kind, ProjectKind::Serverless);
    }

    #[test]
    fn resolution_serializes_kebab() {
        assert_eq!(
            serde_json::to_string(&ProjectKind::Credport).unwrap(),
            "\"credport\""
        );
        assert_eq!(serde_json::to_string(&ProjectKind::Sam).unwrap(), "\"sam\"");
    }
}
