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
        TokenKey::rotate(&key_path).context("rotating the token key")?;
        eprintln!(
            "credport: token key rotated ({}); every token has changed",
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
