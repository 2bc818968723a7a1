//! What a command is launched with under credport, shared by `exec` and `env`: the stand-in
//! profiles serverless needs for the stages it runs ([`standin_plan`], [`fetch_standins`]),
//! the isolated shared files that keep `[default]` keys from shadowing the endpoint
//! ([`isolated_files`], [`isolated_files_in`]), and the profile checks done before anything runs
//! ([`check_profiles`]).

use std::path::{Path, PathBuf};

use crate::client::{ClientError, fetch_credentials};
use crate::config::Config;
use crate::credentials::Credentials;
use crate::paths::Paths;
use crate::scope::{Scope, ScopeError, check_profile, serverless_file};
use crate::session_policy::SessionPolicy;
use crate::standin::{self, Entry, StandinError};
use crate::tokens::TokenKey;

/// The stand-in profiles a command needs: the service file and one entry per stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandinPlan {
    /// The serverless service file the names are computed from.
    pub sls_file: PathBuf,
    /// The entries, one per profile name.
    pub entries: Vec<Entry>,
}

/// Which stand-in profiles `exec` writes for `scope`: the stages its serverless invocations
/// run when credport can read them; every known stage when the command may start
/// serverless where credport cannot see it (`make`), refusing names two stages share;
/// nothing when it runs no serverless, or the project has no service file.
pub fn standin_plan(
    scope: &Scope,
    dir: &Path,
    config: &Config,
    registered: &Config,
    env: &dyn crate::env::Env,
) -> Result<Option<StandinPlan>, StandinError> {
    let base = scope.project_dir.as_deref().unwrap_or(dir);
    let Some(sls_file) = serverless_file(base).or_else(|| serverless_file(dir)) else {
        return Ok(None);
    };
    let w = &scope.wrapped;
    let sel = &scope.selection;
    let (stages, strict, what) = if !w.serverless_stages.is_empty() {
        (w.serverless_stages.clone(), true, String::new())
    } else if let Some(opaque) = &w.opaque {
        return standin_plan_all(scope, dir, config, registered, env, &format!("`{opaque}`"));
    } else {
        return Ok(None);
    };
    let profile_of = |stage: &str| {
        if stage == scope.stage {
            Some(scope.profile.clone())
        } else {
            standin::profile_for_stage(base, &scope.project, stage, sel, config, registered, env)
        }
    };
    let entries = standin::entries(&sls_file, sel, &stages, &profile_of, env, strict, &what)?;
    Ok((!entries.is_empty()).then_some(StandinPlan { sls_file, entries }))
}

/// The stand-in profiles for every known stage of the scope's project, for commands that
/// may run serverless where credport cannot see which stage (`what` names them): refuses a
/// profile name two stages share while credport maps them to different profiles.
pub fn standin_plan_all(
    scope: &Scope,
    dir: &Path,
    config: &Config,
    registered: &Config,
    env: &dyn crate::env::Env,
    what: &str,
) -> Result<Option<StandinPlan>, StandinError> {
    let base = scope.project_dir.as_deref().unwrap_or(dir);
    let Some(sls_file) = serverless_file(base).or_else(|| serverless_file(dir)) else {
        return Ok(None);
    };
    let sel = &scope.selection;
    let stages = standin::known_stages(&scope.project, base, config, sel, env);
    let profile_of = |stage: &str| {
        if stage == scope.stage {
            Some(scope.profile.clone())
        } else {
            standin::profile_for_stage(base, &scope.project, stage, sel, config, registered, env)
        }
    };
    let entries = standin::entries(&sls_file, sel, &stages, &profile_of, env, false, what)?;
    Ok((!entries.is_empty()).then_some(StandinPlan { sls_file, entries }))
}

/// A stage an embedded server serves: (stage, profile, session policy).
pub type StageServed = (String, String, Option<std::sync::Arc<SessionPolicy>>);

/// Each stand-in entry's [`StageServed`], as an embedded server for
/// `scope` must serve them (`dir` is the project directory). A stage whose policy file is
/// broken is an error naming the stage: it is never served unscoped.
pub fn standin_stages(
    dir: &Path,
    scope: &Scope,
    plan: Option<&StandinPlan>,
    config: &Config,
    registered: &Config,
    env: &dyn crate::env::Env,
) -> Result<Vec<StageServed>, ClientError> {
    plan.iter()
        .flat_map(|p| p.entries.iter())
        .map(|e| {
            let policy = standin::policy_for_stage(
                dir,
                &scope.project,
                &e.stage,
                &scope.selection,
                config,
                registered,
                env,
            )
            .map_err(|reason| ClientError::Policy {
                stage: e.stage.clone(),
                reason,
            })?;
            Ok((e.stage.clone(), e.profile.clone(), policy))
        })
        .collect()
}

/// Fetches each entry's stage from the endpoint at `base`, with that scope's token.
pub async fn fetch_standins(
    base: &str,
    key: &TokenKey,
    project: &str,
    entries: &[Entry],
) -> Result<Vec<(Entry, Credentials)>, ClientError> {
    let mut out = Vec::new();
    for e in entries {
        let token = key.token(project, &e.stage);
        let fetched = fetch_credentials(base, project, &e.stage, token.expose()).await;
        // A locked protected stage is left out (serverless aborts if it runs that stage;
        // the warning says how to unlock it), rather than failing the whole command.
        if let Err(ClientError::Daemon(m)) = &fetched
            && m.starts_with("Locked:")
        {
            tracing::warn!("serverless's profile '{}' left out: {m}", e.name);
            continue;
        }
        let c = fetched.map_err(|err| {
            ClientError::Daemon(format!(
                "{project}/{} (serverless's profile '{}'): {err}",
                e.stage, e.name
            ))
        })?;
        out.push((e.clone(), c));
    }
    Ok(out)
}

/// Checks that the scope's profile and every stand-in entry's profile exist in the AWS
/// files. Returns warnings (a broken file cannot be checked) or the refusal.
pub fn check_profiles(
    store: &crate::profiles::store::ProfileStore,
    scope: &Scope,
    plan: Option<&StandinPlan>,
) -> Result<Vec<String>, ScopeError> {
    let snap = store.snapshot();
    let files = store.status();
    let mut warnings = Vec::new();
    let mut names = vec![(scope.profile.clone(), scope.clone())];
    for e in plan.map(|p| p.entries.as_slice()).unwrap_or_default() {
        if e.profile != scope.profile {
            let mut s = scope.clone();
            s.stage = e.stage.clone();
            s.rule = format!("stage {} of {}", e.stage, scope.project);
            s.file = None;
            names.push((e.profile.clone(), s));
        }
    }
    for (profile, s) in names {
        if let Some(w) = check_profile(&profile, &s, &snap, &files)?
            && !warnings.contains(&w)
        {
            warnings.push(w);
        }
    }
    Ok(warnings)
}

/// `env`'s isolated shared files: empty ones under the state directory, so `[default]`
/// keys in `~/.aws` cannot shadow the endpoint.
pub fn isolated_files(paths: &Paths) -> Result<(PathBuf, PathBuf), crate::fsutil::FsError> {
    isolated_files_in(&paths.state_dir.join("isolated"), "")
}

/// The isolated shared files in `dir`: `credentials` holding `credentials` (serverless's
/// stand-in profiles, or nothing) and an empty `config`, both 0600 in a 0700 directory.
/// A new file is written once without `fsync` (a run's files die with the run); one that
/// already holds the text is left alone; any other is replaced atomically. Returns
/// (credentials, config).
pub fn isolated_files_in(
    dir: &Path,
    credentials: &str,
) -> Result<(PathBuf, PathBuf), crate::fsutil::FsError> {
    use crate::fsutil::{read_text, write_private, write_private_ephemeral};
    let (c, k) = (dir.join("credentials"), dir.join("config"));
    for (file, text) in [(&c, credentials), (&k, "")] {
        match read_text(file) {
            Ok(Some(old)) if old == text => {}
            Ok(None) => write_private_ephemeral(file, text.as_bytes())?,
            _ => write_private(file, text.as_bytes())?,
        }
    }
    Ok((c, k))
}

/// Serverless's stand-in profiles for `plan`, fetched from the endpoint at `base` and
/// rendered as a credentials file, and the `name = stage` list that names them.
pub async fn standin_file(
    base: &str,
    key: &TokenKey,
    project: &str,
    plan: &StandinPlan,
) -> Result<(String, String), ClientError> {
    let fetched = fetch_standins(base, key, project, &plan.entries).await?;
    let names = fetched
        .iter()
        .map(|(e, _)| format!("{} = {}", e.name, e.stage))
        .collect::<Vec<_>>()
        .join(", ");
    Ok((standin::render(project, &fetched), names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn isolated_files_are_private_and_follow_the_text() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("run");
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let (c, k) = isolated_files_in(&dir, "[a]\n").unwrap();
        assert_eq!((read(&c).as_str(), read(&k).as_str()), ("[a]\n", ""));
        for f in [&c, &k] {
            let mode = std::fs::metadata(f).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", f.display());
        }
        // The same text again: nothing rewritten (the inode stays).
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = ino(&c);
        isolated_files_in(&dir, "[a]\n").unwrap();
        assert_eq!(ino(&c), before);
        // Other text: replaced.
        isolated_files_in(&dir, "").unwrap();
        assert_eq!(read(&c), "");
    }
}
