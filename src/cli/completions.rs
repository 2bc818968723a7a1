//! `credport completions SHELL`: the shell completion script, generated from the clap
//! definitions in `cli::args` (so it always matches the commands and flags).

use std::io::Write;

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::args::{Cli, CompletionsArgs};

/// Writes the completion script for `args.shell` to `out`.
pub fn run(args: &CompletionsArgs, out: &mut dyn Write) -> Result<()> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "credport", &mut buf);
    out.write_all(&buf)?;
    out.flush()?;
    Ok(())
}
