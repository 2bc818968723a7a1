//! `credport service install|uninstall|status`: the CLI face of [`crate::service`].

use std::io::Write;

use anyhow::{Context, Result};

use crate::cli::args::{ServiceAction, ServiceArgs, ServicePlatform};
use crate::paths::Paths;
use crate::service::{self, InstallOptions, Platform};

/// Runs `credport service ...`, reporting on `out`.
pub fn run(paths: &Paths, args: &ServiceArgs, out: &mut dyn Write) -> Result<()> {
    let platform = match args.platform {
        Some(ServicePlatform::Systemd) => Platform::Systemd,
        Some(ServicePlatform::Launchd) => Platform::Launchd,
        None => Platform::current(),
    };
    let binary = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("finding the credport binary")?;
    let listen = crate::config::ConfigStore::open(paths.config.clone())
        .get()
        .server
        .listen
        .clone();
    let dry_run = match args.action {
        ServiceAction::Install { dry_run } | ServiceAction::Uninstall { dry_run } => dry_run,
        ServiceAction::Status => false,
    };
    let opts = InstallOptions {
        platform,
        binary,
        home: paths.home.clone(),
        listen,
        dry_run,
    };
    let runner = &mut service::run_command;
    match args.action {
        ServiceAction::Install { .. } => service::install(&opts, out, runner)?,
        ServiceAction::Uninstall { .. } => service::uninstall(&opts, out, runner)?,
        ServiceAction::Status => service::status(&opts, out, runner)?,
    }
    Ok(())
}
