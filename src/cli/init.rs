//! `credport init`: detect a project's stage -> profile mapping (as `resolve` sees it),
//! show it, and write a `.credport.toml` to commit, plus editor run configurations with
//! `--editor`. The detection and the text live in `scaffold`; this file decides what to
//! write, refuses to overwrite without `--force`, and writes.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cli::args::{Editor, EnvArgs, EnvFormat, InitArgs, ScopeArgs};
use crate::paths::Paths;
use crate::scaffold::{self, Detection};

/// One file `init` would write.
struct Planned {
    path: PathBuf,
    contents: String,
    /// Existed before with other contents (`--force` allows replacing or merging it).
    existed: bool,
    /// Exists with exactly these contents: nothing to write.
    unchanged: bool,
}

/// Runs `credport init`.
pub fn run(
    paths: &Paths,
    args: &InitArgs,
    env: &dyn crate::env::Env,
    out: &mut dyn Write,
) -> Result<()> {
    let config = super::load_config(paths)?;
    let registered = crate::client::registered(paths);
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir()?,
    };
    if !dir.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    for s in &args.stages {
        crate::config::check_name("stage", s).map_err(anyhow::Error::msg)?;
    }
    let store = crate::profiles::store::ProfileStore::open(paths.aws.clone());
    let profiles: BTreeSet<String> = store.snapshot().profiles.keys().cloned().collect();
    let d = scaffold::detect(&dir, &args.stages, &config, &registered, &profiles, env);
    report(&d, out)?;
    for s in &args.stages {
        if let Some((_, why)) = d.skipped.iter().find(|(c, _)| c == s) {
            bail!("stage {s} does not resolve: {why}");
        }
    }
    let stages = scaffold::editor_stages(&d);
    if !args.editor.is_empty() && stages.is_empty() {
        bail!(
            "no stage resolves to a profile, so there is nothing to run from an editor yet: map the stages in {} first",
            d.root.join(".credport.toml").display()
        );
    }

    let mut plan = Vec::new();
    let toml_path = d.root.join(".credport.toml");
    let keep_toml = toml_path.exists() && !args.force && !args.editor.is_empty();
    if keep_toml {
        writeln!(
            out,
            "keeping {} (it exists; --force replaces it)",
            toml_path.display()
        )?;
    } else {
        plan.push(planned(toml_path, scaffold::render_credport_toml(&d)));
    }
    for editor in dedup(&args.editor) {
        match editor {
            Editor::Vscode => {
                let launch = d.root.join(".vscode/launch.json");
                let text = scaffold::merge_vscode(
                    &launch,
                    existing(&launch)?.as_deref(),
                    "0.2.0",
                    "configurations",
                    "name",
                    scaffold::vscode_launch_entries(&stages),
                )?;
                plan.push(planned(launch, text));
                let tasks = d.root.join(".vscode/tasks.json");
                let text = scaffold::merge_vscode(
                    &tasks,
                    existing(&tasks)?.as_deref(),
                    "2.0.0",
                    "tasks",
                    "label",
                    scaffold::vscode_task_entries(&stages),
                )?;
                plan.push(planned(tasks, text));
            }
            Editor::Jetbrains => {
                for s in &stages {
                    for (name, text) in scaffold::jetbrains_run_configs(s) {
                        plan.push(planned(d.root.join(".run").join(name), text));
                    }
                }
            }
        }
    }
    if !args.editor.is_empty() {
        plan.push(planned(
            d.root.join(scaffold::ENV_DIR).join(".gitignore"),
            scaffold::ENV_DIR_GITIGNORE.to_string(),
        ));
    }

    let conflicts: Vec<String> = plan
        .iter()
        .filter(|p| p.existed && !args.force && !is_env_dir(&d.root, &p.path))
        .map(|p| p.path.display().to_string())
        .collect();
    if !conflicts.is_empty() {
        bail!(
            "{} already exist{}; nothing was written (--force replaces .credport.toml and .run files and merges into launch.json/tasks.json)",
            conflicts.join(", "),
            if conflicts.len() == 1 { "s" } else { "" }
        );
    }

    if args.dry_run {
        for p in &plan {
            writeln!(out, "--- {} (not written: --dry-run)", p.path.display())?;
            out.write_all(p.contents.as_bytes())?;
        }
        if !args.editor.is_empty() {
            for s in &stages {
                writeln!(
                    out,
                    "--- {} (not written: --dry-run; `{}`)",
                    d.root.join(scaffold::env_file(s)).display(),
                    scaffold::env_command(s)
                )?;
            }
        }
        return Ok(());
    }
    for p in &plan {
        if p.unchanged {
            writeln!(out, "unchanged {}", p.path.display())?;
            continue;
        }
        write_file(&p.path, p.contents.as_bytes(), 0o644)?;
        writeln!(
            out,
            "{} {}",
            if p.existed { "updated" } else { "wrote" },
            p.path.display()
        )?;
    }
    if !args.editor.is_empty() {
        for s in &stages {
            let file = d.root.join(scaffold::env_file(s));
            let mut buf = Vec::new();
            super::env::run(paths, &env_args(&d.root, s), env, &mut buf)
                .with_context(|| format!("writing {}", file.display()))?;
            write_file(&file, &buf, 0o600)?;
            writeln!(out, "wrote {} (git-ignored)", file.display())?;
        }
    }
    writeln!(
        out,
        "next: check with `credport resolve --stage STAGE`, then commit .credport.toml{}",
        if args.editor.is_empty() {
            ""
        } else {
            " and the editor files (not .credport/)"
        }
    )?;
    Ok(())
}

/// What `credport env --stage STAGE --format dotenv` would get, run in `root`.
fn env_args(root: &Path, stage: &str) -> EnvArgs {
    EnvArgs {
        scope: ScopeArgs {
            project: None,
            stage: Some(stage.to_string()),
            aws_profile: None,
            param: Vec::new(),
            dir: Some(root.to_path_buf()),
        },
        format: EnvFormat::Dotenv,
        env_token: false,
        url: None,
        service: "app".into(),
    }
}

fn planned(path: PathBuf, contents: String) -> Planned {
    let current = std::fs::read(&path).ok();
    let unchanged = current.as_deref() == Some(contents.as_bytes());
    Planned {
        existed: current.is_some() && !unchanged,
        unchanged,
        path,
        contents,
    }
}

fn is_env_dir(root: &Path, p: &Path) -> bool {
    p.starts_with(root.join(scaffold::ENV_DIR))
}

/// An existing file's text, to merge into (writing the merge still needs `--force`
/// unless it changes nothing).
fn existing(path: &Path) -> Result<Option<String>> {
    if !path.exists() {
        return Ok(None);
    }
    crate::fsutil::read_text(path)
        .with_context(|| format!("reading {}", path.display()))
        .map(|t| t.or(Some(String::new())))
}

fn dedup(editors: &[Editor]) -> Vec<Editor> {
    let mut v: Vec<Editor> = Vec::new();
    for e in editors {
        if !v.contains(e) {
            v.push(*e);
        }
    }
    v
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    crate::fsutil::write_atomic(path, contents, mode)
        .with_context(|| format!("writing {}", path.display()))
}

/// Prints what was found: the project, each stage's profile and rule, what did not
/// resolve, and the profiles in the AWS files.
fn report(d: &Detection, out: &mut dyn Write) -> Result<()> {
    let from = match &d.file {
        Some(f) => format!("from {}", f.display()),
        None if d.stages.is_empty() => "no project file found".to_string(),
        None => "from credport's config".to_string(),
    };
    writeln!(out, "project {} ({from})", d.project)?;
    let width = d.stages.iter().map(|s| s.stage.len()).max().unwrap_or(0);
    for s in &d.stages {
        let default = if d.default_stage.as_deref() == Some(s.stage.as_str()) {
            " (default)"
        } else {
            ""
        };
        let missing = if s.in_aws_files {
            ""
        } else {
            " [not in your AWS files]"
        };
        writeln!(
            out,
            "  {:width$} -> {}{missing}{default}    {}",
            s.stage,
            s.profile,
            s.profile_rule()
        )?;
    }
    for (stage, why) in &d.skipped {
        if !d.stages.iter().any(|f| &f.stage == stage) {
            writeln!(out, "  {stage}: not resolved: {why}")?;
        }
    }
    if d.profiles.is_empty() {
        writeln!(out, "profiles in your AWS files: none")?;
    } else {
        writeln!(out, "profiles in your AWS files: {}", d.profiles.join(", "))?;
    }
    Ok(())
}
