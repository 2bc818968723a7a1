//! The live profile store: the current [`Snapshot`], reloads, and per-file status.
//!
//! Each reload reads both files; a file that fails to read or parse keeps its last good
//! parse (and its error is recorded with file and line), so a half-saved file never takes
//! profiles away, while a profile deleted by a good save disappears at once. Each file has
//! its own [`parse::Incremental`], so a reload hands rust-ini only the sections whose text
//! changed. The merged snapshot is swapped atomically (`ArcSwap`): readers take one `Arc`
//! and see one version.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use time::OffsetDateTime;

use super::parse::{self, Section};
use super::{AwsPaths, FileKind, Snapshot, merge};
use crate::fsutil;

/// How often, and how far apart, a file that suddenly reads empty is read again.
const EMPTY_RECHECKS: usize = 4;
const EMPTY_RECHECK_DELAY: std::time::Duration = std::time::Duration::from_millis(25);

pub use crate::fsutil::FileState;

/// Status of one watched file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileStatus {
    /// Which file.
    pub kind: FileKind,
    /// Its path.
    pub path: std::path::PathBuf,
    /// How the last reload went.
    #[serde(flatten)]
    pub state: FileState,
    /// When it was last reloaded (RFC 3339).
    #[serde(with = "time::serde::rfc3339::option")]
    pub reloaded_at: Option<OffsetDateTime>,
}

struct FileSlot {
    last_good: Vec<Section>,
    /// The file's sections as last read, each with what it parsed to: an unchanged file is
    /// not parsed again (a reload usually concerns one of the two files), and in a changed
    /// one only the changed sections are.
    parser: parse::Incremental,
    status: FileStatus,
}

/// The profile store. Cheap to read from any thread; reloads are serialised.
pub struct ProfileStore {
    /// Reloads attempted (for metrics).
    pub reloads: std::sync::atomic::AtomicU64,
    /// Reloads in which a file failed to read or parse (for metrics).
    pub reload_errors: std::sync::atomic::AtomicU64,
    paths: AwsPaths,
    current: ArcSwap<Snapshot>,
    files: Mutex<[FileSlot; 2]>,
}

impl ProfileStore {
    /// Creates the store and loads both files once.
    pub fn open(paths: AwsPaths) -> Self {
        let slot = |kind: FileKind| FileSlot {
            last_good: Vec::new(),
            parser: parse::Incremental::new(),
            status: FileStatus {
                kind,
                path: paths.get(kind).clone(),
                state: FileState::Missing,
                reloaded_at: None,
            },
        };
        let store = ProfileStore {
            reloads: Default::default(),
            reload_errors: Default::default(),
            current: ArcSwap::from_pointee(Snapshot::default()),
            files: Mutex::new([slot(FileKind::Credentials), slot(FileKind::Config)]),
            paths,
        };
        store.reload();
        store
    }

    /// The paths this store reads.
    pub fn paths(&self) -> &AwsPaths {
        &self.paths
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The current snapshot's generation (no reference taken: the server checks it on
    /// every request).
    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// Status of both files (credentials first).
    pub fn status(&self) -> Vec<FileStatus> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.iter().map(|f| f.status.clone()).collect()
    }

    /// Re-reads both files and swaps in the merged result if it changed. Returns whether
    /// the snapshot changed.
    pub fn reload(&self) -> bool {
        self.reload_unless(&|| false)
    }

    /// Like [`reload`](Self::reload), but discards what was read when `write_started`
    /// says a writer touched the files meanwhile (a newer reload follows).
    pub fn reload_unless(&self, write_started: &dyn Fn() -> bool) -> bool {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let now = OffsetDateTime::now_utc();
        // An in-place writer truncates, then writes: a file that was non-empty and now
        // reads empty is most likely caught in between. Believe it only once it stays
        // empty for a moment (emptying the file on purpose still works, just later).
        let read_all = || -> Vec<_> {
            files
                .iter()
                .map(|slot| fsutil::read_text(&slot.status.path))
                .collect()
        };
        let mut texts = read_all();
        for _ in 0..EMPTY_RECHECKS {
            let truncated = files.iter().zip(&texts).any(|(slot, t)| {
                matches!(t, Ok(Some(text)) if text.is_empty()) && !slot.last_good.is_empty()
            });
            if !truncated {
                break;
            }
            std::thread::sleep(EMPTY_RECHECK_DELAY);
            texts = read_all();
        }
        tracing::trace!(sizes = ?texts.iter().map(|t| t.as_ref().ok().and_then(|o| o.as_ref().map(|s| s.len()))).collect::<Vec<_>>(), "files read");
        if write_started() {
            tracing::debug!("a write started during the reload; waiting for it to finish");
            return false;
        }
        self.reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut failed = false;
        for (slot, text) in files.iter_mut().zip(texts) {
            let path = slot.status.path.clone();
            let state = match text {
                Ok(None) => {
                    slot.last_good.clear();
                    slot.parser.clear();
                    FileState::Missing
                }
                Ok(Some(text))
                    if slot.parser.unchanged(&text)
                        && matches!(slot.status.state, FileState::Ok { .. }) =>
                {
                    slot.status.state.clone()
                }
                Ok(Some(text)) => match slot.parser.parse(&text) {
                    Ok(sections) => {
                        let n = sections.len();
                        tracing::debug!(
                            file = %path.display(),
                            sections = n,
                            parsed = slot.parser.reparsed(),
                            "file parsed"
                        );
                        slot.last_good = sections;
                        FileState::Ok { sections: n }
                    }
                    Err(e) => FileState::Error {
                        line: Some(e.line),
                        reason: e.reason,
                    },
                },
                Err(e) => FileState::Error {
                    line: match &e {
                        fsutil::FsError::NotUtf8 { line, .. } => Some(*line),
                        _ => None,
                    },
                    reason: e.to_string(),
                },
            };
            failed |= matches!(state, FileState::Error { .. });
            match &state {
                FileState::Error { line, reason } => tracing::warn!(
                    file = %path.display(),
                    line = line.unwrap_or(0),
                    reason = %reason,
                    "reload failed; keeping the last good version of this file"
                ),
                FileState::Missing if slot.status.state != FileState::Missing => {
                    tracing::info!(file = %path.display(), "file removed; it now counts as empty")
                }
                _ => {}
            }
            slot.status.state = state;
            slot.status.reloaded_at = Some(now);
        }
        if failed {
            self.reload_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut next = merge(&files[0].last_good, &files[1].last_good);
        let prev = self.current.load();
        // Line numbers alone (a comment added above) are no change worth a new generation.
        let same_profiles = prev.profiles.len() == next.profiles.len()
            && prev
                .profiles
                .iter()
                .zip(next.profiles.iter())
                .all(|((a, pa), (b, pb))| a == b && pa.props == pb.props);
        if same_profiles && prev.sso_sessions == next.sso_sessions && prev.services == next.services
        {
            drop((prev, next, files));
            release_freed_memory();
            return false;
        }
        next.generation = prev.generation + 1;
        tracing::info!(
            generation = next.generation,
            profiles = next.profiles.len(),
            "profiles reloaded"
        );
        self.current.store(Arc::new(next));
        drop((prev, files));
        release_freed_memory();
        true
    }
}

/// Hands the pages freed by a reload back to the OS. glibc otherwise keeps them in the
/// arena of whichever thread reloaded: with 5,000 profiles (2.6 MB of files) RSS grew from
/// 25 to 55 MiB over 20 reloads. Costs well under a millisecond at that size.
fn release_freed_memory() {
    crate::memory::release_freed();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn store(dir: &std::path::Path) -> ProfileStore {
        ProfileStore::open(AwsPaths {
            credentials: dir.join("credentials"),
            config: dir.join("config"),
        })
    }

    #[test]
    fn missing_files_are_empty() {
        let t = tempfile::tempdir().unwrap();
        let s = store(t.path());
        assert!(s.snapshot().profiles.is_empty());
        assert!(s.status().iter().all(|f| f.state == FileState::Missing));
    }

    #[test]
    fn broken_save_keeps_last_good_and_reports_line() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("credentials"), "[a]\nk=v\n[b]\nk=v\n").unwrap();
        let s = store(t.path());
        assert_eq!(s.snapshot().profiles.len(), 2);
        let g = s.snapshot().generation;
        fs::write(t.path().join("credentials"), "[a]\nk=v\n[a]\n").unwrap();
        assert!(!s.reload());
        assert_eq!(s.snapshot().profiles.len(), 2);
        assert_eq!(s.snapshot().generation, g);
        let st = &s.status()[0];
        assert!(
            matches!(&st.state, FileState::Error { line: Some(3), .. }),
            "{st:?}"
        );
        fs::write(t.path().join("credentials"), "[a]\nk=v\n").unwrap();
        assert!(s.reload());
        assert_eq!(s.snapshot().profiles.len(), 1, "removed profile must go");
        assert!(s.snapshot().generation > g);
    }

    #[test]
    fn unchanged_content_keeps_generation() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("config"), "[profile a]\nregion=x\n").unwrap();
        let s = store(t.path());
        let g = s.snapshot().generation;
        fs::write(
            t.path().join("config"),
            "# comment only change\n[profile a]\nregion=x\n",
        )
        .unwrap();
        assert!(!s.reload());
        assert_eq!(s.snapshot().generation, g);
    }

    #[test]
    fn deleted_file_removes_profiles() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("credentials"), "[a]\nk=v\n").unwrap();
        let s = store(t.path());
        fs::remove_file(t.path().join("credentials")).unwrap();
        assert!(s.reload());
        assert!(s.snapshot().profiles.is_empty());
    }

    #[test]
    fn incremental_reloads_equal_a_fresh_parse_and_merge() {
        let t = tempfile::tempdir().unwrap();
        let (c, f) = (t.path().join("credentials"), t.path().join("config"));
        fs::write(
            &f,
            r#"[default]
region = us-east-1
[profile dev]
region = eu-west-1
[sso-session corp]
sso_region = eu-west-1
"#,
        )
        .unwrap();
        let saves = [
            r#"[dev]
aws_access_key_id = A1
aws_secret_access_key = S1
[prod]
aws_access_key_id = P1
aws_secret_access_key = Q1
"#,
            // One key rewritten.
            r#"[dev]
aws_access_key_id = A2
aws_secret_access_key = S1
[prod]
aws_access_key_id = P1
aws_secret_access_key = Q1
"#,
            // A section added above: [dev] and [prod] move down unchanged.
            r#"[default]
aws_access_key_id = D1
aws_secret_access_key = E1

[dev]
aws_access_key_id = A2
aws_secret_access_key = S1
[prod]
aws_access_key_id = P1
aws_secret_access_key = Q1
"#,
            // A broken save: the last good parse stays.
            r#"[default]
aws_access_key_id = D1
aws_secret_access_key = E1

[dev]
aws_access_key_id
[prod]
aws_access_key_id = P1
aws_secret_access_key = Q1
"#,
            // Fixed, and [prod] removed.
            r#"[default]
aws_access_key_id = D1
aws_secret_access_key = E1

[dev]
aws_access_key_id = A3
aws_secret_access_key = S1
"#,
        ];
        let s = store(t.path());
        let mut good = String::new();
        for (i, text) in saves.iter().enumerate() {
            fs::write(&c, text).unwrap();
            let before = s.snapshot().generation;
            s.reload();
            let ok = parse::parse(text).is_ok();
            if ok {
                good = text.to_string();
            }
            let want = merge(
                &parse::parse(&good).unwrap(),
                &parse::parse(&fs::read_to_string(&f).unwrap()).unwrap(),
            );
            let snap = s.snapshot();
            assert_eq!(snap.profiles, want.profiles, "save {i}");
            assert_eq!(snap.sso_sessions, want.sso_sessions, "save {i}");
            assert_eq!(snap.generation > before, ok, "save {i}");
            let st = &s.status()[0];
            match parse::parse(text) {
                Ok(_) => assert!(matches!(st.state, FileState::Ok { .. }), "save {i}"),
                Err(e) => assert!(
                    matches!(&st.state, FileState::Error { line: Some(l), .. } if *l == e.line),
                    "save {i}: {st:?}"
                ),
            }
        }
    }
}
