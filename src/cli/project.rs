//! `credport project add|list|remove`: the registered-projects table.

use std::io::Write;

use anyhow::{Context, Result};

use crate::cli::args::ProjectCommand;
use crate::paths::Paths;
use crate::projects::{Selection, resolve_dir};

/// Runs `credport project ...`.
pub fn run(
    paths: &Paths,
    cmd: &ProjectCommand,
    env: &dyn crate::env::Env,
    out: &mut dyn Write,
) -> Result<()> {
    let config = super::load_config(paths)?;
    match cmd {
        ProjectCommand::Add { dir } => {
            let dir = match dir {
                Some(d) => d.clone(),
                None => std::env::current_dir()?,
            };
            let res = resolve_dir(&dir, &Selection::default(), env)?;
            crate::config::check_name("project", &res.project).map_err(anyhow::Error::msg)?;
            let project_dir = res.file.parent().unwrap_or(&dir).to_path_buf();
            let changed = crate::client::register(paths, &config, &res.project, &project_dir)
                .context("registering the project")?;
            writeln!(
                out,
                "{} {} ({})",
                if changed {
                    "registered"
                } else {
                    "already registered:"
                },
                res.project,
                res.file.display()
            )?;
        }
        ProjectCommand::List => {
            for (name, p) in &config.projects {
                let stages: Vec<_> = p.stages.keys().cloned().collect();
                writeln!(out, "{name}\tconfig\t{}", stages.join(","))?;
            }
            for (name, p) in &crate::client::registered(paths).projects {
                let path = p
                    .path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                writeln!(out, "{name}\tregistered\t{path}")?;
            }
        }
        ProjectCommand::Remove { name } => {
            if !crate::client::unregister(paths, name)? {
                anyhow::bail!("project '{name}' is not registered");
            }
            writeln!(out, "removed {name}")?;
        }
    }
    Ok(())
}
