//! Build script: records the commit credport is built from, for `credport --version`.
//!
//! The commit comes from, in order: `CREDPORT_BUILD_COMMIT` (packagers building from a
//! tarball), `git` when this crate is the root of its own checkout (a crate vendored inside
//! another repository must not report that repository's commit), and the
//! `.cargo_vcs_info.json` that `cargo package` writes into a crates.io tarball. With none
//! of them (no git, a plain source tarball) the version is just the package version.
//! Nothing here fails the build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-env-changed=CREDPORT_BUILD_COMMIT");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = std::env::var("CREDPORT_BUILD_COMMIT")
        .ok()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .or_else(|| git_commit(&dir))
        .or_else(|| vcs_info_commit(&dir));
    let suffix = match commit {
        Some(c) => format!(" (commit {c})"),
        None => String::new(),
    };
    println!("cargo::rustc-env=CREDPORT_VERSION_SUFFIX={suffix}");
}

/// Runs git in `dir`; `None` when git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// The short commit of HEAD when `dir` is the top of a git checkout; asks cargo to rerun
/// this script when HEAD moves.
fn git_commit(dir: &Path) -> Option<String> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    };
    if !same(Path::new(&top), dir) {
        return None;
    }
    let commit = git(dir, &["rev-parse", "--short=12", "HEAD"])?;
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(r) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(r);
    }
    for w in watched {
        if let Some(p) = git(dir, &["rev-parse", "--git-path", &w]) {
            let p = dir.join(p);
            if p.exists() {
                println!("cargo::rerun-if-changed={}", p.display());
            }
        }
    }
    Some(commit)
}

/// The commit `cargo package` recorded in `.cargo_vcs_info.json` (`"sha1": "..."`).
fn vcs_info_commit(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(".cargo_vcs_info.json")).ok()?;
    let rest = &text[text.find("\"sha1\"")? + 6..];
    let start = rest.find('"')? + 1;
    let sha: String = rest[start..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    (sha.len() >= 12).then(|| sha[..12].to_string())
}
