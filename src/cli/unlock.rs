//! `credport unlock` and `credport lock`: open and close protected stages' windows in the
//! daemon (see `guard`), and the gate `exec` passes before it runs a command against a
//! protected stage: on a terminal it offers to unlock inline (type the stage name),
//! without one it refuses, naming the command that unlocks.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::cli::args::{LockArgs, UnlockArgs};
use crate::config::Config;
use crate::daemon::control::{Command, call};
use crate::guard::{Guard, Policy};
use crate::paths::Paths;
use crate::scope::Scope;

/// How long `exec`'s embedded server stays unlocked after the inline prompt: the run's
/// lifetime (the server ends with the command).
const FOR_THE_RUN: Duration = Duration::from_secs(30 * 86_400);

/// Runs `credport unlock PROJECT STAGE [--for DURATION]`.
pub async fn unlock(paths: &Paths, args: &UnlockArgs, out: &mut dyn Write) -> Result<()> {
    let answer = call(
        &paths.control_socket(),
        &Command::Unlock {
            project: args.project.clone(),
            stage: args.stage.clone(),
            seconds: args.length.map(|d| d.as_secs()),
        },
    )
    .await?;
    for line in answer.note.unwrap_or_default().lines() {
        match line.strip_prefix("warning: ") {
            Some(w) => eprintln!("credport: warning: {w}"),
            None => writeln!(out, "{line}")?,
        }
    }
    Ok(())
}

/// Runs `credport lock [PROJECT STAGE | --all]`.
pub async fn lock(paths: &Paths, args: &LockArgs, out: &mut dyn Write) -> Result<()> {
    let (project, stage) = match (&args.project, &args.stage, args.all) {
        (_, _, true) => (None, None),
        (Some(p), Some(s), false) => (Some(p.clone()), Some(s.clone())),
        _ => bail!("name the scope (`credport lock PROJECT STAGE`) or pass --all"),
    };
    let answer = call(&paths.control_socket(), &Command::Lock { project, stage }).await?;
    writeln!(out, "{}", answer.note.unwrap_or_default())?;
    Ok(())
}

/// The project's protected stages as `exec` sees them (credport's config, the
/// registered table, and the scope's own project directory).
pub fn protected_stages(config: &Config, registered: &Config, scope: &Scope) -> Vec<String> {
    Policy::for_project(
        config,
        registered,
        &scope.project,
        scope.project_dir.as_deref(),
    )
    .stages
}

/// Where `exec`'s credentials come from, for [`gate`].
pub enum Server<'a> {
    /// The running daemon (its control socket under `paths`).
    Daemon(&'a Paths),
    /// `exec`'s own embedded server.
    Embedded(&'a Arc<Guard>),
}

/// `exec`'s gate, on this process's terminal: lets the command run when its scope is not
/// protected or already unlocked; otherwise asks on a terminal, refuses without one.
pub async fn gate(
    server: Server<'_>,
    config: &Config,
    registered: &Config,
    scope: &Scope,
) -> Result<()> {
    let terminal = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    gate_with(
        server,
        config,
        registered,
        scope,
        terminal,
        &mut std::io::stdin().lock(),
        &mut std::io::stderr(),
    )
    .await
}

/// [`gate`] with explicit terminal, input and output.
pub async fn gate_with(
    server: Server<'_>,
    config: &Config,
    registered: &Config,
    scope: &Scope,
    terminal: bool,
    input: &mut dyn BufRead,
    err: &mut dyn Write,
) -> Result<()> {
    let (project, stage) = (scope.project.as_str(), scope.stage.as_str());
    let protection = Policy::for_project(config, registered, project, scope.project_dir.as_deref())
        .protection(stage);
    if !protection.protected {
        return Ok(());
    }
    let open = match &server {
        Server::Embedded(g) => g.remaining(project, stage).is_some(),
        Server::Daemon(paths) => daemon_window(paths, project, stage).await?,
    };
    if open {
        return Ok(());
    }
    let length = crate::guard::DEFAULT_UNLOCK.min(crate::guard::max_unlock(&config.guard));
    let how_long = match server {
        Server::Daemon(_) => format!("for {}", crate::duration::format(length)),
        Server::Embedded(_) => "for this run".to_string(),
    };
    if !terminal {
        let fix = match server {
            Server::Daemon(_) => format!("run `credport unlock {project} {stage}` first"),
            Server::Embedded(_) => format!(
                "no daemon runs: start one (`credport serve`) and run `credport unlock {project} {stage}`"
            ),
        };
        bail!(
            "{project}/{stage} is a protected stage ({}) and is locked: {fix}, or run this command on a terminal to unlock it {how_long}",
            protection.why
        );
    }
    write!(
        err,
        "credport: {project}/{stage} is a protected stage ({}).\ncredport: type '{stage}' to unlock it {how_long} (anything else cancels): ",
        protection.why
    )?;
    err.flush()?;
    let mut line = String::new();
    input.read_line(&mut line)?;
    if line.trim() != stage {
        bail!("not unlocked: {project}/{stage} stays locked");
    }
    match server {
        Server::Embedded(g) => {
            g.unlock(project, stage, FOR_THE_RUN);
            writeln!(err, "credport: unlocked {project}/{stage} for this run")?;
        }
        Server::Daemon(paths) => {
            let answer = call(
                &paths.control_socket(),
                &Command::Unlock {
                    project: project.to_string(),
                    stage: stage.to_string(),
                    seconds: Some(length.as_secs()),
                },
            )
            .await?;
            writeln!(err, "credport: {}", answer.note.unwrap_or_default())?;
        }
    }
    Ok(())
}

/// Whether the daemon has an open window for the scope. A daemon whose control socket is
/// not here (`CREDPORT_URL` naming another one) cannot be asked: the command runs, and the
/// daemon itself refuses a locked scope with the fix.
async fn daemon_window(paths: &Paths, project: &str, stage: &str) -> Result<bool> {
    let answer = match call(&paths.control_socket(), &Command::Status).await {
        Ok(a) => a,
        Err(crate::daemon::control::ControlError::NotRunning { .. }) => return Ok(true),
        Err(e) => return Err(e.into()),
    };
    Ok(answer.status.is_some_and(|s| {
        s.unlocks
            .iter()
            .any(|u| u.project == project && u.stage == stage)
    }))
}

/// `status`'s lines for the open windows: `unlocked: P/S until T (12m30s left)`.
pub fn print_unlocks(unlocks: &[crate::guard::UnlockReport], out: &mut dyn Write) -> Result<()> {
    for u in unlocks {
        writeln!(
            out,
            "unlocked: {}/{} until {} ({} left; `credport lock {} {}` ends it)",
            u.project,
            u.stage,
            u.until,
            crate::duration::format(Duration::from_secs(u.remaining_seconds)),
            u.project,
            u.stage
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(stage: &str) -> Scope {
        Scope {
            project: "orders".into(),
            stage: stage.into(),
            profile: "p".into(),
            region: None,
            file: None,
            kind: None,
            rule: "test".into(),
            policy: None,
            project_dir: None,
            selection: Default::default(),
            wrapped: Default::default(),
        }
    }

    async fn gate_embedded(
        guard: &Arc<Guard>,
        config: &Config,
        stage: &str,
        terminal: bool,
        typed: &str,
    ) -> (Result<()>, String) {
        let mut err = Vec::new();
        let r = gate_with(
            Server::Embedded(guard),
            config,
            &Config::default(),
            &scope(stage),
            terminal,
            &mut typed.as_bytes(),
            &mut err,
        )
        .await;
        (r, String::from_utf8(err).unwrap())
    }

    #[tokio::test]
    async fn embedded_gate_asks_on_a_terminal_and_refuses_without_one() {
        let g = Arc::new(Guard::default());
        let config = Config::default();
        // Not protected: nothing asked.
        let (r, said) = gate_embedded(&g, &config, "dev", false, "").await;
        assert!(r.is_ok() && said.is_empty(), "{said}");
        // No terminal: refused, naming what to do.
        let (r, _) = gate_embedded(&g, &config, "prod", false, "prod\n").await;
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("credport serve") && e.contains("credport unlock orders prod"),
            "{e}"
        );
        assert!(g.remaining("orders", "prod").is_none());
        // A wrong answer cancels; the stage's name unlocks for the run.
        let (r, said) = gate_embedded(&g, &config, "prod", true, "yes\n").await;
        assert!(r.unwrap_err().to_string().contains("stays locked"));
        assert!(
            said.contains("type 'prod' to unlock it for this run"),
            "{said}"
        );
        assert!(g.remaining("orders", "prod").is_none());
        let (r, said) = gate_embedded(&g, &config, "prod", true, "prod\n").await;
        assert!(r.is_ok(), "{r:?}");
        assert!(said.contains("unlocked orders/prod for this run"), "{said}");
        assert!(g.remaining("orders", "prod").is_some());
        // Open now: no question.
        let (r, said) = gate_embedded(&g, &config, "prod", false, "").await;
        assert!(r.is_ok() && said.is_empty(), "{said}");
        // The guard off in config.toml: nothing asked.
        let mut off = Config::default();
        off.guard.stages = Some(Vec::new());
        let (r, said) = gate_embedded(&Arc::new(Guard::default()), &off, "prod", false, "").await;
        assert!(r.is_ok() && said.is_empty(), "{said}");
    }
}
