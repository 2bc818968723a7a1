//! `credport status [--json]`: whether the daemon answers, what it watches and serves.

use std::io::Write;

use anyhow::Result;

use crate::control::{ControlError, Request, call};
use crate::paths::Paths;

/// Runs `credport status`. Returns `false` when the daemon does not answer.
pub async fn run(
    paths: &Paths,
    env: &dyn Fn(&str) -> Option<String>,
    json: bool,
    out: &mut dyn Write,
) -> Result<bool> {
    let status = match call(&paths.control_socket(), &Request::Status).await {
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
            if json {
                writeln!(out, "{}", serde_json::json!({"running": false}))?;
            } else {
                writeln!(out, "daemon: not running (start it with `credport serve`)")?;
            }
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        let mut v = status;
        v["running"] = true.into();
        if let Some(o) = v.as_object_mut() {
            o.remove("ok");
        }
        writeln!(out, "{v}")?;
        return Ok(true);
    }
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let listen: Vec<String> = status["listen"]
        .as_array()
        .map(|a| a.iter().map(s).collect())
        .unwrap_or_default();
    writeln!(
        out,
        "daemon: running (pid {}, version {}), listening on {}",
        status["pid"],
        s(&status["version"]),
        listen.join(", ")
    )?;
    writeln!(
        out,
        "profiles: {} (generation {}); upstream calls {}, errors {}",
        status["profiles"], status["generation"], status["fetches"], status["fetch_errors"]
    )?;
    writeln!(out, "files:")?;
    for f in status["files"].as_array().into_iter().flatten() {
        let state = match s(&f["state"]).as_str() {
            "ok" => format!("ok ({} sections)", f["sections"]),
            "missing" => "missing (counts as empty)".into(),
            "error" => format!(
                "ERROR line {}: {} (serving the last good version)",
                f["line"].as_u64().unwrap_or(0),
                s(&f["reason"])
            ),
            other => other.to_string(),
        };
        let when = f["reloaded_at"]
            .as_str()
            .map(|t| format!(", reloaded {t}"))
            .unwrap_or_default();
        writeln!(
            out,
            "  {:<16} {}  {state}{when}",
            s(&f["kind"]),
            s(&f["path"])
        )?;
    }
    writeln!(out, "scopes:")?;
    let scopes = status["scopes"].as_array().cloned().unwrap_or_default();
    if scopes.is_empty() {
        writeln!(out, "  (none declared in the config)")?;
    }
    for sc in scopes {
        let default = if sc["default"] == true {
            " (default)"
        } else {
            ""
        };
        let detail = if let Some(e) = sc["error"].as_str() {
            format!("ERROR: {e}")
        } else {
            let mut d = format!("{}; {}", s(&sc["kind"]), s(&sc["source"]));
            if let Some(x) = sc["expires"].as_str() {
                d.push_str(&format!("; session expires {x}"));
            }
            if let Some(e) = sc["last_error"].as_str() {
                d.push_str(&format!("; last refresh failed: {e}"));
            }
            d
        };
        writeln!(
            out,
            "  {}/{}{default} -> {}: {detail}",
            s(&sc["project"]),
            s(&sc["stage"]),
            s(&sc["profile"])
        )?;
    }
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
