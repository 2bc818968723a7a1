//! Credential sources: how a profile becomes credentials.
//!
//! [`Resolver`] is what the server asks: "credentials for profile X, for this scope, now".
//! It works out the profile's [`plan::Plan`] from the current snapshot, then either reads
//! session keys straight from the file or asks the [`cache::Sessions`] cache, which calls
//! STS ([`sts`]), SSO ([`sso`]), a `credential_process` ([`process`]) or a web identity
//! token ([`web_identity`]) and refreshes ahead of expiry. Endpoints are resolved by
//! [`endpoint`]; the HTTP plumbing shared by STS and SSO is in [`http`]. A long-term key
//! is never handed to a client: it is exchanged through STS first. Credentials that need no
//! call (the daemon's environment, session keys in the file) are read by [`keys`]; every
//! failure is a [`SourceError`] ([`error`]).
//!
//! This file only names the parts; arrows point from [`resolver`] to [`cache`] to
//! [`fetch`] to the providers, and from all of them to [`plan`], [`keys`] and [`error`].

pub mod cache;
pub mod endpoint;
pub mod error;
pub mod fetch;
pub mod http;
pub mod keys;
pub mod plan;
pub mod process;
pub mod resolver;
pub mod sso;
pub mod sts;
pub mod web_identity;

pub use error::SourceError;
pub use keys::{environment_credentials, file_credentials};
pub use resolver::Resolver;
