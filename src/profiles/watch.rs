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

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Quiet time after an event that ends a write (close after write, create, rename, remove).
const SETTLE: Duration = Duration::from_millis(10);
/// Quiet time after a bare data modification, which is usually followed by a close.
const SETTLE_PARTIAL: Duration = Duration::from_millis(100);

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
#[error("cannot watch files: {0}")]
pub struct WatchError(#[from] notify::Error);

impl FileWatcher {
    /// Starts watching `files`; `on_change` runs (on a blocking thread) after each debounced
    /// batch of changes. Must be called inside a tokio runtime.
    pub fn spawn<F>(files: Vec<PathBuf>, on_change: F) -> Result<Self, WatchError>
    where
        F: Fn() + Send + Sync + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<notify::Event>();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if let Ok(ev) = res {
                    let _ = tx.send(ev);
                }
            })?;
        let mut watched: BTreeSet<PathBuf> = BTreeSet::new();
        update_watches(&mut watcher, &mut watched, &files);
        let on_change = std::sync::Arc::new(on_change);

        let task = tokio::spawn(async move {
            let _watcher_lives_here = &watcher;
            while let Some(first) = rx.recv().await {
                let mut settle = match relevance(&first, &files) {
                    Some(d) => d,
                    None => continue,
                };
                // Debounce: wait for quiet, extending on each relevant event.
                loop {
                    match tokio::time::timeout(settle, rx.recv()).await {
                        Ok(Some(ev)) => {
                            // The latest relevant event decides: a close after a write
                            // settles fast, a bare modification waits for its close.
                            if let Some(d) = relevance(&ev, &files) {
                                settle = d;
                            }
                        }
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                update_watches(&mut watcher, &mut watched, &files);
                let f = on_change.clone();
                let _ = tokio::task::spawn_blocking(move || f()).await;
            }
        });
        Ok(FileWatcher { task })
    }
}

/// How long to wait after this event, or `None` when it does not concern our files.
fn relevance(ev: &notify::Event, files: &[PathBuf]) -> Option<Duration> {
    let wait = match ev.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => SETTLE,
        EventKind::Access(_) => return None,
        EventKind::Modify(ModifyKind::Data(_)) | EventKind::Modify(ModifyKind::Any) => {
            SETTLE_PARTIAL
        }
        _ => SETTLE,
    };
    let concerns = |p: &Path| {
        files
            .iter()
            .any(|f| f == p || f.starts_with(p) || std::fs::canonicalize(f).is_ok_and(|c| c == p))
    };
    (ev.paths.is_empty() || ev.paths.iter().any(|p| concerns(p))).then_some(wait)
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
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
        let _w = FileWatcher::spawn(vec![file.clone()], move || {
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
        let _w = FileWatcher::spawn(vec![file.clone()], move || {
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
        let _w = FileWatcher::spawn(vec![link], move || {
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
