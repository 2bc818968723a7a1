//! The session cache: one slot per [`Plan`], filled once, refreshed ahead of expiry.
//!
//! - **Single flight.** Concurrent requests for a missing session wait on the slot's lock,
//!   so they cause one STS call between them.
//! - **Refresh ahead.** A session with less than the refresh margin left (the served
//!   lifetime plus five minutes, or half its lifetime if that is shorter) is returned at
//!   once while one background task fetches its successor, so a client never waits on
//!   STS while a valid session exists.
//! - **Outages.** When a fetch fails, a session that has not expired yet is still served;
//!   only requests with nothing valid left get the error (`STS ... is unreachable`).
//! - Secrets live only in memory ([`Credentials`] zeroes them on drop).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

use super::fetch::Providers;
use super::plan::Plan;
use super::sso::SsoClient;
use super::sts::StsClient;
use super::{SourceError, environment_credentials};
use crate::credentials::Credentials;

/// Sessions with less than this left are not handed out without trying to refresh first.
const MIN_REMAINING: Duration = Duration::from_secs(60);
/// Unused slots older than this are dropped when the cache is swept.
const IDLE: Duration = Duration::from_secs(6 * 3600);

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Default)]
struct Slot {
    current: Mutex<Option<Held>>,
    flight: tokio::sync::Mutex<()>,
    refreshing: AtomicBool,
    last_error: Mutex<Option<String>>,
    last_used: Mutex<Option<std::time::Instant>>,
}

#[derive(Clone)]
struct Held {
    creds: Arc<Credentials>,
    obtained: OffsetDateTime,
}

impl Slot {
    fn get(&self) -> Option<Held> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    fn set(&self, creds: Credentials) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(Held {
            creds: Arc::new(creds),
            obtained: OffsetDateTime::now_utc(),
        });
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
    }
}

/// Counters for status and metrics.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Calls made to STS, SSO or a credential process.
    pub fetches: AtomicU64,
    /// Of those, how many failed.
    pub fetch_errors: AtomicU64,
}

/// What the cache holds for one plan, for status output.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    /// The plan, described.
    pub source: String,
    /// When the cached session expires (RFC 3339), if one is held.
    pub expires: Option<String>,
    /// The last refresh error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// The cache and the clients it fetches with.
pub struct Sessions {
    providers: Providers,
    slots: Mutex<HashMap<Plan, Arc<Slot>>>,
    env: crate::env::Snapshot,
    /// Fetch counters.
    pub stats: CacheStats,
}

impl Sessions {
    /// A cache fetching through `sts` and `sso`; `env` serves `credential_source = Environment`.
    pub fn new(sts: StsClient, sso: SsoClient, env: crate::env::Snapshot) -> Arc<Self> {
        Arc::new(Sessions {
            providers: Providers::new(sts, sso),
            slots: Mutex::new(HashMap::new()),
            env,
            stats: CacheStats::default(),
        })
    }

    /// Sets how long a `credential_process` may run.
    pub fn set_process_timeout(&self, timeout: Duration) {
        self.providers.set_process_timeout(timeout);
    }

    fn slot(&self, plan: &Plan) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.len() > 256 {
            let now = std::time::Instant::now();
            slots.retain(|_, s| {
                s.last_used
                    .lock()
                    .ok()
                    .and_then(|t| *t)
                    .is_none_or(|t| now.duration_since(t) < IDLE)
            });
        }
        let slot = slots.entry(plan.clone()).or_default().clone();
        slot.touch();
        slot
    }

    /// What is cached for `plan` (and whether its last refresh failed).
    pub fn info(&self, plan: &Plan) -> SessionInfo {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(plan)
            .cloned();
        SessionInfo {
            source: plan.describe(),
            expires: slot
                .as_ref()
                .and_then(|s| s.get())
                .and_then(|h| h.creds.expiration)
                .map(crate::credentials::format_expiration),
            last_error: slot.and_then(|s| s.last_error.lock().ok().and_then(|e| e.clone())),
        }
    }

    /// Credentials for `plan`, from the cache when possible. `margin` is the refresh-ahead
    /// margin (sessions with less left are refreshed in the background).
    pub fn get<'a>(
        self: &'a Arc<Self>,
        plan: &'a Plan,
        margin: Duration,
    ) -> BoxFut<'a, Result<Arc<Credentials>, SourceError>> {
        // The hot path answers without creating the fetch future: that future holds every
        // source's state (tens of kilobytes), and boxing it cost a memcpy of its full size
        // on every request, cache hit or not.
        if let Some(done) = self.ready(plan, margin) {
            return Box::pin(std::future::ready(done));
        }
        Box::pin(self.get_slow(plan, margin))
    }

    /// Answers from the plan itself or from the cache, when no call is needed.
    fn ready(
        self: &Arc<Self>,
        plan: &Plan,
        margin: Duration,
    ) -> Option<Result<Arc<Credentials>, SourceError>> {
        match plan {
            Plan::Keys {
                access_key_id,
                secret,
                ..
            } => {
                return Some(Ok(Arc::new(Credentials {
                    access_key_id: access_key_id.clone(),
                    secret_access_key: secret.clone(),
                    session_token: None,
                    expiration: None,
                    account_id: None,
                })));
            }
            Plan::Environment => {
                return Some(environment_credentials(&|k| self.env.get(k)).map(Arc::new));
            }
            Plan::FileSession { profile, creds } => {
                if let Some(at) = creds.expiration
                    && at <= OffsetDateTime::now_utc()
                {
                    return Some(Err(SourceError::Expired {
                        profile: profile.clone(),
                        at: crate::credentials::format_expiration(at),
                    }));
                }
                return Some(Ok(creds.clone()));
            }
            _ => {}
        }
        let slot = self.slot(plan);
        let held = slot.get()?;
        match remaining(&held.creds, OffsetDateTime::now_utc()) {
            None => Some(Ok(held.creds)),
            Some(left) if left > refresh_margin(&held, margin) => Some(Ok(held.creds)),
            Some(left) if left > MIN_REMAINING => {
                // An MFA session cannot be renewed without a new code.
                if !matches!(plan, Plan::MfaSession { .. }) {
                    self.refresh_in_background(plan.clone(), slot.clone(), margin);
                }
                Some(Ok(held.creds))
            }
            _ => None,
        }
    }

    /// The cache could not answer: wait for (or make) the one call for this plan.
    async fn get_slow(
        self: &Arc<Self>,
        plan: &Plan,
        margin: Duration,
    ) -> Result<Arc<Credentials>, SourceError> {
        {
            let slot = self.slot(plan);
            let now = OffsetDateTime::now_utc();
            if let Plan::MfaSession { serial, .. } = plan {
                return match slot.get() {
                    Some(h) if remaining(&h.creds, now).is_none_or(|l| !l.is_zero()) => Ok(h.creds),
                    _ => Err(SourceError::NoMfaSession {
                        serial: serial.clone(),
                    }),
                };
            }
            let _flight = slot.flight.lock().await;
            let now = OffsetDateTime::now_utc();
            if let Some(held) = slot.get()
                && remaining(&held.creds, now).is_none_or(|l| l > MIN_REMAINING)
            {
                return Ok(held.creds);
            }
            match self.fetch(plan, margin).await {
                Ok(c) => {
                    slot.set(c);
                    slot.get().map(|h| h.creds).ok_or_else(|| {
                        SourceError::Internal("a session just stored is gone".into())
                    })
                }
                Err(e) => {
                    *slot.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(e.to_string());
                    match slot.get() {
                        Some(h)
                            if remaining(&h.creds, OffsetDateTime::now_utc())
                                .is_some_and(|l| !l.is_zero()) =>
                        {
                            tracing::warn!(error = %e, "refresh failed; serving the still-valid session");
                            Ok(h.creds)
                        }
                        _ => Err(e),
                    }
                }
            }
        }
    }

    fn refresh_in_background(self: &Arc<Self>, plan: Plan, slot: Arc<Slot>, margin: Duration) {
        if slot.refreshing.swap(true, Ordering::SeqCst) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            {
                let _flight = slot.flight.lock().await;
                let still_due = slot.get().is_none_or(|h| {
                    remaining(&h.creds, OffsetDateTime::now_utc())
                        .is_some_and(|l| l <= refresh_margin(&h, margin))
                });
                if still_due {
                    match this.fetch(&plan, margin).await {
                        Ok(c) => {
                            tracing::debug!(source = %plan.describe(), "session refreshed ahead of expiry");
                            slot.set(c);
                        }
                        Err(e) => {
                            tracing::warn!(source = %plan.describe(), error = %e, "background refresh failed; the current session is still served");
                            *slot.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(e.to_string());
                        }
                    }
                }
            }
            slot.refreshing.store(false, Ordering::SeqCst);
        });
    }

    /// Opens the MFA session `plan` (an [`Plan::MfaSession`]) with a one-time `code`.
    pub async fn login(
        self: &Arc<Self>,
        plan: &Plan,
        code: &str,
    ) -> Result<Credentials, SourceError> {
        let Plan::MfaSession {
            source,
            serial,
            endpoint,
        } = plan
        else {
            return Err(SourceError::Internal("not an MFA session".into()));
        };
        let keys = self.get(source, Duration::ZERO).await?;
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        let creds = self
            .providers
            .mfa_session(plan, endpoint, &keys, serial, code)
            .await
            .inspect_err(|_| {
                self.stats.fetch_errors.fetch_add(1, Ordering::Relaxed);
            })?;
        self.slot(plan).set(creds.clone());
        Ok(creds)
    }

    async fn fetch(
        self: &Arc<Self>,
        plan: &Plan,
        margin: Duration,
    ) -> Result<Credentials, SourceError> {
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        // The cache resolves the step's source (cached or fetched in turn); the providers
        // run the one step.
        let source = match plan.fetch_source() {
            Some(src) => Some(self.get(src, margin).await?),
            None => None,
        };
        let result = self.providers.step(plan, source.as_deref()).await;
        if result.is_err() {
            self.stats.fetch_errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

/// Time left before `creds` expire (`None` when they do not expire; zero when expired).
fn remaining(creds: &Credentials, now: OffsetDateTime) -> Option<Duration> {
    creds
        .expiration
        .map(|e| Duration::try_from(e - now).unwrap_or(Duration::ZERO))
}

/// The refresh-ahead margin for a held session: `margin`, but at most half its lifetime,
/// so short sessions are not refreshed on every request.
fn refresh_margin(held: &Held, margin: Duration) -> Duration {
    let lifetime = held
        .creds
        .expiration
        .map(|e| Duration::try_from(e - held.obtained).unwrap_or(Duration::ZERO))
        .unwrap_or(Duration::MAX);
    margin.min(lifetime / 2)
}
