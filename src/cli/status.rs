//! `credport status [--json]`: whether the daemon answers, what it watches and serves.

use std::io::Write;

use anyhow::Result;

use crate::daemon::StatusReport;
use crate::daemon::control::{Command, ControlError, call};
use crate::fsutil::FileState;
use crate::paths::Paths;

/// Runs `credport status`. Returns `false` when the daemon does not answer.
pub async fn run(
    paths: &Paths,
    env: &dyn crate::env::Env,
    json: bool,
    out: &mut dyn Write,
) -> Result<bool> {
    let status = match call(&paths.control_socket(), &Command::Status).await {
        Ok(v) => v,
        Err(ControlError::NotRunning { .. }) => {
            // No control socket here, but CREDPORT_URL may name a daemon elsewhere.
            if let Some(url) = env("CREDPORT_URL").filter(|u| !u.is_empty())
                && let Some(health) = healthz(&url).await
            {
                if json {
                    writeln!(
                        out,
                        "{}",
                        serde_json::json!({"running": true, "url": url, "health": health})
                    )?;
                } else {
                    writeln!(
                        out,
                        "daemon: running at {url} (version {}, {} profiles); details need its control socket, which is not in {}",
                        health["version"].as_str().unwrap_or("?"),
                        health["profiles"],
                        paths.runtime_dir.display()
                    )?;
                }
                return Ok(true);
            }
            // A state file without a daemon behind it is removed (and said so).
            let stale = match crate::client::find_daemon(paths, env) {
                crate::daemon::instance::Lookup::Stale { removed, reason } => {
                    Some((removed, reason))
                }
                crate::daemon::instance::Lookup::Running { url } => {
                    // Alive and verified, but its control socket is gone (removed by hand).
                    if json {
                        writeln!(
                            out,
                            "{}",
                            serde_json::json!({"running": true, "url": url, "control_socket": false})
                        )?;
                    } else {
                        writeln!(
                            out,
                            "daemon: running at {url}, but its control socket {} is missing; restart it for details (`credport serve --replace`)",
                            paths.control_socket().display()
                        )?;
                    }
                    return Ok(true);
                }
                _ => None,
            };
            if json {
                let mut v = serde_json::json!({"running": false});
                if let Some((removed, reason)) = &stale {
                    v["stale_state"] = serde_json::json!({"removed": removed, "reason": reason});
                }
                writeln!(out, "{v}")?;
            } else {
                match stale {
                    Some((true, _)) => writeln!(
                        out,
                        "daemon: not running (stale state file removed; start it with `credport serve`)"
                    )?,
                    Some((false, reason)) => writeln!(out, "daemon: not answering: {reason}")?,
                    None => writeln!(out, "daemon: not running (start it with `credport serve`)")?,
                }
            }
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    let status: StatusReport = *status
        .status
        .ok_or_else(|| anyhow::anyhow!("the daemon's answer holds no status"))?;
    if json {
        let mut v = serde_json::to_value(&status)?;
        v["running"] = true.into();
        writeln!(out, "{v}")?;
        return Ok(true);
    }
    writeln!(
        out,
        "daemon: running (pid {}, version {}), listening on {}",
        status.pid,
        status.version,
        status.listen.join(", ")
    )?;
    writeln!(
        out,
        "profiles: {} (generation {}); upstream calls {}, errors {}",
        status.profiles, status.generation, status.fetches, status.fetch_errors
    )?;
    writeln!(out, "files:")?;
    for f in &status.files {
        let state = match &f.state {
            FileState::Ok { sections } => format!("ok ({sections} sections)"),
            FileState::Missing => "missing (counts as empty)".into(),
            FileState::Error { line, reason } => format!(
                "ERROR line {}: {reason} (serving the last good version)",
                line.unwrap_or(0)
            ),
        };
        let when = f
            .reloaded_at
            .as_deref()
            .map(|t| format!(", reloaded {t}"))
            .unwrap_or_default();
        writeln!(out, "  {:<16} {}  {state}{when}", f.kind, f.path.display())?;
    }
    if let Some(until) = &status.token_key.previous_valid_until {
        writeln!(
            out,
            "token key: rotated; tokens of the previous key keep working until {until}"
        )?;
    }
    super::unlock::print_unlocks(&status.unlocks, out)?;
    if status.scopes.is_empty() {
        writeln!(
            out,
            "scopes: none (declare projects in config.toml or register one with `credport project add DIR`)"
        )?;
        return Ok(true);
    }
    writeln!(out, "scopes:")?;
    let mut rows = vec![[
        "SCOPE".to_string(),
        "PROFILE".into(),
        "SOURCE".into(),
        "SESSION EXPIRES".into(),
        "LAST ISSUED".into(),
        "STATUS".into(),
    ]];
    for sc in &status.scopes {
        let default = if sc.default { " *" } else { "" };
        let stage = if sc.stage.is_empty() { "?" } else { &sc.stage };
        let scope = format!("{}/{stage}{default}", sc.project);
        let source = match (&sc.kind, &sc.source) {
            (Some(k), Some(src)) => format!("{k}: {src}"),
            (Some(k), None) => k.clone(),
            _ => "-".into(),
        };
        let issued = match &sc.last_issued {
            Some(i) => {
                // The process when it was found, else the client's first User-Agent word.
                let who = match &i.process {
                    Some(p) => p.clone(),
                    None => i
                        .user_agent
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_string(),
                };
                if who.is_empty() {
                    i.at.clone()
                } else {
                    format!("{} ({who})", i.at)
                }
            }
            None => "-".into(),
        };
        let state = if let Some(e) = &sc.error {
            format!("ERROR: {e}")
        } else if sc.guard.as_deref() == Some("locked") {
            format!("locked (`credport unlock {} {stage}`)", sc.project)
        } else if let Some(e) = &sc.last_error {
            format!("last refresh failed: {e}")
        } else {
            "ok".into()
        };
        rows.push([
            scope,
            sc.profile.clone().unwrap_or_else(|| "-".into()),
            source,
            sc.expires.clone().unwrap_or_else(|| "-".into()),
            issued,
            state,
        ]);
    }
    let mut widths = [0usize; 5];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in &rows {
        let mut line = String::from("  ");
        for (i, w) in widths.iter().enumerate() {
            line.push_str(&format!("{:<w$}  ", r[i], w = *w));
        }
        line.push_str(&r[5]);
        writeln!(out, "{}", line.trim_end())?;
    }
    writeln!(out, "  (* = the project's default stage)")?;
    Ok(true)
}

async fn healthz(url: &str) -> Option<serde_json::Value> {
    let client = crate::sources::http::client_builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()
        .ok()?;
    let r = client
        .get(format!("{}/healthz", url.trim_end_matches('/')))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}
