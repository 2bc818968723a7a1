//! Installing credport as a service: writing the unit files ([`super::units`]) and
//! running `systemctl --user` or `launchctl`; uninstalling; reporting what is installed.
//!
//! [`install`] writes the unit files atomically (temporary file, `fsync`, `rename`; mode
//! 0644, since they hold no secret), then runs the service manager's commands through a
//! caller-supplied [`Runner`], so tests observe every command without running any. It is
//! idempotent: running it again rewrites the files and restarts the daemon. With
//! `dry_run` it prints every file it would write (in full) and every command it would run,
//! and touches nothing. [`uninstall`] undoes it; [`status`] says what is installed and asks
//! the service manager.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use super::units::{
    LAUNCHD_LABEL, Platform, SYSTEMD_SERVICE, SYSTEMD_SOCKET, installed_paths, launchd_plist_path,
    unit_files,
};

/// Errors of install, uninstall and status; each names its file or command.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The binary path cannot be written into a unit.
    #[error("{path}: cannot be used as the service binary: {reason}")]
    BadBinary {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// A directory could not be created.
    #[error("cannot create {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A unit file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A unit file could not be removed.
    #[error("cannot remove {path}: {source}")]
    Remove {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A command could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The error.
        source: io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed ({status})")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
    },
    /// Printing the report failed.
    #[error("cannot print: {0}")]
    Output(#[from] io::Error),
}

fn check_binary(binary: &Path) -> Result<&str, ServiceError> {
    let bad = |reason| ServiceError::BadBinary {
        path: binary.to_path_buf(),
        reason,
    };
    let s = binary.to_str().ok_or_else(|| bad("not valid UTF-8"))?;
    if !binary.is_absolute() {
        return Err(bad("not an absolute path"));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(bad("contains a control character"));
    }
    Ok(s)
}

/// Directories install creates besides the unit directory, with their modes: the state
/// directory (the systemd sandbox can only write it if it exists), the launchd log
/// directory.
fn extra_dirs(platform: Platform, home: &Path) -> Vec<(PathBuf, u32)> {
    match platform {
        Platform::Systemd => vec![(home.join(".local/share/credport"), 0o700)],
        Platform::Launchd => vec![(home.join("Library/Logs"), 0o755)],
    }
}

fn launchd_domain() -> String {
    // SAFETY: getuid cannot fail.
    format!("gui/{}", unsafe { libc::getuid() })
}

/// A command install runs, and whether its failure is expected and ignored.
struct Step {
    argv: Vec<String>,
    may_fail: bool,
}

fn step(argv: &[&str]) -> Step {
    Step {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        may_fail: false,
    }
}

fn tolerant(argv: &[&str]) -> Step {
    Step {
        may_fail: true,
        ..step(argv)
    }
}

fn install_steps(platform: Platform, home: &Path) -> Vec<Step> {
    match platform {
        Platform::Systemd => vec![
            step(&["systemctl", "--user", "daemon-reload"]),
            step(&["systemctl", "--user", "enable", SYSTEMD_SOCKET]),
            // Stop the old daemon first: it holds the old socket, and the new one must run
            // the new binary and unit.
            step(&["systemctl", "--user", "stop", SYSTEMD_SERVICE]),
            step(&["systemctl", "--user", "restart", SYSTEMD_SOCKET]),
            // Start now rather than on the first request, so a broken setup shows here.
            step(&["systemctl", "--user", "start", SYSTEMD_SERVICE]),
        ],
        Platform::Launchd => {
            let domain = launchd_domain();
            let target = format!("{domain}/{LAUNCHD_LABEL}");
            let plist = launchd_plist_path(home).to_string_lossy().into_owned();
            vec![
                // Not loaded yet on a first install: failure is expected then.
                tolerant(&["launchctl", "bootout", &target]),
                step(&["launchctl", "enable", &target]),
                step(&["launchctl", "bootstrap", &domain, &plist]),
            ]
        }
    }
}

fn uninstall_steps(platform: Platform) -> Vec<Step> {
    match platform {
        Platform::Systemd => vec![tolerant(&[
            "systemctl",
            "--user",
            "disable",
            "--now",
            SYSTEMD_SOCKET,
            SYSTEMD_SERVICE,
        ])],
        Platform::Launchd => vec![tolerant(&[
            "launchctl",
            "bootout",
            &format!("{}/{LAUNCHD_LABEL}", launchd_domain()),
        ])],
    }
}

fn status_steps(platform: Platform) -> Vec<Step> {
    match platform {
        Platform::Systemd => vec![tolerant(&[
            "systemctl",
            "--user",
            "--no-pager",
            "status",
            SYSTEMD_SOCKET,
            SYSTEMD_SERVICE,
        ])],
        Platform::Launchd => vec![tolerant(&[
            "launchctl",
            "print",
            &format!("{}/{LAUNCHD_LABEL}", launchd_domain()),
        ])],
    }
}

fn shown(argv: &[String]) -> String {
    shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "))
}

fn run_steps(
    steps: &[Step],
    dry_run: bool,
    out: &mut dyn Write,
    runner: Runner<'_>,
) -> Result<(), ServiceError> {
    for s in steps {
        let command = shown(&s.argv);
        let note = if s.may_fail {
            " (a failure is ignored)"
        } else {
            ""
        };
        if dry_run {
            writeln!(out, "would run: {command}{note}")?;
            continue;
        }
        writeln!(out, "running: {command}")?;
        out.flush()?;
        let argv: Vec<&str> = s.argv.iter().map(String::as_str).collect();
        match runner(&argv) {
            Ok(status) if status.success() => {}
            Ok(status) if s.may_fail => writeln!(out, "  ({status}; ignored)")?,
            Ok(status) => return Err(ServiceError::Command { command, status }),
            Err(source) if s.may_fail => writeln!(out, "  (cannot run: {source}; ignored)")?,
            Err(source) => return Err(ServiceError::Spawn { command, source }),
        }
    }
    Ok(())
}

fn create_dir(
    path: &Path,
    mode: u32,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<(), ServiceError> {
    if path.is_dir() {
        return Ok(());
    }
    if dry_run {
        writeln!(
            out,
            "would create directory {} (mode {mode:04o})",
            path.display()
        )?;
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|source| ServiceError::CreateDir {
            path: path.to_path_buf(),
            source,
        })?;
    writeln!(out, "created directory {}", path.display())?;
    Ok(())
}

/// Writes a unit file atomically, mode 0644 (the service manager reads it).
fn write_unit(path: &Path, content: &str) -> io::Result<()> {
    crate::fsutil::write_atomic(path, content.as_bytes(), 0o644)
}

/// What [`install`] installs: the platform, the binary and home the units are rendered
/// for, the addresses the socket listens on, and whether to only print. [`uninstall`] uses
/// `platform`, `home` and `dry_run`; [`status`] compares against what `install` would
/// write for these options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    /// The service manager.
    pub platform: Platform,
    /// The credport binary the units run (an absolute path).
    pub binary: PathBuf,
    /// The home directory the unit files go under.
    pub home: PathBuf,
    /// The socket unit's listen addresses (systemd); empty for the default.
    pub listen: Vec<SocketAddr>,
    /// Print every file and command instead of writing and running them.
    pub dry_run: bool,
}

/// Runs one command (argv in, exit status out): [`run_command`] in the CLI, a recorder in
/// tests.
pub type Runner<'a> = &'a mut dyn FnMut(&[&str]) -> io::Result<ExitStatus>;

/// Installs credport as a service of `opts.platform` and (re)starts it.
///
/// Writes the unit files ([`unit_files`], systemd listening on `opts.listen`, empty for
/// the default) for `opts.binary` (an absolute path) under `opts.home`, creates the
/// directories the sandbox needs, then runs through `runner`:
/// * systemd: `systemctl --user daemon-reload`, `enable credport.socket`,
///   `stop credport.service`, `restart credport.socket`, `start credport.service`;
/// * launchd: `launchctl bootout gui/$UID/dev.credport.agent` (failure ignored: not
///   loaded), `launchctl enable ...`, `launchctl bootstrap gui/$UID <plist>`.
///
/// Running it again rewrites the files and restarts the daemon. With `dry_run`, prints
/// every file in full and every command, and neither writes nor runs anything. Progress
/// goes to `out`.
pub fn install(
    opts: &InstallOptions,
    out: &mut dyn Write,
    runner: Runner<'_>,
) -> Result<(), ServiceError> {
    let InstallOptions {
        platform,
        binary,
        home,
        listen,
        dry_run,
    } = opts;
    let (platform, dry_run) = (*platform, *dry_run);
    check_binary(binary)?;
    let files = unit_files(platform, binary, home, listen);
    if dry_run {
        writeln!(
            out,
            "dry run: installing credport as a {platform} service would do the following; nothing was written or run"
        )?;
    }
    for (dir, mode) in extra_dirs(platform, home) {
        create_dir(&dir, mode, dry_run, out)?;
    }
    for f in &files {
        let dir = f.path.parent().unwrap_or(Path::new("/"));
        create_dir(dir, 0o755, dry_run, out)?;
        if dry_run {
            writeln!(out, "would write {} (mode 0644):", f.path.display())?;
            out.write_all(f.content.as_bytes())?;
            if !f.content.ends_with('\n') {
                writeln!(out)?;
            }
            writeln!(out, "(end of {})", f.path.display())?;
        } else {
            write_unit(&f.path, &f.content).map_err(|source| ServiceError::Write {
                path: f.path.clone(),
                source,
            })?;
            writeln!(out, "wrote {}", f.path.display())?;
        }
    }
    run_steps(&install_steps(platform, home), dry_run, out, runner)?;
    if !dry_run {
        writeln!(out, "credport is installed as a {platform} service")?;
    }
    Ok(())
}

/// Stops credport, disables it and removes its unit files (systemd: then
/// `daemon-reload`). Nothing installed is not an error. `opts.dry_run` prints instead of
/// acting.
pub fn uninstall(
    opts: &InstallOptions,
    out: &mut dyn Write,
    runner: Runner<'_>,
) -> Result<(), ServiceError> {
    let (platform, home, dry_run) = (opts.platform, &opts.home, opts.dry_run);
    let paths = installed_paths(platform, home);
    let present: Vec<&PathBuf> = paths.iter().filter(|p| p.exists()).collect();
    if dry_run {
        writeln!(
            out,
            "dry run: uninstalling the {platform} service would do the following; nothing was removed or run"
        )?;
    }
    if present.is_empty() {
        writeln!(
            out,
            "credport is not installed as a {platform} service (no unit files)"
        )?;
        return Ok(());
    }
    run_steps(&uninstall_steps(platform), dry_run, out, runner)?;
    for p in present {
        if dry_run {
            writeln!(out, "would remove {}", p.display())?;
        } else {
            fs::remove_file(p).or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(ServiceError::Remove {
                    path: p.clone(),
                    source: e,
                }),
            })?;
            writeln!(out, "removed {}", p.display())?;
        }
    }
    if platform == Platform::Systemd {
        run_steps(
            &[step(&["systemctl", "--user", "daemon-reload"])],
            dry_run,
            out,
            runner,
        )?;
    }
    Ok(())
}

/// Reports on `out` whether each unit file is installed and whether it matches what
/// [`install`] would write now for `opts`, then asks the service manager
/// (`systemctl --user status`, `launchctl print`; their output goes wherever `runner`
/// sends it). A service that is not running is reported, not an error.
pub fn status(
    opts: &InstallOptions,
    out: &mut dyn Write,
    runner: Runner<'_>,
) -> Result<(), ServiceError> {
    let platform = opts.platform;
    let mut installed = false;
    for f in unit_files(platform, &opts.binary, &opts.home, &opts.listen) {
        let state = match fs::read_to_string(&f.path) {
            Ok(c) if c == f.content => {
                installed = true;
                "installed, up to date".to_string()
            }
            Ok(_) => {
                installed = true;
                "installed, differs from what `credport service install` would write now (run it again to update)".to_string()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => "not installed".to_string(),
            Err(e) => format!("unreadable: {e}"),
        };
        writeln!(out, "{}: {state}", f.path.display())?;
    }
    if !installed {
        writeln!(out, "install it with: credport service install")?;
        return Ok(());
    }
    let mut report = String::new();
    for s in status_steps(platform) {
        let command = shown(&s.argv);
        out.flush()?;
        let argv: Vec<&str> = s.argv.iter().map(String::as_str).collect();
        let _ = match runner(&argv) {
            Ok(st) if st.success() => writeln!(report, "`{command}`: running"),
            Ok(st) => writeln!(report, "`{command}`: not running ({st})"),
            Err(e) => writeln!(report, "cannot run `{command}`: {e}"),
        };
    }
    out.write_all(report.as_bytes())?;
    Ok(())
}

/// Runs `argv` with inherited stdin, stdout and stderr: the runner the CLI passes to
/// [`install`], [`uninstall`] and [`status`].
pub fn run_command(argv: &[&str]) -> io::Result<ExitStatus> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    std::process::Command::new(program).args(args).status()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn ok() -> io::Result<ExitStatus> {
        Ok(ExitStatus::from_raw(0))
    }

    fn opts(platform: Platform, binary: &str, home: &Path, dry_run: bool) -> InstallOptions {
        InstallOptions {
            platform,
            binary: binary.into(),
            home: home.to_path_buf(),
            listen: Vec::new(),
            dry_run,
        }
    }

    #[test]
    fn install_writes_runs_and_is_idempotent() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path();
        let systemd = opts(Platform::Systemd, "/usr/bin/credport", home, false);
        for _ in 0..2 {
            let mut ran = Vec::new();
            let mut out = Vec::new();
            install(&systemd, &mut out, &mut |a| {
                ran.push(a.join(" "));
                ok()
            })
            .unwrap();
            assert_eq!(
                ran,
                [
                    "systemctl --user daemon-reload",
                    "systemctl --user enable credport.socket",
                    "systemctl --user stop credport.service",
                    "systemctl --user restart credport.socket",
                    "systemctl --user start credport.service",
                ]
            );
        }
        let unit = home.join(".config/systemd/user/credport.service");
        let text = fs::read_to_string(&unit).unwrap();
        assert!(text.contains("ExecStart=/usr/bin/credport serve\n"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&unit).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let state = home.join(".local/share/credport");
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let leftovers: Vec<_> = fs::read_dir(unit.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");

        let mut out = Vec::new();
        let mut calls = 0;
        status(&systemd, &mut out, &mut |_| {
            calls += 1;
            Ok(ExitStatus::from_raw(3 << 8))
        })
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("credport.service: installed, up to date"),
            "{text}"
        );
        assert!(text.contains("not running"), "{text}");
        assert_eq!(calls, 1);

        let mut ran = Vec::new();
        uninstall(&systemd, &mut Vec::new(), &mut |a| {
            ran.push(a.join(" "));
            ok()
        })
        .unwrap();
        assert!(!unit.exists());
        assert_eq!(ran.last().unwrap(), "systemctl --user daemon-reload");
        // Uninstalling again: nothing to do, nothing run.
        uninstall(&systemd, &mut Vec::new(), &mut |_| panic!("ran")).unwrap();
    }

    #[test]
    fn failures_name_the_command_and_tolerated_ones_are_ignored() {
        let t = tempfile::tempdir().unwrap();
        let bin = "/usr/bin/credport";
        let systemd = opts(Platform::Systemd, bin, t.path(), false);
        let err = install(&systemd, &mut Vec::new(), &mut |a| {
            Ok(ExitStatus::from_raw(if a.contains(&"enable") {
                1 << 8
            } else {
                0
            }))
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("`systemctl --user enable credport.socket` failed"),
            "{err}"
        );
        let err = install(&systemd, &mut Vec::new(), &mut |_| {
            Err(io::Error::new(io::ErrorKind::NotFound, "no systemctl"))
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot run `systemctl --user daemon-reload`"),
            "{err}"
        );
        // launchd: bootout of a service that is not loaded fails, and that is fine.
        let mut ran = Vec::new();
        let launchd = opts(Platform::Launchd, bin, t.path(), false);
        install(&launchd, &mut Vec::new(), &mut |a| {
            ran.push(a.join(" "));
            Ok(ExitStatus::from_raw(if a[1] == "bootout" {
                3 << 8
            } else {
                0
            }))
        })
        .unwrap();
        assert_eq!(ran.len(), 3);
        assert!(ran[2].starts_with("launchctl bootstrap gui/"), "{ran:?}");
        assert!(ran[2].ends_with("/Library/LaunchAgents/dev.credport.agent.plist"));
        let relative = opts(Platform::Systemd, "credport", t.path(), true);
        let err = install(&relative, &mut Vec::new(), &mut |_| ok()).unwrap_err();
        assert!(err.to_string().contains("not an absolute path"), "{err}");
    }

    #[test]
    fn dry_run_prints_everything_and_touches_nothing() {
        let t = tempfile::tempdir().unwrap();
        let bin = Path::new("/opt/credport/bin/credport");
        let launchd = opts(
            Platform::Launchd,
            "/opt/credport/bin/credport",
            t.path(),
            true,
        );
        let mut out = Vec::new();
        install(&launchd, &mut out, &mut |_| panic!("ran")).unwrap();
        let text = String::from_utf8(out).unwrap();
        let plist = launchd_plist_path(t.path());
        assert!(
            text.contains(&format!("would write {} (mode 0644):\n", plist.display())),
            "{text}"
        );
        assert!(
            text.contains(&super::super::units::render_launchd_plist(bin, t.path())),
            "{text}"
        );
        assert!(
            text.contains("would run: launchctl bootstrap gui/"),
            "{text}"
        );
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 0);
    }
}
