//! `credport env`: print what `exec` would set and unset, for shells, direnv and editors.

use std::io::Write;

use anyhow::{Context, Result};

use crate::cli::args::{EnvArgs, EnvFormat};
use crate::client;
use crate::client::launch;
use crate::environment::{ChildEnv, TokenRef};
use crate::fsutil;
use crate::paths::Paths;
use crate::tokens::TokenKey;

/// Runs `credport env`.
pub fn run(
    paths: &Paths,
    args: &EnvArgs,
    env: &dyn crate::env::Env,
    out: &mut dyn Write,
) -> Result<()> {
    let config = super::load_config(paths)?;
    let scope = super::resolve_scope(paths, &config, &args.scope, &[], env)?;
    let for_container = matches!(
        args.format,
        EnvFormat::Compose | EnvFormat::Devcontainer | EnvFormat::DockerEnv
    );
    let dir = super::scope_dir(&args.scope)?;
    // A shell that runs serverless later: its profile lookup must find every stage.
    let plan = if for_container {
        None
    } else {
        let registered = client::registered(paths);
        launch::standin_plan_all(&scope, &dir, &config, &registered, env, "a later command")?
    };
    super::trust::ensure(paths, &config, &scope, false, plan.as_ref(), &dir, env)?;
    let aws = super::aws_files(paths);
    for w in launch::check_profiles(&aws, &scope, plan.as_ref())? {
        eprintln!("credport: warning: {w}");
    }
    if let Some(dir) = &scope.project_dir {
        client::register(paths, &config, &scope.project, dir).context("registering the project")?;
    }
    let standin_file = match &plan {
        Some(p) => Some(keep_standins(paths, &scope.project, p, &dir)?),
        None => None,
    };
    let key = TokenKey::load_or_create(&paths.token_key())?;
    let token = key.token(&scope.project, &scope.stage);
    let token_ref = if args.env_token || for_container {
        TokenRef::Value(token.expose().to_string())
    } else {
        let file = token_file(paths, &scope.project, &scope.stage);
        fsutil::write_private(&file, token.expose().as_bytes())?;
        TokenRef::File(file)
    };
    let base = match (&args.url, args.format) {
        (Some(u), _) => u.trim_end_matches('/').to_string(),
        (None, EnvFormat::Compose | EnvFormat::Devcontainer | EnvFormat::DockerEnv) => {
            crate::environment::CONTAINER_BASE_URL.to_string()
        }
        (None, _) => client::stable_url(paths, &config, env),
    };
    let isolated = if for_container {
        None
    } else {
        let (creds, conf) = launch::isolated_files(paths)?;
        Some((standin_file.unwrap_or(creds), conf))
    };
    let mut child = ChildEnv::for_scope(
        &client::credentials_url(&base, &scope.project, &scope.stage),
        &token_ref,
        super::scope_region(&aws.snapshot(), &scope).as_deref(),
        isolated,
    );
    if !for_container {
        child.unset_stage_variables(super::current_variables().iter().map(String::as_str));
    }
    let text = match args.format {
        EnvFormat::Sh => child.to_sh(),
        EnvFormat::Fish => child.to_fish(),
        EnvFormat::Dotenv => child.to_dotenv(),
        EnvFormat::Json => child.to_json() + "\n",
        EnvFormat::Compose => child.to_compose(&args.service),
        EnvFormat::Devcontainer => child.to_devcontainer(),
        EnvFormat::DockerEnv => child.to_docker_env(),
    };
    out.write_all(text.as_bytes())?;
    eprintln!(
        "credport: {}/{} -> profile {} ({})",
        scope.project, scope.stage, scope.profile, scope.rule
    );
    Ok(())
}

/// The persistent token file of a scope: `<state>/tokens/PROJECT@STAGE.token` (`@` cannot
/// occur in a name, so the file name parses back unambiguously).
pub fn token_file(paths: &Paths, project: &str, stage: &str) -> std::path::PathBuf {
    paths
        .token_files_dir()
        .join(format!("{project}@{stage}.token"))
}

/// Records that `project`'s stand-in file is to be kept, and asks the running daemon to
/// write it now; returns its path. Without a daemon it is written when one starts.
fn keep_standins(
    paths: &Paths,
    project: &str,
    plan: &launch::StandinPlan,
    dir: &std::path::Path,
) -> Result<std::path::PathBuf> {
    let project_dir = plan.sls_file.parent().unwrap_or(dir);
    let file = crate::standin::subscribe(&paths.runtime_dir, project, project_dir)?;
    let names: Vec<String> = plan
        .entries
        .iter()
        .map(|e| format!("{} = {}", e.name, e.stage))
        .collect();
    let call = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(crate::daemon::control::call(
            &paths.control_socket(),
            &crate::daemon::control::Command::Standin,
        ));
    match call {
        Ok(v) => {
            let problems = v.problems.unwrap_or_default();
            if !problems.is_empty() {
                eprintln!("credport: warning: serverless's profiles: {problems}");
            }
        }
        Err(e) => eprintln!(
            "credport: warning: {e}; serverless's profiles ({}) are written to {} once it runs",
            names.join(", "),
            file.display()
        ),
    }
    Ok(file)
}
