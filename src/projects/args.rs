//! Owns reading a wrapped command line (`credport exec -- CMD ARGS...`): which framework
//! invocations it runs, and the stage/profile/param flags each one carries.
//!
//! [`inspect`] is the one detection function `resolve`, `exec` and `env` share. It finds the
//! Serverless Framework, SAM and CDK where people really start them:
//!
//! * directly (`serverless`, `sls`, `sam`, `cdk`, any path to them, `.cmd`/`.exe`,
//!   `serverless@3`), through a package runner (`npx`, `pnpx`, `bunx`, `bun x`,
//!   `npm exec`/`npm x`, `yarn exec|dlx`, `pnpm exec|dlx`), or as
//!   `node .../serverless.js` / `node .../bin/serverless`;
//! * inside a shell command string (`sh -c '...'`, `bash -lc '...'`) or a shell script file
//!   (`./invoke.sh`, `bash invoke.sh`), split into simple commands at `;`, `&&`, `||`, `|`,
//!   `&` and newlines, with leading `VAR=value` assignments and `cd DIR` followed;
//! * inside `package.json` scripts: `npm run X` (with its `preX`/`postX`), `npm start|test`,
//!   `yarn [run] X`, `pnpm [run] X`, `bun run X`; arguments after the script name (after `--`
//!   for npm) are appended to the script, as the package managers do;
//! * behind `env`, `exec`, `command`, `time`, `nohup`, `nice`.
//!
//! A command that may start anything credport cannot read (`make`, `just`, a task runner, an
//! unreadable script) makes the result [`Inspection::opaque`]. Any other program (`pytest`,
//! `grep`, `python`, `tar`) runs no framework, and its flags are never read: `pytest -s` and
//! `grep -s prod` are not stages.
//!
//! Flags are read per tool ([`Invocation::selection`]):
//! * Serverless v3 (`lib/cli/parse-args.js`): a flag matches `^-(?:-NAME|[a-z]+)(?:=VALUE|$)`;
//!   `--stage X`, `--stage=X`, `-s X`, `-s=X` set the stage; `--aws-profile`, `--param k=v`
//!   (repeatable) and every other option with a value (`--region eu-west-1`, `-r eu-west-1`)
//!   are kept by their full names for `${opt:NAME}`. A value is the next word unless that word
//!   is missing, `--` or itself flag-like. `-sprod` is **not** `-s prod`: Serverless reads it
//!   as boolean short flags. A repeated `--stage`: the last one wins.
//! * SAM (click): `--config-env X` is the stage, `--profile X` the profile.
//! * CDK: `--profile X` is the profile (CDK has no stage flag).
//!
//! Parsing stops at a bare `--`. Surrounding quotes that survived (an argv built without a
//! shell: `--param="a=b"`) are stripped from values.

use std::path::{Path, PathBuf};

use super::Selection;

/// A framework credport reads flags from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    /// The Serverless Framework (`serverless`, `sls`).
    Serverless,
    /// The AWS SAM CLI.
    Sam,
    /// The AWS CDK CLI.
    Cdk,
}

/// One framework invocation found in a wrapped command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The framework.
    pub tool: Tool,
    /// Its arguments, after its own name.
    pub args: Vec<String>,
    /// The directory it runs in (a `cd` in a script changes it).
    pub dir: PathBuf,
    /// How it was reached when not directly (`npm run invoke:prod`, `sh -c`); `None` when it
    /// is the wrapped command itself.
    pub via: Option<String>,
    /// For a direct invocation, the index in the wrapped argv where a flag can be inserted
    /// (before a bare `--`, else at the end).
    pub insert_at: Option<usize>,
}

impl Invocation {
    /// The stage/profile/param flags this invocation carries.
    pub fn selection(&self) -> Selection {
        let mut sel = Selection::default();
        match self.tool {
            Tool::Serverless => parse_serverless(&self.args, &mut sel),
            Tool::Sam => parse_click_like(&self.args, &mut sel, Some("--config-env")),
            Tool::Cdk => parse_click_like(&self.args, &mut sel, None),
        }
        sel
    }

    /// The command as a person would read it (`serverless invoke local -s prod`).
    pub fn display(&self) -> String {
        let name = match self.tool {
            Tool::Serverless => "serverless",
            Tool::Sam => "sam",
            Tool::Cdk => "cdk",
        };
        let mut words = vec![name.to_string()];
        words.extend(self.args.iter().cloned());
        shlex::try_join(words.iter().map(String::as_str)).unwrap_or_else(|_| words.join(" "))
    }
}

/// What a wrapped command line runs, as far as credport can read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspection {
    /// The framework invocations found, in order.
    pub invocations: Vec<Invocation>,
    /// Something in the command may start programs credport cannot see (`make`, a task
    /// runner, a script it could not read); named for messages.
    pub opaque: Option<String>,
}

impl Inspection {
    /// The Serverless invocations.
    pub fn serverless(&self) -> impl Iterator<Item = &Invocation> {
        self.invocations
            .iter()
            .filter(|i| i.tool == Tool::Serverless)
    }

    /// The first invocation's selection (what `resolve` reads), else an empty one.
    pub fn selection(&self) -> Selection {
        self.invocations
            .first()
            .map(Invocation::selection)
            .unwrap_or_default()
    }
}

/// How deep wrappers (scripts calling scripts) are followed.
const MAX_DEPTH: usize = 6;
/// Largest script file or package.json read.
const MAX_SCRIPT_BYTES: u64 = 1024 * 1024;

/// Programs that run package.json scripts or package binaries.
const RUNNERS: &[&str] = &["npx", "pnpx", "bunx", "npm", "pnpm", "yarn", "bun"];
/// Programs that run a command given as their arguments.
const PREFIXES: &[&str] = &["exec", "command", "time", "nohup", "builtin"];
/// Shells whose `-c` string or script file is read.
const SHELLS: &[&str] = &["sh", "bash", "zsh", "dash", "ksh", "ash"];
/// Programs that start commands from files credport does not read.
const TASK_RUNNERS: &[&str] = &[
    "make",
    "gmake",
    "just",
    "task",
    "turbo",
    "nx",
    "lerna",
    "concurrently",
    "npm-run-all",
    "run-s",
    "run-p",
    "nodemon",
    "watchexec",
    "entr",
    "xargs",
    "fish",
];

/// Reads what `argv` (the wrapped command, run in `dir`) starts.
pub fn inspect(argv: &[String], dir: &Path) -> Inspection {
    let mut out = Inspection::default();
    walk(argv, dir, None, Some(0), 0, &mut out);
    out
}

/// Reads the flags of `argv` when it is itself a framework invocation (or reaches one
/// through the wrappers [`inspect`] follows), in the current directory.
pub fn parse_wrapped_args(argv: &[String]) -> Selection {
    inspect(argv, Path::new(".")).selection()
}

fn base_name(word: &str) -> String {
    let base = word.rsplit(['/', '\\']).next().unwrap_or(word);
    let base = base
        .strip_suffix(".cmd")
        .or_else(|| base.strip_suffix(".exe"))
        .unwrap_or(base);
    // `serverless@3`, `@aws-cdk/cli` (its last segment is `cli`: see `tool_of`)
    let base = base.split('@').next().unwrap_or(base);
    base.to_ascii_lowercase()
}

fn tool_of(word: &str) -> Option<Tool> {
    let lower = word.to_ascii_lowercase();
    if lower.starts_with("@aws-cdk/cli") || lower.starts_with("aws-cdk") {
        return Some(Tool::Cdk);
    }
    match base_name(word).as_str() {
        "serverless" | "sls" => Some(Tool::Serverless),
        "sam" => Some(Tool::Sam),
        "cdk" => Some(Tool::Cdk),
        _ => None,
    }
}

fn is_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

fn resolve_dir(dir: &Path, to: &str) -> PathBuf {
    let p = Path::new(to);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// `insert`: the index in the top-level argv of `words[0]` when `words` is a suffix of it.
fn walk(
    words: &[String],
    dir: &Path,
    via: Option<&str>,
    index: Option<usize>,
    depth: usize,
    out: &mut Inspection,
) {
    if depth > MAX_DEPTH {
        out.opaque
            .get_or_insert_with(|| "wrappers nested too deeply".into());
        return;
    }
    let mut i = 0;
    while i < words.len() && is_assignment(&words[i]) {
        i += 1;
    }
    let Some(first) = words.get(i) else { return };
    let rest = &words[i + 1..];
    let at = |skip: usize| index.map(|x| x + i + 1 + skip);
    let found = |tool: Tool, args: &[String], out: &mut Inspection, start: Option<usize>| {
        let insert_at = start.map(|s| {
            let dd = args.iter().position(|a| a == "--");
            s + dd.unwrap_or(args.len())
        });
        out.invocations.push(Invocation {
            tool,
            args: args.to_vec(),
            dir: dir.to_path_buf(),
            via: via.map(str::to_string),
            insert_at,
        });
    };
    if let Some(tool) = tool_of(first) {
        found(tool, rest, out, at(0));
        return;
    }
    let name = base_name(first);
    match name.as_str() {
        "env" => {
            // env [-i] [-u NAME] [NAME=value]... CMD
            let mut j = 0;
            while j < rest.len() {
                let w = &rest[j];
                if w == "-u" || w == "--unset" || w == "-C" || w == "--chdir" {
                    j += 2;
                } else if w.starts_with('-') || is_assignment(w) {
                    j += 1;
                } else {
                    break;
                }
            }
            walk(&rest[j.min(rest.len())..], dir, via, at(j), depth + 1, out);
        }
        "nice" => {
            let mut j = 0;
            while j < rest.len() && rest[j].starts_with('-') {
                j += if rest[j] == "-n" { 2 } else { 1 };
            }
            walk(&rest[j.min(rest.len())..], dir, via, at(j), depth + 1, out);
        }
        n if PREFIXES.contains(&n) => {
            let j = rest.iter().take_while(|w| w.starts_with('-')).count();
            walk(&rest[j..], dir, via, at(j), depth + 1, out);
        }
        "node" | "nodejs" => {
            let j = rest.iter().take_while(|w| w.starts_with('-')).count();
            if let Some(script) = rest.get(j) {
                let b = base_name(script);
                let b = b.trim_end_matches(".js").trim_end_matches(".cjs");
                if matches!(b, "serverless" | "sls") {
                    found(Tool::Serverless, &rest[j + 1..], out, at(j + 1));
                }
            }
        }
        n if SHELLS.contains(&n) => shell(rest, dir, via, depth, out, first),
        n if RUNNERS.contains(&n) => runner(n, rest, dir, via, at(0), depth, out),
        n if TASK_RUNNERS.contains(&n) => {
            out.opaque.get_or_insert_with(|| {
                shlex::try_join(words.iter().map(String::as_str)).unwrap_or_else(|_| n.into())
            });
        }
        _ => {
            // A shell script run by its path: read it.
            let path = resolve_dir(dir, first);
            if first.contains('/')
                && let Some(text) = read_bounded(&path)
                && text.starts_with("#!")
                && text.lines().next().is_some_and(|l| {
                    SHELLS
                        .iter()
                        .any(|s| l.ends_with(&format!("/{s}")) || l.ends_with(&format!(" {s}")))
                })
            {
                script(&text, dir, &format!("script {first}"), depth, out);
            }
        }
    }
}

fn shell(
    rest: &[String],
    dir: &Path,
    via: Option<&str>,
    depth: usize,
    out: &mut Inspection,
    name: &str,
) {
    // sh [-opts] -c 'script' ...  |  sh [-opts] FILE
    let mut j = 0;
    while j < rest.len() {
        let w = &rest[j];
        if w == "-c" || (w.starts_with('-') && !w.starts_with("--") && w.contains('c')) {
            if let Some(text) = rest.get(j + 1) {
                let via = via
                    .map(|v| format!("{v}, {name} -c"))
                    .unwrap_or_else(|| format!("{name} -c"));
                script(text, dir, &via, depth, out);
            }
            return;
        }
        if w == "-o" || w == "+o" {
            j += 2;
            continue;
        }
        if w.starts_with('-') || w.starts_with('+') {
            j += 1;
            continue;
        }
        let path = resolve_dir(dir, w);
        match read_bounded(&path) {
            Some(text) => script(&text, dir, &format!("script {w}"), depth, out),
            None => {
                out.opaque
                    .get_or_insert_with(|| format!("{name} {w} (cannot read it)"));
            }
        }
        return;
    }
}

fn runner(
    name: &str,
    rest: &[String],
    dir: &Path,
    via: Option<&str>,
    index: Option<usize>,
    depth: usize,
    out: &mut Inspection,
) {
    // Skips runner options (`-y`, `--yes`, `-p pkg`, `--package=pkg`, `--silent`).
    let skip_opts = |from: usize| {
        let mut j = from;
        while j < rest.len() && rest[j].starts_with('-') && rest[j] != "--" {
            j += if matches!(rest[j].as_str(), "-p" | "--package" | "-w" | "--workspace") {
                2
            } else {
                1
            };
        }
        j.min(rest.len())
    };
    let at = |j: usize| index.map(|x| x + j);
    let run_bin = |j: usize, out: &mut Inspection| {
        let j = if rest.get(j).map(String::as_str) == Some("--") {
            j + 1
        } else {
            j
        };
        walk(&rest[j.min(rest.len())..], dir, via, at(j), depth + 1, out);
    };
    let j = skip_opts(0);
    let sub = rest.get(j).map(String::as_str);
    match (name, sub) {
        ("npx" | "pnpx" | "bunx", _) => run_bin(j, out),
        ("bun", Some("x"))
        | ("npm", Some("exec" | "x"))
        | ("yarn" | "pnpm", Some("exec" | "dlx")) => run_bin(skip_opts(j + 1), out),
        ("npm" | "pnpm" | "yarn" | "bun", Some("run" | "run-script" | "rum" | "urn")) => {
            let k = skip_opts(j + 1);
            if let Some(script_name) = rest.get(k) {
                package_script(name, script_name, &rest[k + 1..], dir, via, depth, out);
            }
        }
        ("npm", Some(s @ ("start" | "test" | "t" | "stop" | "restart"))) => {
            let s = if s == "t" { "test" } else { s };
            package_script(name, s, &rest[j + 1..], dir, via, depth, out);
        }
        ("yarn" | "pnpm", Some(s)) if !s.starts_with('-') => {
            // `yarn X`: a script if package.json has one, else a package binary.
            if scripts_of(dir).is_some_and(|(_, m)| m.contains_key(s)) {
                package_script(name, s, &rest[j + 1..], dir, via, depth, out);
            } else {
                run_bin(j, out);
            }
        }
        ("npm" | "pnpm" | "yarn" | "bun", None) => {}
        _ => {}
    }
}

/// The nearest package.json's directory and scripts.
fn scripts_of(dir: &Path) -> Option<(PathBuf, serde_json::Map<String, serde_json::Value>)> {
    for d in dir.ancestors() {
        let f = d.join("package.json");
        if f.is_file() {
            let text = read_bounded(&f)?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            let scripts = v.get("scripts")?.as_object()?.clone();
            return Some((d.to_path_buf(), scripts));
        }
    }
    None
}

fn package_script(
    manager: &str,
    name: &str,
    extra: &[String],
    dir: &Path,
    via: Option<&str>,
    depth: usize,
    out: &mut Inspection,
) {
    let Some((pkg_dir, scripts)) = scripts_of(dir) else {
        out.opaque
            .get_or_insert_with(|| format!("{manager} run {name} (no package.json with scripts)"));
        return;
    };
    let Some(body) = scripts.get(name).and_then(|v| v.as_str()) else {
        return;
    };
    let extra: Vec<&String> = if manager == "npm" {
        // npm passes only what follows `--`.
        match extra.iter().position(|a| a == "--") {
            Some(p) => extra[p + 1..].iter().collect(),
            None => Vec::new(),
        }
    } else {
        extra
            .iter()
            .skip_while(|a| a.as_str() == "--")
            .collect::<Vec<_>>()
    };
    let mut text = body.to_string();
    for a in extra {
        text.push(' ');
        text.push_str(
            &shlex::try_quote(a)
                .map(|c| c.into_owned())
                .unwrap_or_default(),
        );
    }
    let label = |n: &str| {
        let own = format!("{manager} run {n}");
        via.map(|v| format!("{v}, {own}")).unwrap_or(own)
    };
    let hooks = manager == "npm";
    if hooks && let Some(pre) = scripts.get(&format!("pre{name}")).and_then(|v| v.as_str()) {
        script(pre, &pkg_dir, &label(&format!("pre{name}")), depth, out);
    }
    script(&text, &pkg_dir, &label(name), depth, out);
    if hooks && let Some(post) = scripts.get(&format!("post{name}")).and_then(|v| v.as_str()) {
        script(post, &pkg_dir, &label(&format!("post{name}")), depth, out);
    }
}

fn read_bounded(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_SCRIPT_BYTES {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// Reads a shell command string: each simple command is walked, `cd DIR` followed.
fn script(text: &str, dir: &Path, via: &str, depth: usize, out: &mut Inspection) {
    let mut cwd = dir.to_path_buf();
    for words in split_commands(text) {
        let mut k = 0;
        while k < words.len() && is_assignment(&words[k]) {
            k += 1;
        }
        if words.get(k).map(String::as_str) == Some("cd") {
            if let Some(to) = words.get(k + 1) {
                cwd = resolve_dir(&cwd, to);
            }
            continue;
        }
        walk(&words, &cwd, Some(via), None, depth + 1, out);
    }
}

/// Splits shell text into simple commands of words: quotes (`'`, `"`) and backslashes are
/// honoured; `;`, `&`, `&&`, `|`, `||`, newlines, `(`, `)`, `{`, `}` separate commands;
/// `#` starts a comment at the start of a word. Substitutions (`$(...)`, backticks) stay
/// part of their word; credport never runs or expands anything.
pub fn split_commands(text: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    let end_word = |word: &mut String, in_word: &mut bool, words: &mut Vec<String>| {
        if *in_word {
            words.push(std::mem::take(word));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for d in chars.by_ref() {
                    if d == '\'' {
                        break;
                    }
                    word.push(d);
                }
            }
            '"' => {
                in_word = true;
                while let Some(d) = chars.next() {
                    match d {
                        '"' => break,
                        '\\' => {
                            if let Some(&n) = chars.peek()
                                && matches!(n, '"' | '\\' | '$' | '`' | '\n')
                            {
                                chars.next();
                                if n != '\n' {
                                    word.push(n);
                                }
                            } else {
                                word.push('\\');
                            }
                        }
                        _ => word.push(d),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') | None => {}
                    Some(n) => word.push(n),
                }
            }
            '#' if !in_word => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
                end_word(&mut word, &mut in_word, &mut words);
                if !words.is_empty() {
                    commands.push(std::mem::take(&mut words));
                }
            }
            ';' | '&' | '|' | '\n' | '(' | ')' | '{' | '}'
                if !(matches!(c, '{' | '}') && in_word) =>
            {
                end_word(&mut word, &mut in_word, &mut words);
                if !words.is_empty() {
                    commands.push(std::mem::take(&mut words));
                }
            }
            c if c.is_whitespace() => end_word(&mut word, &mut in_word, &mut words),
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    end_word(&mut word, &mut in_word, &mut words);
    if !words.is_empty() {
        commands.push(words);
    }
    commands
}

fn unquote(v: &str) -> String {
    let b = v.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        v[1..v.len() - 1].to_string()
    } else {
        v.to_string()
    }
}

/// Serverless' `paramRegExp`: `^-(?:-(NAME)|([a-z]+))(?:=(VALUE)|$)`.
/// Returns (name, is_alias, value).
fn sls_flag(arg: &str) -> Option<(&str, bool, Option<&str>)> {
    let rest = arg.strip_prefix('-')?;
    let (name, value) = match rest.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (rest, None),
    };
    if let Some(full) = name.strip_prefix('-') {
        let mut chars = full.chars();
        let first = chars.next()?;
        let ok = first.is_ascii_alphabetic()
            && full.len() >= 2
            && full
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-'));
        ok.then_some((full, false, value))
    } else {
        let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase());
        ok.then_some((name, true, value))
    }
}

/// Serverless v3's one-letter shortcuts that take a value (its commands schema), by full name.
fn sls_alias(alias: &str) -> Option<&'static str> {
    Some(match alias {
        "s" => "stage",
        "r" => "region",
        "c" => "config",
        "f" => "function",
        "p" => "path",
        "d" => "data",
        "e" => "env",
        "t" => "type",
        "q" => "qualifier",
        "x" => "contextPath",
        _ => return None,
    })
}

/// Serverless options that are booleans: the next word is never their value.
const SLS_BOOLEANS: &[&str] = &[
    "verbose",
    "help",
    "version",
    "debug",
    "force",
    "log",
    "raw",
    "docker",
    "watch",
    "aws-s3-accelerate",
    "no-color",
    "tail",
    "update-config",
    "conceal",
];

fn parse_param(sel: &mut Selection, v: &str) {
    let v = unquote(v);
    if let Some((k, val)) = v.split_once('=')
        && !k.is_empty()
        && !val.is_empty()
    {
        sel.params.push((k.to_string(), val.trim_end().to_string()));
    }
}

fn parse_serverless(args: &[String], sel: &mut Selection) {
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            break;
        }
        let Some((name, alias, value)) = sls_flag(arg) else {
            i += 1;
            continue;
        };
        let full = if alias {
            match sls_alias(name) {
                Some(f) => f,
                None => {
                    i += 1;
                    continue;
                }
            }
        } else {
            name
        };
        let value = match value {
            Some(v) => Some(v.to_string()),
            None if SLS_BOOLEANS.contains(&full) => None,
            None => match args.get(i + 1) {
                Some(next) if next != "--" && sls_flag(next).is_none() && !next.is_empty() => {
                    i += 1;
                    Some(next.clone())
                }
                _ => None,
            },
        };
        i += 1;
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            continue;
        };
        let value = unquote(&value);
        match full {
            "stage" => sel.stage = Some(value),
            "aws-profile" => sel.aws_profile = Some(value),
            "param" => parse_param(sel, &value),
            other => {
                sel.options.retain(|(k, _)| k != other);
                sel.options.push((other.to_string(), value));
            }
        }
    }
}

fn parse_click_like(args: &[String], sel: &mut Selection, stage_flag: Option<&str>) {
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            break;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let is_stage = stage_flag == Some(name);
        let is_profile = name == "--profile";
        if !is_stage && !is_profile {
            i += 1;
            continue;
        }
        let value = match inline {
            Some(v) => Some(v),
            None => {
                i += 1;
                args.get(i).filter(|n| n.as_str() != "--").cloned()
            }
        };
        i += 1;
        if let Some(v) = value.map(|v| unquote(&v)).filter(|v| !v.is_empty()) {
            if is_stage {
                sel.stage = Some(v);
            } else {
                sel.aws_profile = Some(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    fn p(line: &str) -> Selection {
        parse_wrapped_args(&words(line))
    }

    fn stage(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    /// (command line, expected stage) read with serverless rules from a direct invocation.
    #[test]
    fn serverless_stage_flags() {
        let cases: &[(&str, Option<&str>)] = &[
            ("serverless invoke local -f hello -s prod", Some("prod")),
            ("sls deploy --stage=prod", Some("prod")),
            ("npx serverless deploy --verbose -s prod", Some("prod")),
            ("npx -y serverless@3 deploy -s prod", Some("prod")),
            ("/usr/local/bin/sls.cmd deploy --stage prod", Some("prod")),
            ("./node_modules/.bin/serverless deploy -s=qa", Some("qa")),
            (
                "node node_modules/serverless/bin/serverless.js invoke -s prod",
                Some("prod"),
            ),
            ("yarn exec -- serverless invoke -s prod", Some("prod")),
            ("pnpm dlx serverless invoke -s prod", Some("prod")),
            ("bunx sls invoke -s prod", Some("prod")),
            ("npm exec -- sls invoke -s prod", Some("prod")),
            ("env FOO=1 serverless invoke -s prod", Some("prod")),
            ("sls invoke local -f x -- -s prod", None),
            ("sls deploy --stage -- prod", None),
            ("sls deploy -sprod", None),
            ("sls deploy -s", None),
            ("sls deploy --stage --verbose", None),
            ("sls deploy --stage=", None),
            ("sls deploy -s -1", Some("-1")),
            ("sls deploy -s a --stage b", Some("b")),
            ("sls invoke -f s -d prod --stage real", Some("real")),
            ("sls deploy --verbose prod", None),
            ("sls", None),
        ];
        for (line, want) in cases {
            assert_eq!(p(line).stage.as_deref(), *want, "{line}");
        }
    }

    #[test]
    fn other_programs_have_no_stage() {
        for line in [
            "pytest -s tests/test_x.py",
            "grep -s prod file",
            "tar -s x -cf a.tar b",
            "python serverless.py -s prod",
            "aws sts get-caller-identity --profile x",
        ] {
            assert_eq!(p(line), Selection::default(), "{line}");
        }
    }

    #[test]
    fn every_serverless_option_is_kept() {
        let s = p(
            r#"sls deploy --stage=prod --aws-profile x --param="a=b" --region eu-west-1 -f hello --verbose"#,
        );
        assert_eq!(s.stage, stage("prod"));
        assert_eq!(s.aws_profile, stage("x"));
        assert_eq!(s.params, vec![("a".into(), "b".into())]);
        assert_eq!(
            s.options,
            vec![
                ("region".into(), "eu-west-1".into()),
                ("function".into(), "hello".into())
            ]
        );
        assert_eq!(
            p("sls deploy -r us-west-2").options,
            vec![("region".into(), "us-west-2".into())]
        );
    }

    #[test]
    fn sam_and_cdk_flags() {
        let s = p("sam local invoke --config-env prod --profile x");
        assert_eq!((s.stage, s.aws_profile), (stage("prod"), stage("x")));
        let s = p("sam deploy --config-env=staging --profile=y -s ignored");
        assert_eq!((s.stage, s.aws_profile), (stage("staging"), stage("y")));
        assert_eq!(
            p("sam deploy --stage prod --aws-profile z"),
            Selection::default()
        );
        let s = p("npx cdk deploy --profile acct -s prod");
        assert_eq!((s.stage, s.aws_profile), (None, stage("acct")));
        assert_eq!(
            p("npx aws-cdk@2 deploy --profile a").aws_profile,
            stage("a")
        );
        assert_eq!(p("sam local invoke -- --config-env prod").stage, None);
    }

    #[test]
    fn params_repeat_and_validate() {
        let s = p("sls deploy --param a=1 --param=b=2=3 --param bad --param=c= --param \"d=4\"");
        assert_eq!(
            s.params,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "2=3".into()),
                ("d".into(), "4".into())
            ]
        );
    }

    #[test]
    fn direct_invocations_know_where_to_insert() {
        let t = tempfile::tempdir().unwrap();
        let i = inspect(
            &words("npx serverless invoke local -f hello -- x"),
            t.path(),
        );
        assert_eq!(i.invocations.len(), 1);
        assert_eq!(i.invocations[0].insert_at, Some(6));
        assert_eq!(i.invocations[0].via, None);
        let i = inspect(&words("serverless invoke local"), t.path());
        assert_eq!(i.invocations[0].insert_at, Some(3));
    }

    #[test]
    fn shell_strings_and_scripts() {
        let t = tempfile::tempdir().unwrap();
        let sub = t.path().join("svc");
        std::fs::create_dir(&sub).unwrap();
        let argv = vec![
            "sh".to_string(),
            "-c".to_string(),
            "echo hi && cd svc; AWS_X=1 serverless invoke local -f hello -s prod | tee out".into(),
        ];
        let i = inspect(&argv, t.path());
        assert_eq!(i.invocations.len(), 1, "{i:?}");
        let inv = &i.invocations[0];
        assert_eq!(inv.selection().stage, stage("prod"));
        assert_eq!(inv.dir, sub);
        assert_eq!(inv.via.as_deref(), Some("sh -c"));
        assert_eq!(inv.insert_at, None);
        assert_eq!(i.opaque, None);

        std::fs::write(
            t.path().join("invoke.sh"),
            "#!/bin/sh\nset -e\n# comment -s dev\nnpx sls invoke local -f hello --stage=staging\n",
        )
        .unwrap();
        let i = inspect(&words("./invoke.sh"), t.path());
        assert_eq!(i.selection().stage, stage("staging"), "{i:?}");
        let i = inspect(&words("bash -e ./invoke.sh"), t.path());
        assert_eq!(i.selection().stage, stage("staging"), "{i:?}");
        let i = inspect(&words("make invoke"), t.path());
        assert!(i.invocations.is_empty());
        assert_eq!(i.opaque.as_deref(), Some("make invoke"));
    }

    #[test]
    fn package_scripts() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("package.json"),
            r#"{"scripts": {
                "invoke:prod": "serverless invoke local -f hello -s prod",
                "invoke": "serverless invoke local -f hello",
                "preboth": "echo",
                "both": "npm run invoke:prod && sls invoke local -f hello --stage dev",
                "test": "pytest -s tests"
            }}"#,
        )
        .unwrap();
        let at = |line: &str| inspect(&words(line), t.path());
        let i = at("npm run invoke:prod");
        assert_eq!(i.selection().stage, stage("prod"));
        assert_eq!(i.invocations[0].via.as_deref(), Some("npm run invoke:prod"));
        assert_eq!(at("yarn invoke:prod").selection().stage, stage("prod"));
        assert_eq!(at("pnpm run invoke:prod").selection().stage, stage("prod"));
        assert_eq!(at("bun run invoke:prod").selection().stage, stage("prod"));
        assert_eq!(at("npm run invoke -- -s qa").selection().stage, stage("qa"));
        assert_eq!(
            at("npm run invoke -s qa").selection().stage,
            None,
            "npm keeps -s"
        );
        assert_eq!(at("yarn run invoke -s qa").selection().stage, stage("qa"));
        let both = at("npm run both");
        let stages: Vec<_> = both
            .serverless()
            .map(|i| i.selection().stage.unwrap())
            .collect();
        assert_eq!(stages, vec!["prod", "dev"]);
        assert!(at("npm test").invocations.is_empty());
        assert_eq!(at("npm test").opaque, None);
        assert!(at("npm run missing").invocations.is_empty());
    }

    #[test]
    fn splits_shell_text() {
        assert_eq!(
            split_commands("a 'b c' \"d\\\"e\" f\\ g; h&&i||j|k & l\n# x\nm # n"),
            vec![
                vec!["a", "b c", "d\"e", "f g"],
                vec!["h"],
                vec!["i"],
                vec!["j"],
                vec!["k"],
                vec!["l"],
                vec!["m"],
            ]
        );
        assert_eq!(
            split_commands("(cd x && sls deploy)"),
            vec![vec!["cd", "x"], vec!["sls", "deploy"]]
        );
        assert_eq!(split_commands("echo ${A}"), vec![vec!["echo", "${A}"]]);
    }
}
