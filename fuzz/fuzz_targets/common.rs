//! Shared by the project-file targets: one temp directory per process, a selection and
//! an environment derived from the input.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use credport::projects::{ProjectError, Resolution, Selection, resolve_dir};

pub fn root() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"))
        .path()
}

/// `stage|aws_profile|k=v|k=v` on the first line; empty fields are unset.
pub fn selection(line: &str) -> Selection {
    let mut parts = line.split('|');
    let opt = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
    let stage = opt(parts.next());
    let aws_profile = opt(parts.next());
    let params = parts
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Selection {
        stage,
        aws_profile,
        params,
        ..Selection::default()
    }
}

pub fn env(k: &str) -> Option<String> {
    match k {
        "STAGE" => Some("prod".into()),
        "AWS_PROFILE" => Some("envProfile".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

/// Writes `text` as `name` into its own sub-directory (created once) and resolves it.
pub fn resolve_file(
    name: &str,
    text: &str,
    sel: &Selection,
) -> (PathBuf, Result<Resolution, ProjectError>) {
    let dir = root().join(name.trim_start_matches('.').replace('.', "_"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    let r = resolve_dir(&dir, sel, &env);
    (file, r)
}

/// Invariants every resolution keeps.
pub fn check(file: &Path, sel: &Selection, r: &Result<Resolution, ProjectError>) {
    match r {
        Ok(res) => {
            assert_eq!(res.file, file);
            if let Some(s) = &sel.stage {
                assert_eq!(&res.stage, s, "--stage is the stage");
            }
            assert!(!res.project.is_empty());
            assert!(!res.rule.is_empty());
        }
        Err(e) => {
            let msg = e.to_string();
            let name = file.file_name().unwrap().to_string_lossy();
            assert!(
                msg.contains(name.as_ref()),
                "error does not name the file: {msg}"
            );
        }
    }
}

pub fn split(data: &[u8]) -> Option<(Selection, &str)> {
    let text = std::str::from_utf8(data).ok()?;
    let (first, rest) = text.split_once('\n').unwrap_or(("", text));
    Some((selection(first), rest))
}
