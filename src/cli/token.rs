//! `credport token`: print a scope's token, or rotate the key behind all of them.

use std::io::Write;

use anyhow::{Context, Result};

use crate::cli::args::TokenArgs;
use crate::config::check_name;
use crate::paths::Paths;
use crate::tokens::TokenKey;

/// How long old tokens keep working after `token --rotate` unless `--grace` says.
pub const DEFAULT_GRACE_SECS: u64 = 60;

/// Runs `credport token`.
pub fn run(paths: &Paths, args: &TokenArgs, out: &mut dyn Write) -> Result<()> {
    let key_path = paths.token_key();
    if args.rotate {
        let grace = if args.now {
            0
        } else {
            args.grace.unwrap_or(DEFAULT_GRACE_SECS)
        };
        let (key, old) =
            TokenKey::rotate_with_grace(&key_path, std::time::Duration::from_secs(grace))
                .context("rotating the token key")?;
        let rewritten = rewrite_token_files(paths, &key)?
            + old
                .as_ref()
                .map(|o| crate::client::rundirs::rewrite_tokens(&paths.runtime_dir, o, &key))
                .unwrap_or(0);
        let until = match key.grace_until() {
            Some(_) => format!("the old ones keep working for {grace} s"),
            None => "the old ones stopped working".to_string(),
        };
        eprintln!(
            "credport: token key rotated ({}); every token has changed, {until}; {rewritten} token file(s) rewritten",
            key_path.display()
        );
        return Ok(());
    }
    let (Some(project), Some(stage)) = (&args.project, &args.stage) else {
        anyhow::bail!("--project and --stage are required");
    };
    check_name("project", project).map_err(anyhow::Error::msg)?;
    check_name("stage", stage).map_err(anyhow::Error::msg)?;
    warn_unknown_project(paths, project);
    let key = TokenKey::load_or_create(&key_path)?;
    writeln!(out, "{}", key.token(project, stage).expose())?;
    Ok(())
}

/// Warns (without failing: a token may be minted ahead of the project) when neither the
/// config nor the registered projects know `project`, naming the ones they know.
fn warn_unknown_project(paths: &Paths, project: &str) {
    let config = crate::config::ConfigStore::open(paths.config.clone()).get();
    let registered = crate::client::registered(paths);
    if config.projects.contains_key(project) || registered.projects.contains_key(project) {
        return;
    }
    let known: Vec<&str> = config
        .projects
        .keys()
        .chain(registered.projects.keys())
        .map(String::as_str)
        .collect();
    let known = if known.is_empty() {
        "none yet; declare one in config.toml or run `credport project add DIR`".to_string()
    } else {
        known.join(", ")
    };
    tracing::warn!(
        "no project '{project}' is known (known: {known}); the daemon will answer NotFound for this token until it is"
    );
}

/// Rewrites every persistent token file (`credport env`) with `key`'s token for its scope,
/// so editors and shells that point at them keep working.
pub fn rewrite_token_files(paths: &Paths, key: &TokenKey) -> Result<usize> {
    let dir = paths.token_files_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((project, stage)) = name.strip_suffix(".token").and_then(|s| s.split_once('@'))
        else {
            continue;
        };
        if check_name("project", project).is_err() || check_name("stage", stage).is_err() {
            continue;
        }
        crate::fsutil::write_private(&e.path(), key.token(project, stage).expose().as_bytes())?;
        n += 1;
    }
    Ok(n)
}
