//! What `credport init` proposes for a project: the stage -> profile mapping that
//! `credport resolve` would use, rendered as a commented `.credport.toml`, and editor run
//! configurations (VS Code `launch.json`/`tasks.json`, JetBrains `.run/*.run.xml`) that
//! point at per-stage env files.
//!
//! Detection asks [`crate::scope::resolve`] (the resolution every command shares) once
//! without a stage and once per *candidate* stage. Candidates come from the project file
//! itself ([`candidate_stages`]: `.credport.toml` stages, SAM config environments, a
//! Serverless map keyed by the default stage such as `custom.myProfile`, `stages:` and
//! `params:` blocks), from credport's config, and from `--stage`; a candidate that does
//! not resolve is reported, never guessed. This module renders text only: the command
//! writes it. Nothing rendered here ever holds a token (the env files name a token
//! *file*, and they are git-ignored).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::projects::{ProjectKind, find_project_file};
use crate::scope::{Query, Scope};

/// The directory, relative to the project root, that holds the per-stage env files (it
/// ignores itself in git).
pub const ENV_DIR: &str = ".credport";

/// Why a configuration could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// An existing editor file is not plain JSON (VS Code allows comments), so it cannot
    /// be merged safely.
    #[error(
        "{file}: cannot merge into it ({reason}); add the entries `credport init --dry-run` prints by hand"
    )]
    NotMergeable {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// One stage that resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageFound {
    /// The stage.
    pub stage: String,
    /// The profile `resolve` gives it.
    pub profile: String,
    /// The rule that decided, in words.
    pub rule: String,
    /// The project name `resolve` gives this stage (SAM may name a stack per environment).
    pub project: String,
    /// The region, when the project says.
    pub region: Option<String>,
    /// Whether the profile exists in the AWS files.
    pub in_aws_files: bool,
}

impl StageFound {
    /// The rule without its stage part ("... with stage from --stage"): every candidate
    /// is resolved with an explicit stage, so that part says nothing.
    pub fn profile_rule(&self) -> &str {
        self.rule.split(" with ").next().unwrap_or(&self.rule)
    }
}

/// What `init` found in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// The project name (the default stage's, else the first resolved stage's, else the
    /// folder name).
    pub project: String,
    /// Where the files go: the directory of the project file, else the given directory.
    pub root: PathBuf,
    /// The project file that decided, if one did.
    pub file: Option<PathBuf>,
    /// Its kind.
    pub kind: Option<ProjectKind>,
    /// The stage `resolve` picks without `--stage`.
    pub default_stage: Option<String>,
    /// Every stage that resolved, by name.
    pub stages: Vec<StageFound>,
    /// Candidates that did not resolve, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Profile names in the AWS files.
    pub profiles: Vec<String>,
}

impl Detection {
    /// The region every resolved stage agrees on.
    pub fn region(&self) -> Option<String> {
        let mut regions = self.stages.iter().map(|s| s.region.clone());
        let first = regions.next()??;
        regions
            .all(|r| r.as_deref() == Some(first.as_str()))
            .then_some(first)
    }
}

/// Detects the mapping for `dir`. `extra_stages` are tried in addition to the
/// candidates; `profiles` are the names in the AWS files.
pub fn detect(
    dir: &Path,
    extra_stages: &[String],
    config: &Config,
    registered: &Config,
    profiles: &BTreeSet<String>,
    env: &dyn crate::env::Env,
) -> Detection {
    let resolve = |stage: Option<&str>| {
        let req = Query {
            dir: dir.to_path_buf(),
            stage: stage.map(str::to_string),
            ..Query::default()
        };
        crate::scope::resolve(&req, config, registered, env)
    };
    let mut skipped = Vec::new();
    let base = match resolve(None) {
        Ok(s) => Some(s),
        Err(e) => {
            skipped.push(("(default)".to_string(), e.to_string()));
            None
        }
    };
    let found_file = find_project_file(dir);
    let (file, kind) = match &base {
        Some(Scope {
            file: Some(f),
            kind,
            ..
        }) => (Some(f.clone()), *kind),
        _ => match &found_file {
            Some((f, k)) => (Some(f.clone()), Some(*k)),
            None => (None, None),
        },
    };
    let default_stage = base.as_ref().map(|s| s.stage.clone());
    let mut candidates: BTreeSet<String> = extra_stages.iter().cloned().collect();
    if let Some((f, k)) = &found_file {
        candidates.extend(candidate_stages(f, *k, default_stage.as_deref()));
    }
    if let Some(s) = &default_stage {
        candidates.insert(s.clone());
    }
    if let Some(p) = base.as_ref().and_then(|b| {
        config
            .projects
            .get(&b.project)
            .or(registered.projects.get(&b.project))
    }) {
        candidates.extend(p.stages.keys().cloned());
    }
    let mut stages = Vec::new();
    for c in &candidates {
        match resolve(Some(c)) {
            Ok(s) => stages.push(StageFound {
                in_aws_files: profiles.contains(&s.profile),
                stage: s.stage,
                profile: s.profile,
                rule: s.rule,
                project: s.project,
                region: s.region,
            }),
            Err(e) => skipped.push((c.clone(), e.to_string())),
        }
    }
    let root = base
        .as_ref()
        .and_then(|b| b.project_dir.clone())
        .or_else(|| {
            file.as_ref()
                .and_then(|f| f.parent().map(Path::to_path_buf))
        })
        .unwrap_or_else(|| dir.to_path_buf());
    let project = base
        .as_ref()
        .map(|b| b.project.clone())
        .or_else(|| stages.first().map(|s| s.project.clone()))
        .unwrap_or_else(|| {
            root.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "project".into())
        });
    Detection {
        project,
        root,
        file,
        kind,
        default_stage,
        stages,
        skipped,
        profiles: profiles.iter().cloned().collect(),
    }
}

/// The stages a project file names, without resolving anything: `.credport.toml`'s
/// `[stages]`, SAM's config environments, and for Serverless the keys of `stages:` and
/// `params:` (but `default`), of any `stages` list, and of any map that has the default
/// stage as a key (the `custom.myProfile` idiom). Unreadable files give none.
pub fn candidate_stages(
    file: &Path,
    kind: ProjectKind,
    default_stage: Option<&str>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(Some(text)) = crate::projects::files::read_text(file) else {
        return out;
    };
    let ext = file
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let doc = match (kind, ext.as_str()) {
        (ProjectKind::Credport, _) => {
            if let Ok(t) = crate::projects::credport_toml::parse(file, &text) {
                out.extend(t.stages.keys().cloned());
                out.extend(t.default_stage);
            }
            return out;
        }
        (ProjectKind::Cdk, _) => return out,
        (ProjectKind::Sam, "toml") => match toml::from_str::<toml::Table>(&text) {
            Ok(t) => {
                out.extend(
                    t.iter()
                        .filter(|(k, v)| k.as_str() != "version" && v.is_table())
                        .map(|(k, _)| k.clone()),
                );
                return keep_names(out);
            }
            Err(_) => return out,
        },
        (_, "json") => crate::projects::files::parse_json(file, &text).ok(),
        _ => crate::projects::files::parse_yaml(file, &text).ok(),
    };
    let Some(doc) = doc else { return out };
    if kind == ProjectKind::Sam {
        if let yaml_serde::Value::Mapping(m) = &doc {
            out.extend(
                m.iter()
                    .filter(|(k, v)| k.as_str() != Some("version") && v.is_mapping())
                    .filter_map(|(k, _)| k.as_str().map(str::to_string)),
            );
        }
        return keep_names(out);
    }
    if let yaml_serde::Value::Mapping(m) = &doc {
        for block in ["stages", "params"] {
            if let Some(yaml_serde::Value::Mapping(b)) = m.get(block) {
                out.extend(
                    b.keys()
                        .filter_map(|k| k.as_str())
                        .filter(|k| *k != "default")
                        .map(str::to_string),
                );
            }
        }
    }
    let mut budget = 10_000usize;
    walk_stage_maps(&doc, default_stage, 0, &mut budget, &mut out);
    keep_names(out)
}

fn keep_names(set: BTreeSet<String>) -> BTreeSet<String> {
    set.into_iter()
        .filter(|s| crate::config::check_name("stage", s).is_ok())
        .collect()
}

fn walk_stage_maps(
    v: &yaml_serde::Value,
    default_stage: Option<&str>,
    depth: usize,
    budget: &mut usize,
    out: &mut BTreeSet<String>,
) {
    if depth > 32 || *budget == 0 {
        return;
    }
    *budget -= 1;
    match v {
        yaml_serde::Value::Mapping(m) => {
            let keys: Vec<&str> = m.keys().filter_map(|k| k.as_str()).collect();
            if let Some(d) = default_stage
                && keys.len() == m.len()
                && keys.contains(&d)
                && keys
                    .iter()
                    .all(|k| crate::config::check_name("stage", k).is_ok())
            {
                out.extend(keys.iter().map(|k| k.to_string()));
            }
            for (k, child) in m {
                if k.as_str() == Some("stages")
                    && let yaml_serde::Value::Sequence(s) = child
                {
                    out.extend(s.iter().filter_map(|x| x.as_str()).map(str::to_string));
                }
                walk_stage_maps(child, default_stage, depth + 1, budget, out);
            }
        }
        yaml_serde::Value::Sequence(s) => {
            for child in s {
                walk_stage_maps(child, default_stage, depth + 1, budget, out);
            }
        }
        _ => {}
    }
}

/// A TOML key: bare when it can be, else quoted.
fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        toml_str(k)
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A comment's text on one line.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// The `.credport.toml` for `d`, with comments saying where each line came from (and
/// nothing about this machine: the file is committed).
pub fn render_credport_toml(d: &Detection) -> String {
    let mut o = String::new();
    o.push_str("# credport project file: which AWS profile serves each stage of this project.\n");
    o.push_str(
        "# Commit it: it holds profile *names* only (never keys or tokens). Each developer\n",
    );
    o.push_str("# keeps those profiles in their own ~/.aws; the team agrees on the stage names.\n");
    match (&d.file, d.kind) {
        (Some(f), Some(_)) => {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            o.push_str(&format!(
                "# Written by `credport init` from {name}; in this directory it now wins over {name}.\n"
            ));
        }
        _ => o.push_str("# Written by `credport init` (no project file was found).\n"),
    }
    o.push_str("# Check a stage with `credport resolve --stage STAGE`.\n\n");
    o.push_str(&format!("project = {}\n", toml_str(&d.project)));
    match &d.default_stage {
        Some(s) if d.stages.iter().any(|f| &f.stage == s) => {
            o.push_str(&format!("default_stage = {}\n", toml_str(s)));
        }
        _ => o.push_str("# default_stage = \"dev\"\n"),
    }
    match d.region() {
        Some(r) => o.push_str(&format!("region = {}\n", toml_str(&r))),
        None => o.push_str("# region = \"eu-west-1\"     # optional; else each profile's region\n"),
    }
    let projects: BTreeSet<&str> = d.stages.iter().map(|s| s.project.as_str()).collect();
    if projects.len() > 1 {
        o.push_str(&format!(
            "# Note: the project file names a different project per stage ({}); this file uses one.\n",
            projects.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    o.push_str("\n[stages]\n");
    if d.stages.is_empty() {
        o.push_str("# No stage resolved to a profile; map each stage to a profile name, e.g.\n");
        o.push_str("# dev = \"devAccount\"\n# prod = \"prodAccount\"\n");
    }
    for s in &d.stages {
        o.push_str(&format!("# {}\n", one_line(s.profile_rule())));
        o.push_str(&format!(
            "{} = {}\n",
            toml_key(&s.stage),
            toml_str(&s.profile)
        ));
    }
    for (stage, why) in &d.skipped {
        if stage != "(default)" && !d.stages.iter().any(|f| &f.stage == stage) {
            o.push_str(&format!(
                "# {} = \"\"    # not resolved: {}\n",
                toml_key(stage),
                one_line(why)
            ));
        }
    }
    o
}

/// The env file of a stage, relative to the project root.
pub fn env_file(stage: &str) -> String {
    format!("{ENV_DIR}/{stage}.env")
}

/// The command that writes a stage's env file (run from the project root).
pub fn env_command(stage: &str) -> String {
    format!(
        "credport env --stage {stage} --format dotenv > {}",
        env_file(stage)
    )
}

/// `.credport/.gitignore`: the env files name machine-local paths, so none is committed.
pub const ENV_DIR_GITIGNORE: &str =
    "# Written by `credport init`: per-developer env files (no secrets, but local paths).\n*\n";

fn vscode_task_label(stage: &str) -> String {
    format!("credport: env {stage}")
}

/// The launch configurations for `stages` (Python and Node, the current file), each with
/// the stage's `envFile` and the task that refreshes it.
pub fn vscode_launch_entries(stages: &[String]) -> Vec<serde_json::Value> {
    let mut v = Vec::new();
    for s in stages {
        let env_file = format!("${{workspaceFolder}}/{}", env_file(s));
        v.push(serde_json::json!({
            "name": format!("credport: Python file ({s})"),
            "type": "debugpy",
            "request": "launch",
            "program": "${file}",
            "cwd": "${workspaceFolder}",
            "console": "integratedTerminal",
            "envFile": env_file,
            "preLaunchTask": vscode_task_label(s),
        }));
        v.push(serde_json::json!({
            "name": format!("credport: Node file ({s})"),
            "type": "node",
            "request": "launch",
            "program": "${file}",
            "cwd": "${workspaceFolder}",
            "envFile": env_file,
            "preLaunchTask": vscode_task_label(s),
        }));
    }
    v
}

/// The tasks that rewrite each stage's env file.
pub fn vscode_task_entries(stages: &[String]) -> Vec<serde_json::Value> {
    stages
        .iter()
        .map(|s| {
            serde_json::json!({
                "label": vscode_task_label(s),
                "type": "shell",
                "command": env_command(s),
                "options": {"cwd": "${workspaceFolder}"},
                "presentation": {"reveal": "silent"},
                "problemMatcher": [],
            })
        })
        .collect()
}

/// Merges `entries` into the JSON document `existing` (or a new one) under `list`
/// (`configurations` or `tasks`), replacing entries with the same `key` (`name` or
/// `label`) and keeping every other one.
pub fn merge_vscode(
    file: &Path,
    existing: Option<&str>,
    version: &str,
    list: &str,
    key: &str,
    entries: Vec<serde_json::Value>,
) -> Result<String, ScaffoldError> {
    let not = |reason: String| ScaffoldError::NotMergeable {
        file: file.to_path_buf(),
        reason,
    };
    let mut doc = match existing {
        Some(text) if !text.trim().is_empty() => serde_json::from_str::<serde_json::Value>(text)
            .map_err(|e| not(format!("not plain JSON: {e}")))?,
        _ => serde_json::json!({ "version": version }),
    };
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| not("the top level is not an object".into()))?;
    let arr = obj
        .entry(list)
        .or_insert_with(|| serde_json::Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or_else(|| not(format!("`{list}` is not a list")))?;
    let ours: BTreeSet<String> = entries
        .iter()
        .filter_map(|e| e[key].as_str().map(str::to_string))
        .collect();
    arr.retain(|e| e[key].as_str().is_none_or(|n| !ours.contains(n)));
    arr.extend(entries);
    let mut text = serde_json::to_string_pretty(&doc).map_err(|e| not(e.to_string()))?;
    text.push('\n');
    Ok(text)
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// JetBrains shared run configurations (`.run/NAME.run.xml`) for one stage: a shell
/// configuration that rewrites the env file, and Python and Node.js configurations that
/// run it first and read the env file (Python: "Paths to .env files"; Node.js: node's own
/// `--env-file`). Returns (file name, contents).
pub fn jetbrains_run_configs(stage: &str) -> Vec<(String, String)> {
    let env_task = format!("credport: env {stage}");
    let env_path = format!("$PROJECT_DIR$/{}", env_file(stage));
    let before = format!(
        "    <method v=\"2\">\n      <option name=\"RunConfigurationTask\" enabled=\"true\" run_configuration_name=\"{}\" run_configuration_type=\"ShConfigurationType\" />\n    </method>\n",
        xml(&env_task)
    );
    let shell = format!(
        "<component name=\"ProjectRunConfigurationManager\">\n  <configuration default=\"false\" name=\"{name}\" type=\"ShConfigurationType\">\n    <option name=\"SCRIPT_TEXT\" value=\"{cmd}\" />\n    <option name=\"INDEPENDENT_SCRIPT_PATH\" value=\"true\" />\n    <option name=\"SCRIPT_PATH\" value=\"\" />\n    <option name=\"SCRIPT_OPTIONS\" value=\"\" />\n    <option name=\"INDEPENDENT_SCRIPT_WORKING_DIRECTORY\" value=\"true\" />\n    <option name=\"SCRIPT_WORKING_DIRECTORY\" value=\"$PROJECT_DIR$\" />\n    <option name=\"INDEPENDENT_INTERPRETER_PATH\" value=\"true\" />\n    <option name=\"INTERPRETER_PATH\" value=\"/bin/sh\" />\n    <option name=\"INTERPRETER_OPTIONS\" value=\"\" />\n    <option name=\"EXECUTE_IN_TERMINAL\" value=\"false\" />\n    <option name=\"EXECUTE_SCRIPT_FILE\" value=\"false\" />\n    <envs />\n    <method v=\"2\" />\n  </configuration>\n</component>\n",
        name = xml(&env_task),
        cmd = xml(&env_command(stage)),
    );
    let python = format!(
        "<component name=\"ProjectRunConfigurationManager\">\n  <configuration default=\"false\" name=\"credport: Python ({stage})\" type=\"PythonConfigurationType\" factoryName=\"Python\">\n    <option name=\"ENV_FILES\" value=\"{env}\" />\n    <option name=\"PARENT_ENVS\" value=\"true\" />\n    <envs>\n      <env name=\"PYTHONUNBUFFERED\" value=\"1\" />\n    </envs>\n    <option name=\"WORKING_DIRECTORY\" value=\"$PROJECT_DIR$\" />\n    <option name=\"SCRIPT_NAME\" value=\"\" />\n    <option name=\"PARAMETERS\" value=\"\" />\n{before}  </configuration>\n</component>\n",
        stage = xml(stage),
        env = xml(&env_path),
    );
    let node = format!(
        "<component name=\"ProjectRunConfigurationManager\">\n  <configuration default=\"false\" name=\"credport: Node.js ({stage})\" type=\"NodeJSConfigurationType\" node-parameters=\"--env-file={env}\" path-to-js-file=\"\" working-dir=\"$PROJECT_DIR$\">\n{before}  </configuration>\n</component>\n",
        stage = xml(stage),
        env = xml(&env_path),
    );
    vec![
        (format!("credport-env-{stage}.run.xml"), shell),
        (format!("credport-python-{stage}.run.xml"), python),
        (format!("credport-node-{stage}.run.xml"), node),
    ]
}

/// The stages the editor files are written for: every resolved stage.
pub fn editor_stages(d: &Detection) -> Vec<String> {
    let by_name: BTreeMap<&str, ()> = d.stages.iter().map(|s| (s.stage.as_str(), ())).collect();
    by_name.keys().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "service: orders\ncustom:\n  myStage: ${opt:stage, self:provider.stage}\n  myProfile:\n    prod: prodAccount\n    dev: devAccount\nprovider:\n  name: aws\n  stage: dev\n  region: us-east-1\n  profile: ${self:custom.myProfile.${self:custom.myStage}}\n";

    fn profiles(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn serverless_map_gives_every_stage_and_renders_parseable_toml() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("serverless.yml"), SEED).unwrap();
        let none = Config::default();
        let d = detect(
            t.path(),
            &[],
            &none,
            &none,
            &profiles(&["devAccount"]),
            &|_| None,
        );
        assert_eq!(d.project, "orders");
        assert_eq!(d.default_stage.as_deref(), Some("dev"));
        let map: Vec<(&str, &str)> = d
            .stages
            .iter()
            .map(|s| (s.stage.as_str(), s.profile.as_str()))
            .collect();
        assert_eq!(map, [("dev", "devAccount"), ("prod", "prodAccount")]);
        assert!(!d.stages[1].in_aws_files);
        let text = render_credport_toml(&d);
        let parsed = crate::projects::credport_toml::parse(Path::new("x"), &text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(parsed.project.as_deref(), Some("orders"));
        assert_eq!(parsed.default_stage.as_deref(), Some("dev"));
        assert_eq!(parsed.region.as_deref(), Some("us-east-1"));
        assert_eq!(parsed.stages.len(), 2);
        // The committed file says nothing about this machine's AWS files.
        assert!(!text.contains("AWS files"), "{text}");
    }

    #[test]
    fn unresolvable_extra_stage_is_reported_not_guessed() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("serverless.yml"), SEED).unwrap();
        let none = Config::default();
        let d = detect(
            t.path(),
            &["qa".into()],
            &none,
            &none,
            &BTreeSet::new(),
            &|_| None,
        );
        assert!(d.stages.iter().all(|s| s.stage != "qa"));
        assert!(
            d.skipped
                .iter()
                .any(|(s, why)| s == "qa" && why.contains("qa"))
        );
        let text = render_credport_toml(&d);
        assert!(text.contains("# qa = \"\""), "{text}");
        crate::projects::credport_toml::parse(Path::new("x"), &text).unwrap();
    }

    #[test]
    fn empty_directory_gives_a_skeleton_that_parses() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("my-app");
        std::fs::create_dir(&dir).unwrap();
        let none = Config::default();
        let d = detect(&dir, &[], &none, &none, &BTreeSet::new(), &|_| None);
        if d.file.is_some() {
            return; // a project file above the temp dir; nothing to check here
        }
        assert_eq!(d.project, "my-app");
        assert!(d.stages.is_empty());
        let text = render_credport_toml(&d);
        let parsed = crate::projects::credport_toml::parse(Path::new("x"), &text).unwrap();
        assert!(parsed.stages.is_empty());
        assert!(text.contains("# dev = "), "{text}");
    }

    #[test]
    fn sam_environments_are_candidates() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("samconfig.toml");
        std::fs::write(
            &f,
            "version = 0.1\n[default.deploy.parameters]\nprofile = \"d\"\n[prod.deploy.parameters]\nprofile = \"p\"\n",
        )
        .unwrap();
        let c = candidate_stages(&f, ProjectKind::Sam, None);
        assert_eq!(c.into_iter().collect::<Vec<_>>(), ["default", "prod"]);
    }

    #[test]
    fn stage_keys_that_need_quotes_are_quoted() {
        assert_eq!(toml_key("dev"), "dev");
        assert_eq!(toml_key("v1.2"), "\"v1.2\"");
    }

    #[test]
    fn vscode_merge_keeps_other_entries_and_replaces_ours() {
        let f = Path::new(".vscode/launch.json");
        let existing = r#"{"version":"0.2.0","configurations":[{"name":"mine","type":"node"},{"name":"credport: Node file (dev)","type":"old"}]}"#;
        let out = merge_vscode(
            f,
            Some(existing),
            "0.2.0",
            "configurations",
            "name",
            vscode_launch_entries(&["dev".into()]),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let names: Vec<&str> = v["configurations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "mine",
                "credport: Python file (dev)",
                "credport: Node file (dev)"
            ]
        );
        let e = merge_vscode(
            f,
            Some("// comment\n{}"),
            "0.2.0",
            "configurations",
            "name",
            vec![],
        )
        .unwrap_err();
        assert!(e.to_string().contains("launch.json"), "{e}");
    }

    #[test]
    fn jetbrains_configs_are_well_formed_enough() {
        let files = jetbrains_run_configs("dev");
        assert_eq!(files.len(), 3);
        for (name, text) in files {
            assert!(name.ends_with(".run.xml"));
            assert_eq!(text.matches("<configuration ").count(), 1, "{text}");
            assert!(text.contains("</component>"));
            assert!(text.contains(".credport/dev.env"), "{text}");
        }
    }
}
