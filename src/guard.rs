//! Protected stages: which scopes are served only inside an unlock window, and the table
//! of those windows.
//!
//! **The rule.** A stage is protected when its name (ASCII case-insensitive) is in the
//! project's list: credport's own `[projects.NAME] protected = [...]` when set (the
//! user's word for that project, which may also be `[]`); else `[guard] stages` (default
//! `prod`, `production`; `[]` turns the guard off), plus the `protected = [...]` of the
//! project's `.credport.toml`. A committed project file can add protection, never remove
//! it: it arrives with `git clone`.
//!
//! **The windows.** `credport unlock PROJECT STAGE [--for 15m]` opens a window (at most
//! `[guard] max_unlock`, default 1 hour) in the daemon's memory; `credport lock` or the
//! window's end closes it. Nothing is written to disk: a restarted daemon starts locked.
//! While a scope is locked, a request answers `403 Locked` naming the command that unlocks
//! it. Sessions already handed out are not revoked (STS sessions cannot be), but the served
//! `Expiration` of a protected scope is capped at the window's end plus
//! [`REFRESH_MARGIN`], so every SDK asks again (and is refused) by then at the latest.
//! Windows count on tokio's clock, so unit tests run them on a paused clock.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;

use crate::config::{Config, GuardConfig};

/// The stages protected when `[guard] stages` is not set.
pub const DEFAULT_STAGES: &[&str] = &["prod", "production"];

/// How long `credport unlock` opens a window without `--for`.
pub const DEFAULT_UNLOCK: Duration = Duration::from_secs(15 * 60);

/// The longest window when `[guard] max_unlock` is not set.
pub const DEFAULT_MAX_UNLOCK: Duration = Duration::from_secs(60 * 60);

/// How far past a window's end a served `Expiration` may reach: the JS SDK refreshes
/// credentials with under 5 minutes left, botocore with under 15 (blocking under 10) and
/// the Rust SDK seconds before expiry, so with this cap each of them asks again, and is
/// refused, no later than 5 minutes after the window closed.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Whether a scope is protected, and which setting says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protection {
    /// Whether the stage needs an unlock.
    pub protected: bool,
    /// The setting that decided, in words (`[guard] stages`, ...).
    pub why: String,
}

/// The protected stage names of one project, with where they come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The names (as written; compared case-insensitively).
    pub stages: Vec<String>,
    /// Where they come from, in words.
    pub source: String,
}

impl Policy {
    /// The policy of a project: `project_list` is credport's own `[projects.NAME]
    /// protected` (wins when set), `file_list` the project file's `protected` (added to
    /// `[guard] stages` unless the guard is off).
    pub fn of(
        guard: &GuardConfig,
        project_list: Option<&[String]>,
        file_list: &[String],
    ) -> Policy {
        if let Some(list) = project_list {
            return Policy {
                stages: list.to_vec(),
                source: "config.toml [projects] protected".into(),
            };
        }
        let (mut stages, mut source) = match &guard.stages {
            Some(list) => (list.clone(), "config.toml [guard] stages".to_string()),
            None => (
                DEFAULT_STAGES.iter().map(|s| s.to_string()).collect(),
                "protected by default".to_string(),
            ),
        };
        if stages.is_empty() {
            return Policy {
                stages,
                source: "the guard is off ([guard] stages = [])".into(),
            };
        }
        if !file_list.is_empty() {
            stages.extend(file_list.iter().cloned());
            source.push_str(" and .credport.toml protected");
        }
        Policy { stages, source }
    }

    /// The policy of `project` as the daemon sees it: credport's config, and the
    /// `.credport.toml` that decides in the project's directory (the config's `path`, else
    /// the registered one; `dir` when given, as `exec` knows it).
    pub fn for_project(
        config: &Config,
        registered: &Config,
        project: &str,
        dir: Option<&Path>,
    ) -> Policy {
        let declared = config.projects.get(project);
        let dir = dir
            .or_else(|| declared.and_then(|p| p.path.as_deref()))
            .or_else(|| {
                registered
                    .projects
                    .get(project)
                    .and_then(|p| p.path.as_deref())
            });
        let file_list = dir.map(file_protected).unwrap_or_default();
        Policy::of(
            &config.guard,
            declared.and_then(|p| p.protected.as_deref()),
            &file_list,
        )
    }

    /// Whether `stage` is protected under this policy.
    pub fn protection(&self, stage: &str) -> Protection {
        Protection {
            protected: self.stages.iter().any(|s| s.eq_ignore_ascii_case(stage)),
            why: self.source.clone(),
        }
    }
}

/// The `protected` list of the `.credport.toml` that decides for `dir` (walking up as
/// every resolution does); empty when another kind of file decides, or on any error (the
/// resolution itself reports a broken file).
pub fn file_protected(dir: &Path) -> Vec<String> {
    let Some((file, crate::projects::ProjectKind::Credport)) =
        crate::projects::find_project_file(dir)
    else {
        return Vec::new();
    };
    crate::fsutil::read_text(&file)
        .ok()
        .flatten()
        .and_then(|text| crate::projects::credport_toml::parse(&file, &text).ok())
        .map(|c| c.protected)
        .unwrap_or_default()
}

/// The longest window `config` allows (`[guard] max_unlock`, checked when the config is
/// loaded; [`DEFAULT_MAX_UNLOCK`] unless set).
pub fn max_unlock(guard: &GuardConfig) -> Duration {
    guard
        .max_unlock
        .as_deref()
        .and_then(|m| crate::duration::parse(m).ok())
        .unwrap_or(DEFAULT_MAX_UNLOCK)
}

/// Refusals of the guard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The scope is protected and no window is open.
    #[error(
        "{project}/{stage} is a protected stage ({why}) and is locked: run `credport unlock {project} {stage}` (opens it for 15m; `--for 1h` for longer)"
    )]
    Locked {
        /// The project.
        project: String,
        /// The stage.
        stage: String,
        /// Which setting protects it.
        why: String,
    },
    /// `--for` is longer than `[guard] max_unlock`.
    #[error(
        "--for {asked} is longer than the longest unlock, {max} (`[guard] max_unlock` in config.toml)"
    )]
    TooLong {
        /// What was asked.
        asked: String,
        /// The maximum.
        max: String,
    },
    /// A project or stage name is not allowed.
    #[error("{0}")]
    Name(String),
}

/// One open window, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnlockReport {
    /// The project.
    pub project: String,
    /// The stage.
    pub stage: String,
    /// When it was opened (RFC 3339).
    pub since: String,
    /// When it closes (RFC 3339).
    pub until: String,
    /// Seconds left.
    pub remaining_seconds: u64,
}

/// What the guard lets through: the window a protected scope is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// When the window closes (`None`: the scope is not protected).
    pub window_end: Option<OffsetDateTime>,
}

impl Admission {
    /// The `Expiration` to serve: `served`, but no later than the window's end plus
    /// [`REFRESH_MARGIN`].
    pub fn cap(&self, served: OffsetDateTime) -> OffsetDateTime {
        match self.window_end {
            Some(end) => served.min(end + REFRESH_MARGIN),
            None => served,
        }
    }
}

#[derive(Debug, Clone)]
struct Window {
    since: OffsetDateTime,
    until: Instant,
}

/// The unlock table of one server (the daemon's, or an `exec`'s embedded one).
#[derive(Default)]
pub struct Guard {
    windows: Mutex<BTreeMap<(String, String), Window>>,
    on_change: OnceLock<Box<dyn Fn() + Send + Sync>>,
    on_event: OnceLock<Box<dyn Fn(crate::journal::Event) + Send + Sync>>,
}

impl Guard {
    /// Registers where unlocks and locks are recorded (the daemon's audit journal).
    pub fn on_event(&self, f: impl Fn(crate::journal::Event) + Send + Sync + 'static) {
        let _ = self.on_event.set(Box::new(f));
    }

    fn emit(&self, what: crate::journal::What, project: &str, stage: &str) {
        if let Some(f) = self.on_event.get() {
            f(crate::journal::Event::new(what).scope(project, stage));
        }
    }

    /// Registers what to call when a window opens or closes (the daemon rewrites `env`'s
    /// stand-in files, which hold a protected stage only while it is unlocked).
    pub fn on_change(&self, f: impl Fn() + Send + Sync + 'static) {
        let _ = self.on_change.set(Box::new(f));
    }

    fn changed(&self) {
        if let Some(f) = self.on_change.get() {
            f();
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Window>> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens (or replaces) the window of `project`/`stage` for `length`. Returns when it
    /// closes. The close is logged and announced by a timer when a runtime is running.
    pub fn unlock(
        self: &std::sync::Arc<Self>,
        project: &str,
        stage: &str,
        length: Duration,
    ) -> OffsetDateTime {
        let now = Instant::now();
        let until = now + length;
        self.table().insert(
            (project.to_string(), stage.to_string()),
            Window {
                since: OffsetDateTime::now_utc(),
                until,
            },
        );
        let end = OffsetDateTime::now_utc() + length;
        tracing::info!(
            project,
            stage,
            until = %crate::credentials::format_expiration(end),
            length = %crate::duration::format(length),
            "unlocked"
        );
        self.emit(
            crate::journal::What::Unlocked {
                until: crate::credentials::format_expiration(end),
            },
            project,
            stage,
        );
        if tokio::runtime::Handle::try_current().is_ok() {
            let weak = std::sync::Arc::downgrade(self);
            let (project, stage) = (project.to_string(), stage.to_string());
            tokio::spawn(async move {
                tokio::time::sleep_until(until).await;
                if let Some(g) = weak.upgrade() {
                    g.expire(&project, &stage);
                }
            });
        }
        self.changed();
        end
    }

    /// Closes the window if its time is up (a later unlock may have extended it).
    fn expire(&self, project: &str, stage: &str) {
        let key = (project.to_string(), stage.to_string());
        let mut t = self.table();
        if t.get(&key).is_some_and(|w| w.until <= Instant::now()) {
            t.remove(&key);
            drop(t);
            tracing::info!(project, stage, reason = "window ended", "locked");
            self.emit(
                crate::journal::What::Locked {
                    reason: "window ended".into(),
                },
                project,
                stage,
            );
            self.changed();
        }
    }

    /// Closes one window now. Returns whether one was open.
    pub fn lock(&self, project: &str, stage: &str) -> bool {
        let open = self.remaining(project, stage).is_some();
        let removed = self
            .table()
            .remove(&(project.to_string(), stage.to_string()))
            .is_some();
        if open {
            tracing::info!(project, stage, reason = "credport lock", "locked");
            self.emit(
                crate::journal::What::Locked {
                    reason: "credport lock".into(),
                },
                project,
                stage,
            );
        }
        if removed {
            self.changed();
        }
        open
    }

    /// Closes every window now. Returns the scopes that were open.
    pub fn lock_all(&self) -> Vec<(String, String)> {
        let now = Instant::now();
        let closed: Vec<_> = std::mem::take(&mut *self.table())
            .into_iter()
            .filter(|(_, w)| w.until > now)
            .map(|(k, _)| k)
            .collect();
        for (project, stage) in &closed {
            tracing::info!(project, stage, reason = "credport lock --all", "locked");
            self.emit(
                crate::journal::What::Locked {
                    reason: "credport lock --all".into(),
                },
                project,
                stage,
            );
        }
        self.changed();
        closed
    }

    /// The time left in the window of `project`/`stage`, if one is open.
    pub fn remaining(&self, project: &str, stage: &str) -> Option<Duration> {
        let now = Instant::now();
        self.table()
            .get(&(project.to_string(), stage.to_string()))
            .filter(|w| w.until > now)
            .map(|w| w.until - now)
    }

    /// Lets a request for `project`/`stage` through when it is not protected or its
    /// window is open; refuses it otherwise.
    pub fn admit(
        &self,
        protection: &Protection,
        project: &str,
        stage: &str,
    ) -> Result<Admission, GuardError> {
        if !protection.protected {
            return Ok(Admission { window_end: None });
        }
        match self.remaining(project, stage) {
            Some(left) => Ok(Admission {
                window_end: Some(OffsetDateTime::now_utc() + left),
            }),
            None => Err(GuardError::Locked {
                project: project.to_string(),
                stage: stage.to_string(),
                why: protection.why.clone(),
            }),
        }
    }

    /// [`admit`](Self::admit) with the project's policy from the daemon's tables.
    pub fn admit_scope(
        &self,
        config: &Config,
        registered: &Config,
        project: &str,
        stage: &str,
    ) -> Result<Admission, GuardError> {
        let protection = Policy::for_project(config, registered, project, None).protection(stage);
        self.admit(&protection, project, stage)
    }

    /// A protected scope's state for `status`: `locked`, or `unlocked until T`; `None` when
    /// the stage is not protected.
    pub fn describe(
        &self,
        config: &Config,
        registered: &Config,
        project: &str,
        stage: &str,
    ) -> Option<String> {
        if stage.is_empty() {
            return None;
        }
        let protection = Policy::for_project(config, registered, project, None).protection(stage);
        if !protection.protected {
            return None;
        }
        Some(match self.remaining(project, stage) {
            Some(left) => format!(
                "unlocked until {}",
                crate::credentials::format_expiration(OffsetDateTime::now_utc() + left)
            ),
            None => "locked".into(),
        })
    }

    /// The open windows, soonest to close first.
    pub fn unlocks(&self) -> Vec<UnlockReport> {
        let now = Instant::now();
        let wall = OffsetDateTime::now_utc();
        let mut out: Vec<UnlockReport> = self
            .table()
            .iter()
            .filter(|(_, w)| w.until > now)
            .map(|((project, stage), w)| {
                let left = w.until - now;
                UnlockReport {
                    project: project.clone(),
                    stage: stage.clone(),
                    since: crate::credentials::format_expiration(w.since),
                    until: crate::credentials::format_expiration(wall + left),
                    remaining_seconds: left.as_secs(),
                }
            })
            .collect();
        out.sort_by_key(|u| u.remaining_seconds);
        out
    }

    /// What the daemon does for `credport unlock`: checks the names and the length
    /// (default [`DEFAULT_UNLOCK`], at most `[guard] max_unlock`), and opens the window when
    /// the scope is protected. Returns the line to show.
    pub fn request_unlock(
        self: &std::sync::Arc<Self>,
        config: &Config,
        registered: &Config,
        project: &str,
        stage: &str,
        length: Option<Duration>,
    ) -> Result<String, GuardError> {
        for (what, name) in [("project", project), ("stage", stage)] {
            crate::config::check_name(what, name).map_err(GuardError::Name)?;
        }
        let max = max_unlock(&config.guard);
        let length = match length {
            Some(l) if l > max => {
                return Err(GuardError::TooLong {
                    asked: crate::duration::format(l),
                    max: crate::duration::format(max),
                });
            }
            Some(l) => l,
            None => DEFAULT_UNLOCK.min(max),
        };
        let protection = Policy::for_project(config, registered, project, None).protection(stage);
        if !protection.protected {
            return Ok(format!(
                "{project}/{stage} is not a protected stage ({}); nothing to unlock",
                protection.why
            ));
        }
        let end = self.unlock(project, stage, length);
        let mut note = format!(
            "unlocked {project}/{stage} for {} (until {}); `credport lock {project} {stage}` ends it early",
            crate::duration::format(length),
            crate::credentials::format_expiration(end)
        );
        if !config.projects.contains_key(project) && !registered.projects.contains_key(project) {
            let known: Vec<&str> = config
                .projects
                .keys()
                .chain(registered.projects.keys())
                .map(String::as_str)
                .collect();
            note.push_str(&format!(
                "\nwarning: no project '{project}' is known yet (known: {}); a typo?",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
        Ok(note)
    }

    /// What the daemon does for `credport lock [PROJECT STAGE]` (`None`: every window).
    /// Returns the line to show.
    pub fn request_lock(&self, scope: Option<(&str, &str)>) -> String {
        match scope {
            Some((project, stage)) => {
                if self.lock(project, stage) {
                    format!("locked {project}/{stage}")
                } else {
                    format!("{project}/{stage} was not unlocked")
                }
            }
            None => {
                let closed = self.lock_all();
                if closed.is_empty() {
                    "nothing was unlocked".into()
                } else {
                    let names: Vec<String> =
                        closed.iter().map(|(p, s)| format!("{p}/{s}")).collect();
                    format!("locked {}", names.join(", "))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn guard_cfg(stages: Option<&[&str]>) -> GuardConfig {
        GuardConfig {
            stages: stages.map(|s| s.iter().map(|x| x.to_string()).collect()),
            max_unlock: None,
        }
    }

    fn list(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_rule() {
        let default = Policy::of(&guard_cfg(None), None, &[]);
        for s in ["prod", "production", "Prod", "PRODUCTION"] {
            assert!(default.protection(s).protected, "{s}");
        }
        for s in ["dev", "staging", "prod2", "preprod"] {
            assert!(!default.protection(s).protected, "{s}");
        }
        // [guard] stages replaces the default list; [] turns the guard off, even for a
        // project file's own list.
        let custom = Policy::of(&guard_cfg(Some(&["live"])), None, &[]);
        assert!(custom.protection("live").protected && !custom.protection("prod").protected);
        let off = Policy::of(&guard_cfg(Some(&[])), None, &list(&["live"]));
        assert!(!off.protection("live").protected && !off.protection("prod").protected);
        assert!(off.source.contains("off"), "{}", off.source);
        // A project file adds; it cannot remove.
        let added = Policy::of(&guard_cfg(None), None, &list(&["live"]));
        assert!(added.protection("live").protected && added.protection("prod").protected);
        // The user's own per-project list wins over both.
        let own = Policy::of(&guard_cfg(None), Some(&[]), &list(&["live"]));
        assert!(!own.protection("prod").protected && !own.protection("live").protected);
        let own = Policy::of(&guard_cfg(Some(&[])), Some(&list(&["qa"])), &[]);
        assert!(own.protection("qa").protected);
    }

    #[test]
    fn project_file_list_is_read_from_the_deciding_file() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join(".credport.toml"),
            "protected = [\"live\"]\n[stages]\nlive = \"x\"\ndev = \"y\"\n",
        )
        .unwrap();
        std::fs::create_dir(t.path().join("sub")).unwrap();
        assert_eq!(file_protected(&t.path().join("sub")), list(&["live"]));
        let mut registered = Config::default();
        registered.projects.insert(
            "orders".into(),
            crate::config::ProjectConfig {
                path: Some(t.path().to_path_buf()),
                ..Default::default()
            },
        );
        let p = Policy::for_project(&Config::default(), &registered, "orders", None);
        assert!(p.protection("live").protected && p.protection("prod").protected);
        assert!(!p.protection("dev").protected);
    }

    #[tokio::test(start_paused = true)]
    async fn windows_open_close_and_expire() {
        let g = Arc::new(Guard::default());
        let prot = Protection {
            protected: true,
            why: "test".into(),
        };
        let e = g.admit(&prot, "orders", "prod").unwrap_err();
        assert!(e.to_string().contains("credport unlock orders prod"), "{e}");
        let free = Protection {
            protected: false,
            why: String::new(),
        };
        assert_eq!(g.admit(&free, "orders", "dev").unwrap().window_end, None);

        let changes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = changes.clone();
        g.on_change(move || {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        g.unlock("orders", "prod", Duration::from_secs(120));
        let a = g.admit(&prot, "orders", "prod").unwrap();
        assert!(a.window_end.is_some());
        assert!(
            g.admit(&prot, "orders", "staging").is_err(),
            "one scope only"
        );
        assert_eq!(g.unlocks().len(), 1);
        assert_eq!(g.unlocks()[0].remaining_seconds, 120);

        tokio::time::sleep(Duration::from_secs(119)).await;
        assert!(g.admit(&prot, "orders", "prod").is_ok());
        assert_eq!(g.unlocks()[0].remaining_seconds, 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::yield_now().await;
        assert!(
            g.admit(&prot, "orders", "prod").is_err(),
            "locked after the window"
        );
        assert!(g.unlocks().is_empty());
        // unlock + the timer's close
        assert_eq!(changes.load(std::sync::atomic::Ordering::SeqCst), 2);

        // A longer unlock replaces a shorter one; the first timer does not close it.
        g.unlock("orders", "prod", Duration::from_secs(10));
        g.unlock("orders", "prod", Duration::from_secs(60));
        tokio::time::sleep(Duration::from_secs(30)).await;
        tokio::task::yield_now().await;
        assert!(g.admit(&prot, "orders", "prod").is_ok());
        assert!(g.lock("orders", "prod"));
        assert!(!g.lock("orders", "prod"));
        assert!(g.admit(&prot, "orders", "prod").is_err());

        g.unlock("a", "prod", Duration::from_secs(60));
        g.unlock("b", "prod", Duration::from_secs(60));
        assert_eq!(g.lock_all().len(), 2);
        assert!(g.unlocks().is_empty());
    }

    #[test]
    fn expiration_cap() {
        let end = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let a = Admission {
            window_end: Some(end),
        };
        let far = end + Duration::from_secs(3600);
        assert_eq!(a.cap(far), end + REFRESH_MARGIN);
        let near = end - Duration::from_secs(60);
        assert_eq!(a.cap(near), near);
        assert_eq!(Admission { window_end: None }.cap(far), far);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_check_length_and_protection() {
        let g = Arc::new(Guard::default());
        let mut config = Config::default();
        let none = Config::default();
        let msg = g
            .request_unlock(&config, &none, "orders", "prod", None)
            .unwrap();
        assert!(msg.contains("for 15m"), "{msg}");
        assert!(msg.contains("no project 'orders' is known yet"), "{msg}");
        config.projects.insert("orders".into(), Default::default());
        assert_eq!(g.remaining("orders", "prod"), Some(DEFAULT_UNLOCK));
        let e = g
            .request_unlock(
                &config,
                &none,
                "orders",
                "prod",
                Some(Duration::from_secs(7200)),
            )
            .unwrap_err();
        assert!(
            e.to_string().contains("--for 2h") && e.to_string().contains("1h"),
            "{e}"
        );
        config.guard.max_unlock = Some("3h".into());
        assert!(
            !g.request_unlock(&config, &none, "orders", "prod", None)
                .unwrap()
                .contains("warning"),
            "a known project: no warning"
        );
        assert!(
            g.request_unlock(
                &config,
                &none,
                "orders",
                "prod",
                Some(Duration::from_secs(7200))
            )
            .is_ok()
        );
        let msg = g
            .request_unlock(&config, &none, "orders", "dev", None)
            .unwrap();
        assert!(msg.contains("not a protected stage"), "{msg}");
        assert!(g.remaining("orders", "dev").is_none());
        assert!(
            g.request_unlock(&config, &none, "../x", "prod", None)
                .is_err()
        );
        assert_eq!(
            g.request_lock(Some(("orders", "prod"))),
            "locked orders/prod"
        );
        assert_eq!(g.request_lock(None), "nothing was unlocked");
    }
}
