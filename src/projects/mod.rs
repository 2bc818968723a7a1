//! Projects and stages: which AWS profile serves a (project, stage).
//!
//! Two places say so. [`registry`] answers from credport's own config (`[projects.NAME]`),
//! which wins. The project's own files answer the rest, offline: [`detect`] walks up from a
//! directory to the nearest `.credport.toml`, `serverless.yml`, `samconfig.toml` or
//! `cdk.json`, and [`serverless`], [`sam`], [`cdk`] and [`credport_toml`] resolve it.
//! [`args`] reads stage and profile flags from a wrapped command line
//! (`serverless invoke local -s prod`).

pub mod args;
pub mod cdk;
pub mod credport_toml;
pub mod detect;
pub mod error;
pub mod files;
pub mod registry;
pub mod sam;
pub mod serverless;

use std::path::PathBuf;

pub use args::parse_wrapped_args;
pub use detect::{find_project_file, resolve_dir};
pub use error::ProjectError;

/// Flags that pick a stage/profile: from credport's CLI or read from a wrapped command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// `--stage` / `-s` (sam: `--config-env`).
    pub stage: Option<String>,
    /// `--aws-profile` (sam/cdk: `--profile`).
    pub aws_profile: Option<String>,
    /// `--param k=v` (repeatable), also `--param=k=v`.
    pub params: Vec<(String, String)>,
    /// Every other option of a wrapped Serverless command that has a value, by its full
    /// name (`-r eu-west-1` is `region`), for `${opt:NAME}`.
    pub options: Vec<(String, String)>,
}

/// Which kind of file decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProjectKind {
    /// `.credport.toml`.
    Credport,
    /// `serverless.{yml,yaml,json}` (and `.js/.ts`, which are rejected).
    Serverless,
    /// `samconfig.{toml,yaml,yml}`.
    Sam,
    /// `cdk.json`.
    Cdk,
}

/// The outcome of resolving a project directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Resolution {
    /// `.credport.toml` `project`, else serverless `service`, else SAM `stack_name`,
    /// else the folder name.
    pub project: String,
    /// The stage (SAM: config environment; CDK: `default` unless given).
    pub stage: String,
    /// The AWS profile to use.
    pub profile: String,
    /// `provider.region` / SAM `region` / `.credport.toml` `region` when resolvable; never an error.
    pub region: Option<String>,
    /// The file that decided.
    pub file: PathBuf,
    /// Which kind of file decided.
    pub kind: ProjectKind,
    /// Human text explaining where the profile and stage came from.
    pub rule: String,
    /// The session policy the project file asks for this stage (`.credport.toml` only).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::session_policy::serialize_shared"
    )]
    pub policy: Option<std::sync::Arc<crate::session_policy::SessionPolicy>>,
}

/// What the framework file beside a `.credport.toml` says: its service name (the default
/// project name) and the stage the framework runs without a stage flag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sibling {
    /// serverless's `service`, when it resolves offline.
    pub service: Option<String>,
    /// The framework's own stage and why: serverless's `provider.stage` or `dev`, SAM's
    /// `default`.
    pub stage: Option<(String, String)>,
}

/// The one stage-picking rule of every mapping (`.credport.toml`, credport's config, a
/// project file under credport's config): an explicit stage, else the mapping's
/// `default_stage`, else `fallback` (the stage the framework itself runs), else the only
/// stage of `stages`; with the rule that decided. `None` when nothing decides.
pub fn pick_stage<'a>(
    explicit: Option<&str>,
    default_stage: Option<&str>,
    fallback: Option<(String, String)>,
    mut stages: impl ExactSizeIterator<Item = &'a String>,
) -> Option<(String, String)> {
    if let Some(s) = explicit {
        return Some((s.to_string(), "from --stage".into()));
    }
    if let Some(s) = default_stage {
        return Some((s.to_string(), "from default_stage".into()));
    }
    if fallback.is_some() {
        return fallback;
    }
    if stages.len() == 1 {
        return stages
            .next()
            .map(|s| (s.clone(), "(the only stage)".to_string()));
    }
    None
}
