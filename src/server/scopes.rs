//! The hot path's memory: what the server worked out for each scope, kept until a change
//! makes it stale.
//!
//! For a `(project, stage)` the server needs a [`Binding`] (which profile, by which rule),
//! a [`Plan`] (how that profile becomes credentials), the audit line's fixed fields and,
//! per session, the rendered response body. None of these depends on the request, only on
//! the files behind them, so [`Scopes`] keeps them in an [`Entry`] stamped with the
//! *generations* it was made from:
//!
//! - the AWS files' snapshot generation (`ProfileStore`),
//! - the config, the registered-projects table and the trust records (the `Arc`s their
//!   stores hand out; a reload replaces them),
//! - the project files, when the binding came from a project directory: every path the
//!   resolution probed or read (`projects::files::consulted`, missing files included) is
//!   watched by [`ProjectFiles`], whose generation moves when one of them changes.
//!
//! A request compares the stamp with the current generations (a few atomic loads) and, when
//! they match, is served with no disk read, no environment lookup and no re-planning. A
//! mismatch rebuilds the entry on a blocking thread, off the async workers. Invalidation is
//! by generation only, never by elapsed time. The rendered body is kept per session and
//! served `Expiration` (which moves at most once a second), and zeroed when dropped.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::http::StatusCode;
use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::error::ApiError;
use crate::config::Config;
use crate::credentials::Credentials;
use crate::projects::registry::Binding;
use crate::sources::plan::Plan;

/// Entries kept at most; past it the table is emptied and refilled on demand (a scope is
/// only looked up after its token checked, so this bounds honest use, not an attack).
const MAX_ENTRIES: usize = 4096;

/// The per-scope cache.
pub struct Scopes {
    entries: RwLock<HashMap<Box<str>, Arc<Entry>>>,
    files: ProjectFiles,
}

/// What one scope resolved to, and from which generations.
pub struct Entry {
    /// The generations it was made from.
    pub(super) stamp: Stamp,
    /// The binding and plan, or the error every request for the scope gets until a
    /// generation moves.
    pub outcome: Result<Arc<Hot>, ApiError>,
    /// Worked out again on every request: a project unknown now may be registered a
    /// moment from now (by `credport exec`), which a reload of the table finds.
    pub(super) volatile: bool,
}

/// A scope that resolved: everything a hit needs.
pub struct Hot {
    /// Which profile serves the scope, and why.
    pub binding: Binding,
    /// How that profile becomes credentials.
    pub plan: Plan,
    /// Whether the stage needs an unlock, and which setting says so.
    pub protection: crate::guard::Protection,
    /// Request counters and the last issuance of this scope.
    pub stats: Arc<crate::metrics::ScopeStats>,
    /// The binding's project, stage and profile, shared by every audit event of the scope.
    pub names: Names,
    /// The last rendered answer (see [`Hot::render`]).
    pub(super) body: Mutex<Option<Rendered>>,
}

/// A scope's names, made once per entry so the audit shares them instead of copying.
#[derive(Debug, Clone)]
pub struct Names {
    /// The project.
    pub project: Arc<str>,
    /// The stage.
    pub stage: Arc<str>,
    /// The profile that serves it.
    pub profile: Arc<str>,
    /// The three as the audit line's fields: ` project=orders stage=dev profile=devAccount`.
    pub fields: Box<str>,
}

impl Names {
    /// The names of `binding`.
    pub fn of(binding: &Binding) -> Self {
        Names {
            project: binding.project.as_str().into(),
            stage: binding.stage.as_str().into(),
            profile: binding.profile.as_str().into(),
            fields: crate::logline::render_fields(&[
                ("project", &binding.project),
                ("stage", &binding.stage),
                ("profile", &binding.profile),
            ]),
        }
    }
}

/// A rendered answer for one session at one served `Expiration`.
#[derive(Clone)]
pub struct Rendered {
    creds: Arc<Credentials>,
    served: i64,
    /// The response body (zeroed when its last reference drops).
    pub body: Bytes,
    /// The served `Expiration`, as the body and the audit line write it.
    pub expires: Arc<str>,
    /// The access key's last four characters (`...ABCD`), for the audit line.
    pub key: Arc<str>,
}

/// The generations an [`Entry`] was made from.
#[derive(Clone)]
pub(super) struct Stamp {
    /// The AWS files' snapshot generation.
    pub(super) profiles: u64,
    /// The config it was made with.
    pub(super) config: Arc<Config>,
    /// The registered-projects table it was made with.
    pub(super) registered: Arc<Config>,
    /// The trusted project-file mappings.
    pub(super) trust: Arc<crate::trust::Records>,
    /// The project-files generation, when the binding read project files.
    pub(super) files: Option<u64>,
}

impl Scopes {
    /// An empty cache; project files are watched from the current tokio runtime, if any
    /// (without one, or without a working watcher, bindings from project files are
    /// resolved again on every request).
    pub fn new() -> Self {
        Scopes {
            entries: RwLock::new(HashMap::new()),
            files: ProjectFiles::spawn(),
        }
    }

    /// The entry cached for `key` (`project/stage`), current or not.
    pub(super) fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Keeps `entry` for `key` unless it must be worked out again on every request; past
    /// [`MAX_ENTRIES`] the table is emptied first.
    pub(super) fn keep(&self, key: &str, entry: &Arc<Entry>) {
        if entry.volatile {
            return;
        }
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key.into(), entry.clone());
    }

    /// The watcher of the project files behind the cached bindings.
    pub(super) fn files(&self) -> &ProjectFiles {
        &self.files
    }

    /// How many times the watched project files changed (for tests and `/metrics`).
    pub fn files_generation(&self) -> u64 {
        self.files.generation()
    }
}

impl Default for Scopes {
    fn default() -> Self {
        Self::new()
    }
}

/// The project-files generation of answers that no watcher covers: it never matches.
pub(super) const UNWATCHED: u64 = u64::MAX;

/// A 500 naming what went wrong inside (never a secret).
pub(super) fn internal(message: String) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "CredentialsUnavailable",
        message,
    )
}

impl Hot {
    /// The answer for `creds` served until `served`: the one rendered before when the
    /// session and the served second are the same, else rendered now and kept.
    pub fn render(
        &self,
        creds: &Arc<Credentials>,
        served: OffsetDateTime,
    ) -> Result<Rendered, ApiError> {
        let second = served.unix_timestamp();
        let mut held = self.body.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = held.as_ref()
            && r.served == second
            && Arc::ptr_eq(&r.creds, creds)
        {
            return Ok(r.clone());
        }
        let body = creds.to_container_json(served).ok_or_else(|| {
            internal(format!(
                "profile '{}' yielded no session token",
                self.binding.profile
            ))
        })?;
        let r = Rendered {
            creds: creds.clone(),
            served: second,
            body: Bytes::from_owner(SecretBody(body.into_bytes())),
            expires: crate::credentials::format_expiration(served).into(),
            key: creds.key_hint().into(),
        };
        *held = Some(r.clone());
        Ok(r)
    }
}

/// A response body holding secrets, zeroed when the last response using it is gone.
struct SecretBody(Vec<u8>);

impl AsRef<[u8]> for SecretBody {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for SecretBody {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.0.zeroize();
    }
}

/// Watches the project files that cached bindings were resolved from, and counts their
/// changes. The watcher lives in a task that owns it and stops with the runtime (or when
/// this value is dropped).
pub struct ProjectFiles {
    generation: Arc<AtomicU64>,
    tx: Option<mpsc::UnboundedSender<BTreeSet<PathBuf>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for ProjectFiles {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl ProjectFiles {
    fn spawn() -> Self {
        let generation = Arc::new(AtomicU64::new(0));
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return ProjectFiles {
                generation,
                tx: None,
                task: None,
            };
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let task = rt.spawn(watch_task(rx, generation.clone()));
        ProjectFiles {
            generation,
            tx: Some(tx),
            task: Some(task),
        }
    }

    /// How many times a watched project file changed.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Asks for `paths` to be watched; `false` when no watcher runs.
    pub(super) fn watch(&self, paths: BTreeSet<PathBuf>) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(paths).is_ok())
    }
}

/// Owns the watcher. A request for paths not watched yet replaces the watcher with one
/// over the larger set, then moves the generation once: an edit made between the read
/// and the new watch is then caught by the resolution that follows.
async fn watch_task(
    mut rx: mpsc::UnboundedReceiver<BTreeSet<PathBuf>>,
    generation: Arc<AtomicU64>,
) {
    let mut watched: BTreeSet<PathBuf> = BTreeSet::new();
    let mut _watcher: Option<crate::watch::FileWatcher> = None;
    while let Some(paths) = rx.recv().await {
        let mut grew = false;
        for p in paths {
            grew |= watched.insert(p);
        }
        while let Ok(more) = rx.try_recv() {
            for p in more {
                grew |= watched.insert(p);
            }
        }
        if !grew {
            continue;
        }
        let g = generation.clone();
        match crate::watch::FileWatcher::spawn(watched.iter().cloned().collect(), move |_| {
            g.fetch_add(1, Ordering::AcqRel);
        }) {
            Ok(w) => _watcher = Some(w),
            Err(e) => {
                // Without a watcher, stamps never match again: every request resolves.
                tracing::warn!(error = %e, "cannot watch project files; they are read on every request");
                _watcher = None;
                generation.store(UNWATCHED, Ordering::Release);
                return;
            }
        }
        generation.fetch_add(1, Ordering::AcqRel);
    }
}
