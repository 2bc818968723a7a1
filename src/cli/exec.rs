//! `credport exec`: run a command whose AWS SDK gets the scope's credentials.
//!
//! The child gets the endpoint URL and a token file (0600, no trailing newline, in a 0700
//! per-run directory removed when the child exits), the hygiene of `environment`, and
//! isolated shared files. Where the command runs serverless (directly, through npx & co,
//! `sh -c`, npm/yarn/pnpm scripts, or where credport cannot see it, `make`), the isolated
//! credentials file holds serverless's stand-in profiles (see `standin`): for each stage it
//! runs, the profile name serverless computes, with that stage's *session* credentials as
//! credport maps it (never a long-term key), so serverless's own lookup succeeds and its
//! handlers, Node and Python alike, get that stage's account. credport's `--stage` on a
//! direct serverless command without one is added to it; a conflict is refused before
//! anything runs (see `scope`).
//!
//! The daemon is used when it can reproduce the scope from its own tables; with
//! `--profile`, `--aws-profile` or `--param` (which only this command line knows), or when
//! no daemon runs, an embedded server on `127.0.0.1:0` serves the scope for the child's
//! lifetime. SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 are forwarded; Ctrl-C and Ctrl-\ reach
//! the child from the terminal directly, so the wrapper ignores them. The child's exit
//! code, or the signal that ended it, becomes the wrapper's.

use std::process::ExitStatus;

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::args::ExecArgs;
use crate::client;
use crate::client::launch;
use crate::environment::{ChildEnv, TokenRef};
use crate::paths::Paths;
use crate::tokens::TokenKey;

/// Runs `credport exec` and returns the child's exit status.
pub async fn run(paths: &Paths, args: &ExecArgs, env: &dyn crate::env::Env) -> Result<ExitStatus> {
    crate::client::rundirs::sweep_stale(&paths.runtime_dir);
    let config = super::load_config(paths)?;
    let mut scope = super::resolve_scope(paths, &config, &args.scope, &args.command, env)?;
    if let Some(p) = &args.profile {
        scope.profile = p.clone();
        scope.rule = "--profile".into();
    }
    let pinned = args.profile.is_some()
        || scope.selection.aws_profile.is_some()
        || !scope.selection.params.is_empty();
    let registered = client::registered(paths);
    let dir = super::scope_dir(&args.scope)?;
    let plan = launch::standin_plan(&scope, &dir, &config, &registered, env)?;
    super::trust::ensure(
        paths,
        &config,
        &scope,
        args.profile.is_some(),
        plan.as_ref(),
        &dir,
        env,
    )?;
    let aws = super::aws_files(paths);
    for w in launch::check_profiles(&aws, &scope, plan.as_ref())? {
        eprintln!("credport: warning: {w}");
    }
    if let Some(dir) = &scope.project_dir {
        client::register(paths, &config, &scope.project, dir).context("registering the project")?;
    }

    // Where the credentials come from.
    let daemon = if pinned {
        None
    } else {
        client::daemon_for_exec(paths, env)
    };
    let mut _embedded = None;
    let base = match daemon {
        Some(url) => url,
        None => {
            let base = scope.project_dir.as_deref().unwrap_or(&dir);
            let other =
                launch::standin_stages(base, &scope, plan.as_ref(), &config, &registered, env)?;
            let protected = super::unlock::protected_stages(&config, &registered, &scope);
            let e = client::embedded(paths, &scope, &other, protected).await?;
            let url = e.url.clone();
            _embedded = Some(e);
            url
        }
    };

    let server = match &_embedded {
        Some(e) => super::unlock::Server::Embedded(e.guard()),
        None => super::unlock::Server::Daemon(paths),
    };
    super::unlock::gate(server, &config, &registered, &scope).await?;

    // Per-run files: token, isolated shared files with serverless's stand-in profiles.
    // Removed on drop, and by the next `exec` or the daemon's start if this one is killed.
    let run_dir = client::rundirs::RunDir::create(&paths.runtime_dir)
        .context("creating the per-run directory")?;
    let key = TokenKey::load_or_create(&paths.token_key())?;
    let token = key.token(&scope.project, &scope.stage);
    let token_ref = if args.env_token {
        TokenRef::Value(token.expose().to_string())
    } else {
        TokenRef::File(run_dir.write_token(token.expose())?)
    };
    let mut standins = String::new();
    let isolated = if args.keep_aws_files {
        None
    } else {
        let mut text = String::new();
        if let Some(p) = &plan {
            (text, standins) = launch::standin_file(&base, &key, &scope.project, p)
                .await
                .context("fetching session credentials for serverless's profiles")?;
        }
        Some(launch::isolated_files_in(run_dir.path(), &text)?)
    };
    let region = super::scope_region(&aws.snapshot(), &scope);
    let mut child_env = ChildEnv::for_scope(
        &client::credentials_url(&base, &scope.project, &scope.stage),
        &token_ref,
        region.as_deref(),
        isolated,
    );
    child_env.unset_stage_variables(super::current_variables().iter().map(String::as_str));

    if !args.quiet {
        let mut line = format!(
            "credport: {}/{} -> profile {} ({})",
            scope.project, scope.stage, scope.profile, scope.rule
        );
        if let Some(note) = &scope.wrapped.note {
            line.push_str(&format!("; {note}"));
        }
        if !standins.is_empty() {
            line.push_str(&format!("; serverless profiles: {standins}"));
        }
        eprintln!("{line}");
    }
    let command = scope.wrapped.apply(&args.command);
    let status = spawn_and_wait(&command, &child_env).await?;
    drop(run_dir);
    Ok(status)
}

async fn spawn_and_wait(command: &[String], env: &ChildEnv) -> Result<ExitStatus> {
    let (program, rest) = command.split_first().context("no command given")?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(rest);
    for k in &env.unset {
        cmd.env_remove(k);
    }
    for (k, v) in &env.set {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run '{program}'"))?;
    let pid = child.id().map(|p| p as libc::pid_t);
    let mut forwarded = Vec::new();
    for kind in [
        SignalKind::terminate(),
        SignalKind::hangup(),
        SignalKind::user_defined1(),
        SignalKind::user_defined2(),
    ] {
        forwarded.push((kind.as_raw_value(), signal(kind)?));
    }
    // The terminal sends Ctrl-C and Ctrl-\ to the child's process group already.
    let _int = signal(SignalKind::interrupt())?;
    let _quit = signal(SignalKind::quit())?;
    loop {
        let mut next = Box::pin(next_signal(&mut forwarded));
        tokio::select! {
            status = child.wait() => return Ok(status?),
            sig = &mut next => {
                if let (Some(sig), Some(pid)) = (sig, pid) {
                    unsafe { libc::kill(pid, sig) };
                }
            }
        }
    }
}

/// Waits for the next signal on any of `streams` (signal number, stream); yields its number.
async fn next_signal(streams: &mut [(i32, tokio::signal::unix::Signal)]) -> Option<i32> {
    std::future::poll_fn(|cx| {
        for (n, s) in streams.iter_mut() {
            if let std::task::Poll::Ready(Some(())) = s.poll_recv(cx) {
                return std::task::Poll::Ready(Some(*n));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Ends this process the way the child ended: same exit code, or the same signal.
pub fn exit_like(status: ExitStatus) -> ! {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
        std::process::exit(128 + sig);
    }
    std::process::exit(status.code().unwrap_or(1));
}
