//! credport: a local daemon that serves per-project, per-stage AWS credentials on the
//! container-credentials endpoint every AWS SDK understands.
//!
//! Data flows one way (see ARCHITECTURE.md):
//! `profiles` (the shared AWS files, watched) and `config` (credport's own file) feed
//! `projects` (which profile serves a project's stage); the `server` checks a scoped token
//! from `tokens`, asks `sources` for the profile's credentials, and answers JSON. `daemon`
//! assembles these; `cli` holds one function per command.

pub mod cli;
pub mod client;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod duration;
pub mod env;
pub mod environment;
pub mod fsutil;
pub mod guard;
pub mod inventory;
pub mod journal;
pub mod logline;
pub mod logqueue;
pub mod memory;
pub mod metrics;
pub mod paths;
pub mod peer;
pub mod profiles;
pub mod projects;
pub mod relay;
pub mod scaffold;
pub mod scope;
pub mod server;
pub mod service;
pub mod session_policy;
pub mod sources;
pub mod standin;
pub mod tokens;
pub mod trust;
pub mod watch;
