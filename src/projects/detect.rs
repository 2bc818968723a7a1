//! Owns the public types and entry points: walking up from a directory to the
//! nearest project file, and dispatching to the resolver for that file kind.
//! Also holds the small file-reading/parsing helpers shared by the resolvers.

use std::path::{Path, PathBuf};

use super::error::ProjectError;

/// Flags that pick a stage/profile: from credport's CLI or read from a wrapped command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// `--stage` / `-s` (sam: `--config-env`).
    pub stage: Option<String>,
    /// `--aws-profile` (sam/cdk: `--profile`).
    pub aws_profile: Option<String>,
    /// `--param k=v` (repeatable), also `--param=k=v`.
    pub params: Vec<(String, String)>,
    /// Every other option of a wrapped Serverless command that has a value, by its full
    /// name (`-r eu-west-1` is `region`), for `${opt:NAME}`.
    pub options: Vec<(String, String)>,
}

/// Which kind of file decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProjectKind {
    /// `.credport.toml`.
    Credport,
    /// `serverless.{yml,yaml,json}` (and `.js/.ts`, which are rejected).
    Serverless,
    /// `samconfig.{toml,yaml,yml}`.
    Sam,
    /// `cdk.json`.
    Cdk,
}

/// The outcome of resolving a project directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Resolution {
    /// `.credport.toml` `project`, else serverless `service`, else SAM `stack_name`,
    /// else the folder name.
    pub project: String,
    /// The stage (SAM: config environment; CDK: `default` unless given).
    pub stage: String,
    /// The AWS profile to use.
    pub profile: String,
    /// `provider.region` / SAM `region` / `.credport.toml` `region` when resolvable; never an error.
    pub region: Option<String>,
    /// The file that decided.
    pub file: PathBuf,
    /// Which kind of file decided.
    pub kind: ProjectKind,
    /// Human text explaining where the profile and stage came from.
    pub rule: String,
}

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
            if p.is_file() {
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
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolution, ProjectError> {
    let (file, kind) =
        find_project_file(dir).ok_or_else(|| ProjectError::NoProjectFile { dir: absolute(dir) })?;
    match kind {
        ProjectKind::Credport => super::credport_toml::resolve(&file, sel, env),
        ProjectKind::Serverless => super::serverless::resolve(&file, sel, env),
        ProjectKind::Sam => super::sam::resolve(&file, sel),
        ProjectKind::Cdk => super::cdk::resolve(&file, sel),
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

/// Largest project/variable file we read (bytes).
pub(crate) const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Reads a UTF-8 file of bounded size. `Ok(None)` when it does not exist.
pub(crate) fn read_text(file: &Path) -> Result<Option<String>, ProjectError> {
    let io = |source| ProjectError::Io {
        file: file.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(ProjectError::Invalid {
            file: file.to_path_buf(),
            message: format!("file is larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    match std::fs::read(file) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| ProjectError::Invalid {
                file: file.to_path_buf(),
                message: "file is not valid UTF-8".into(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}

/// Parses YAML (keeping `!Tags`) and applies `<<` merge keys. Never panics.
pub(crate) fn parse_yaml(file: &Path, text: &str) -> Result<yaml_serde::Value, ProjectError> {
    let invalid = |message: String| ProjectError::Invalid {
        file: file.to_path_buf(),
        message,
    };
    let parsed = std::panic::catch_unwind(|| yaml_serde::from_str::<yaml_serde::Value>(text))
        .map_err(|_| invalid("YAML parser failed on this input".into()))?;
    let mut v = parsed.map_err(|e| invalid(format!("invalid YAML: {e}")))?;
    // A merge key whose value is not a mapping is left unmerged rather than failing:
    // only the keys we need matter.
    let _ = v.apply_merge();
    Ok(v)
}

/// Parses JSON into the YAML value model.
pub(crate) fn parse_json(file: &Path, text: &str) -> Result<yaml_serde::Value, ProjectError> {
    serde_json::from_str::<yaml_serde::Value>(text).map_err(|e| ProjectError::Invalid {
        file: file.to_path_buf(),
        message: format!("invalid JSON: {e}"),
    })
}

/// The name of the directory holding `file` (used as the default project name).
pub(crate) fn folder_name(file: &Path) -> String {
    file.parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "project".to_string())
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

    #[test]
    fn yaml_helpers_never_panic() {
        let f = Path::new("x.yml");
        assert!(parse_yaml(f, "a: [").is_err());
        // self-referencing anchor / alias
        let _ = parse_yaml(f, "a: &x [*x]\n");
        let _ = parse_yaml(f, "a: *nope\n");
        let deep = "[".repeat(10_000);
        assert!(parse_yaml(f, &deep).is_err());
        let laughs = "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n";
        let _ = parse_yaml(f, laughs);
        assert!(parse_json(f, &"[".repeat(10_000)).is_err());
    }
}
