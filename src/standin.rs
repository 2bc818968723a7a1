//! Stand-in profiles: what serverless's own profile lookup finds under credport.
//!
//! serverless@3 looks the profile it computes for its stage (`provider.profile`,
//! `--aws-profile`, `AWS_<STAGE>_PROFILE`) up in the shared credentials file itself, aborts
//! when it is missing ("doesn't seem to be configured"), and hands that profile's keys to the
//! handler it runs (`invoke local`: in its own process for Node, as a child for Python). So
//! the shared credentials file a serverless process sees under credport holds, for each
//! stage serverless may run, one section named as serverless names that stage's profile,
//! holding **that stage's session credentials as credport maps the stage** (credport's
//! config, `.credport.toml`, the project file). serverless's lookup then succeeds whatever
//! name it computes, and the handler gets the account of the stage serverless actually runs.
//!
//! What is written, and why it is safe:
//! * only session credentials (access key, secret, session token) that the endpoint would
//!   serve for that (project, stage) anyway; a source without a session token (long-term
//!   keys are always exchanged first) is never written;
//! * only the stages the command runs when credport can read them (`exec -- serverless ...
//!   -s prod`, npm scripts, `sh -c`), every known stage of the project only where it cannot
//!   (`make`, a shell that runs serverless later: `env`);
//! * a name that two stages share while credport maps them to different profiles is never
//!   written: which stage serverless runs cannot be told, so credport refuses
//!   ([`StandinError::Ambiguous`]);
//! * files are 0600 in 0700 directories, replaced atomically: `exec`'s file lives in its
//!   run directory and goes with it; `env`'s file (`<runtime>/standin/PROJECT/credentials`,
//!   beside a `dir` record of the project directory) is kept fresh by the daemon
//!   (`daemon::keeper`) before the sessions in it expire, rewritten at daemon start and after
//!   every reload, and removed when the project directory is gone.

use crate::config::Config;
use crate::credentials::Credentials;
use crate::projects::Selection;
use crate::scope::{Query, resolve_selection, serverless_file};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One section of a stand-in file: the profile name serverless computes for `stage`, and
/// the profile credport serves that stage with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The profile name serverless looks up.
    pub name: String,
    /// The stage.
    pub stage: String,
    /// The profile credport maps the stage to.
    pub profile: String,
}

/// Why stand-in profiles cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum StandinError {
    /// Two stages make serverless look up the same profile name, mapped to different
    /// profiles by credport.
    #[error(
        "{}: serverless looks up profile '{name}' for stages {}, which credport maps to different \
         profiles ({}), and it cannot see which stage {what} runs; run serverless directly under \
         `credport exec` (e.g. `credport exec -- serverless invoke local -f F -s {}`), or give each \
         stage its own profile name in the service file",
        file.display(), stages.join(" and "), profiles.join(", "),
        stages.first().map(String::as_str).unwrap_or("STAGE")
    )]
    Ambiguous {
        /// The service file.
        file: PathBuf,
        /// The shared profile name.
        name: String,
        /// The stages that compute it.
        stages: Vec<String>,
        /// The profiles credport maps them to.
        profiles: Vec<String>,
        /// What runs serverless (`make invoke`, "a later command").
        what: String,
    },
    /// A file could not be written.
    #[error(transparent)]
    Fs(#[from] crate::fsutil::FsError),
}

/// Every stage credport knows for a project: its config's stages, `.credport.toml`'s, and
/// those the service file spells out (see
/// [`declared_stages`](crate::projects::serverless::declared_stages)).
pub fn known_stages(
    project: &str,
    dir: &Path,
    config: &Config,
    sel: &Selection,
    env: &dyn crate::env::Env,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |s: &str| {
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    };
    if let Some(p) = config.projects.get(project) {
        p.stages.keys().for_each(|s| add(s));
    }
    if let Some(toml) = dir
        .ancestors()
        .map(|d| d.join(".credport.toml"))
        .find(|f| f.is_file())
        && let Ok(Some(text)) = crate::fsutil::read_text(&toml)
        && let Ok(c) = crate::projects::credport_toml::parse(&toml, &text)
    {
        c.stages.keys().for_each(|s| add(s));
    }
    if let Some(file) = serverless_file(dir) {
        crate::projects::serverless::declared_stages(&file, sel, env)
            .iter()
            .for_each(|s| add(s));
    }
    out
}

/// The stand-in entries for `stages` of the project whose service file is `sls_file`:
/// serverless's profile name per stage (with the invocation's own flags in `sel`), and
/// credport's profile for the stage (`credport_profile`). Stages serverless computes no
/// profile for (no `provider.profile`), or that either side cannot resolve, get no entry.
/// With `strict` (the stages are exactly those the command runs), a shared name keeps the
/// first stage's entry; otherwise a name shared by stages mapped to different profiles is
/// refused, naming `what` runs serverless.
pub fn entries(
    sls_file: &Path,
    sel: &Selection,
    stages: &[String],
    credport_profile: &dyn Fn(&str) -> Option<String>,
    env: &dyn crate::env::Env,
    strict: bool,
    what: &str,
) -> Result<Vec<Entry>, StandinError> {
    let mut by_name: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for stage in stages {
        let s = Selection {
            stage: Some(stage.clone()),
            ..sel.clone()
        };
        let Ok(res) = crate::projects::serverless::resolve(sls_file, &s, env) else {
            continue;
        };
        let Some(profile) = credport_profile(stage) else {
            continue;
        };
        by_name.entry(res.profile.clone()).or_default().push(Entry {
            name: res.profile,
            stage: stage.clone(),
            profile,
        });
    }
    let mut out = Vec::new();
    for (name, list) in by_name {
        let mut profiles: Vec<String> = list.iter().map(|e| e.profile.clone()).collect();
        profiles.dedup();
        if profiles.len() > 1 && !strict {
            return Err(StandinError::Ambiguous {
                file: sls_file.to_path_buf(),
                name,
                stages: list.iter().map(|e| e.stage.clone()).collect(),
                profiles,
                what: what.to_string(),
            });
        }
        out.extend(list.into_iter().next());
    }
    Ok(out)
}

/// credport's profile for `stage` of the project in `dir`, as `resolve` would answer it
/// (credport's config over `.credport.toml` over the service file), with `sel`'s flags.
pub fn profile_for_stage(
    dir: &Path,
    project: &str,
    stage: &str,
    sel: &Selection,
    config: &Config,
    registered: &Config,
    env: &dyn crate::env::Env,
) -> Option<String> {
    stage_scope(dir, project, stage, sel, config, registered, env)
        .ok()
        .map(|s| s.profile)
}

/// `stage` of the project in `dir` resolved as the endpoint resolves it (the rest of the
/// selection as given).
fn stage_scope(
    dir: &Path,
    project: &str,
    stage: &str,
    sel: &Selection,
    config: &Config,
    registered: &Config,
    env: &dyn crate::env::Env,
) -> Result<crate::scope::Scope, crate::scope::ScopeError> {
    let req = Query {
        dir: dir.to_path_buf(),
        project: Some(project.to_string()),
        ..Query::default()
    };
    let sel = Selection {
        stage: Some(stage.to_string()),
        ..sel.clone()
    };
    resolve_selection(&req, &sel, config, registered, env)
}

/// The session policy credport scopes `stage` of the project in `dir` down with, resolved
/// as [`profile_for_stage`] resolves its profile, so a stand-in section holds the same
/// scoped session the endpoint serves for that stage. An error (a broken policy file)
/// means the stage must not be fetched at all: never unscoped.
pub fn policy_for_stage(
    dir: &Path,
    project: &str,
    stage: &str,
    sel: &Selection,
    config: &Config,
    registered: &Config,
    env: &dyn crate::env::Env,
) -> Result<Option<std::sync::Arc<crate::session_policy::SessionPolicy>>, String> {
    stage_scope(dir, project, stage, sel, config, registered, env)
        .map(|s| s.policy)
        .map_err(|e| e.to_string())
}

/// Renders a shared credentials file: one section per entry with its stage's credentials.
/// Entries whose credentials carry no session token are left out (never a long-term key).
pub fn render(project: &str, entries: &[(Entry, Credentials)]) -> String {
    let mut out = format!(
        "# Written by credport: session credentials of project {project}, one section per\n\
         # profile name serverless looks up for a stage. Do not edit; it is rewritten.\n"
    );
    for (e, c) in entries {
        let Some(token) = &c.session_token else {
            continue;
        };
        out.push_str(&format!(
            "\n[{}]\n# stage {} (credport profile {})\naws_access_key_id = {}\naws_secret_access_key = {}\naws_session_token = {}\n",
            e.name,
            e.stage,
            e.profile,
            c.access_key_id,
            c.secret_access_key.expose(),
            token.expose()
        ));
        if let Some(exp) = c.expiration {
            out.push_str(&format!(
                "aws_expiration = {}\n",
                crate::credentials::format_expiration(exp)
            ));
        }
    }
    out
}

/// The stand-in file `env` points serverless at, kept fresh by the daemon.
pub fn env_file(runtime_dir: &Path, project: &str) -> PathBuf {
    runtime_dir
        .join("standin")
        .join(project)
        .join("credentials")
}

/// The record of the project directory a kept stand-in file is computed from.
pub fn dir_record(runtime_dir: &Path, project: &str) -> PathBuf {
    runtime_dir.join("standin").join(project).join("dir")
}

/// Asks for `project`'s stand-in file to be kept: records its directory for the daemon.
pub fn subscribe(runtime_dir: &Path, project: &str, dir: &Path) -> Result<PathBuf, StandinError> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    crate::fsutil::write_private(
        &dir_record(runtime_dir, project),
        dir.display().to_string().as_bytes(),
    )?;
    Ok(env_file(runtime_dir, project))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"service: orders
custom:
  myStage: ${opt:stage, self:provider.stage}
  myProfile:
    prod: prodAccount
    dev: devAccount
provider:
  name: aws
  stage: dev
  profile: ${self:custom.myProfile.${self:custom.myStage}}
"#;

    #[test]
    fn names_per_stage_with_credports_mapping() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("serverless.yml");
        std::fs::write(&f, SEED).unwrap();
        let env = |_: &str| None;
        let stages = known_stages(
            "orders",
            t.path(),
            &Config::default(),
            &Selection::default(),
            &env,
        );
        assert_eq!(stages, vec!["dev", "prod"]);
        let mapped = |s: &str| Some(format!("credport-{s}"));
        let list = entries(
            &f,
            &Selection::default(),
            &stages,
            &mapped,
            &env,
            false,
            "x",
        )
        .unwrap();
        assert_eq!(
            list,
            vec![
                Entry {
                    name: "devAccount".into(),
                    stage: "dev".into(),
                    profile: "credport-dev".into()
                },
                Entry {
                    name: "prodAccount".into(),
                    stage: "prod".into(),
                    profile: "credport-prod".into()
                },
            ]
        );
        let pinned = Selection {
            aws_profile: Some("mine".into()),
            ..Selection::default()
        };
        let one = entries(&f, &pinned, &["prod".into()], &mapped, &env, true, "x").unwrap();
        assert_eq!(one[0].name, "mine");
    }

    #[test]
    fn shared_name_with_different_profiles_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("serverless.yml");
        std::fs::write(&f, "service: s\nprovider:\n  profile: company\n").unwrap();
        let env = |_: &str| None;
        let stages: Vec<String> = vec!["dev".into(), "prod".into()];
        let mapped = |s: &str| Some(format!("p-{s}"));
        let e = entries(
            &f,
            &Selection::default(),
            &stages,
            &mapped,
            &env,
            false,
            "`make invoke`",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("profile 'company' for stages dev and prod"),
            "{e}"
        );
        assert!(e.contains("`make invoke`"), "{e}");
        let same = |_: &str| Some("one".to_string());
        assert_eq!(
            entries(&f, &Selection::default(), &stages, &same, &env, false, "x")
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            entries(
                &f,
                &Selection::default(),
                &["prod".into()],
                &mapped,
                &env,
                true,
                "x"
            )
            .unwrap()[0]
                .stage,
            "prod"
        );
    }

    #[test]
    fn renders_session_credentials_only() {
        let c = |token: Option<&str>| Credentials {
            access_key_id: "ASIAX".into(),
            secret_access_key: crate::credentials::Secret::new("s".to_string()),
            session_token: token.map(|t| crate::credentials::Secret::new(t.to_string())),
            expiration: None,
            account_id: None,
        };
        let e = |n: &str| Entry {
            name: n.into(),
            stage: n.into(),
            profile: n.into(),
        };
        let text = render("p", &[(e("a"), c(Some("t"))), (e("b"), c(None))]);
        assert!(text.contains("[a]\n"), "{text}");
        assert!(text.contains("aws_session_token = t\n"), "{text}");
        assert!(!text.contains("[b]"), "no long-term keys: {text}");
    }
}
