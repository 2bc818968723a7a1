//! The daemon's status report: one typed contract for the control socket's status answer,
//! `credport status --json` (documented in README) and the human table, so the producer
//! and its readers cannot drift apart.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::fsutil::FileState;

/// What `credport status --json` prints (plus `"running": true`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The daemon's version.
    pub version: String,
    /// Its process id.
    pub pid: u32,
    /// Its instance id (what `/healthz` echoes).
    pub instance: String,
    /// Its base URLs, one per listener.
    pub listen: Vec<String>,
    /// Every watched file: the AWS files, then credport's config.
    pub files: Vec<FileReport>,
    /// Profiles in the current snapshot.
    pub profiles: usize,
    /// The snapshot's generation.
    pub generation: u64,
    /// Every scope, declared and registered.
    pub scopes: Vec<ScopeReport>,
    /// The token key's rotation state.
    pub token_key: TokenKeyReport,
    /// Calls to STS, SSO and credential processes.
    pub fetches: u64,
    /// Of those, the failed ones.
    pub fetch_errors: u64,
    /// Protected stages' open unlock windows, soonest to close first.
    #[serde(default)]
    pub unlocks: Vec<crate::guard::UnlockReport>,
}

/// One watched file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileReport {
    /// `credentials`, `config` (the AWS files) or `credport-config`.
    pub kind: String,
    /// Its path.
    pub path: PathBuf,
    /// How its last reload went.
    #[serde(flatten)]
    pub state: FileState,
    /// When it was last reloaded (RFC 3339), if it was.
    #[serde(default)]
    pub reloaded_at: Option<String>,
}

/// One (project, stage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScopeReport {
    /// The project.
    pub project: String,
    /// The stage.
    pub stage: String,
    /// `declared` (config.toml) or `registered` (a project directory).
    pub origin: String,
    /// Whether it is the project's default stage.
    pub default: bool,
    /// The profile that serves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The rule that chose the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The profile's kind (`session-keys`, `role`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Where its credentials come from, described (no secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// When the served session expires (RFC 3339), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The last background refresh's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The error a request for this scope would get now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For a protected stage: `locked`, or `unlocked until T` (see `guard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<String>,
    /// The last issuance since the daemon started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_issued: Option<IssuedReport>,
}

/// A scope's last issuance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedReport {
    /// When (RFC 3339).
    pub at: String,
    /// The client's User-Agent (escaped).
    pub user_agent: String,
    /// Who asked, in short (`pid N (name)`, or an address for a container), when known.
    pub process: Option<String>,
    /// Who asked: address, pid, executable and shortened command line (see
    /// `credport log`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<crate::peer::Client>,
    /// Issuances of this scope since the daemon started.
    pub count: u64,
}

/// The token key's rotation state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenKeyReport {
    /// Until when tokens of the previous key still verify (RFC 3339), during a grace.
    pub previous_valid_until: Option<String>,
}
