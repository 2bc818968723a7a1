//! The commands: one file each, thin, dependencies passed in.

pub mod args;
pub mod completions;
pub mod doctor;
pub mod env;
pub mod exec;
pub mod init;
pub mod log;
pub mod login;
pub mod man;
pub mod project;
pub mod relay;
pub mod resolve;
pub mod serve;
pub mod service;
pub mod status;
pub mod token;
pub mod trust;
pub mod unlock;

use anyhow::Result;

use crate::config::{Config, ConfigStore};
use crate::paths::Paths;
use crate::scope::{Query, Scope};

/// Loads credport's config, failing on a broken file (a command must not guess).
pub fn load_config(paths: &Paths) -> Result<Config> {
    let store = ConfigStore::open(paths.config.clone());
    if let crate::fsutil::FileState::Error { line, reason } = store.state() {
        anyhow::bail!(
            "{}: line {}: {reason}",
            paths.config.display(),
            line.unwrap_or(0)
        );
    }
    Ok(store.get().as_ref().clone())
}

/// Resolves the scope a command means, from its flags and wrapped command line.
pub fn resolve_scope(
    paths: &Paths,
    config: &Config,
    args: &args::ScopeArgs,
    wrapped: &[String],
    env: &dyn crate::env::Env,
) -> Result<Scope> {
    let dir = scope_dir(args)?;
    let req = Query {
        dir,
        project: args.project.clone(),
        stage: args.stage.clone(),
        aws_profile: args.aws_profile.clone(),
        params: args.param.clone(),
        wrapped: wrapped.to_vec(),
    };
    let registered = crate::client::registered(paths);
    Ok(crate::scope::resolve(&req, config, &registered, env)?)
}

/// The directory a command resolves from: `--dir`, else the current directory.
pub fn scope_dir(args: &args::ScopeArgs) -> Result<std::path::PathBuf> {
    Ok(match &args.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir()?,
    })
}

/// The names of the variables in this process's environment (for the stage variables
/// `exec` and `env` unset).
pub fn current_variables() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect()
}

/// The region for a scope: the project's, else its profile's in the shared config.
pub fn scope_region(profiles: &crate::profiles::Snapshot, scope: &Scope) -> Option<String> {
    scope.region.clone().or_else(|| {
        profiles
            .profile(&scope.profile)
            .and_then(|p| p.region().map(Into::into))
    })
}

/// The AWS files as one command sees them: read once, for the profile checks and the region.
pub fn aws_files(paths: &Paths) -> crate::profiles::store::ProfileStore {
    crate::profiles::store::ProfileStore::open(paths.aws.clone())
}
