//! Finding a scope's entry: from [`Scopes`] when every generation it was made from is
//! still current (a few atomic loads and pointer compares), else rebuilt from the current
//! files on a blocking thread (see `scopes` for what an entry holds and why it stays
//! correct).

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;

use super::error::ApiError;
use super::scopes::{Entry, Hot, Stamp, UNWATCHED, internal};
use super::state::AppState;
use crate::profiles::Snapshot;
use crate::projects::registry::{self, RegistryError};

/// The entry for `project`/`stage` (`key` is `project/stage`), from the cache when
/// its generations are current, else rebuilt on a blocking thread.
pub async fn lookup(state: &Arc<AppState>, key: &str, project: &str, stage: &str) -> Arc<Entry> {
    if let Some(e) = state.scopes.get(key)
        && is_current(&e.stamp, state)
    {
        return e;
    }
    let (st, p, s) = (state.clone(), project.to_string(), stage.to_string());
    let built = tokio::task::spawn_blocking(move || build(&st, &p, &s)).await;
    let entry = Arc::new(built.unwrap_or_else(|e| Entry {
        stamp: stamp_now(state, &state.profiles.snapshot()),
        outcome: Err(internal(format!("resolving the scope failed: {e}"))),
        volatile: true,
    }));
    state.scopes.keep(key, &entry);
    entry
}

/// The generations current now, with `snap` the profiles' snapshot.
fn stamp_now(state: &AppState, snap: &Snapshot) -> Stamp {
    Stamp {
        profiles: snap.generation,
        config: state.config.get(),
        registered: state.registered.get(),
        trust: state.trust.records(),
        files: Some(state.scopes.files().generation()),
    }
}

/// Whether `stamp`'s generations are all still the current ones.
fn is_current(stamp: &Stamp, state: &AppState) -> bool {
    stamp.profiles == state.profiles.generation()
        && Arc::ptr_eq(&stamp.config, &state.config.get())
        && Arc::ptr_eq(&stamp.registered, &state.registered.get())
        && Arc::ptr_eq(&stamp.trust, &state.trust.records())
        && stamp
            .files
            .is_none_or(|g| g != UNWATCHED && g == state.scopes.files().generation())
}

/// Resolves one scope from the current files. Runs on a blocking thread: it may read
/// project files.
fn build(state: &AppState, project: &str, stage: &str) -> Entry {
    let env = |k: &str| state.env.get(k);
    let mut reloaded = false;
    loop {
        let snap = state.profiles.snapshot();
        let mut stamp = stamp_now(state, &snap);
        let ((bound, protection), consulted) = crate::projects::files::consulted(|| {
            (
                registry::bind(&stamp.config, &stamp.registered, project, Some(stage), &env),
                crate::guard::Policy::for_project(&stamp.config, &stamp.registered, project, None)
                    .protection(stage),
            )
        });
        if consulted.is_empty() {
            stamp.files = None;
        } else if !state.scopes.files().watch(consulted) {
            // Nothing watches these files: never reuse this answer.
            stamp.files = Some(UNWATCHED);
        }
        let binding = match bound {
            // A project registered a moment ago (by `credport exec`) may not be loaded yet.
            Err(RegistryError::UnknownProject { .. }) if !reloaded => {
                state.registered.reload();
                reloaded = true;
                continue;
            }
            Err(e) => {
                return Entry {
                    stamp,
                    volatile: matches!(e, RegistryError::UnknownProject { .. }),
                    outcome: Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        e.to_string(),
                    )),
                };
            }
            Ok(b) => b,
        };
        // A project file's mapping is served only once the user trusts it. A refusal is
        // checked again on every request (it re-reads the records, so an `allow` a moment
        // ago counts at once); a trusted mapping stays cached until the records change.
        if let Err(e) = state.trust.check(&stamp.config.trust, &binding) {
            return Entry {
                stamp,
                outcome: Err(super::error::untrusted_error(e)),
                volatile: true,
            };
        }
        let outcome = state
            .resolver
            .plan_in(
                &snap,
                &binding.profile,
                &binding.project,
                &binding.stage,
                binding.policy.as_ref(),
            )
            .map_err(|e| super::error::source_error(&binding.project, &binding.stage, e))
            .map(|plan| {
                Arc::new(Hot {
                    protection,
                    stats: state.metrics.scope(&binding.project, &binding.stage),
                    names: super::scopes::Names::of(&binding),
                    binding,
                    plan,
                    body: Mutex::new(None),
                })
            });
        return Entry {
            stamp,
            outcome,
            volatile: false,
        };
    }
}
