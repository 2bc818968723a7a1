//! Which (project, stage, profile) a command run in a directory means.
//!
//! [`resolve`] is what `resolve`, `exec` and `env` share. The wrapped command line is read
//! once ([`crate::projects::args::inspect`]: directly, through package runners, `sh -c`,
//! npm/yarn/pnpm scripts), and its framework invocations' flags are merged with credport's
//! own ([`merge`]):
//!
//! * credport's `--stage S` and a command's own stage flag must agree, else credport refuses
//!   before running, naming both;
//! * `--stage S` with a direct serverless/sam invocation that has no stage flag adds the flag
//!   to the command ([`Wrapped::inject`]), so the framework runs S; through a wrapper
//!   credport cannot edit (an npm script, `sh -c`) the framework runs its own default stage,
//!   and credport refuses when that is not S;
//! * the stage credport serves is the one the framework runs: credport's flag, else the
//!   invocations' common stage (several different ones: refused), else the project's default.
//!
//! Then an explicit `--project` that credport's config (or the registered table) knows is
//! bound there, and otherwise the nearest project file above the directory decides.
//! credport's config wins over project files: when the project file names a project the
//! config declares, the config's stage map answers. [`check_profile`] refuses a profile that
//! is in neither AWS file, naming the rule that chose it and the closest existing names.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::fsutil::FileState;
use crate::profiles::Snapshot;
use crate::profiles::store::FileStatus;
use crate::projects::args::{Inspection, Invocation, Tool, inspect};
use crate::projects::registry::{self, RegistryError};
use crate::projects::{ProjectError, ProjectKind, Selection, resolve_dir};

/// What a command asked for.
#[derive(Debug, Clone, Default)]
pub struct Query {
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

/// What credport read from the wrapped command line and will do to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wrapped {
    /// Flags to add to the wrapped argv: `(index, words)`, in increasing index order.
    pub inject: Vec<(usize, Vec<String>)>,
    /// The stages the command's serverless invocations run, without repeats.
    pub serverless_stages: Vec<String>,
    /// Why the command may start serverless where credport cannot see it (`make invoke`).
    pub opaque: Option<String>,
    /// What credport did with the command's stage, for the one stderr line.
    pub note: Option<String>,
}

impl Wrapped {
    /// `argv` with [`inject`](Self::inject) applied.
    pub fn apply(&self, argv: &[String]) -> Vec<String> {
        let mut out = argv.to_vec();
        for (at, words) in self.inject.iter().rev() {
            let at = (*at).min(out.len());
            for (k, w) in words.iter().enumerate() {
                out.insert(at + k, w.clone());
            }
        }
        out
    }
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
    /// The selection the scope was resolved with (flags merged from the command line).
    #[serde(skip)]
    pub selection: Selection,
    /// What the wrapped command runs.
    #[serde(skip)]
    pub wrapped: Wrapped,
    /// The session policy that scopes this scope's sessions down, if one is configured.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::session_policy::serialize_shared"
    )]
    pub policy: Option<std::sync::Arc<crate::session_policy::SessionPolicy>>,
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
    /// credport's `--stage` and the command's own stage flag differ.
    #[error(
        "--stage {ours} but the command runs `{command}` with stage '{theirs}'; give the stage once \
         (drop credport's --stage, or the command's)"
    )]
    StageConflict {
        /// credport's `--stage`.
        ours: String,
        /// The command's stage.
        theirs: String,
        /// The framework invocation.
        command: String,
    },
    /// `--stage` was given, but a framework started where credport cannot add the flag runs
    /// another stage.
    #[error(
        "--stage {ours}, but {via} runs `{command}` without a stage flag, so it runs its own stage \
         '{theirs}' ({rule}) and credport cannot add the flag there; add `--stage {ours}` to that \
         command, or drop credport's --stage"
    )]
    StageNotRun {
        /// credport's `--stage`.
        ours: String,
        /// The stage the framework runs.
        theirs: String,
        /// Why it runs that stage.
        rule: String,
        /// The framework invocation.
        command: String,
        /// The wrapper that starts it (`npm run invoke`).
        via: String,
    },
    /// The command runs serverless for several stages.
    #[error(
        "the command runs serverless for stages {}; credport serves one stage per command: run \
         them one at a time", stages.join(" and ")
    )]
    MultipleStages {
        /// The stages.
        stages: Vec<String>,
    },
    /// The profile is in neither AWS file.
    #[error(
        "profile '{profile}' ({rule}{}) is in neither {}{}",
        file.as_ref().map(|f| format!(" in {}", f.display())).unwrap_or_default(),
        aws_files,
        suggestion.as_ref().map(|s| format!("; did you mean '{s}'?")).unwrap_or_else(|| "; add it, or map the stage to a profile you have".into())
    )]
    MissingProfile {
        /// The profile.
        profile: String,
        /// The rule that chose it.
        rule: String,
        /// The file that holds the rule.
        file: Option<PathBuf>,
        /// The AWS files looked in, for the message.
        aws_files: String,
        /// The closest existing profile name.
        suggestion: Option<String>,
    },
}

/// The nearest serverless service file at or above `dir`.
pub fn serverless_file(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().find_map(|d| {
        ["serverless.yml", "serverless.yaml", "serverless.json"]
            .iter()
            .map(|n| d.join(n))
            .find(|p| p.is_file())
    })
}

/// The stage a framework invocation runs without a stage flag, and why.
fn default_stage(
    inv: &Invocation,
    sel: &Selection,
    env: &dyn crate::env::Env,
) -> Result<Option<(String, String)>, ScopeError> {
    match inv.tool {
        Tool::Serverless => match serverless_file(&inv.dir) {
            Some(file) => Ok(Some(crate::projects::serverless::stage_for(
                &file,
                &Selection {
                    stage: None,
                    ..sel.clone()
                },
                env,
            )?)),
            None => Ok(Some(("dev".into(), "serverless's default".into()))),
        },
        Tool::Sam => Ok(Some(("default".into(), "sam's default config env".into()))),
        Tool::Cdk => Ok(None),
    }
}

/// Merges credport's own flags with the framework invocations `inspection` found (see the
/// module documentation for the rules).
pub fn merge(
    req: &Query,
    inspection: &Inspection,
    env: &dyn crate::env::Env,
) -> Result<(Selection, Wrapped), ScopeError> {
    let mut sel = Selection::default();
    let mut w = Wrapped {
        opaque: inspection.opaque.clone(),
        ..Wrapped::default()
    };
    let mut runs: Vec<String> = Vec::new();
    let mut first = true;
    for inv in &inspection.invocations {
        let own = inv.selection();
        if first {
            sel = own.clone();
            sel.stage = None;
            first = false;
        }
        let stage_flag = match inv.tool {
            Tool::Serverless => Some("--stage"),
            Tool::Sam => Some("--config-env"),
            Tool::Cdk => None,
        };
        let run = match (&req.stage, &own.stage) {
            (Some(ours), Some(theirs)) if ours != theirs => {
                return Err(ScopeError::StageConflict {
                    ours: ours.clone(),
                    theirs: theirs.clone(),
                    command: inv.display(),
                });
            }
            (_, Some(theirs)) => Some(theirs.clone()),
            (Some(ours), None) => match (inv.insert_at, stage_flag) {
                (Some(at), Some(flag)) => {
                    w.inject.push((at, vec![flag.to_string(), ours.clone()]));
                    w.note = Some(format!("running `{} {flag} {ours}`", inv.display()));
                    Some(ours.clone())
                }
                (_, None) => None,
                (None, Some(_)) => match default_stage(inv, &own, env)? {
                    Some((theirs, rule)) if theirs != *ours => {
                        return Err(ScopeError::StageNotRun {
                            ours: ours.clone(),
                            theirs,
                            rule,
                            command: inv.display(),
                            via: inv.via.clone().unwrap_or_else(|| "the command".into()),
                        });
                    }
                    other => other.map(|(s, _)| s),
                },
            },
            (None, None) => default_stage(inv, &own, env)?.map(|(s, _)| s),
        };
        if let Some(stage) = run {
            if inv.tool == Tool::Serverless && !w.serverless_stages.contains(&stage) {
                w.serverless_stages.push(stage.clone());
            }
            if !runs.contains(&stage) {
                runs.push(stage);
            }
        }
    }
    sel.stage = match &req.stage {
        Some(s) => Some(s.clone()),
        None if runs.len() > 1 => return Err(ScopeError::MultipleStages { stages: runs }),
        None => runs.pop(),
    };
    if req.aws_profile.is_some() {
        sel.aws_profile = req.aws_profile.clone();
    }
    sel.params.extend(req.params.iter().cloned());
    Ok((sel, w))
}

/// Resolves `req` against credport's `config`, the `registered` projects and the
/// project files, with `env` for `${env:...}` variables.
pub fn resolve(
    req: &Query,
    config: &Config,
    registered: &Config,
    env: &dyn crate::env::Env,
) -> Result<Scope, ScopeError> {
    let inspection = if req.wrapped.is_empty() {
        Inspection::default()
    } else {
        inspect(&req.wrapped, &req.dir)
    };
    let (sel, wrapped) = merge(req, &inspection, env)?;
    let mut scope = resolve_selection(req, &sel, config, registered, env)?;
    scope.selection = sel;
    scope.wrapped = wrapped;
    Ok(scope)
}

/// Resolves `req` with an already merged selection (no wrapped command is read).
pub fn resolve_selection(
    req: &Query,
    sel: &Selection,
    config: &Config,
    registered: &Config,
    env: &dyn crate::env::Env,
) -> Result<Scope, ScopeError> {
    let sel = sel.clone();
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
        return Ok(from_binding(b, sel));
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
        let (stage, _) = crate::projects::pick_stage(
            sel.stage.as_deref(),
            p.default_stage.as_deref(),
            Some((res.stage.clone(), String::new())),
            p.stages.keys(),
        )
        .unwrap_or_else(|| (res.stage.clone(), String::new()));
        if p.stages.contains_key(&stage) {
            let b = registry::bind(config, registered, &res.project, Some(&stage), env)?;
            return Ok(from_binding(b, sel));
        }
    }
    let dir = res
        .file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| req.dir.clone());
    // The config's policy for a project it declares replaces the project file's.
    let policy = match config.projects.get(&res.project) {
        Some(p) => registry::config_policy(&res.project, p, &res.stage)?.or(res.policy),
        None => res.policy,
    };
    Ok(Scope {
        policy,
        project: res.project,
        stage: res.stage,
        profile: res.profile,
        region: res.region,
        file: Some(res.file),
        kind: Some(res.kind),
        rule: res.rule,
        project_dir: Some(dir),
        selection: sel,
        wrapped: Wrapped::default(),
    })
}

fn from_binding(b: registry::Binding, sel: Selection) -> Scope {
    let (profile, rule) = match &sel.aws_profile {
        Some(p) => (p.clone(), format!("--aws-profile (overrides {})", b.rule)),
        None => (b.profile, b.rule),
    };
    Scope {
        policy: b.policy,
        project: b.project,
        stage: b.stage,
        profile,
        region: b.region,
        // A registered project's file (trust needs it); `None` when the config decided.
        file: b.file,
        kind: None,
        rule,
        project_dir: None,
        selection: sel,
        wrapped: Wrapped::default(),
    }
}

/// Refuses a profile that is in neither AWS file, naming the rule that chose it and the
/// closest existing name. When a file is broken (the daemon keeps serving its last good
/// version), nothing is refused: the answer is a warning naming the file and line instead.
pub fn check_profile(
    profile: &str,
    scope: &Scope,
    snapshot: &Snapshot,
    files: &[FileStatus],
) -> Result<Option<String>, ScopeError> {
    if snapshot.profile(profile).is_some() {
        return Ok(None);
    }
    if let Some(f) = files
        .iter()
        .find(|f| matches!(f.state, FileState::Error { .. }))
    {
        let FileState::Error { line, reason } = &f.state else {
            unreachable!("matched above")
        };
        return Ok(Some(format!(
            "cannot check profile '{profile}': {}{}: {reason} (the daemon keeps serving the last good version)",
            f.path.display(),
            line.map(|l| format!(": line {l}")).unwrap_or_default()
        )));
    }
    let suggestion = snapshot
        .profiles
        .keys()
        .map(|k| {
            (
                strsim::jaro_winkler(&k.to_lowercase(), &profile.to_lowercase()),
                k,
            )
        })
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.clone());
    Err(ScopeError::MissingProfile {
        profile: profile.to_string(),
        rule: scope.rule.clone(),
        file: scope.file.clone(),
        aws_files: files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect::<Vec<_>>()
            .join(" nor "),
        suggestion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "service: orders\ncustom:\n  myStage: ${opt:stage, self:provider.stage}\n  myProfile:\n    prod: prodAccount\n    dev: devAccount\nprovider:\n  name: aws\n  stage: dev\n  profile: ${self:custom.myProfile.${self:custom.myStage}}\n";

    fn req(dir: &Path, wrapped: &[&str]) -> Query {
        Query {
            dir: dir.to_path_buf(),
            wrapped: wrapped.iter().map(|s| s.to_string()).collect(),
            ..Query::default()
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
        let e = resolve(&req(t.path(), &["sls", "-s", "qa"]), &none, &none, &env).unwrap_err();
        assert!(e.to_string().contains("'qa'"), "{e}");
    }

    /// (credport --stage, wrapped command, package.json script) -> served stage and what
    /// credport does to the command, or the refusal.
    #[test]
    fn stage_rule_table() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("serverless.yml"), SEED).unwrap();
        std::fs::write(
            t.path().join("package.json"),
            r#"{"scripts": {"invoke:prod": "serverless invoke local -f hello -s prod",
                "invoke": "serverless invoke local -f hello",
                "both": "sls invoke local -f a -s dev; sls invoke local -f b -s prod"}}"#,
        )
        .unwrap();
        let none = Config::default();
        let env = |_: &str| None;
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            &'a str,
            Result<(&'a str, &'a str), &'a str>,
        );
        let cases: &[Case] = &[
            (
                "no flag anywhere",
                None,
                "serverless invoke local -f hello",
                Ok(("dev", "serverless invoke local -f hello")),
            ),
            (
                "command's flag",
                None,
                "serverless invoke local -f hello -s prod",
                Ok(("prod", "serverless invoke local -f hello -s prod")),
            ),
            (
                "credport's flag is added",
                Some("prod"),
                "serverless invoke local -f hello",
                Ok(("prod", "serverless invoke local -f hello --stage prod")),
            ),
            (
                "added before --",
                Some("prod"),
                "npx sls invoke local -f hello -- x",
                Ok(("prod", "npx sls invoke local -f hello --stage prod -- x")),
            ),
            (
                "both agree",
                Some("prod"),
                "sls invoke local -s prod",
                Ok(("prod", "sls invoke local -s prod")),
            ),
            (
                "both differ",
                Some("dev"),
                "sls invoke local -s prod",
                Err("--stage dev but the command runs"),
            ),
            (
                "npm script",
                None,
                "npm run invoke:prod",
                Ok(("prod", "npm run invoke:prod")),
            ),
            (
                "npm script agrees",
                Some("prod"),
                "npm run invoke:prod",
                Ok(("prod", "npm run invoke:prod")),
            ),
            (
                "npm script runs its default",
                Some("prod"),
                "npm run invoke",
                Err(
                    "npm run invoke runs `serverless invoke local -f hello` without a stage flag, so it runs its own stage 'dev'",
                ),
            ),
            (
                "npm script default agrees",
                Some("dev"),
                "npm run invoke",
                Ok(("dev", "npm run invoke")),
            ),
            (
                "sh -c",
                None,
                "sh -c 'serverless invoke local -f hello -s prod'",
                Ok(("prod", "sh -c 'serverless invoke local -f hello -s prod'")),
            ),
            (
                "two stages",
                None,
                "npm run both",
                Err("stages dev and prod"),
            ),
            (
                "pytest -s is no stage",
                None,
                "pytest -s tests/test_x.py",
                Ok(("dev", "pytest -s tests/test_x.py")),
            ),
            (
                "grep -s is no stage",
                Some("prod"),
                "grep -s prod file",
                Ok(("prod", "grep -s prod file")),
            ),
        ];
        for (name, stage, line, want) in cases {
            let argv = shlex::split(line).unwrap();
            let mut r = req(
                t.path(),
                &argv.iter().map(String::as_str).collect::<Vec<_>>(),
            );
            r.stage = stage.map(Into::into);
            match (resolve(&r, &none, &none, &env), want) {
                (Ok(s), Ok((stage, cmd))) => {
                    assert_eq!(s.stage, *stage, "{name}");
                    assert_eq!(
                        shlex::try_join(s.wrapped.apply(&argv).iter().map(String::as_str)).unwrap(),
                        *cmd,
                        "{name}"
                    );
                }
                (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn missing_profile_names_rule_and_suggests() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("serverless.yml"),
            SEED.replace("prod: prodAccount", "prod: prodAcount"),
        )
        .unwrap();
        let none = Config::default();
        let mut r = req(t.path(), &[]);
        r.stage = Some("prod".into());
        let scope = resolve(&r, &none, &none, &|_| None).unwrap();
        let creds = t.path().join("credentials");
        std::fs::write(
            &creds,
            "[prodAccount]\naws_access_key_id = A\naws_secret_access_key = B\n",
        )
        .unwrap();
        let store = crate::profiles::store::ProfileStore::open(crate::profiles::AwsPaths {
            credentials: creds.clone(),
            config: t.path().join("config"),
        });
        let e = check_profile(&scope.profile, &scope, &store.snapshot(), &store.status())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("profile 'prodAcount' (provider.profile = "),
            "{e}"
        );
        assert!(e.contains("serverless.yml) is in neither"), "{e}");
        assert!(e.ends_with("did you mean 'prodAccount'?"), "{e}");
        std::fs::write(&creds, "[prodAccount]\nno equals sign\n").unwrap();
        let store = crate::profiles::store::ProfileStore::open(crate::profiles::AwsPaths {
            credentials: creds,
            config: t.path().join("config"),
        });
        let w = check_profile("prodAcount", &scope, &store.snapshot(), &store.status()).unwrap();
        assert!(
            w.unwrap().contains("line 2"),
            "a broken file is reported as broken"
        );
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
