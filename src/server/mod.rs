//! The credentials endpoint: the accept loop and its limits ([`accept`]), the state every
//! request shares ([`state`]), the routes ([`routes`]), the per-scope cache ([`scopes`])
//! and how a scope's entry is found or rebuilt ([`lookup`]), the audit of what was issued
//! ([`audit`]) and the error answers ([`error`]).
//!
//! This file only names the parts: arrows point from `accept` to `routes` to `lookup` and
//! `audit`, and from those to `scopes` and `state`, never back.
//!
//! ## Served lifetime policy
//! The `Expiration` served is `min(true expiry, now + served_lifetime)`, with
//! `served_lifetime` 16 minutes by default (`[server] served_lifetime`). Clients cache what
//! they get until it nears expiry: botocore refreshes with under 15 minutes left, the JS
//! SDK with under 5, the Rust SDK shortly before expiry. So a running botocore process asks
//! again about once a minute and a JS one about every 11 minutes, and each then sees a
//! rewritten credentials file without a restart, while no SDK re-fetches on every call.
//! The true expiry is never exceeded.

pub mod accept;
pub mod audit;
pub mod error;
pub mod lookup;
pub mod routes;
pub mod scopes;
pub mod state;

pub use accept::{Limits, serve};
pub use state::{AppState, Parts, RELAY_HOST, allowed_hosts};
