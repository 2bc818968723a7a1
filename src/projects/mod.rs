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
pub mod registry;
pub mod sam;
pub mod serverless;

pub use args::parse_wrapped_args;
pub use detect::{ProjectKind, Resolution, Selection, find_project_file, resolve_dir};
pub use error::ProjectError;
