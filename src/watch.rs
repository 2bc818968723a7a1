//! Watching files that may not exist yet, without polling.
//!
//! A [`FileWatcher`] watches the *parent directories* of its files with notify (inotify on
//! Linux, FSEvents/kqueue on macOS), so saves by atomic rename, delete-then-create and
//! in-place writes all count, and a file's directory that does not exist yet (a machine with
//! no `~/.aws`) is found through its nearest existing ancestor. A symlinked file is also
//! watched at its target. Events are debounced, then the callback runs once for the batch.
//! An idle watcher sleeps in the kernel: no timer, no wake-ups of its own.
//!
//! The watcher task belongs to the [`FileWatcher`] value and stops when it is dropped.
//!
//! Some mounts deliver no events (a container's bind mount through a VM's file sharing on
//! some Docker Desktop setups, network file systems). For them,
//! [`FileWatcher::spawn_polling`] stats every file each interval instead (size, mtime,
//! inode; a missing file counts as a state) and feeds changes into the same debouncing.
//! An interval of 1 s costs one `stat` per file per second (measured in README's
//! "Dev containers" section).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Quiet time after an event that ends a write (close after write, create, rename, remove).
const SETTLE: Duration = Duration::from_millis(10);
/// How long a write in progress may stay open before its partial content is read anyway.
/// Linux reports the close of a write, so waiting for it is safe; FSEvents and kqueue do
/// not, so there a short quiet period has to do.
#[cfg(target_os = "linux")]
const PARTIAL_FALLBACK: Duration = Duration::from_millis(1000);
#[cfg(not(target_os = "linux"))]
const PARTIAL_FALLBACK: Duration = Duration::from_millis(50);

/// Longest a reload waits after the first event of a batch.
const MAX_DELAY: Duration = Duration::from_millis(50);

/// Watches a set of files and runs a callback after they change. Stops on drop.
pub struct FileWatcher {
    task: JoinHandle<()>,
}

impl Drop for FileWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Errors starting the watcher.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot watch files: {0} (if it says \"too many open files\", raise fs.inotify.max_user_instances)"
)]
pub struct WatchError(#[from] notify::Error);

/// A callback run after watched files change.
pub type OnChange = Box<dyn Fn(&WriteProbe) + Send + Sync>;

/// Files watched together, and what to run after they change.
pub struct WatchGroup {
    /// The files.
    pub files: Vec<PathBuf>,
    /// Runs on a blocking thread after a debounced batch of changes to any of them.
    pub on_change: OnChange,
}

impl WatchGroup {
    /// A group of `files` with its callback.
    pub fn new(
        files: Vec<PathBuf>,
        on_change: impl Fn(&WriteProbe) + Send + Sync + 'static,
    ) -> Self {
        WatchGroup {
            files,
            on_change: Box::new(on_change),
        }
    }
}

impl FileWatcher {
    /// Starts watching `files`; `on_change` runs (on a blocking thread) after each debounced
    /// batch of changes. Must be called inside a tokio runtime.
    pub fn spawn<F>(files: Vec<PathBuf>, on_change: F) -> Result<Self, WatchError>
    where
        F: Fn(&WriteProbe) + Send + Sync + 'static,
    {
        Self::spawn_groups(vec![WatchGroup::new(files, on_change)])
    }

    /// Watches several groups with one watcher (one inotify instance, which is a limited
    /// resource: `fs.inotify.max_user_instances`, 128 by default). After a batch of changes,
    /// the callback of each group that changed runs once.
    pub fn spawn_groups(groups: Vec<WatchGroup>) -> Result<Self, WatchError> {
        Self::spawn_inner(groups, None)
    }

    /// Like [`spawn_groups`](Self::spawn_groups), but polls every `interval` instead of
    /// asking the kernel for events, for mounts that deliver none.
    pub fn spawn_polling(groups: Vec<WatchGroup>, interval: Duration) -> Result<Self, WatchError> {
        Self::spawn_inner(groups, Some(interval))
    }

    fn spawn_inner(groups: Vec<WatchGroup>, poll: Option<Duration>) -> Result<Self, WatchError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Change)>();
        let probe = WriteProbe::default();
        let files: Vec<Vec<PathBuf>> = groups.iter().map(|g| g.files.clone()).collect();
        let all_files: Vec<PathBuf> = files.iter().flatten().cloned().collect();
        let poller = poll.map(|interval| spawn_poller(files.clone(), interval, tx.clone()));
        let (probe_tx, probe_files) = (probe.clone(), files.clone());
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            // Only events about our files go further (and get logged): a log file
            // written into a watched directory must not feed back into the log.
            for (i, group) in probe_files.iter().enumerate() {
                let Some(change) = relevance(&ev, group) else {
                    continue;
                };
                tracing::trace!(kind = ?ev.kind, paths = ?ev.paths, "file event");
                if change == Change::Partial {
                    probe_tx.0.fetch_add(1, Ordering::SeqCst);
                }
                let _ = tx.send((i, change));
            }
        })
        .map_err(WatchError::from)?;
        let mut watched: BTreeSet<PathBuf> = BTreeSet::new();
        let events = poll.is_none();
        if events {
            update_watches(&mut watcher, &mut watched, &all_files);
        }
        let callbacks: Arc<Vec<OnChange>> =
            Arc::new(groups.into_iter().map(|g| g.on_change).collect());

        let task = tokio::spawn(async move {
            let _watcher_lives_here = &watcher;
            let _poller_lives_here = poller.as_ref().map(PollerGuard);
            while let Some((first_group, mut kind)) = rx.recv().await {
                // Debounce. A finished write (close, create, rename, remove) settles after
                // SETTLE of quiet, but no later than MAX_DELAY after the first one, so
                // constant churn still reloads. A write still in progress (a bare
                // modification) waits for its close, up to PARTIAL_FALLBACK.
                let mut touched = BTreeSet::from([first_group]);
                let mut last = Instant::now();
                let mut first_done = (kind == Change::Done).then_some(last);
                loop {
                    let deadline = match (kind, first_done) {
                        (Change::Partial, _) => last + PARTIAL_FALLBACK,
                        (Change::Done, Some(f)) => (last + SETTLE).min(f + MAX_DELAY),
                        (Change::Done, None) => last + SETTLE,
                    };
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some((g, k))) => {
                            touched.insert(g);
                            kind = k;
                            last = Instant::now();
                            if k == Change::Done && first_done.is_none() {
                                first_done = Some(last);
                            }
                        }
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                if events {
                    update_watches(&mut watcher, &mut watched, &all_files);
                }
                let (cbs, p) = (callbacks.clone(), probe.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    for g in touched {
                        (cbs[g])(&p);
                    }
                })
                .await;
            }
        });
        Ok(FileWatcher { task })
    }
}

/// Stops the poller task when the watcher task ends.
struct PollerGuard<'a>(&'a JoinHandle<()>);

impl Drop for PollerGuard<'_> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a poll sees of a file: `None` when it is missing.
type FileState = Option<(u64, i64, i64, u64)>;

fn file_state(f: &Path) -> FileState {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(f)
        .ok()
        .map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
}

/// Stats every file of every group each `interval`; a group whose files changed is sent
/// as a finished write.
fn spawn_poller(
    groups: Vec<Vec<PathBuf>>,
    interval: Duration,
    tx: mpsc::UnboundedSender<(usize, Change)>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let states = |groups: &[Vec<PathBuf>]| -> Vec<Vec<FileState>> {
            groups
                .iter()
                .map(|g| g.iter().map(|f| file_state(f)).collect())
                .collect()
        };
        let mut last = states(&groups);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = states(&groups);
            for (i, (a, b)) in last.iter().zip(&now).enumerate() {
                if a != b {
                    tracing::trace!(group = i, "poll saw a change");
                    if tx.send((i, Change::Done)).is_err() {
                        return;
                    }
                }
            }
            last = now;
        }
    })
}

/// Tells a reload whether a write started while it was reading, so it can discard what it
/// read instead of serving a half-written file. Counts write-in-progress events as the
/// watcher thread receives them, before any debouncing.
#[derive(Debug, Clone, Default)]
pub struct WriteProbe(Arc<AtomicU64>);

impl WriteProbe {
    /// A mark to take before reading.
    pub fn mark(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Whether no write has started since `mark`.
    pub fn quiet_since(&self, mark: u64) -> bool {
        self.0.load(Ordering::SeqCst) == mark
    }
}

/// What an event says about a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// A write is in progress (data modified, not yet closed).
    Partial,
    /// A write is complete (closed after writing, created, renamed, removed, chmod).
    Done,
}

/// What the event means for our files, or `None` when it does not concern them.
fn relevance(ev: &notify::Event, files: &[PathBuf]) -> Option<Change> {
    let change = match ev.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Change::Done,
        EventKind::Access(_) => return None,
        EventKind::Modify(ModifyKind::Data(_)) | EventKind::Modify(ModifyKind::Any) => {
            Change::Partial
        }
        _ => Change::Done,
    };
    let concerns = |p: &Path| {
        files
            .iter()
            .any(|f| f == p || f.starts_with(p) || std::fs::canonicalize(f).is_ok_and(|c| c == p))
    };
    (ev.paths.is_empty() || ev.paths.iter().any(|p| concerns(p))).then_some(change)
}

/// The directories that must be watched for `files`: each file's parent, or its nearest
/// existing ancestor, plus the parent of a symlink's target.
fn wanted_dirs(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    for f in files {
        if let Some(d) = existing_ancestor(f) {
            dirs.insert(d);
        }
        if let Ok(target) = std::fs::canonicalize(f)
            && target != *f
            && let Some(d) = target.parent()
        {
            dirs.insert(d.to_path_buf());
        }
    }
    dirs
}

fn existing_ancestor(file: &Path) -> Option<PathBuf> {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d.is_dir() {
            return Some(d.to_path_buf());
        }
        dir = d.parent();
    }
    None
}

fn update_watches(
    watcher: &mut notify::RecommendedWatcher,
    watched: &mut BTreeSet<PathBuf>,
    files: &[PathBuf],
) {
    let wanted = wanted_dirs(files);
    for gone in watched.difference(&wanted).cloned().collect::<Vec<_>>() {
        let _ = watcher.unwatch(&gone);
        watched.remove(&gone);
    }
    for new in wanted.difference(&watched.clone()) {
        match watcher.watch(new, RecursiveMode::NonRecursive) {
            Ok(()) => {
                tracing::debug!(dir = %new.display(), "watching");
                watched.insert(new.clone());
            }
            Err(e) => tracing::warn!(dir = %new.display(), error = %e, "cannot watch directory"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    async fn wait_for(count: &AtomicUsize, at_least: usize) -> bool {
        for _ in 0..200 {
            if count.load(Ordering::SeqCst) >= at_least {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn sees_creation_of_missing_dir_then_file_then_rename() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join(".aws").join("credentials");
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let _w = FileWatcher::spawn(vec![file.clone()], move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        std::fs::create_dir(tmp.path().join(".aws")).unwrap();
        assert!(wait_for(&count, 1).await, "dir creation not seen");
        let before = count.load(Ordering::SeqCst);
        std::fs::write(&file, "[a]\n").unwrap();
        assert!(wait_for(&count, before + 1).await, "file creation not seen");
        let before = count.load(Ordering::SeqCst);
        let tmpf = tmp.path().join(".aws").join("credentials.tmp");
        std::fs::write(&tmpf, "[b]\n").unwrap();
        std::fs::rename(&tmpf, &file).unwrap();
        assert!(wait_for(&count, before + 1).await, "rename not seen");
    }

    #[tokio::test]
    async fn unrelated_files_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("credentials");
        std::fs::write(&file, "").unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let _w = FileWatcher::spawn(vec![file.clone()], move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        std::fs::write(tmp.path().join("other"), "x").unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(count.load(Ordering::SeqCst), 0);
        std::fs::write(&file, "[x]\n").unwrap();
        assert!(wait_for(&count, 1).await);
    }

    #[tokio::test]
    async fn follows_symlink_target() {
        let tmp = tempfile::tempdir().unwrap();
        let real_dir = tmp.path().join("dotfiles");
        std::fs::create_dir(&real_dir).unwrap();
        let real = real_dir.join("credentials");
        std::fs::write(&real, "[a]\n").unwrap();
        let aws = tmp.path().join(".aws");
        std::fs::create_dir(&aws).unwrap();
        let link = aws.join("credentials");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let _w = FileWatcher::spawn(vec![link], move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        std::fs::write(&real, "[b]\n").unwrap();
        assert!(
            wait_for(&count, 1).await,
            "write through symlink target not seen"
        );
    }
}
