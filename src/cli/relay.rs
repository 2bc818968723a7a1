//! `credport relay`: forward container credential requests to the host's daemon.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::args::RelayArgs;
use crate::relay::{self, RelayConfig, Upstream};

/// Runs `credport relay` until SIGINT or SIGTERM.
pub async fn run(args: &RelayArgs) -> Result<()> {
    let cfg = RelayConfig {
        listen: args.listen,
        upstream: Upstream::parse(&args.upstream)?,
        timeout: Duration::from_secs(args.timeout.max(1)),
    };
    let (listener, addr) = relay::bind(&cfg).await?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    eprintln!(
        "listening on http://{addr} (relay to {})",
        cfg.upstream.base
    );
    tracing::info!(%addr, upstream = %cfg.upstream.base, "relay ready");
    relay::run(&cfg, listener, async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
    .await?;
    Ok(())
}
