//! Typed errors of the project resolver. Every message names the file that was
//! read, the key path or variable involved, and (where useful) what to do instead.

use std::path::PathBuf;

/// Why a project could not be resolved to a (project, stage, profile) triple.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// No project file was found walking up from the directory.
    #[error(
        "no project file (.credport.toml, serverless.yml, samconfig.toml, cdk.json) in {} or its parents",
        dir.display()
    )]
    NoProjectFile {
        /// The directory the search started from.
        dir: PathBuf,
    },
    /// A file could not be read.
    #[error("{}: cannot read: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The session policy a project file names cannot be used (names the file).
    #[error(transparent)]
    Policy(#[from] crate::session_policy::PolicyError),
    /// A file is not valid YAML/JSON/TOML, is too large, or has unknown/mistyped keys.
    #[error("{}: {message}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// What is wrong (parser message, naming the key where known).
        message: String,
    },
    /// The project file is a kind credport cannot evaluate (e.g. `serverless.ts`).
    #[error("{}: {reason}; map the stages in .credport.toml instead", file.display())]
    Unsupported {
        /// The file.
        file: PathBuf,
        /// Why it cannot be evaluated.
        reason: String,
    },
    /// A variable needs a network/AWS lookup or code execution.
    #[error(
        "{}: {key}: variable {variable} cannot be resolved offline; map the stages in .credport.toml instead",
        file.display()
    )]
    Offline {
        /// The file.
        file: PathBuf,
        /// The key path being resolved (e.g. `provider.profile`).
        key: String,
        /// The variable (e.g. `${ssm:/x}`).
        variable: String,
    },
    /// A variable's sources all came up empty and there was no fallback.
    #[error("{}: {key}: variable {variable} has no value and no fallback{detail}", file.display())]
    NoValue {
        /// The file.
        file: PathBuf,
        /// The key path being resolved.
        key: String,
        /// The variable text.
        variable: String,
        /// Extra detail, starting with a space or empty.
        detail: String,
    },
    /// A stage-keyed lookup (`${self:custom.map.${sls:stage}}`) missed.
    #[error(
        "{}: {key}: stage '{stage}' is not in {map} (has: {has}) and there is no fallback",
        file.display()
    )]
    StageNotInMap {
        /// The file.
        file: PathBuf,
        /// The key path being resolved.
        key: String,
        /// The stage that was looked up.
        stage: String,
        /// The dotted path of the map (e.g. `custom.myProfile`).
        map: String,
        /// The keys the map does have, comma separated.
        has: String,
    },
    /// A variable is malformed, has a bad literal, or resolves to the wrong type.
    #[error("{}: {key}: {message}", file.display())]
    Variable {
        /// The file.
        file: PathBuf,
        /// The key path being resolved.
        key: String,
        /// What is wrong, naming the variable.
        message: String,
    },
    /// Variables refer to each other in a loop, or resolution exceeded its bounds.
    #[error("{}: {key}: {message}", file.display())]
    Cycle {
        /// The file.
        file: PathBuf,
        /// The key path being resolved.
        key: String,
        /// The loop or the bound that was hit.
        message: String,
    },
    /// No stage was given and none can be defaulted, or the stage is unknown.
    #[error("{}: {message} (known stages: {known})", file.display())]
    Stage {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        message: String,
        /// Known stages, comma separated (or `none`).
        known: String,
    },
    /// The project file names no AWS profile for the stage.
    #[error("{}: no AWS profile for stage '{stage}': {hint}", file.display())]
    NoProfile {
        /// The file.
        file: PathBuf,
        /// The resolved stage.
        stage: String,
        /// Where a profile was looked for and how to provide one.
        hint: String,
    },
}
