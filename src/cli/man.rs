//! `credport man [--out DIR]`: man pages generated from the clap definitions in
//! `cli::args`: credport(1) and one page per command (credport-serve(1),
//! credport-service-install(1), ...), the way git names its pages.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::args::{Cli, ManArgs};

/// Prints credport(1) to `out`, or with `--out DIR` writes every page into DIR and names
/// each file written on `out`.
pub fn run(args: &ManArgs, out: &mut dyn Write) -> Result<()> {
    match &args.out {
        None => {
            out.write_all(&render(Cli::command().disable_help_subcommand(true))?)?;
        }
        Some(dir) => {
            for file in write_pages(dir)? {
                writeln!(out, "{}", file.display())?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// Writes credport.1 and a page per (visible) command and subcommand into `dir`, creating
/// it; returns the files written, parent pages before their children.
pub fn write_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    let mut queue = vec![cmd];
    while let Some(cmd) = queue.pop() {
        let name = cmd
            .get_display_name()
            .unwrap_or_else(|| cmd.get_name())
            .to_string();
        let file = dir.join(format!("{name}.1"));
        let page = render(cmd.clone())?;
        crate::fsutil::write_atomic(&file, &page, 0o644)
            .with_context(|| format!("writing {}", file.display()))?;
        written.push(file);
        let mut subs: Vec<clap::Command> = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .cloned()
            .collect();
        subs.reverse();
        queue.extend(subs);
    }
    Ok(written)
}

/// One page as roff.
fn render(cmd: clap::Command) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .manual("credport manual")
        .render(&mut buf)?;
    Ok(buf)
}
