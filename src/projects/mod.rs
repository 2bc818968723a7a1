//! Projects and stages: which AWS profile serves a (project, stage).
//!
//! [`registry`] answers from credport's config.

pub mod registry;
