//! `credport login PROFILE [--code CODE]`: open an MFA session in the running daemon.

use std::io::{BufRead, Write};

use anyhow::{Context, Result};

use crate::cli::args::LoginArgs;
use crate::daemon::control::{Command, call};
use crate::paths::Paths;

/// Runs `credport login`. Reads the code from `input` (the terminal) when not given.
pub async fn run(paths: &Paths, args: &LoginArgs, input: &mut dyn BufRead) -> Result<()> {
    let code = match &args.code {
        Some(c) => c.clone(),
        None => {
            eprint!("MFA code for profile '{}': ", args.profile);
            std::io::stderr().flush().ok();
            let mut line = String::new();
            input.read_line(&mut line).context("reading the MFA code")?;
            line.trim().to_string()
        }
    };
    let answer = call(
        &paths.control_socket(),
        &Command::Login {
            profile: args.profile.clone(),
            code,
        },
    )
    .await
    .with_context(|| format!("login for profile '{}'", args.profile))?;
    eprintln!(
        "credport: MFA session for '{}' open until {}",
        args.profile,
        answer.expires.as_deref().unwrap_or("?")
    );
    Ok(())
}
