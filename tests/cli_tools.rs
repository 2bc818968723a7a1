//! What makes credport feel like an installed tool, checked with the real binary and the
//! real shells: `--version` names the commit, bash and zsh complete subcommands and values
//! from `credport completions`, and `credport man` pages render with `man -l`.
//!
//! bash, zsh and man-db come from `scripts/test-deps` (apt step); a missing one fails
//! loudly with that instruction.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::*;

fn run_ok(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{shown}: {e} (run `bash scripts/test-deps`)"));
    assert!(
        out.status.success(),
        "{shown} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn version_names_the_package_version_and_the_commit() {
    let h = TestHome::new();
    let out = run_ok(h.command().arg("--version"));
    let line = stdout(&out);
    let expected = format!("credport {}", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&expected), "{line}");
    // Built from this git checkout: the commit is HEAD's (build.rs reruns when HEAD moves).
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo_root())
        .output();
    match head {
        Ok(o) if o.status.success() => {
            let commit = String::from_utf8_lossy(&o.stdout).trim().to_string();
            assert_eq!(line.trim(), format!("{expected} (commit {commit})"));
        }
        _ => eprintln!(
            "NOTE: {} is not a git checkout (or git is missing): only the version is checked",
            repo_root().display()
        ),
    }
    // Subcommands say the same version.
    let sub = stdout(&run_ok(h.command().args(["init", "--version"])));
    assert!(sub.contains(env!("CARGO_PKG_VERSION")), "{sub}");
}

/// The candidates bash completion offers for `words` (the last one is being completed),
/// using the script `credport completions bash` printed, sourced into a plain bash.
pub fn bash_candidates(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        r#"source '{}' || exit 90
complete -p credport | grep -q -- '-F _credport' || {{ echo "credport not registered: $(complete -p credport)" >&2; exit 91; }}
COMP_WORDS=({})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
COMPREPLY=()
_credport credport "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        script.display(),
        quoted.join(" ")
    );
    let out = run_ok(Command::new("bash").args(["--norc", "--noprofile", "-c", &program]));
    stdout(&out)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_completes_subcommands_flags_and_values() {
    let h = TestHome::new();
    let script = h.path().join("credport.bash");
    let out = run_ok(h.command().args(["completions", "bash"]));
    std::fs::write(&script, &out.stdout).unwrap();

    struct Case {
        /// What is typed before the TAB.
        name: &'static str,
        words: &'static [&'static str],
        want: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "credport se<TAB>",
            words: &["credport", "se"],
            want: &["serve", "service"],
        },
        Case {
            name: "credport ini<TAB>",
            words: &["credport", "ini"],
            want: &["init"],
        },
        Case {
            name: "env --format d<TAB>",
            words: &["credport", "env", "--format", "d"],
            want: &["dotenv", "devcontainer", "docker-env"],
        },
        Case {
            name: "init --editor <TAB>",
            words: &["credport", "init", "--editor", ""],
            want: &["vscode", "jetbrains"],
        },
        Case {
            name: "completions z<TAB>",
            words: &["credport", "completions", "z"],
            want: &["zsh"],
        },
        Case {
            name: "init --f<TAB>",
            words: &["credport", "init", "--f"],
            want: &["--force"],
        },
    ];
    for case in &cases {
        let c = bash_candidates(&script, case.words);
        assert_eq!(c, case.want, "case {}", case.name);
    }
}

/// Types `line` and two TABs into an interactive zsh (driven through zsh/zpty, a real
/// terminal) whose fpath holds `_credport`, and returns what the terminal showed.
fn zsh_tab(fpath_dir: &Path, line: &str) -> String {
    let driver = fpath_dir.join("drive.zsh");
    std::fs::write(
        &driver,
        r#"zmodload zsh/zpty || exit 90
zpty z 'zsh -f -i'
zpty -w z "PS1='%% '; fpath=($1 \$fpath); autoload -Uz compinit; compinit -u -D; echo READY-\$((40+2))"
zpty -r z out '*READY-42*' || exit 91
zpty -w -n z "$2"$'\t\t'
sleep 2
out=''
while zpty -r -t z chunk; do out+=$chunk; done
print -r -- "$out"
zpty -d z
"#,
    )
    .unwrap();
    let out = run_ok(
        Command::new("timeout")
            .arg("30")
            .arg("zsh")
            .arg("-f")
            .arg(&driver)
            .arg(fpath_dir)
            .arg(line),
    );
    stdout(&out)
}

#[test]
fn zsh_completes_subcommands_and_values() {
    let h = TestHome::new();
    let dir = h.path().join("zfunc");
    std::fs::create_dir_all(&dir).unwrap();
    let out = run_ok(h.command().args(["completions", "zsh"]));
    std::fs::write(dir.join("_credport"), &out.stdout).unwrap();

    struct Case {
        name: &'static str,
        /// What is typed before the two TABs.
        line: &'static str,
        /// What the terminal shows, each.
        shows: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "ambiguous: the common prefix is inserted and both commands are listed with their help",
            line: "credport se",
            shows: &["credport serv", "serve ", "service ", "Run the daemon"],
        },
        Case {
            name: "an unambiguous value is completed in place",
            line: "credport env --format dot",
            shows: &["--format dotenv"],
        },
        Case {
            name: "an unambiguous editor is completed in place",
            line: "credport init --editor vs",
            shows: &["--editor vscode"],
        },
    ];
    for case in &cases {
        let screen = zsh_tab(&dir, case.line);
        for want in case.shows {
            assert!(
                screen.contains(want),
                "case {}: {:?}<TAB><TAB> did not show {want:?}:\n{screen:?}",
                case.name,
                case.line
            );
        }
    }
}

#[test]
fn every_shell_gets_a_script() {
    let h = TestHome::new();
    for (shell, marker) in [
        ("bash", "complete -F _credport"),
        ("zsh", "#compdef credport"),
        ("fish", "complete -c credport"),
        ("elvish", "credport"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let text = stdout(&run_ok(h.command().args(["completions", shell])));
        assert!(text.contains(marker), "{shell}: no {marker:?} in\n{text}");
        assert!(text.contains("init"), "{shell}: init missing");
    }
}

#[test]
fn an_unknown_shell_is_refused() {
    let h = TestHome::new();
    let bad = h.run(&["completions", "tcsh"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("tcsh"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// Completions and man pages need no HOME.
#[test]
fn completions_need_no_home() {
    let mut c = Command::new(BIN);
    c.env_clear().args(["completions", "bash"]);
    run_ok(&mut c);
}

/// `man -l FILE` rendered to text with groff's warnings on; returns (text, warnings).
pub fn render_man(file: &Path) -> (String, String) {
    let out = run_ok(
        Command::new("man")
            .args(["--warnings", "-l"])
            .arg(file)
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .env("MANWIDTH", "100")
            .env("LANG", "C.UTF-8"),
    );
    (
        stdout(&out),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn man_pages_render_one_per_command() {
    let h = TestHome::new();
    let dir = h.path().join("man1");
    let listed = stdout(&run_ok(h.command().arg("man").arg("--out").arg(&dir)));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for want in [
        "credport.1",
        "credport-serve.1",
        "credport-init.1",
        "credport-completions.1",
        "credport-man.1",
        "credport-service-install.1",
        "credport-project-add.1",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.contains("help")),
        "no page for clap's help command: {names:?}"
    );
    assert_eq!(listed.lines().count(), names.len(), "{listed}");

    let (text, warnings) = render_man(&dir.join("credport-init.1"));
    for want in [
        "credport-init",
        "SYNOPSIS",
        "--editor",
        "--force",
        "jetbrains",
    ] {
        assert!(
            text.contains(want),
            "{want} not in the rendered page:\n{text}"
        );
    }
    assert!(warnings.trim().is_empty(), "groff warnings:\n{warnings}");
    let (text, warnings) = render_man(&dir.join("credport.1"));
    assert!(text.contains("container-credentials"), "{text}");
    assert!(text.contains("completions"), "{text}");
    assert!(warnings.trim().is_empty(), "groff warnings:\n{warnings}");

    // Without --out: credport(1) on stdout, the same page.
    let printed = stdout(&run_ok(h.command().arg("man")));
    assert!(
        printed == std::fs::read_to_string(dir.join("credport.1")).unwrap(),
        "`credport man` differs from credport.1 written by --out"
    );
}
