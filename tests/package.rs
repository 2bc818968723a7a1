//! Packaging, for real: the Debian package is built (`scripts/package-deb`, cargo-deb),
//! installed with `dpkg -i`, checked where a user meets it (`credport --version` on PATH,
//! the systemd user units verified from their installed paths, `man` pages, bash completion
//! loaded by bash-completion and zsh's from their standard directories), then removed with `dpkg -r`,
//! leaving none of its files. And the crate is ready for crates.io: its file list is small
//! and clean, and `cargo publish --dry-run --locked` passes.
//!
//! Installing a package needs root (CI runs as root); as another user the round trip is
//! skipped with a loud notice. cargo-deb, dpkg, man-db and bash-completion come from
//! `scripts/test-deps`.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::*;

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("{shown}: {e} (run `bash scripts/test-deps`)"))
}

fn run_ok(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{shown} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(repo_root());
    c
}

fn is_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Removes the package if a check panicked half-way, so the machine is left clean.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if is_installed("credport") {
            let _ = Command::new("dpkg").args(["-r", "credport"]).output();
        }
    }
}

/// Types `line` and two TABs into an interactive zsh with its default fpath (driven
/// through zsh/zpty, a real terminal) and returns what the terminal showed.
fn zsh_tab(line: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let driver = dir.path().join("drive.zsh");
    std::fs::write(
        &driver,
        r#"zmodload zsh/zpty || exit 90
zpty z 'zsh -f -i'
zpty -w z "PS1='%% '; autoload -Uz compinit; compinit -u -D; echo READY-\$((40+2))"
zpty -r z out '*READY-42*' || exit 91
zpty -w -n z "$1"$'\t\t'
sleep 2
out=''
while zpty -r -t z chunk; do out+=$chunk; done
print -r -- "$out"
zpty -d z
"#,
    )
    .unwrap();
    text(&run_ok(
        Command::new("timeout")
            .args(["30", "zsh", "-f"])
            .arg(&driver)
            .arg(line),
    ))
}

#[test]
fn deb_installs_works_and_removes_cleanly() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "\n*** SKIPPED deb_installs_works_and_removes_cleanly: `dpkg -i` needs root (CI runs as root) ***\n"
        );
        return;
    }
    assert!(
        !is_installed("credport"),
        "a credport package is already installed on this machine; `dpkg -r credport` first (this test installs and removes its own)"
    );

    let built = run_ok(Command::new("bash").arg(repo_root().join("scripts/package-deb")));
    let deb = PathBuf::from(text(&built).lines().last().unwrap_or_default().trim());
    assert!(
        deb.is_file() && deb.extension().is_some_and(|e| e == "deb"),
        "scripts/package-deb did not name a .deb: {deb:?}\nstderr:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let info = text(&run_ok(Command::new("dpkg-deb").arg("--info").arg(&deb)));
    for want in ["Package: credport", "Version: 0.1.0", "Section: utils"] {
        assert!(
            info.contains(want),
            "{want} not in dpkg-deb --info:\n{info}"
        );
    }
    let synopsis = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("Description: "))
        .unwrap_or_else(|| panic!("no Description in:\n{info}"));
    assert!(
        synopsis.len() < 80,
        "Debian synopsis too long: {synopsis:?}"
    );

    let _cleanup = Installed;
    run_ok(Command::new("dpkg").arg("-i").arg(&deb));
    let listed = text(&run_ok(Command::new("dpkg").args(["-L", "credport"])));
    let files: BTreeSet<PathBuf> = listed
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect();
    for want in [
        "/usr/bin/credport",
        "/usr/lib/systemd/user/credport.service",
        "/usr/lib/systemd/user/credport.socket",
        "/usr/share/man/man1/credport.1.gz",
        "/usr/share/man/man1/credport-init.1.gz",
        "/usr/share/bash-completion/completions/credport",
        "/usr/share/zsh/vendor-completions/_credport",
        "/usr/share/fish/vendor_completions.d/credport.fish",
        "/usr/share/doc/credport/README.md",
        "/usr/share/doc/credport/LICENSE-MIT",
        "/usr/share/doc/credport/LICENSE-APACHE",
        "/usr/share/doc/credport/copyright",
    ] {
        assert!(
            files.contains(Path::new(want)),
            "{want} not installed:\n{listed}"
        );
    }

    // On PATH, with the version and the commit.
    let version = text(&run_ok(
        Command::new("credport")
            .arg("--version")
            .env("PATH", "/usr/bin:/bin"),
    ));
    assert!(
        version.starts_with(&format!("credport {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );

    // The units, verified from their installed paths (ExecStart is the packaged binary).
    let unit = std::fs::read_to_string("/usr/lib/systemd/user/credport.service").unwrap();
    assert!(
        unit.lines()
            .any(|l| l == "ExecStart=/usr/bin/credport serve"),
        "{unit}"
    );
    let runtime = tempfile::tempdir().unwrap();
    let verify = run(Command::new("systemd-analyze")
        .args([
            "--user",
            "verify",
            "/usr/lib/systemd/user/credport.service",
            "/usr/lib/systemd/user/credport.socket",
        ])
        .env("XDG_RUNTIME_DIR", runtime.path())
        .env("SYSTEMD_PAGER", "")
        .env("SYSTEMD_COLORS", "0"));
    let said = format!(
        "{}{}",
        text(&verify),
        String::from_utf8_lossy(&verify.stderr)
    );
    let problems: Vec<&str> = said.lines().filter(|l| l.contains("credport")).collect();
    assert!(
        verify.status.success() && problems.is_empty(),
        "systemd-analyze --user verify:\n{said}"
    );

    // man renders the compressed page with -l, and finds a command's page by name.
    let man = |args: &[&str]| {
        run_ok(
            Command::new("man")
                .args(args)
                .env("MANPAGER", "cat")
                .env("PAGER", "cat")
                .env("MANWIDTH", "100")
                .env("LANG", "C.UTF-8"),
        )
    };
    let page = text(&man(&["-l", "/usr/share/man/man1/credport.1.gz"]));
    assert!(
        page.contains("container-credentials") && page.contains("SYNOPSIS"),
        "{page}"
    );
    let page = text(&man(&["credport-init"]));
    assert!(page.contains("--editor"), "{page}");

    // bash-completion loads credport's completion from its standard directory on demand,
    // and it completes a subcommand.
    let program = r#"source /usr/share/bash-completion/bash_completion || exit 90
if declare -F _comp_load >/dev/null; then _comp_load credport; else __load_completion credport; fi
complete -p credport >&2 || exit 91
fn=$(complete -p credport | sed -n 's/.*-F \([^ ]*\).*/\1/p')
COMP_WORDS=(credport se); COMP_CWORD=1; COMP_LINE="credport se"; COMP_POINT=${#COMP_LINE}
COMPREPLY=()
"$fn" credport se credport
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let completed = text(&run_ok(Command::new("bash").args([
        "--norc",
        "--noprofile",
        "-c",
        program,
    ])));
    let got: Vec<&str> = completed.lines().map(str::trim).collect();
    assert_eq!(got, ["serve", "service"], "{completed}");

    // zsh finds _credport in its default fpath (vendor-completions) and completes with it.
    let screen = zsh_tab("credport se");
    assert!(
        screen.contains("credport serv") && screen.contains("service "),
        "zsh did not complete from the installed _credport:\n{screen:?}"
    );

    // Removal leaves none of its files.
    run_ok(Command::new("dpkg").args(["-r", "credport"]));
    assert!(!is_installed("credport"));
    let left: Vec<&PathBuf> = files.iter().filter(|p| p.exists()).collect();
    assert!(left.is_empty(), "left after dpkg -r: {left:?}");
}

#[test]
fn crate_is_ready_for_crates_io() {
    let listed = text(&run_ok(cargo().args([
        "package",
        "--list",
        "--locked",
        "--allow-dirty",
    ])));
    let files: Vec<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    for want in [
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "CHANGELOG.md",
        "LICENSE-MIT",
        "LICENSE-APACHE",
        "build.rs",
        "src/main.rs",
        "systemd/credport.service",
        "launchd/dev.credport.agent.plist",
    ] {
        assert!(files.contains(&want), "{want} not packaged:\n{listed}");
    }
    for banned in [
        "fuzz/",
        "tests/",
        "bench/",
        "node_modules",
        ".cache/",
        "scripts/",
    ] {
        assert!(
            !files
                .iter()
                .any(|f| f.starts_with(banned) || f.contains("/node_modules/")),
            "{banned} is packaged:\n{listed}"
        );
    }
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(repo_root().join(f)).ok())
        .map(|m| m.len())
        .sum();
    // Source and docs only: about 1.3 MB today. The bound catches a stray artifact (a
    // node_modules, a build, a capture: megabytes to gigabytes), far below crates.io's
    // 10 MB limit for the compressed crate.
    assert!(
        total < 2 * 1024 * 1024,
        "packaged files total {total} bytes (limit 2 MiB)"
    );

    // Metadata crates.io shows, straight from cargo.
    let meta = text(&run_ok(cargo().args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--locked",
    ])));
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    let pkg = &meta["packages"][0];
    for key in [
        "description",
        "license",
        "repository",
        "readme",
        "rust_version",
    ] {
        assert!(
            pkg[key].as_str().is_some_and(|v| !v.is_empty()),
            "{key} missing in Cargo.toml"
        );
    }
    assert_eq!(pkg["license"], "MIT OR Apache-2.0");
    for key in ["keywords", "categories"] {
        assert!(
            pkg[key].as_array().is_some_and(|v| !v.is_empty()),
            "{key} missing"
        );
    }

    // The real thing: package, build the packaged sources, stop short of uploading. In a
    // target directory of its own: the verification build would otherwise replace
    // target/debug/credport, the binary every other test runs, with one built from the
    // packaged copy. That directory is a second build of every dependency (about 1 GB), so
    // it goes when the test ends, passed or not, and is built without incremental caches.
    let scratch = tempfile::Builder::new()
        .prefix("publish-check")
        .tempdir_in(meta["target_directory"].as_str().unwrap())
        .unwrap();
    let target = scratch.path();
    let out = run_ok(
        cargo()
            .args(["publish", "--dry-run", "--locked", "--allow-dirty"])
            .env("CARGO_TARGET_DIR", target)
            .env("CARGO_INCREMENTAL", "0"),
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("aborting upload due to dry run"),
        "cargo publish --dry-run said:\n{said}"
    );
    // A dry run leaves the .crate in package/tmp-crate/ (older cargo: package/).
    let name = format!("credport-{}.crate", env!("CARGO_PKG_VERSION"));
    let dir = target.join("package");
    let krate = [dir.join("tmp-crate").join(&name), dir.join(&name)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no {name} under {}\n{said}", dir.display()));
    let size = std::fs::metadata(&krate).unwrap().len();
    assert!(size < 1024 * 1024, "{} is {size} bytes", krate.display());
}
