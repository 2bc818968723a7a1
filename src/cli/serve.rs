//! `credport serve`: run the daemon until a signal.
//!
//! It first takes the per-user instance lock (see `instance`): a second `serve` refuses,
//! naming the running daemon, unless `--replace` (or socket activation) takes over. Only
//! the lock holder writes and removes `daemon.json` and the control socket.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::args::ServeArgs;
use crate::config::DEFAULT_LISTEN;
use crate::daemon::readiness::{self, State};
use crate::daemon::{Daemon, DaemonInfo, base_url};
use crate::fsutil;
use crate::paths::Paths;
use crate::server::{Limits, serve};

/// Runs `credport serve`. `activated` are the listening sockets passed by the service
/// manager ([`activated_listeners`](crate::daemon::activation::activated_listeners));
/// when there are any, they are served instead of `--listen` and the config's addresses.
/// `audit_text`, when the log is plain text, takes the issuance audit lines (see
/// [`AppState::audit_text`](crate::server::AppState::audit_text)).
pub async fn run(
    paths: &Paths,
    args: &ServeArgs,
    activated: Vec<std::net::TcpListener>,
    audit_text: Option<crate::logline::LineSink>,
) -> Result<()> {
    let was_activated = !activated.is_empty();
    let listen: Vec<SocketAddr> = if was_activated {
        let addrs: Vec<_> = activated
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        tracing::info!(
            listen = ?addrs,
            "socket activation: serving the sockets passed by the service manager; --listen and [server] listen are ignored"
        );
        Vec::new()
    } else if !args.listen.is_empty() {
        args.listen.clone()
    } else {
        let from_config = crate::config::ConfigStore::open(paths.config.clone())
            .get()
            .server
            .listen
            .clone();
        if from_config.is_empty() {
            vec![DEFAULT_LISTEN.parse().expect("valid default address")]
        } else {
            from_config
        }
    };
    // One daemon per user: the lock is held until this process ends. Socket activation
    // takes over like --replace (the service manager owns the address).
    let _lock = crate::daemon::instance::InstanceLock::acquire(
        &paths.runtime_dir,
        args.replace || was_activated,
    )?;
    let swept = crate::client::rundirs::sweep_stale(&paths.runtime_dir);
    if swept > 0 {
        tracing::info!(
            removed = swept,
            "removed run directories left by killed `credport exec`s"
        );
    }
    let poll = args.poll.map(std::time::Duration::from_secs_f64);
    let mut daemon = Daemon::start_with_poll(
        paths,
        &listen,
        activated,
        args.allow_non_loopback,
        None,
        poll,
    )
    .await?;

    let info = DaemonInfo {
        url: base_url(daemon.addrs[0]),
        listen: daemon.addrs.clone(),
        pid: std::process::id(),
        instance: daemon.state.instance.clone(),
    };
    let state_file = paths.daemon_state();
    fsutil::write_private(&state_file, serde_json::to_string(&info)?.as_bytes())
        .context("writing the daemon state file")?;

    // `env`'s stand-in files: rewritten after every reload and before their sessions expire.
    let keeper = std::sync::Arc::new(crate::daemon::keeper::Keeper::spawn(
        &daemon.state,
        paths.runtime_dir.clone(),
    ));
    let poke = keeper.clone();
    let _ = daemon.state.on_reload.set(Box::new(move || poke.poke()));
    if let Some(sink) = audit_text {
        let _ = daemon.state.audit_text.set(sink);
    }

    let control = crate::daemon::control::bind(&paths.control_socket())
        .with_context(|| format!("binding {}", paths.control_socket().display()))?;
    let (st, addrs) = (daemon.state.clone(), daemon.addrs.clone());
    let status: crate::daemon::control::StatusFn =
        std::sync::Arc::new(move || crate::daemon::status_report(&st, &addrs));
    let control_task = tokio::spawn(crate::daemon::control::serve(
        control,
        daemon.state.clone(),
        status,
        Some(keeper),
    ));

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let listeners = std::mem::take(&mut daemon.listeners);
    let server = serve(
        listeners,
        daemon.state.clone(),
        Limits::default(),
        async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
            readiness::notify(State::Stopping);
        },
    );
    for a in &daemon.addrs {
        eprintln!("listening on {}", base_url(*a));
    }
    readiness::notify(State::Ready);
    tokio::pin!(server);
    loop {
        tokio::select! {
            _ = &mut server => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading every file");
                readiness::notify(State::Reloading);
                daemon.reload_all();
                readiness::notify(State::Ready);
            }
        }
    }
    control_task.abort();
    // Still holding the lock: these files are ours, no other instance can own them.
    let _ = std::fs::remove_file(&state_file);
    let _ = std::fs::remove_file(paths.control_socket());
    Ok(())
}
