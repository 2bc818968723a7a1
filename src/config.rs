//! credport's own configuration file (`config.toml`): server settings and the project
//! registry's declared projects.
//!
//! ```toml
//! [server]
//! listen = ["127.0.0.1:9911"]   # used when `serve` gets no --listen
//! served_lifetime = 960         # seconds; see the lifetime policy in `server`
//! allow_hosts = []              # extra Host header values to accept
//!
//! [projects.orders-api]
//! default_stage = "dev"
//! stages = { dev = "devAccount", prod = "prodAccount" }
//! region = "eu-west-1"          # optional
//! path = "/home/me/src/orders"  # optional: also resolve stages from the project's files
//! policy = "orders.json"        # optional session policy (see `session_policy`)
//! policy_arns = []              # optional managed policy ARNs
//! [projects.orders-api.policies.prod]   # optional: prod's own, replacing the two above
//! policy = "orders-prod.json"
//!
//! [trust]
//! project_files = "ask"         # or "all": use project files' mappings without `allow`
//! ```
//!
//! Unknown keys are errors that name the key and line, so a typo never silently changes
//! which account a stage gets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use serde::Deserialize;

/// The default listen address: loopback, a fixed port so `credport env` output keeps
/// working across restarts.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9911";

/// The default served lifetime in seconds: 16 minutes. botocore refreshes credentials that
/// have less than 15 minutes left (so it re-fetches about once a minute), the JS SDK those
/// with less than 5 (every 11 minutes); both then see a rewritten credentials file.
pub const DEFAULT_SERVED_LIFETIME: u64 = 16 * 60;

/// The range of `[server] served_lifetime`, in seconds. At least 5 (tests choose short
/// ones to watch clients refresh; anything under 15 minutes makes botocore re-fetch on
/// every call), at most 36 hours, the longest session STS issues (no served `Expiration`
/// is later than the credentials' own anyway).
pub const SERVED_LIFETIME_RANGE: RangeInclusive<u64> = 5..=36 * 3600;

/// The range of `[server] process_timeout`, in seconds.
pub const PROCESS_TIMEOUT_RANGE: RangeInclusive<u64> = 1..=3600;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    #[serde(default, skip_serializing_if = "ServerConfig::is_default")]
    pub server: ServerConfig,
    /// `[projects.NAME]` tables.
    #[serde(default)]
    pub projects: BTreeMap<String, ProjectConfig>,
    /// `[trust]`: whether project files' mappings need `credport allow` (see `trust`).
    #[serde(default, skip_serializing_if = "TrustConfig::is_default")]
    pub trust: TrustConfig,
    /// `[guard]`: protected stages (see `guard`).
    #[serde(default, skip_serializing_if = "GuardConfig::is_default")]
    pub guard: GuardConfig,
}

/// `[trust]` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Which project-file mappings are used: `"ask"` (the default: only those allowed) or
    /// `"all"` (no check).
    #[serde(default)]
    pub project_files: ProjectFiles,
}

impl TrustConfig {
    /// Whether nothing is set (so it is not written).
    fn is_default(&self) -> bool {
        *self == TrustConfig::default()
    }
}

/// `[trust] project_files`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProjectFiles {
    /// A project file's mapping is used once `credport allow` (or a yes at the prompt)
    /// recorded it.
    #[default]
    Ask,
    /// Every project file's mapping is used as it is.
    All,
}

/// `[guard]` settings: which stages need `credport unlock` (see `guard`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Stage names protected in every project (default `prod`, `production`; `[]` turns
    /// the guard off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<String>>,
    /// The longest `credport unlock --for` accepted (`1h` unless set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unlock: Option<String>,
}

impl GuardConfig {
    fn is_default(&self) -> bool {
        *self == GuardConfig::default()
    }
}

/// `[server]` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen addresses used when `serve` gets no `--listen`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen: Vec<SocketAddr>,
    /// Longest lifetime served to clients, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_lifetime: Option<u64>,
    /// Extra `Host` header values to accept (for a relay or a DNS name you control).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_hosts: Vec<String>,
    /// How long a `credential_process` may run, in seconds (default 60).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_timeout: Option<u64>,
}

impl ServerConfig {
    /// Whether nothing is set (so it is not written).
    fn is_default(&self) -> bool {
        *self == ServerConfig::default()
    }

    /// The served lifetime in seconds: [`DEFAULT_SERVED_LIFETIME`] unless set, within
    /// [`SERVED_LIFETIME_RANGE`] (which [`parse`] enforces with an error).
    pub fn served_lifetime(&self) -> u64 {
        clamp(
            self.served_lifetime.unwrap_or(DEFAULT_SERVED_LIFETIME),
            &SERVED_LIFETIME_RANGE,
        )
    }
}

impl ServerConfig {
    /// The `credential_process` timeout.
    pub fn process_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(clamp(
            self.process_timeout.unwrap_or(60),
            &PROCESS_TIMEOUT_RANGE,
        ))
    }
}

/// One declared project.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// The stage used when a request or command names none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_stage: Option<String>,
    /// Stage name to profile name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stages: BTreeMap<String, String>,
    /// Region for `exec`/`env`, overriding the profile's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The project's directory, whose own files (`.credport.toml`, `serverless.yml`, ...)
    /// resolve stages not listed in `stages`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Session policy for every stage: a file (relative to this config file) or inline JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Managed policy ARNs for every stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_arns: Vec<String>,
    /// `[projects.NAME.policies.STAGE]`: one stage's session policy, replacing the above.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, crate::session_policy::PolicySpec>,
    /// This project's protected stages, replacing `[guard] stages` for it (see `guard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected: Option<Vec<String>>,
}

/// A config file that cannot be used: the line and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ConfigError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Parses and checks the text of a config file.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| 1 + text[..s.start.min(text.len())].matches('\n').count())
            .unwrap_or(1);
        ConfigError {
            line,
            reason: e.message().trim().to_string(),
        }
    })?;
    for (key, value, range) in [
        (
            "served_lifetime",
            config.server.served_lifetime,
            &SERVED_LIFETIME_RANGE,
        ),
        (
            "process_timeout",
            config.server.process_timeout,
            &PROCESS_TIMEOUT_RANGE,
        ),
    ] {
        if let Some(v) = value
            && !range.contains(&v)
        {
            return Err(ConfigError {
                line: line_of(text, key),
                reason: format!(
                    "[server] {key} = {v}: must be {} to {} (seconds)",
                    range.start(),
                    range.end()
                ),
            });
        }
    }
    if let Some(m) = &config.guard.max_unlock {
        crate::duration::parse(m).map_err(|e| ConfigError {
            line: line_of(text, "max_unlock"),
            reason: format!("[guard] max_unlock: {e}"),
        })?;
    }
    for s in config.guard.stages.iter().flatten() {
        check_name("stage", s).map_err(|reason| ConfigError {
            line: line_of(text, "[guard]"),
            reason: format!("[guard] stages: {reason}"),
        })?;
    }
    for (name, p) in &config.projects {
        // Only looked up for an error: a scan of the whole text per project made loading
        // 500 projects quadratic (88 million instructions for a 290 KB file).
        let line = || line_of(text, &format!("[projects.{name}]"));
        check_name("project", name).map_err(|reason| ConfigError {
            line: line(),
            reason,
        })?;
        for (stage, profile) in &p.stages {
            check_name("stage", stage).map_err(|reason| ConfigError {
                line: line(),
                reason: format!("project '{name}': {reason}"),
            })?;
            if profile.trim().is_empty() {
                return Err(ConfigError {
                    line: line(),
                    reason: format!("project '{name}': stage '{stage}' maps to an empty profile"),
                });
            }
        }
        if let Some(reason) = crate::session_policy::misplaced_policy_key(p.stages.keys()) {
            return Err(ConfigError {
                line: line(),
                reason: format!("project '{name}': {reason}"),
            });
        }
        if let Some(s) = p
            .policies
            .keys()
            .find(|s| p.path.is_none() && !p.stages.contains_key(*s))
        {
            return Err(ConfigError {
                line: line(),
                reason: format!(
                    "project '{name}': [policies.{s}] names a stage that is not one of its stages"
                ),
            });
        }
        for s in p.protected.iter().flatten() {
            check_name("stage", s).map_err(|reason| ConfigError {
                line: line(),
                reason: format!("project '{name}': protected: {reason}"),
            })?;
        }
        if let Some(d) = &p.default_stage
            && p.path.is_none()
            && !p.stages.contains_key(d)
        {
            return Err(ConfigError {
                line: line(),
                reason: format!("project '{name}': default_stage '{d}' is not one of its stages"),
            });
        }
    }
    Ok(config)
}

/// `value` brought into `range` (for a config built in code; [`parse`] refuses the rest).
fn clamp(value: u64, range: &RangeInclusive<u64>) -> u64 {
    value.clamp(*range.start(), *range.end())
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().starts_with(needle))
        .map(|i| i + 1)
        .unwrap_or(1)
}

/// Checks a project or stage name: 1 to 128 characters of `A-Z a-z 0-9 . _ -`, not starting
/// with `.` or `-`. These names appear in URLs and tokens, so nothing else is allowed.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} name '{}' is not allowed (use 1-128 of A-Z a-z 0-9 . _ -, not starting with . or -)",
            name.escape_debug()
        ))
    }
}

/// The live config: the current [`Config`], reloaded when the file changes. A file that
/// fails to parse keeps the last good config, and its error is kept for `status`.
pub struct ConfigStore {
    path: PathBuf,
    current: arc_swap::ArcSwap<Config>,
    status: std::sync::Mutex<crate::fsutil::FileState>,
}

impl ConfigStore {
    /// Opens the store and loads the file once. A missing file is an empty config.
    pub fn open(path: PathBuf) -> Self {
        let store = ConfigStore {
            path,
            current: arc_swap::ArcSwap::from_pointee(Config::default()),
            status: std::sync::Mutex::new(crate::fsutil::FileState::Missing),
        };
        store.reload();
        store
    }

    /// Wraps a config that is not backed by a file (embedded servers, tests).
    pub fn fixed(config: Config) -> Self {
        ConfigStore {
            path: PathBuf::new(),
            current: arc_swap::ArcSwap::from_pointee(config),
            status: std::sync::Mutex::new(crate::fsutil::FileState::Ok { sections: 0 }),
        }
    }

    /// The config file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The current config.
    pub fn get(&self) -> std::sync::Arc<Config> {
        self.current.load_full()
    }

    /// How the last reload went.
    pub fn state(&self) -> crate::fsutil::FileState {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the file. Returns whether the config changed.
    pub fn reload(&self) -> bool {
        use crate::fsutil::FileState;
        if self.path.as_os_str().is_empty() {
            return false;
        }
        let (state, next) = match crate::fsutil::read_text(&self.path) {
            Ok(None) => (FileState::Missing, Some(Config::default())),
            Ok(Some(text)) => match parse(&text) {
                Ok(mut c) => {
                    // Policy files are named relative to this file.
                    let dir = self.path.parent().unwrap_or(std::path::Path::new("/"));
                    for p in c.projects.values_mut() {
                        crate::session_policy::anchor(&mut p.policy, dir);
                        for s in p.policies.values_mut() {
                            crate::session_policy::anchor(&mut s.policy, dir);
                        }
                    }
                    (
                        FileState::Ok {
                            sections: c.projects.len(),
                        },
                        Some(c),
                    )
                }
                Err(e) => (
                    FileState::Error {
                        line: Some(e.line),
                        reason: e.reason,
                    },
                    None,
                ),
            },
            Err(e) => (
                FileState::Error {
                    line: None,
                    reason: e.to_string(),
                },
                None,
            ),
        };
        if let FileState::Error { line, reason } = &state {
            tracing::warn!(file = %self.path.display(), line = line.unwrap_or(0), reason = %reason,
                "config reload failed; keeping the last good config");
        }
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = state;
        match next {
            Some(c) if *self.current.load_full() != c => {
                tracing::info!(file = %self.path.display(), projects = c.projects.len(), "config reloaded");
                self.current.store(std::sync::Arc::new(c));
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_example() {
        let c = parse(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nserved_lifetime = 120\n\n[projects.orders-api]\ndefault_stage = \"dev\"\nstages = { dev = \"devAccount\", prod = \"prodAccount\" }\n",
        )
        .unwrap();
        let p = &c.projects["orders-api"];
        assert_eq!(p.stages["prod"], "prodAccount");
        assert_eq!(c.server.served_lifetime(), 120);
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(
            Config::default().server.served_lifetime(),
            DEFAULT_SERVED_LIFETIME
        );
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e =
            parse("[projects.a]\nstages = { dev = \"x\" }\ndefualt_stage = \"dev\"\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("defualt_stage"), "{e}");
    }

    /// A `max_unlock` past what a clock can add (it used to be accepted, and `unlock --for`
    /// that long then panicked the daemon's control task).
    #[test]
    fn max_unlock_past_a_year_names_its_line() {
        let e = parse("[server]\n[guard]\nmax_unlock = \"99999999999d\"\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.reason.contains("at most 366d"), "{e}");
        assert!(parse("[guard]\nmax_unlock = \"30d\"\n").is_ok());
    }

    #[test]
    fn bad_names_and_default_stage() {
        assert!(parse("[projects.\"a/b\"]\n").is_err());
        assert!(parse("[projects.a]\nstages = { \"..\" = \"x\" }\n").is_err());
        let e =
            parse("[projects.a]\ndefault_stage = \"qa\"\nstages = { dev = \"x\" }\n").unwrap_err();
        assert!(e.reason.contains("default_stage 'qa'"), "{e}");
        assert!(parse("[projects.a]\nstages = { dev = \"\" }\n").is_err());
        assert!(parse("not toml = = 1").is_err());
    }

    #[test]
    fn policy_tables_name_known_stages() {
        let c = parse("[projects.a]\nstages = { dev = \"x\" }\npolicy_arns = [\"arn:aws:iam::aws:policy/ReadOnlyAccess\"]\n[projects.a.policies.dev]\npolicy = \"p.json\"\n").unwrap();
        assert_eq!(
            c.projects["a"].policies["dev"].policy.as_deref(),
            Some("p.json")
        );
        let e = parse("[projects.a]\nstages = { dev = \"x\" }\n[projects.a.policies.prd]\n")
            .unwrap_err();
        assert!(e.reason.contains("[policies.prd]"), "{e}");
        let e = parse("[projects.a.stages]\ndev = \"x\"\npolicy = \"p.json\"\n").unwrap_err();
        assert!(e.reason.contains("move `policy = ...` above"), "{e}");
        // With a path, the stages may come from the project's files.
        assert!(parse("[projects.a]\npath = \"/x\"\n[projects.a.policies.prd]\n").is_ok());
        let e = parse(
            "[projects.a]\nstages = { dev = \"x\" }\n[projects.a.policies.dev]\npolcy = \"p\"\n",
        )
        .unwrap_err();
        assert!(e.reason.contains("polcy"), "{e}");
    }

    #[test]
    fn guard_section() {
        let c = parse("[guard]\nstages = [\"live\"]\nmax_unlock = \"2h\"\n[projects.a]\nstages = { live = \"x\" }\nprotected = []\n").unwrap();
        assert_eq!(c.guard.stages.as_deref(), Some(&["live".to_string()][..]));
        assert_eq!(c.projects["a"].protected.as_deref(), Some(&[][..]));
        let e = parse("[guard]\n\nmax_unlock = \"soon\"\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(
            e.reason.contains("max_unlock") && e.reason.contains("'soon'"),
            "{e}"
        );
        assert!(parse("[guard]\nstages = [\"a/b\"]\n").is_err());
        assert!(
            parse("[guard]\nstage = []\n").is_err(),
            "unknown keys are errors"
        );
        assert!(parse("[projects.a]\nstages = { x = \"y\" }\nprotected = [\"..\"]\n").is_err());
    }

    #[test]
    fn names() {
        for ok in ["dev", "orders-api", "a.b_c", "A1"] {
            assert!(check_name("x", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "-x",
            "a/b",
            "a%2Fb",
            "a b",
            "é",
            &"x".repeat(129),
        ] {
            assert!(check_name("x", bad).is_err(), "{bad}");
        }
    }
}
