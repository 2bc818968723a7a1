//! `credport allow` and `credport deny`, and the trust gate of `exec`, `env` and `resolve`.
//!
//! `allow` shows what a directory's project files map (stage -> profile -> role or account
//! when the AWS config says) and records it; `deny` forgets it. [`ensure`] is the one call
//! `exec`, `env` and `resolve` make before anything runs: when the scope's mapping (and the
//! stand-in stages a serverless command may run) comes from a project file the user has not
//! trusted, it asks once on a terminal (y/N) and records a yes, and without a terminal it
//! refuses, naming the command to run. The records and the decision live in `trust`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::cli::args::TrustArgs;
use crate::client::launch::StandinPlan;
use crate::config::{Config, ProjectFiles};
use crate::paths::Paths;
use crate::scope::{Query, Scope};
use crate::trust::{Mapping, Records, TrustError, Verdict, records_file};

/// What the AWS files say a profile reaches: its role, else its account, else its kind.
fn reaches(snapshot: &crate::profiles::Snapshot, profile: &str) -> String {
    let Some(p) = snapshot.profile(profile) else {
        return "not in your AWS files".into();
    };
    if let Some(role) = p.get("role_arn") {
        return format!("role {role}");
    }
    if let Some(account) = p.get("sso_account_id").or_else(|| p.get("aws_account_id")) {
        return format!("account {account}");
    }
    p.kind().to_string()
}

fn line(snapshot: &crate::profiles::Snapshot, m: &Mapping) -> String {
    // The rule without its stage part ("... with stage from --stage"): the stage is shown.
    let rule = m.rule.split(" with stage ").next().unwrap_or(&m.rule);
    format!(
        "  {} -> {} -> {}  ({rule})",
        m.stage,
        m.profile,
        reaches(snapshot, &m.profile),
    )
}

/// The project-file mappings a command would use that the user has not trusted: the
/// scope's (unless `pinned`: its profile came from the command line), and those of the
/// stand-in stages in `plan` (resolved from `dir` as `launch` resolves them).
#[allow(clippy::too_many_arguments)]
fn untrusted(
    records: &Records,
    config: &Config,
    registered: &Config,
    scope: &Scope,
    pinned: bool,
    plan: Option<&StandinPlan>,
    dir: &Path,
    env: &dyn crate::env::Env,
) -> Vec<(Mapping, Verdict)> {
    let mut mappings: Vec<Mapping> = Mapping::of_scope(scope)
        .filter(|_| !pinned)
        .into_iter()
        .collect();
    let base = scope.project_dir.as_deref().unwrap_or(dir);
    for e in plan.map(|p| p.entries.as_slice()).unwrap_or_default() {
        if e.stage == scope.stage {
            continue;
        }
        let req = Query {
            dir: base.to_path_buf(),
            project: Some(scope.project.clone()),
            ..Query::default()
        };
        let sel = crate::projects::Selection {
            stage: Some(e.stage.clone()),
            ..scope.selection.clone()
        };
        if let Ok(s) = crate::scope::resolve_selection(&req, &sel, config, registered, env)
            && let Some(m) = Mapping::of_scope(&s)
            && !mappings.contains(&m)
        {
            mappings.push(m);
        }
    }
    mappings
        .into_iter()
        .map(|m| {
            let v = records.verdict(&m);
            (m, v)
        })
        .filter(|(_, v)| *v != Verdict::Trusted)
        .collect()
}

/// The trust gate of `exec`, `env` and `resolve`: `Ok` when every project-file mapping the
/// command uses is trusted (or `[trust] project_files = "all"`). Otherwise, on a terminal,
/// shows them and asks once (y/N), recording a yes; without one, refuses with the command
/// that allows them. `pinned`: the scope's profile came from the command line
/// (`exec --profile`), so only the stand-in stages of `plan` can need trust.
pub fn ensure(
    paths: &Paths,
    config: &Config,
    scope: &Scope,
    pinned: bool,
    plan: Option<&StandinPlan>,
    dir: &Path,
    env: &dyn crate::env::Env,
) -> Result<()> {
    let terminal = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    ensure_with(
        paths,
        config,
        scope,
        pinned,
        plan,
        dir,
        env,
        terminal.then(|| std::io::stdin().lock()),
    )
}

/// [`ensure`] with the terminal made explicit: `answers` is where a y/N is read from, or
/// `None` when there is no terminal to ask on.
#[allow(clippy::too_many_arguments)]
pub fn ensure_with(
    paths: &Paths,
    config: &Config,
    scope: &Scope,
    pinned: bool,
    plan: Option<&StandinPlan>,
    dir: &Path,
    env: &dyn crate::env::Env,
    answers: Option<impl BufRead>,
) -> Result<()> {
    if config.trust.project_files == ProjectFiles::All {
        return Ok(());
    }
    let file = records_file(&paths.state_dir);
    let records = Records::load(&file)?;
    let registered = crate::client::registered(paths);
    let pending = untrusted(&records, config, &registered, scope, pinned, plan, dir, env);
    if pending.is_empty() {
        return Ok(());
    }
    let refusals: Vec<TrustError> = pending
        .iter()
        .filter_map(|(m, v)| TrustError::refusal(m, v))
        .collect();
    let Some(mut answers) = answers else {
        for (m, _) in &pending {
            tracing::info!(project = %m.project, stage = %m.stage, profile = %m.profile,
                dir = %m.dir.display(), "trust refused");
        }
        let mut text = refusals
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; and ");
        text.push_str(" (no terminal to ask on)");
        bail!(text);
    };
    let snapshot = super::aws_files(paths).snapshot();
    let first = &pending[0].0;
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "credport: project {} in {} maps, from its own files:",
        first.project,
        first.dir.display()
    )?;
    for (m, v) in &pending {
        let mut l = line(&snapshot, m);
        if let Verdict::Changed { old } = v {
            l.push_str(&format!("  [changed: {old} -> {}]", m.profile));
        }
        writeln!(err, "{l}")?;
    }
    write!(
        err,
        "Project files come with the repository. Trust {} [y/N] ",
        if pending.len() == 1 {
            "this mapping?"
        } else {
            "these mappings?"
        }
    )?;
    err.flush()?;
    let mut answer = String::new();
    answers
        .read_line(&mut answer)
        .context("reading the answer")?;
    if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        for (m, _) in &pending {
            tracing::info!(project = %m.project, stage = %m.stage, profile = %m.profile,
                dir = %m.dir.display(), "trust refused");
        }
        bail!(
            "not trusted; nothing ran (allow it later with `{}`)",
            first.allow_command()
        );
    }
    let now = time::OffsetDateTime::now_utc();
    crate::trust::update(&file, |records| {
        for (m, _) in &pending {
            records.allow(m, now);
        }
        ((), true)
    })?;
    writeln!(err, "credport: trusted; recorded in {}", file.display())?;
    Ok(())
}

/// Why `scope`'s project-file mapping would be refused now (for `doctor`); `None` when it
/// is trusted, needs no trust, or the records cannot be read (reported when used).
pub fn refusal(paths: &Paths, config: &Config, scope: &Scope) -> Option<TrustError> {
    let mapping = Mapping::of_scope(scope)?;
    let records = Records::load(&records_file(&paths.state_dir)).ok()?;
    crate::trust::check(&config.trust, &records, &mapping).err()
}

/// Runs `credport allow`: shows the mapping of every stage the directory's files name (or
/// `--stage`) and records the project-file ones.
pub fn allow(
    paths: &Paths,
    args: &TrustArgs,
    env: &dyn crate::env::Env,
    out: &mut dyn Write,
) -> Result<()> {
    let config = super::load_config(paths)?;
    let registered = crate::client::registered(paths);
    let dir = dir_of(args)?;
    let snapshot = super::aws_files(paths).snapshot();
    let stages: Vec<Option<String>> = match &args.stage {
        Some(s) => vec![Some(s.clone())],
        None => {
            let names: std::collections::BTreeSet<String> =
                snapshot.profiles.keys().cloned().collect();
            let d = crate::scaffold::detect(&dir, &[], &config, &registered, &names, env);
            let mut v: Vec<Option<String>> = d.stages.into_iter().map(|s| Some(s.stage)).collect();
            if v.is_empty() {
                v.push(None);
            }
            v
        }
    };
    let file = records_file(&paths.state_dir);
    let now = time::OffsetDateTime::now_utc();
    // What to show, in order: a line, or a mapping to record (shown once recorded).
    let mut shown: Vec<Result<String, Mapping>> = Vec::new();
    let mut errors = Vec::new();
    let mut header = false;
    for stage in stages {
        let req = Query {
            dir: dir.clone(),
            stage: stage.clone(),
            ..Query::default()
        };
        let scope = match crate::scope::resolve(&req, &config, &registered, env) {
            Ok(s) => s,
            Err(e) => {
                errors.push(format!("{}: {e}", stage.as_deref().unwrap_or("(default)")));
                continue;
            }
        };
        if !header {
            let from = scope
                .file
                .as_ref()
                .map(|f| format!(" ({})", f.display()))
                .unwrap_or_default();
            shown.push(Ok(format!("project {}{from}", scope.project)));
            header = true;
        }
        shown.push(match Mapping::of_scope(&scope) {
            None => Ok(format!(
                "  {} -> {} -> {}  (credport's config: needs no trust)",
                scope.stage,
                scope.profile,
                reaches(&snapshot, &scope.profile)
            )),
            Some(m) => Err(m),
        });
    }
    let any = shown.iter().any(Result::is_err);
    let lines = crate::trust::update(&file, |records| {
        let lines: Vec<String> = shown
            .into_iter()
            .map(|item| match item {
                Ok(l) => l,
                Err(m) => {
                    let status = match records.allow(&m, now) {
                        Some(old) => format!("allowed (was {old} -> {})", m.profile),
                        None => "allowed".to_string(),
                    };
                    format!("{}  {status}", line(&snapshot, &m))
                }
            })
            .collect();
        (lines, any)
    })?;
    for l in lines {
        writeln!(out, "{l}")?;
    }
    for e in &errors {
        writeln!(out, "  not allowed: {e}")?;
    }
    if !any && !errors.is_empty() && !header {
        bail!(
            "nothing to allow in {}: {}",
            dir.display(),
            errors.join("; ")
        );
    }
    Ok(())
}

/// Runs `credport deny`: forgets what was allowed for the directory (or one stage of it).
pub fn deny(paths: &Paths, args: &TrustArgs, out: &mut dyn Write) -> Result<()> {
    let dir = dir_of(args)?;
    // The records name the project file's directory: the nearest one at or above `dir`.
    let dir = crate::projects::find_project_file(&dir)
        .and_then(|(f, _)| f.parent().map(Path::to_path_buf))
        .unwrap_or(dir);
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let file = records_file(&paths.state_dir);
    let gone = crate::trust::update(&file, |records| {
        let gone = records.forget(&dir, args.stage.as_deref());
        let changed = !gone.is_empty();
        (gone, changed)
    })?;
    if gone.is_empty() {
        writeln!(out, "nothing was allowed for {}", dir.display())?;
        return Ok(());
    }
    for r in gone {
        tracing::info!(project = %r.project, stage = %r.stage, profile = %r.profile,
            dir = %r.dir.display(), "trust denied");
        writeln!(
            out,
            "forgot {} -> {} ({})",
            r.stage,
            r.profile,
            r.dir.display()
        )?;
    }
    Ok(())
}

fn dir_of(args: &TrustArgs) -> Result<std::path::PathBuf> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir()?,
    };
    if !dir.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    Ok(dir)
}
