//! `credport token`: print a scope's token, or rotate the key behind all of them.

use std::io::Write;

use anyhow::{Context, Result};

use crate::cli::args::TokenArgs;
use crate::config::check_name;
use crate::paths::Paths;
use crate::tokens::TokenKey;

/// Runs `credport token`.
pub fn run(paths: &Paths, args: &TokenArgs, out: &mut dyn Write) -> Result<()> {
    let key_path = paths.token_key();
    if args.rotate {
        let key = TokenKey::rotate(&key_path).context("rotating the token key")?;
        let rewritten = rewrite_token_files(paths, &key)?;
        eprintln!(
            "credport: token key rotated ({}); every token has changed; {rewritten} token file(s) rewritten",
            key_path.display()
        );
        return Ok(());
    }
    let (Some(project), Some(stage)) = (&args.project, &args.stage) else {
        anyhow::bail!("--project and --stage are required");
    };
    check_name("project", project).map_err(anyhow::Error::msg)?;
    check_name("stage", stage).map_err(anyhow::Error::msg)?;
    let key = TokenKey::load_or_create(&key_path)?;
    writeln!(out, "{}", key.token(project, stage).expose())?;
    Ok(())
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
