//! `credport doctor`: find what would make a process use the wrong account, or fail, and
//! say how to fix each.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::daemon::control::{Command, ControlError, call};
use crate::fsutil::FileState;
use crate::paths::Paths;
use crate::profiles::store::ProfileStore;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something will fail or use the wrong account.
    Error,
    /// Something may.
    Warning,
    /// Worth knowing; not counted as a problem.
    Info,
}

/// One finding.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// Short name of the check (`env-profile`, `default-keys`, ...).
    pub check: &'static str,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

fn finding(
    severity: Severity,
    check: &'static str,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        severity,
        check,
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Runs every check and prints the findings; returns how many are errors or warnings.
pub async fn run(
    paths: &Paths,
    env: &dyn crate::env::Env,
    json: bool,
    out: &mut dyn Write,
) -> Result<usize> {
    let cwd = std::env::current_dir().ok();
    let found = findings(paths, env, cwd.as_deref()).await;
    let problems = found
        .iter()
        .filter(|f| f.severity != Severity::Info)
        .count();
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({"problems": problems, "findings": found})
        )?;
        return Ok(problems);
    }
    for f in &found {
        let tag = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "note",
        };
        writeln!(out, "{tag}: {}\n  fix: {}", f.problem, f.fix)?;
    }
    if problems == 0 {
        writeln!(out, "no problems found")?;
    } else {
        writeln!(out, "{problems} problem(s) found")?;
    }
    Ok(problems)
}

/// Every finding, in a fixed order. `dir` is where the user is about to run something:
/// its project files are resolved as `resolve` and `exec` would.
pub async fn findings(
    paths: &Paths,
    env: &dyn crate::env::Env,
    dir: Option<&Path>,
) -> Vec<Finding> {
    let mut f = Vec::new();
    environment(env, &mut f);
    let store = ProfileStore::open(paths.aws.clone());
    files(paths, &store, &mut f);
    default_keys(&store, &mut f);
    // Read once: a file that fails to parse is reported once, not by every check.
    let config_store = crate::config::ConfigStore::open(paths.config.clone());
    config(paths, &config_store, &mut f);
    let config = config_store.get();
    mappings(paths, &config, &store, env, dir, &mut f);
    daemon(paths, &config, &mut f).await;
    sdks(env, &mut f);
    clock(env, &mut f).await;
    f
}

fn environment(env: &dyn crate::env::Env, f: &mut Vec<Finding>) {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    for k in ["AWS_PROFILE", "AWS_DEFAULT_PROFILE"] {
        if let Some(v) = set(k) {
            f.push(finding(
                Severity::Warning,
                "env-profile",
                format!("{k}={v} is set: SDKs use that profile before the credport endpoint"),
                format!("unset {k}, or run commands through `credport exec` / `eval \"$(credport env)\"`"),
            ));
        }
    }
    if set("AWS_ACCESS_KEY_ID").is_some() {
        f.push(finding(
            Severity::Warning,
            "env-keys",
            "AWS_ACCESS_KEY_ID is set: every SDK uses environment keys before the endpoint",
            "unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN, or use `credport exec`",
        ));
    }
    if set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some() {
        f.push(finding(
            Severity::Warning,
            "env-relative-uri",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI is set: most SDKs prefer it to AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (credport exec and env do)",
        ));
    }
}

fn files(paths: &Paths, store: &ProfileStore, f: &mut Vec<Finding>) {
    for st in store.status() {
        if let FileState::Error { line, reason } = &st.state {
            f.push(finding(
                Severity::Error,
                "file-parse",
                format!(
                    "{}: line {}: {reason}",
                    st.path.display(),
                    line.unwrap_or(0)
                ),
                "fix the file; the daemon serves its last good version meanwhile",
            ));
        }
    }
    for p in [&paths.aws.credentials, &paths.aws.config] {
        check_mode(p, f);
    }
    let key = paths.token_key();
    if let Some(mode) = crate::fsutil::exposed_mode(&key) {
        f.push(finding(
            Severity::Error,
            "file-mode",
            format!(
                "{} is readable by other users (mode {mode:o}): credport refuses to use it",
                key.display()
            ),
            format!(
                "chmod 600 {} && credport token --rotate --now",
                key.display()
            ),
        ));
    } else {
        check_mode(&key, f);
    }
    if let Ok(m) = std::fs::metadata(&paths.state_dir)
        && m.permissions().mode() & 0o077 != 0
    {
        f.push(finding(
            Severity::Warning,
            "file-mode",
            format!(
                "{} is accessible to other users (mode {:o})",
                paths.state_dir.display(),
                m.permissions().mode() & 0o777
            ),
            format!("chmod 700 {}", paths.state_dir.display()),
        ));
    }
}

fn check_mode(p: &Path, f: &mut Vec<Finding>) {
    match std::fs::File::open(p) {
        Ok(file) => {
            if let Ok(m) = file.metadata()
                && m.permissions().mode() & 0o077 != 0
            {
                f.push(finding(
                    Severity::Warning,
                    "file-mode",
                    format!(
                        "{} is readable by other users (mode {:o})",
                        p.display(),
                        m.permissions().mode() & 0o777
                    ),
                    format!("chmod 600 {}", p.display()),
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => f.push(finding(
            Severity::Error,
            "file-unreadable",
            format!("{}: {e}", p.display()),
            format!("make it readable by you: chmod u+r {}", p.display()),
        )),
    }
}

fn default_keys(store: &ProfileStore, f: &mut Vec<Finding>) {
    let snap = store.snapshot();
    if let Some(p) = snap.profile("default")
        && p.get("aws_access_key_id").is_some()
    {
        f.push(finding(
            Severity::Warning,
            "default-keys",
            "the [default] profile holds keys: every SDK uses them before the credport endpoint unless the shared files are isolated",
            "run commands through `credport exec` or `eval \"$(credport env)\"` (both isolate the shared files), or move the keys to a named profile",
        ));
    }
}

fn config(paths: &Paths, cs: &crate::config::ConfigStore, f: &mut Vec<Finding>) {
    if let FileState::Error { line, reason } = cs.state() {
        f.push(finding(
            Severity::Error,
            "config-parse",
            format!(
                "{}: line {}: {reason}",
                paths.config.display(),
                line.unwrap_or(0)
            ),
            "fix the file; the daemon serves its last good version meanwhile",
        ));
    }
}

/// Files of the shared AWS files that do not parse, as `PATH line N`.
fn broken_files(store: &ProfileStore) -> Vec<String> {
    store
        .status()
        .into_iter()
        .filter_map(|st| match st.state {
            FileState::Error { line, .. } => {
                Some(format!("{} line {}", st.path.display(), line.unwrap_or(0)))
            }
            _ => None,
        })
        .collect()
}

/// The closest profile name to `wanted` (a typo's likely meaning), if one is close.
fn did_you_mean<'a>(wanted: &str, names: impl Iterator<Item = &'a String>) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                let sub = prev[j] + usize::from(ca != *cb);
                cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
            }
            prev = cur;
        }
        prev[b.len()]
    }
    let limit = (wanted.chars().count() / 3).max(1);
    names
        .map(|n| (distance(&wanted.to_lowercase(), &n.to_lowercase()), n))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.as_str())
}

/// Every mapped profile: declared and registered projects (as the daemon binds them) and
/// the project files of `dir` (as `resolve` reads them), each stage they name. A profile
/// that is missing while an AWS file is broken is not called missing: the broken file is
/// the finding (reported by `files` with its line), and the daemon serves its last good
/// version meanwhile.
fn mappings(
    paths: &Paths,
    config: &crate::config::Config,
    store: &ProfileStore,
    env: &dyn crate::env::Env,
    dir: Option<&Path>,
    f: &mut Vec<Finding>,
) {
    let snap = store.snapshot();
    let broken = broken_files(store);
    let registered = crate::client::registered(paths);
    // (scope, profile, where the mapping is written)
    let mut mapped: Vec<(String, String, String)> = Vec::new();
    for sc in crate::inventory::scopes(config, &registered, &[], env) {
        match sc.binding {
            Ok(b) => mapped.push((format!("{}/{}", b.project, b.stage), b.profile, b.rule)),
            Err(e) => f.push(finding(
                Severity::Error,
                "project",
                e,
                "fix the project file the message names (or its entry in config.toml)",
            )),
        }
    }
    if let Some(dir) = dir
        && crate::projects::find_project_file(dir).is_some()
    {
        let (default, stages) = crate::inventory::project_stages(dir, env);
        if let Err(e) = &default {
            f.push(finding(
                Severity::Error,
                "project-file",
                format!("this directory's project: {e}"),
                "fix the file and rule the message names; `credport resolve` shows what exec would use",
            ));
        }
        for stage in stages {
            let req = crate::scope::Query {
                dir: dir.to_path_buf(),
                stage: Some(stage.clone()),
                ..Default::default()
            };
            match crate::scope::resolve(&req, config, &registered, env) {
                Ok(sc) => {
                    if let Some(e) = super::trust::refusal(paths, config, &sc) {
                        f.push(finding(
                            Severity::Error,
                            "untrusted",
                            format!("this directory's project: {e}"),
                            "check the mapping, then run the `credport allow` command above (on a terminal, exec asks)",
                        ));
                    }
                    let key = format!("{}/{}", sc.project, sc.stage);
                    if !mapped.iter().any(|(k, p, _)| *k == key && *p == sc.profile) {
                        let origin = match &sc.file {
                            Some(file) => format!("{}: {}", file.display(), sc.rule),
                            None => sc.rule.clone(),
                        };
                        mapped.push((key, sc.profile, origin));
                    }
                }
                Err(e) => f.push(finding(
                    Severity::Error,
                    "project-file",
                    format!("this directory's project, stage '{stage}': {e}"),
                    "fix the file and rule the message names; `credport resolve --stage STAGE` shows what exec would use",
                )),
            }
        }
    }
    for (scope, profile, origin) in mapped {
        if snap.profile(&profile).is_some() {
            continue;
        }
        if !broken.is_empty() {
            f.push(finding(
                Severity::Info,
                "unchecked-profile",
                format!(
                    "{scope} maps to profile '{profile}', which cannot be checked while {} does not parse",
                    broken.join(" and ")
                ),
                "fix the broken line (reported above); the daemon serves the file's last good version meanwhile",
            ));
            continue;
        }
        let hint = match did_you_mean(&profile, snap.profiles.keys()) {
            Some(near) => {
                format!("did you mean '{near}'? fix the name in the mapping ({origin}), or ")
            }
            None => format!("fix the mapping ({origin}), or "),
        };
        f.push(finding(
            Severity::Error,
            "missing-profile",
            format!("{scope} maps to profile '{profile}', which is in neither AWS file ({origin})"),
            format!(
                "{hint}add [profile {profile}] to {} (or [{profile}] to {})",
                paths.aws.config.display(),
                paths.aws.credentials.display()
            ),
        ));
    }
}

async fn daemon(paths: &Paths, config: &crate::config::Config, f: &mut Vec<Finding>) {
    match call(&paths.control_socket(), &Command::Status).await {
        Ok(_) => {}
        Err(ControlError::NotRunning { .. }) => {
            if let crate::daemon::instance::Lookup::Stale { reason, removed } =
                crate::daemon::instance::find(&paths.runtime_dir, None)
            {
                f.push(finding(
                    Severity::Info,
                    "stale-state",
                    reason,
                    if removed {
                        "none: the stale state file was removed"
                    } else {
                        "stop the process that holds the daemon lock, or run `credport serve --replace`"
                    },
                ));
            }
            f.push(finding(
                Severity::Warning,
                "daemon-down",
                "the credport daemon is not running: processes set up by `credport env` get no credentials",
                "start it with `credport serve`, or install the service (`credport service install`)",
            ));
            let addr = config.server.listen.first().copied().unwrap_or_else(|| {
                crate::config::DEFAULT_LISTEN
                    .parse()
                    .expect("valid address")
            });
            if let Err(e) = std::net::TcpListener::bind(addr)
                && e.kind() == std::io::ErrorKind::AddrInUse
            {
                f.push(finding(
                    Severity::Error,
                    "port-taken",
                    format!("{addr} is taken by another process, so the daemon cannot listen there"),
                    format!("stop that process (`ss -ltnp 'sport = :{}'` names it) or set another address in [server] listen", addr.port()),
                ));
            }
        }
        Err(e) => f.push(finding(
            Severity::Error,
            "daemon-error",
            e.to_string(),
            "restart the daemon",
        )),
    }
}

/// Versions before which an SDK ignores `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`.
const BOTOCORE_MIN: (u32, u32, u32) = (1, 32, 0);

fn sdks(env: &dyn crate::env::Env, f: &mut Vec<Finding>) {
    let python = env("CREDPORT_DOCTOR_PYTHON").unwrap_or_else(|| "python3".into());
    if let Ok(out) = std::process::Command::new(&python)
        .args(["-c", "import botocore; print(botocore.__version__)"])
        .stderr(std::process::Stdio::null())
        .output()
        && out.status.success()
    {
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let parts: Vec<u32> = v.split('.').filter_map(|p| p.parse().ok()).collect();
        if parts.len() >= 3 && (parts[0], parts[1], parts[2]) < BOTOCORE_MIN {
            f.push(finding(
                Severity::Warning,
                "old-sdk",
                format!(
                    "botocore {v} ({python}) does not read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
                ),
                "upgrade boto3/botocore to 1.32 or later, or use `credport exec --env-token`",
            ));
        }
    }
}

async fn clock(env: &dyn crate::env::Env, f: &mut Vec<Finding>) {
    let ep = crate::sources::endpoint::sts_endpoint(None, None, None, env);
    let Ok(client) = crate::sources::http::client_builder()
        .timeout(Duration::from_secs(3))
        .build()
    else {
        return;
    };
    let before = time::OffsetDateTime::now_utc();
    let resp = match client.get(&ep.url).send().await {
        Ok(r) => r,
        Err(_) => {
            f.push(finding(
                Severity::Info,
                "clock",
                format!("could not reach STS at {} to compare clocks", ep.url),
                "none needed unless requests fail with SignatureDoesNotMatch or RequestExpired",
            ));
            return;
        }
    };
    let Some(date) = resp
        .headers()
        .get("date")
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d).ok())
    else {
        return;
    };
    let theirs = time::OffsetDateTime::from(date);
    let skew = (theirs - before).whole_seconds();
    if skew.abs() > 60 {
        f.push(finding(
            if skew.abs() > 300 { Severity::Error } else { Severity::Warning },
            "clock-skew",
            format!("this machine's clock is {} s {} STS's ({})", skew.abs(), if skew > 0 { "behind" } else { "ahead of" }, ep.url),
            "sync the clock (e.g. `timedatectl set-ntp true`); AWS rejects requests signed more than 5 minutes off",
        ));
    }
}
