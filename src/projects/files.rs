//! Reading and parsing project files: one bounded read, YAML (tags kept, merge keys
//! applied) and JSON into one value model, and the folder name that names a project by
//! default.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::error::ProjectError;

thread_local! {
    /// The paths consulted on this thread inside [`consulted`], if it is running.
    static CONSULTED: RefCell<Option<BTreeSet<PathBuf>>> = const { RefCell::new(None) };
}

/// Runs `f` and returns, with its result, every path a project-file reader probed or read
/// meanwhile on this thread (files that did not exist included: creating one may change
/// the answer). The daemon watches them to know when a cached resolution is stale.
pub fn consulted<T>(f: impl FnOnce() -> T) -> (T, BTreeSet<PathBuf>) {
    let outer = CONSULTED.with(|c| c.replace(Some(BTreeSet::new())));
    let out = f();
    let mine = CONSULTED.with(|c| c.replace(outer)).unwrap_or_default();
    // A caller recording around us saw these too.
    CONSULTED.with(|c| {
        if let Some(set) = c.borrow_mut().as_mut() {
            set.extend(mine.iter().cloned());
        }
    });
    (out, mine)
}

fn note(path: &Path) {
    CONSULTED.with(|c| {
        if let Some(set) = c.borrow_mut().as_mut() {
            set.insert(path.to_path_buf());
        }
    });
}

/// Whether `file` is a regular file; noted for [`consulted`].
pub(crate) fn is_file(file: &Path) -> bool {
    note(file);
    crate::fsutil::is_file(file)
}

/// Reads a project file through the one bounded, FIFO-safe reader ([`crate::fsutil::read_text`]);
/// `Ok(None)` when it does not exist.
pub(crate) fn read_text(file: &Path) -> Result<Option<String>, ProjectError> {
    use crate::fsutil::FsError;
    note(file);
    crate::fsutil::read_text(file).map_err(|e| match e {
        FsError::Io { source, .. } => ProjectError::Io {
            file: file.to_path_buf(),
            source,
        },
        FsError::TooLarge { limit, .. } => ProjectError::Invalid {
            file: file.to_path_buf(),
            message: format!("file is larger than {limit} bytes"),
        },
        FsError::NotUtf8 { line, .. } => ProjectError::Invalid {
            file: file.to_path_buf(),
            message: format!("line {line}: file is not valid UTF-8"),
        },
        other => ProjectError::Invalid {
            file: file.to_path_buf(),
            message: other.to_string(),
        },
    })
}

/// Reads a session policy file named by a project file or the config, as project files
/// are read (so the registry knows it read it); the error without the file name, which the
/// policy error adds.
pub(crate) fn read_policy_file(file: &Path) -> Result<Option<String>, String> {
    read_text(file).map_err(|e| match e {
        ProjectError::Io { source, .. } => source.to_string(),
        ProjectError::Invalid { message, .. } => message,
        other => other.to_string(),
    })
}

/// Parses YAML (keeping `!Tags`) and applies `<<` merge keys. Never panics.
pub(crate) fn parse_yaml(file: &Path, text: &str) -> Result<yaml_serde::Value, ProjectError> {
    let invalid = |message: String| ProjectError::Invalid {
        file: file.to_path_buf(),
        message,
    };
    let parsed = std::panic::catch_unwind(|| yaml_serde::from_str::<yaml_serde::Value>(text))
        .map_err(|_| invalid("YAML parser failed on this input".into()))?;
    let mut v = parsed.map_err(|e| invalid(format!("invalid YAML: {e}")))?;
    // A merge key whose value is not a mapping is left unmerged rather than failing:
    // only the keys we need matter.
    let _ = v.apply_merge();
    Ok(v)
}

/// Parses JSON into the YAML value model.
pub(crate) fn parse_json(file: &Path, text: &str) -> Result<yaml_serde::Value, ProjectError> {
    serde_json::from_str::<yaml_serde::Value>(text).map_err(|e| ProjectError::Invalid {
        file: file.to_path_buf(),
        message: format!("invalid JSON: {e}"),
    })
}

/// The name of the directory holding `file` (used as the default project name).
pub(crate) fn folder_name(file: &Path) -> String {
    file.parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "project".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_helpers_never_panic() {
        let f = Path::new("x.yml");
        assert!(parse_yaml(f, "a: [").is_err());
        // self-referencing anchor / alias
        let _ = parse_yaml(f, "a: &x [*x]\n");
        let _ = parse_yaml(f, "a: *nope\n");
        let deep = "[".repeat(10_000);
        assert!(parse_yaml(f, &deep).is_err());
        let laughs = "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n";
        let _ = parse_yaml(f, laughs);
        assert!(parse_json(f, &"[".repeat(10_000)).is_err());
    }
}
