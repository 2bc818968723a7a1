//! `credport log [--follow] [--project P] [--stage S] [-n N] [--json]`: the running
//! daemon's audit journal (see `journal`), read over the control socket.

use std::io::Write;

use anyhow::{Context, Result};

use crate::cli::args::LogArgs;
use crate::daemon::control::{Answer, Command, call};
use crate::journal::{Event, Filter, Query};
use crate::paths::Paths;

/// Runs `credport log`, writing to `out`.
pub async fn run(paths: &Paths, args: &LogArgs, out: &mut dyn Write) -> Result<()> {
    let query = Query {
        filter: Filter {
            project: args.project.clone(),
            stage: args.stage.clone(),
        },
        limit: args.lines,
        follow: args.follow,
    };
    let socket = paths.control_socket();
    if args.follow {
        crate::daemon::follow::follow(&socket, &query, |a| show(&a, args.json, out))
            .await
            .context("following the daemon's audit log")?;
        return Ok(());
    }
    let answer = call(&socket, &Command::Log(query))
        .await
        .context("reading the daemon's audit log")?;
    if !args.json && answer.events.as_ref().is_none_or(Vec::is_empty) {
        let which = match (&args.project, &args.stage) {
            (None, None) => String::new(),
            (p, s) => format!(
                " for {}/{}",
                p.as_deref().unwrap_or("*"),
                s.as_deref().unwrap_or("*")
            ),
        };
        return quiet_pipe(writeln!(
            out,
            "no events{which} (the daemon keeps its last {} since it started)",
            crate::journal::CAPACITY
        ));
    }
    quiet_pipe(show(&answer, args.json, out))
}

/// Writes an answer's events (and its note, if any).
fn show(answer: &Answer, json: bool, out: &mut dyn Write) -> std::io::Result<()> {
    for e in answer.events.iter().flatten() {
        writeln!(out, "{}", render(e, json))?;
    }
    if let Some(p) = &answer.problems {
        eprintln!("credport: warning: {p}");
    }
    out.flush()
}

fn render(e: &Event, json: bool) -> String {
    if json {
        serde_json::to_string(e).unwrap_or_default()
    } else {
        e.line()
    }
}

/// A reader that went away (`credport log | head`) is not an error.
fn quiet_pipe(r: std::io::Result<()>) -> Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
