//! `credport resolve`: print the scope a directory and command line mean, as JSON.

use std::io::Write;

use anyhow::Result;

use crate::cli::args::ResolveArgs;
use crate::paths::Paths;

/// Runs `credport resolve`.
pub fn run(
    paths: &Paths,
    args: &ResolveArgs,
    env: &dyn crate::env::Env,
    out: &mut dyn Write,
) -> Result<()> {
    let config = super::load_config(paths)?;
    let scope = super::resolve_scope(paths, &config, &args.scope, &args.command, env)?;
    let dir = super::scope_dir(&args.scope)?;
    super::trust::ensure(paths, &config, &scope, false, None, &dir, env)?;
    let aws = super::aws_files(paths);
    for w in crate::client::launch::check_profiles(&aws, &scope, None)? {
        eprintln!("credport: warning: {w}");
    }
    let mut v = serde_json::to_value(&scope)?;
    v["region"] = super::scope_region(&aws.snapshot(), &scope).into();
    writeln!(out, "{v}")?;
    Ok(())
}
