//! IAM Identity Center (SSO) role credentials from the token cache that `aws sso login` writes.
//!
//! This is the face the rest of the crate uses: [`SsoClient`] (what `sources::fetch` calls),
//! [`SsoConfig`] (what `sources::plan` resolves a profile into), [`SsoError`],
//! [`default_cache_dir`] and [`cache_file_name`]. Behind it, as in botocore
//! (`botocore/utils.py` `SSOTokenLoader`, `botocore/tokens.py` `SSOTokenProvider`):
//!
//! * `cache`: the cache file is `<cache_dir>/<sha1 hex>.json`, hashing the `sso_session`
//!   name for `[sso-session X]` profiles and the `sso_start_url` for legacy profiles; it is
//!   rewritten through `crate::fsutil::write_atomic` (temporary file in the same directory,
//!   mode 0600, renamed, the directory synced), keeping keys it does not know;
//! * `oidc`: when fewer than 15 minutes remain and the file holds `refreshToken`,
//!   `clientId`, `clientSecret` and an unexpired `registrationExpiresAt`, the token is
//!   refreshed with SSO OIDC `CreateToken` (`grantType=refresh_token`) and the file
//!   rewritten; a failed refresh falls back to the cached token while it is still usable;
//! * `portal`: role credentials come from the portal's `GetRoleCredentials`
//!   (`GET /federation/credentials`, bearer token in `x-amz-sso_bearer_token`);
//! * `transport`: the HTTP client both calls share, retried through the one retry loop
//!   (`sources::http::with_retries`);
//! * `client`: [`SsoClient`], which runs the steps above; `profile`: [`SsoConfig`];
//!   `error`: [`SsoError`].
//!
//! A token is usable until 5 minutes before `expiresAt`. When only a new login helps, the
//! error is [`SsoError::LoginRequired`], whose message names the exact `aws sso login`
//! command to run. Endpoint overrides come from the injected [`crate::env::Env`], never from
//! the process environment.
//!
//! Inside, arrows point down: `client` uses `oidc`, `portal`, `cache` and `transport`;
//! `oidc` uses `cache` and `transport`; `portal` uses `transport`; `cache` and `portal` use
//! `profile`; all but `profile` use `error`; `error` and `profile` use nothing here.

mod cache;
mod client;
mod error;
mod oidc;
mod portal;
mod profile;
mod transport;

pub use cache::{cache_file_name, default_cache_dir};
pub use client::{EXPIRY_MARGIN, REFRESH_WINDOW, SsoClient};
pub use error::SsoError;
pub use profile::SsoConfig;
