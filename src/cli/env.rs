//! `credport env`: print what `exec` would set and unset, for shells, direnv and editors.

use std::io::Write;

use anyhow::{Context, Result};

use crate::cli::args::{EnvArgs, EnvFormat};
use crate::client;
use crate::environment::{ChildEnv, TokenRef};
use crate::fsutil;
use crate::paths::Paths;
use crate::tokens::TokenKey;

/// Runs `credport env`.
pub fn run(
    paths: &Paths,
    args: &EnvArgs,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
) -> Result<()> {
    let config = super::load_config(paths)?;
    let scope = super::resolve_scope(paths, &config, &args.scope, &[], env)?;
    if let Some(dir) = &scope.project_dir {
        client::register(paths, &config, &scope.project, dir).context("registering the project")?;
    }
    let key = TokenKey::load_or_create(&paths.token_key())?;
    let token = key.token(&scope.project, &scope.stage);
    let for_container = matches!(
        args.format,
        EnvFormat::Compose | EnvFormat::Devcontainer | EnvFormat::DockerEnv
    );
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
        Some(isolated_files(paths)?)
    };
    let child = ChildEnv::for_scope(
        &client::credentials_url(&base, &scope.project, &scope.stage),
        &token_ref,
        super::scope_region(paths, &scope).as_deref(),
        isolated,
    );
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

/// Empty shared credentials and config files under the state directory, so `[default]`
/// keys in `~/.aws` cannot shadow the endpoint.
pub fn isolated_files(paths: &Paths) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let dir = paths.state_dir.join("isolated");
    let (c, k) = (dir.join("credentials"), dir.join("config"));
    for f in [&c, &k] {
        if !f.exists() {
            fsutil::write_private(f, b"")?;
        }
    }
    Ok((c, k))
}
