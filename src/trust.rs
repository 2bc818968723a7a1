//! Project-file trust: which stage-to-profile mappings of project files the user allowed.
//!
//! Project files (`serverless.yml`, `samconfig.toml`, `cdk.json`, `.credport.toml`) arrive
//! with `git clone`, so a mapping they decide (`prod -> adminAccount`) is served only once
//! the user trusted it, as direnv's `allow`. This module owns the records and the decision:
//!
//! * a record is (canonical project directory, stage, profile), plus the file and rule that
//!   mapped it (for display) and when it was allowed. It keys on the *mapping*, not on a hash
//!   of the file: an edit that keeps every stage's profile needs nothing, an edit that points
//!   a stage at another profile needs a new allow, and the refusal says `old -> new`;
//! * one record per (directory, stage): allowing a new profile replaces the old one, so
//!   reverting an edit asks again;
//! * a mapping decided by credport's own `config.toml`, or by a flag on the command line
//!   (`--aws-profile`, `exec --profile`), is the user's and needs no trust;
//! * `[trust] project_files = "all"` in `config.toml` turns the check off.
//!
//! Records live in `<state>/trust.toml` (0600 in a 0700 directory, written atomically).
//! The daemon keeps them in memory in a [`TrustStore`], reloaded when the file changes (and
//! re-read once before a refusal, so an `allow` that just wrote the file is never raced).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::config::{ProjectFiles, TrustConfig};
use crate::projects::registry::Binding;
use crate::scope::Scope;

/// The records file's name in the state directory.
pub const FILE_NAME: &str = "trust.toml";

/// Where the records live: `<state>/trust.toml`.
pub fn records_file(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// One mapping a project file decides: the thing that is trusted or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The project name.
    pub project: String,
    /// The project directory (the decided file's directory), canonical when it exists.
    pub dir: PathBuf,
    /// The stage.
    pub stage: String,
    /// The profile the file maps the stage to.
    pub profile: String,
    /// The file that decided.
    pub file: PathBuf,
    /// The rule that decided, in words.
    pub rule: String,
}

impl Mapping {
    /// The mapping a project file decided for `file`; `dir` is the file's directory, made
    /// canonical.
    pub fn new(project: &str, stage: &str, profile: &str, file: &Path, rule: &str) -> Self {
        let dir = file.parent().unwrap_or(Path::new("."));
        Mapping {
            project: project.to_string(),
            dir: canonical(dir),
            stage: stage.to_string(),
            profile: profile.to_string(),
            file: file.to_path_buf(),
            rule: rule.to_string(),
        }
    }

    /// The project-file mapping behind a command's scope; `None` when credport's config or
    /// a command-line flag (`--aws-profile`) decided, which need no trust.
    pub fn of_scope(scope: &Scope) -> Option<Self> {
        if scope.selection.aws_profile.is_some() {
            return None;
        }
        let file = scope.file.as_deref()?;
        Some(Self::new(
            &scope.project,
            &scope.stage,
            &scope.profile,
            file,
            &scope.rule,
        ))
    }

    /// The project-file mapping behind the daemon's binding; `None` when credport's config
    /// decided.
    pub fn of_binding(b: &Binding) -> Option<Self> {
        let file = b.file.as_deref()?;
        Some(Self::new(&b.project, &b.stage, &b.profile, file, &b.rule))
    }

    /// The command that allows this mapping, shell-quoted.
    pub fn allow_command(&self) -> String {
        let dir = self.dir.to_string_lossy();
        let dir = shlex::try_quote(&dir)
            .map(|d| d.into_owned())
            .unwrap_or_else(|_| format!("{dir:?}"));
        format!("credport allow --dir {dir} --stage {}", self.stage)
    }
}

fn canonical(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// One allowed mapping, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The canonical project directory.
    pub dir: PathBuf,
    /// The stage.
    pub stage: String,
    /// The profile the user allowed for it.
    pub profile: String,
    /// The project name when it was allowed (for display).
    #[serde(default)]
    pub project: String,
    /// The file that mapped it.
    #[serde(default)]
    pub file: PathBuf,
    /// The rule that mapped it.
    #[serde(default)]
    pub rule: String,
    /// When it was allowed (RFC 3339, UTC).
    #[serde(default)]
    pub allowed_at: String,
}

/// Every allowed mapping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Records {
    /// `[[allow]]` tables, one per (directory, stage).
    #[serde(default, rename = "allow")]
    pub records: Vec<Record>,
}

/// What the records say about a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The user allowed exactly this mapping.
    Trusted,
    /// Nothing was allowed for this (directory, stage).
    Unknown,
    /// The user allowed this stage with another profile: the file changed since.
    Changed {
        /// The profile allowed before.
        old: String,
    },
}

/// Why a mapping is not served, or the records cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The mapping was never allowed.
    #[error(
        "{} maps stage '{}' to profile '{}' ({}), and project files are used only once you trust them; \
         check it and run `{}`",
        .0.file.display(), .0.stage, .0.profile, .0.rule, .0.allow_command()
    )]
    Untrusted(Box<Mapping>),
    /// The mapping changed since it was allowed.
    #[error(
        "{} now maps stage '{}' to another profile: {} -> {} ({}); check the change and run `{}`",
        .mapping.file.display(), .mapping.stage, .old, .mapping.profile, .mapping.rule,
        .mapping.allow_command()
    )]
    Changed {
        /// The mapping now.
        mapping: Box<Mapping>,
        /// The profile allowed before.
        old: String,
    },
    /// The records file cannot be parsed.
    #[error("{}: {reason}", .file.display())]
    Parse {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The records file cannot be read or written.
    #[error(transparent)]
    Fs(#[from] crate::fsutil::FsError),
}

impl TrustError {
    /// The refusal for `mapping` with `verdict` (`None` when trusted).
    pub fn refusal(mapping: &Mapping, verdict: &Verdict) -> Option<Self> {
        match verdict {
            Verdict::Trusted => None,
            Verdict::Unknown => Some(TrustError::Untrusted(Box::new(mapping.clone()))),
            Verdict::Changed { old } => Some(TrustError::Changed {
                mapping: Box::new(mapping.clone()),
                old: old.clone(),
            }),
        }
    }
}

impl Records {
    /// Parses the records file's text.
    pub fn parse(file: &Path, text: &str) -> Result<Self, TrustError> {
        toml::from_str(text).map_err(|e| TrustError::Parse {
            file: file.to_path_buf(),
            reason: e.message().trim().to_string(),
        })
    }

    /// Reads the records; a missing file is no records.
    pub fn load(file: &Path) -> Result<Self, TrustError> {
        match crate::fsutil::read_text(file)? {
            Some(text) => Self::parse(file, &text),
            None => Ok(Records::default()),
        }
    }

    /// Writes the records (0600 in a 0700 directory, atomically).
    pub fn save(&self, file: &Path) -> Result<(), TrustError> {
        let mut text = String::from(
            "# credport's trusted project-file mappings (`credport allow` / `credport deny`).\n",
        );
        text.push_str(&toml::to_string(self).map_err(|e| TrustError::Parse {
            file: file.to_path_buf(),
            reason: e.to_string(),
        })?);
        crate::fsutil::write_private(file, text.as_bytes())?;
        Ok(())
    }

    /// What the records say about `mapping`.
    pub fn verdict(&self, mapping: &Mapping) -> Verdict {
        match self
            .records
            .iter()
            .find(|r| r.dir == mapping.dir && r.stage == mapping.stage)
        {
            Some(r) if r.profile == mapping.profile => Verdict::Trusted,
            Some(r) => Verdict::Changed {
                old: r.profile.clone(),
            },
            None => Verdict::Unknown,
        }
    }

    /// Records `mapping` as allowed, replacing what was allowed for its (directory, stage).
    /// Returns the profile it replaced, if another.
    pub fn allow(&mut self, mapping: &Mapping, now: time::OffsetDateTime) -> Option<String> {
        let old = self.forget(&mapping.dir, Some(&mapping.stage));
        self.records.push(Record {
            dir: mapping.dir.clone(),
            stage: mapping.stage.clone(),
            profile: mapping.profile.clone(),
            project: mapping.project.clone(),
            file: mapping.file.clone(),
            rule: mapping.rule.clone(),
            allowed_at: now
                .replace_nanosecond(0)
                .unwrap_or(now)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        });
        self.records
            .sort_by(|a, b| (&a.dir, &a.stage).cmp(&(&b.dir, &b.stage)));
        tracing::info!(
            project = %mapping.project,
            stage = %mapping.stage,
            profile = %mapping.profile,
            dir = %mapping.dir.display(),
            "trust allowed"
        );
        old.into_iter()
            .map(|r| r.profile)
            .find(|p| *p != mapping.profile)
    }

    /// Forgets the records of `dir` (canonical), for `stage` or every stage; returns them.
    pub fn forget(&mut self, dir: &Path, stage: Option<&str>) -> Vec<Record> {
        let (gone, kept) = std::mem::take(&mut self.records)
            .into_iter()
            .partition(|r| r.dir == dir && stage.is_none_or(|s| r.stage == s));
        self.records = kept;
        gone
    }
}

/// Changes the records file under an exclusive lock (`trust.toml.lock` beside it), so two
/// commands allowing at once (two terminals answering yes) never lose each other's
/// records: reads the file, applies `change`, and writes it back when `change` says so.
pub fn update<T>(
    file: &Path,
    change: impl FnOnce(&mut Records) -> (T, bool),
) -> Result<T, TrustError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = file.parent().unwrap_or(Path::new("."));
    crate::fsutil::ensure_private_dir(dir)?;
    let lock_path = file.with_extension("toml.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|source| crate::fsutil::FsError::Io {
            path: lock_path.clone(),
            source,
        })?;
    // SAFETY: a valid descriptor owned by `lock`, which outlives the lock (closing it
    // releases the lock).
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(crate::fsutil::FsError::Io {
            path: lock_path,
            source: std::io::Error::last_os_error(),
        }
        .into());
    }
    let mut records = Records::load(file)?;
    let (out, changed) = change(&mut records);
    if changed {
        records.save(file)?;
    }
    Ok(out)
}

/// Checks `mapping` against `records` under `config`: `Ok` when it may be used.
pub fn check(config: &TrustConfig, records: &Records, mapping: &Mapping) -> Result<(), TrustError> {
    if config.project_files == ProjectFiles::All {
        return Ok(());
    }
    match TrustError::refusal(mapping, &records.verdict(mapping)) {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// The daemon's records: in memory, replaced whole when the file changes.
pub struct TrustStore {
    file: PathBuf,
    current: ArcSwap<Records>,
    on_event: std::sync::OnceLock<Box<dyn Fn(crate::journal::Event) + Send + Sync>>,
}

impl TrustStore {
    /// Opens the store at `file` and loads it once (a broken file is logged and counts as
    /// no records: nothing is trusted by mistake).
    pub fn open(file: PathBuf) -> Self {
        let store = TrustStore {
            file,
            current: ArcSwap::from_pointee(Records::default()),
            on_event: Default::default(),
        };
        store.reload();
        store
    }

    /// A store with no file: nothing is trusted (embedded servers serve config mappings only).
    pub fn empty() -> Self {
        TrustStore {
            file: PathBuf::new(),
            current: ArcSwap::from_pointee(Records::default()),
            on_event: Default::default(),
        }
    }

    /// The records file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Re-reads the file; returns whether the records changed. A file that cannot be read
    /// or parsed keeps the last good records.
    pub fn reload(&self) -> bool {
        if self.file.as_os_str().is_empty() {
            return false;
        }
        match Records::load(&self.file) {
            Ok(r) if *self.current.load_full() != r => {
                tracing::info!(file = %self.file.display(), records = r.records.len(), "trust records reloaded");
                let old = self.current.swap(Arc::new(r.clone()));
                self.journal_changes(&old, &r);
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "trust records reload failed; keeping the last good ones");
                false
            }
        }
    }

    /// Registers where trust decisions are recorded (the daemon's audit journal): each
    /// reload that adds or changes a record is an `allowed` event, each record gone a
    /// `denied` one.
    pub fn on_event(&self, f: impl Fn(crate::journal::Event) + Send + Sync + 'static) {
        let _ = self.on_event.set(Box::new(f));
    }

    fn journal_changes(&self, old: &Records, new: &Records) {
        use crate::journal::{Event, What};
        let Some(emit) = self.on_event.get() else {
            return;
        };
        let same = |a: &Record, b: &Record| a.dir == b.dir && a.stage == b.stage;
        for r in &new.records {
            if !old
                .records
                .iter()
                .any(|o| same(o, r) && o.profile == r.profile)
            {
                emit(
                    Event::new(What::Allowed {
                        dir: r.dir.display().to_string(),
                        profile: Some(r.profile.clone()),
                    })
                    .scope(&r.project, &r.stage),
                );
            }
        }
        for o in &old.records {
            if !new.records.iter().any(|r| same(o, r)) {
                emit(
                    Event::new(What::Denied {
                        dir: o.dir.display().to_string(),
                    })
                    .scope(&o.project, &o.stage),
                );
            }
        }
    }

    /// The current records.
    pub fn records(&self) -> Arc<Records> {
        self.current.load_full()
    }

    /// Why a request for `binding` would be refused now (for `status`): no reload, no log.
    pub fn refusal(&self, config: &TrustConfig, binding: &Binding) -> Option<TrustError> {
        let mapping = Mapping::of_binding(binding)?;
        check(config, &self.records(), &mapping).err()
    }

    /// Whether the daemon may serve `binding` under `config`. A refusal re-reads the file
    /// once first (an `allow` a moment ago may not have been seen by the watcher yet), and
    /// is logged as "trust refused".
    pub fn check(&self, config: &TrustConfig, binding: &Binding) -> Result<(), TrustError> {
        let Some(mapping) = Mapping::of_binding(binding) else {
            return Ok(());
        };
        if check(config, &self.records(), &mapping).is_ok() {
            return Ok(());
        }
        let _ = self.reload();
        let result = check(config, &self.records(), &mapping);
        if let Err(e) = &result {
            tracing::info!(
                project = %mapping.project,
                stage = %mapping.stage,
                profile = %mapping.profile,
                dir = %mapping.dir.display(),
                reason = %e,
                "trust refused"
            );
        }
        result
    }

    /// The profile `stage` of `project` (in `dir`) is served with, as
    /// [`crate::standin::profile_for_stage`] answers, but `None` when that mapping comes
    /// from a project file the user has not trusted (for the daemon's stand-in keeper).
    pub fn trusted_profile_for_stage(
        &self,
        dir: &Path,
        project: &str,
        stage: &str,
        config: &crate::config::Config,
        registered: &crate::config::Config,
        env: &dyn crate::env::Env,
    ) -> Option<String> {
        let req = crate::scope::Query {
            dir: dir.to_path_buf(),
            project: Some(project.to_string()),
            ..Default::default()
        };
        let sel = crate::projects::Selection {
            stage: Some(stage.to_string()),
            ..Default::default()
        };
        let scope = crate::scope::resolve_selection(&req, &sel, config, registered, env).ok()?;
        match Mapping::of_scope(&scope) {
            Some(m) if check(&config.trust, &self.records(), &m).is_err() => None,
            _ => Some(scope.profile),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(dir: &str, stage: &str, profile: &str) -> Mapping {
        Mapping {
            project: "orders".into(),
            dir: PathBuf::from(dir),
            stage: stage.into(),
            profile: profile.into(),
            file: PathBuf::from(dir).join("serverless.yml"),
            rule: "provider.profile".into(),
        }
    }

    #[test]
    fn keys_on_the_mapping() {
        let mut r = Records::default();
        let dev = mapping("/p", "dev", "devAccount");
        assert_eq!(r.verdict(&dev), Verdict::Unknown);
        assert_eq!(r.allow(&dev, time::OffsetDateTime::UNIX_EPOCH), None);
        assert_eq!(r.verdict(&dev), Verdict::Trusted);
        // Another file or rule with the same mapping: still trusted.
        let mut same = dev.clone();
        same.rule = "something else".into();
        assert_eq!(r.verdict(&same), Verdict::Trusted);
        // Another profile: changed, naming the old one.
        let admin = mapping("/p", "dev", "adminAccount");
        assert_eq!(
            r.verdict(&admin),
            Verdict::Changed {
                old: "devAccount".into()
            }
        );
        let e = TrustError::refusal(&admin, &r.verdict(&admin))
            .unwrap()
            .to_string();
        assert!(e.contains("devAccount -> adminAccount"), "{e}");
        assert!(e.contains("credport allow --dir /p --stage dev"), "{e}");
        // Allowing it replaces the old record: reverting asks again.
        assert_eq!(
            r.allow(&admin, time::OffsetDateTime::UNIX_EPOCH),
            Some("devAccount".into())
        );
        assert_eq!(r.records.len(), 1);
        assert!(matches!(r.verdict(&dev), Verdict::Changed { .. }));
        // Other stages and directories are separate.
        assert_eq!(
            r.verdict(&mapping("/p", "prod", "adminAccount")),
            Verdict::Unknown
        );
        assert_eq!(
            r.verdict(&mapping("/q", "dev", "adminAccount")),
            Verdict::Unknown
        );
    }

    #[test]
    fn all_turns_it_off_and_files_round_trip() {
        let m = mapping("/p", "dev", "devAccount");
        let ask = TrustConfig::default();
        assert!(check(&ask, &Records::default(), &m).is_err());
        let all = TrustConfig {
            project_files: ProjectFiles::All,
        };
        assert!(check(&all, &Records::default(), &m).is_ok());

        let dir = tempfile::tempdir().unwrap();
        let file = records_file(&dir.path().join("state"));
        let mut r = Records::default();
        r.allow(&m, time::OffsetDateTime::UNIX_EPOCH);
        r.allow(
            &mapping("/p", "prod", "prodAccount"),
            time::OffsetDateTime::UNIX_EPOCH,
        );
        r.save(&file).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = Records::load(&file).unwrap();
        assert_eq!(back, r);
        let mut back = back;
        assert_eq!(back.forget(Path::new("/p"), Some("prod")).len(), 1);
        assert_eq!(back.forget(Path::new("/p"), None).len(), 1);
        assert!(back.records.is_empty());
        let e = Records::parse(&file, "[[allow]]\ndir = 3\n").unwrap_err();
        assert!(e.to_string().contains("trust.toml"), "{e}");
    }

    #[test]
    fn concurrent_updates_keep_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let file = records_file(dir.path());
        std::thread::scope(|s| {
            for i in 0..8 {
                let file = &file;
                s.spawn(move || {
                    update(file, |r| {
                        let m = mapping("/p", &format!("s{i}"), "x");
                        r.allow(&m, time::OffsetDateTime::UNIX_EPOCH);
                        ((), true)
                    })
                    .unwrap()
                });
            }
        });
        assert_eq!(Records::load(&file).unwrap().records.len(), 8);
        // A change that says "unchanged" writes nothing.
        update(&file, |r| {
            r.records.clear();
            ((), false)
        })
        .unwrap();
        assert_eq!(Records::load(&file).unwrap().records.len(), 8);
    }

    #[test]
    fn quotes_the_directory() {
        let m = mapping("/home/me/my repo", "dev", "x");
        assert_eq!(
            m.allow_command(),
            "credport allow --dir '/home/me/my repo' --stage dev"
        );
    }
}
