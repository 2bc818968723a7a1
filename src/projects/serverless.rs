//! Owns the Serverless Framework resolver: reads `serverless.{yml,yaml,json}` and
//! evaluates, offline, just the variables needed for `provider.stage`,
//! `provider.profile`, `provider.region` and `service` (and whatever they
//! reference). Everything else in the file is never looked at, so unrelated
//! unresolvable variables or CloudFormation intrinsics do not cause errors.
//!
//! Semantics follow Serverless **v3** (`lib/configuration/variables/parse.js`,
//! `resolve.js`, `sources/*.js`, `lib/cli/load-dotenv.js`):
//!
//! * Stage: `--stage`, else `provider.stage` (resolved as an ordinary property), else `dev`.
//!   `${sls:stage}` is that stage; `${self:provider.stage}` is the raw property resolved
//!   normally (it ignores `--stage`); `${opt:stage}` is only the flag (aliases such as
//!   `${opt:s}` are never set: Serverless stores options under their full names).
//! * Profile: `--aws-profile`, else `provider.profile`, else (v4) the single `type: aws`
//!   resolver in `stages.<stage>.resolvers` / `stages.default.resolvers`. None → error.
//! * Syntax: `${source:address}`, `${source(param, ...):address}`, comma-separated
//!   fallbacks tried left to right (a source without a value moves on); fallback
//!   literals must be quoted strings, numbers, `true`, `false` or `null`. Variables
//!   nest (innermost first), interpolate inside longer strings (only string/number/bool
//!   values may), and a resolved string containing variables is resolved again.
//!   `${` not followed by `lowercase-word:` or `lowercase-word(` (e.g. `${AWS::Region}`,
//!   `${Foo}` in `Fn::Sub`) and `\${` are left untouched.
//! * Sources: `opt` (every option of the wrapped command by its full name: stage,
//!   aws-profile, param, region, ...), `self`
//!   (dotted path into the document; empty = whole document), `env` (real environment,
//!   then `.env` values when `useDotenv: true`), `sls` (`stage`; `instanceId` is
//!   offline-unresolvable), `file(path)` / `file(path):key.path` (yml/yaml/json/tfstate
//!   parsed, other extensions read as text, relative to the service dir, must stay inside
//!   it; a missing file has no value; `.js`/`.ts` are offline-unresolvable), `param`
//!   (`--param k=v` > `params.<stage>.k` > `params.default.k`; the v4 forms
//!   `stages.<stage>.params.k` / `stages.default.params.k` are consulted after the
//!   matching v3 form) and `strToBool(...)`. `ssm`, `cf`, `s3`, `aws`, and any other
//!   (plugin) source are errors that suggest `.credport.toml`, even with a fallback
//!   (the fallback might silently pick the wrong account).
//! * `useDotenv: true`: after the stage is known, `.env.<stage>` is loaded if it exists,
//!   otherwise `.env` (as v3's `load-dotenv.js`); real environment variables win;
//!   `$VAR`/`${VAR}` references inside values are expanded (dotenv-expand). The stage
//!   itself is resolved before dotenv is loaded, as in Serverless.
//! * Bounds: nesting depth, property-reference cycles and a total step budget are
//!   checked, so cyclic or explosive configurations give an error, never a hang.
//!
//! v4 differences (documented, partly supported): v4 adds `stages.<stage>.params`,
//! `stages.<stage>.resolvers` (AWS-account resolvers carrying `profile`/`region`, read
//! here as a profile fallback), `${aws:...}`/`${vault:...}` style resolvers (offline
//! errors here) and makes stage params override `--param` (v3 order is used here).
//! v4 also loads `.env` unconditionally; here only `useDotenv: true` loads it.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use yaml_serde::{Mapping, Value};

use super::detect::{
    ProjectKind, Resolution, Selection, folder_name, parse_json, parse_yaml, read_text,
};
use super::error::ProjectError;

/// Deepest nesting of variables / re-resolutions followed.
const MAX_DEPTH: usize = 48;
/// Total source look-ups allowed for one resolution.
const MAX_STEPS: usize = 20_000;

// ---------------------------------------------------------------------------
// Variable syntax
// ---------------------------------------------------------------------------

/// A string split into literal text and variables.
type Tmpl = Vec<Part>;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Var(Var),
}

#[derive(Debug, Clone, PartialEq)]
struct Var {
    raw: String,
    sources: Vec<Source>,
}

#[derive(Debug, Clone, PartialEq)]
enum Source {
    Typed {
        ty: String,
        params: Vec<Tmpl>,
        address: Option<Tmpl>,
    },
    Literal(Value),
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
}

fn parse_template(s: &str) -> Result<Tmpl, String> {
    let mut p = Parser {
        s,
        b: s.as_bytes(),
        pos: 0,
    };
    p.template(0, &[])
}

/// True when `s` has at least one variable (or malformed variable syntax).
fn has_vars(s: &str) -> bool {
    if !s.contains("${") {
        return false;
    }
    match parse_template(s) {
        Ok(t) => t.iter().any(|p| matches!(p, Part::Var(_))),
        Err(_) => true,
    }
}

fn parse_literal(word: &str) -> Option<Value> {
    match word {
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        "null" => Some(Value::Null),
        _ => {
            if let Ok(i) = word.parse::<i64>() {
                return Some(Value::Number(i.into()));
            }
            let numeric = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E'))
                && word.chars().any(|c| c.is_ascii_digit());
            match word.parse::<f64>() {
                Ok(f) if numeric && f.is_finite() => Some(Value::Number(f.into())),
                _ => None,
            }
        }
    }
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    /// Is there a variable (not a foreign `${...}`) starting at `i` (just after `${`)?
    fn is_var_start(&self, i: usize) -> bool {
        if !self.b.get(i).is_some_and(|c| c.is_ascii_lowercase()) {
            return false;
        }
        let mut j = i + 1;
        while self
            .b
            .get(j)
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-'))
        {
            j += 1;
        }
        matches!(self.b.get(j), Some(b':' | b'('))
    }

    /// End (exclusive) of a foreign `${...}` whose body starts at `i`.
    fn foreign_end(&self, i: usize) -> usize {
        let mut depth = 1usize;
        let mut j = i;
        while j < self.b.len() {
            match self.b[j] {
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return j + 1;
                    }
                }
                b'$' if self.b.get(j + 1) == Some(&b'{') => {
                    depth += 1;
                    j += 1;
                }
                _ => {}
            }
            j += 1;
        }
        self.b.len()
    }

    /// Reads text and variables up to (not including) a top-level byte in `stop`.
    fn template(&mut self, nest: usize, stop: &[u8]) -> Result<Tmpl, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let start_text = |text: &mut String, parts: &mut Tmpl| {
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(text)));
            }
        };
        while let Some(c) = self.peek() {
            if stop.contains(&c) {
                break;
            }
            if c == b'\\' {
                // Escape: keep the backslash and the next character verbatim.
                let ch_len = self.s[self.pos + 1..]
                    .chars()
                    .next()
                    .map_or(0, char::len_utf8);
                text.push_str(&self.s[self.pos..self.pos + 1 + ch_len]);
                self.pos += 1 + ch_len;
                continue;
            }
            if c == b'$' && self.b.get(self.pos + 1) == Some(&b'{') {
                if self.is_var_start(self.pos + 2) {
                    start_text(&mut text, &mut parts);
                    let v = self.var(nest + 1)?;
                    parts.push(Part::Var(v));
                } else {
                    let end = self.foreign_end(self.pos + 2);
                    text.push_str(&self.s[self.pos..end]);
                    self.pos = end;
                }
                continue;
            }
            let ch = self.s[self.pos..].chars().next().unwrap_or('\u{fffd}');
            text.push(ch);
            self.pos += ch.len_utf8().max(1);
        }
        start_text(&mut text, &mut parts);
        Ok(parts)
    }

    /// Parses `${...}` with `pos` at the `$`.
    fn var(&mut self, nest: usize) -> Result<Var, String> {
        if nest > 32 {
            return Err("variables are nested too deeply".into());
        }
        let start = self.pos;
        self.pos += 2;
        let mut sources = Vec::new();
        loop {
            self.skip_spaces();
            let src = self.source(nest, sources.is_empty())?;
            sources.push(src);
            self.skip_spaces();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                None => {
                    return Err(format!(
                        "missing closing bracket in variable {}",
                        &self.s[start..]
                    ));
                }
                Some(_) => {
                    return Err(format!(
                        "invalid variable syntax at index {} in \"{}\"",
                        self.pos, self.s
                    ));
                }
            }
        }
        Ok(Var {
            raw: self.s[start..self.pos].to_string(),
            sources,
        })
    }

    fn quoted(&mut self) -> Result<String, String> {
        let q = self.b[self.pos];
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(ch) = self.s[self.pos..].chars().next() else {
                return Err(format!(
                    "unterminated string literal at index {start} in \"{}\"",
                    self.s
                ));
            };
            self.pos += ch.len_utf8();
            if ch as u32 == q as u32 {
                return Ok(out);
            }
            if q == b'"' && ch == '\\' {
                let Some(e) = self.s[self.pos..].chars().next() else {
                    continue;
                };
                self.pos += e.len_utf8();
                out.push(match e {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    other => other,
                });
                continue;
            }
            out.push(ch);
        }
    }

    fn source(&mut self, nest: usize, first: bool) -> Result<Source, String> {
        match self.peek() {
            Some(b'\'' | b'"') if !first => {
                return Ok(Source::Literal(Value::String(self.quoted()?)));
            }
            _ => {}
        }
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
        {
            self.pos += 1;
        }
        let word = &self.s[start..self.pos];
        let is_type = word.bytes().next().is_some_and(|c| c.is_ascii_lowercase());
        match self.peek() {
            Some(b':') if is_type => {
                self.pos += 1;
                let address = self.address(nest)?;
                Ok(Source::Typed {
                    ty: word.to_string(),
                    params: Vec::new(),
                    address,
                })
            }
            Some(b'(') if is_type => {
                self.pos += 1;
                let params = self.params(nest)?;
                self.skip_spaces();
                let address = if self.peek() == Some(b':') {
                    self.pos += 1;
                    self.address(nest)?
                } else {
                    None
                };
                Ok(Source::Typed {
                    ty: word.to_string(),
                    params,
                    address,
                })
            }
            Some(b',' | b'}' | b' ') | None if !word.is_empty() => match parse_literal(word) {
                Some(v) => Ok(Source::Literal(v)),
                None => Err(format!(
                    "invalid literal fallback '{word}' in \"{}\": literals must be quoted strings, numbers, true, false or null",
                    self.s
                )),
            },
            _ => Err(format!(
                "invalid variable source at index {start} in \"{}\"",
                self.s
            )),
        }
    }

    fn address(&mut self, nest: usize) -> Result<Option<Tmpl>, String> {
        self.skip_spaces();
        if matches!(self.peek(), Some(b'\'' | b'"')) {
            let s = self.quoted()?;
            return Ok(Some(vec![Part::Text(s)]));
        }
        let t = trim_tmpl(self.template(nest, b",}")?);
        Ok((!t.is_empty()).then_some(t))
    }

    fn params(&mut self, nest: usize) -> Result<Vec<Tmpl>, String> {
        let mut params = Vec::new();
        loop {
            self.skip_spaces();
            match self.peek() {
                Some(b')') => {
                    self.pos += 1;
                    return Ok(params);
                }
                Some(b'\'' | b'"') => params.push(vec![Part::Text(self.quoted()?)]),
                Some(_) => params.push(trim_tmpl(self.template(nest, b",)}")?)),
                None => return Err(format!("unterminated parameters in \"{}\"", self.s)),
            }
            self.skip_spaces();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b')') => {}
                _ => return Err(format!("invalid variable parameter in \"{}\"", self.s)),
            }
        }
    }
}

fn trim_tmpl(mut t: Tmpl) -> Tmpl {
    if let Some(Part::Text(s)) = t.first_mut() {
        *s = s.trim_start().to_string();
    }
    if let Some(Part::Text(s)) = t.last_mut() {
        *s = s.trim_end().to_string();
    }
    t.retain(|p| !matches!(p, Part::Text(s) if s.is_empty()));
    t
}

// ---------------------------------------------------------------------------
// Document helpers
// ---------------------------------------------------------------------------

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn child<'v>(node: &'v Value, seg: &str) -> Option<&'v Value> {
    match node {
        Value::Mapping(m) => m.get(seg).or_else(|| {
            m.iter()
                .find(|(k, _)| !k.is_string() && scalar_string(k).as_deref() == Some(seg))
                .map(|(_, v)| v)
        }),
        Value::Sequence(s) => seg.parse::<usize>().ok().and_then(|i| s.get(i)),
        _ => None,
    }
}

fn keys_of(v: &Value) -> Vec<String> {
    match v {
        Value::Mapping(m) => m.keys().filter_map(scalar_string).collect(),
        Value::Sequence(s) => (0..s.len()).map(|i| i.to_string()).collect(),
        _ => Vec::new(),
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Sequence(_) => "list",
        Value::Mapping(_) => "mapping",
        Value::Tagged(_) => "CloudFormation intrinsic (!Tag)",
    }
}

enum Walk<'v> {
    Done(&'v Value),
    /// A string holding variables after consuming this many segments.
    VarStr(usize, &'v str),
    /// Segment at this index is absent from the given parent.
    Missing(usize, &'v Value),
}

fn walk<'v>(root: &'v Value, segs: &[String], skip_root: bool) -> Walk<'v> {
    let mut node = root;
    for (i, seg) in segs.iter().enumerate() {
        if let Value::String(s) = node
            && !(i == 0 && skip_root)
            && has_vars(s)
        {
            return Walk::VarStr(i, s);
        }
        match child(node, seg) {
            Some(c) => node = c,
            None => return Walk::Missing(i, node),
        }
    }
    if let Value::String(s) = node
        && !(segs.is_empty() && skip_root)
        && has_vars(s)
    {
        return Walk::VarStr(segs.len(), s);
    }
    Walk::Done(node)
}

/// Lexically normalises `p` (no filesystem access).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// dotenv
// ---------------------------------------------------------------------------

/// Parses dotenv text: `KEY=VALUE`, optional `export `, `#` comments, quoted values.
/// Returns (key, value, expandable) triples in order.
fn parse_dotenv(text: &str) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let key = k.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            continue;
        }
        let v = v.trim_start();
        let (value, expand) = match v.chars().next() {
            Some(q @ ('"' | '\'' | '`')) => {
                let body = &v[1..];
                let end = body.rfind(q).unwrap_or(body.len());
                let inner = &body[..end];
                if q == '"' {
                    (inner.replace("\\n", "\n").replace("\\\"", "\""), true)
                } else {
                    (inner.to_string(), q == '`')
                }
            }
            _ => {
                let cut = v.find(" #").unwrap_or(v.len());
                (v[..cut].trim_end().to_string(), true)
            }
        };
        out.push((key.to_string(), value, expand));
    }
    out
}

/// dotenv-expand: replaces `$NAME` / `${NAME}` (and `${NAME:-default}`) using `lookup`.
fn expand_dotenv(value: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let b = value.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if b[i] == b'$' {
            if b.get(i + 1) == Some(&b'{')
                && let Some(end) = value[i + 2..].find('}')
            {
                let inner = &value[i + 2..i + 2 + end];
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n, d),
                    None => (inner, ""),
                };
                out.push_str(&lookup(name).unwrap_or_else(|| default.to_string()));
                i += 3 + end;
                continue;
            }
            let mut j = i + 1;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            if j > i + 1 {
                out.push_str(&lookup(&value[i + 1..j]).unwrap_or_default());
                i = j;
                continue;
            }
        }
        let ch = value[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

// ---------------------------------------------------------------------------
// Resolver
// ---------------------------------------------------------------------------

enum Lookup {
    Found(Value),
    Missing(Option<MissKey>),
}

#[derive(Debug, Clone)]
struct MissKey {
    map: String,
    missing: String,
    has: Vec<String>,
}

enum StageState {
    Resolving,
    Known(String),
}

struct Resolver<'a> {
    file: PathBuf,
    dir: PathBuf,
    doc: Value,
    sel: &'a Selection,
    env: &'a dyn Fn(&str) -> Option<String>,
    dotenv: HashMap<String, String>,
    stage: StageState,
    key: String,
    steps: usize,
    stack: Vec<String>,
    files: HashMap<PathBuf, Option<Value>>,
}

impl<'a> Resolver<'a> {
    fn new(
        file: &Path,
        doc: Value,
        sel: &'a Selection,
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> Self {
        Resolver {
            file: file.to_path_buf(),
            dir: normalize(file.parent().unwrap_or(Path::new("."))),
            doc,
            sel,
            env,
            dotenv: HashMap::new(),
            stage: StageState::Resolving,
            key: String::new(),
            steps: 0,
            stack: Vec::new(),
            files: HashMap::new(),
        }
    }

    fn var_err(&self, message: String) -> ProjectError {
        ProjectError::Variable {
            file: self.file.clone(),
            key: self.key.clone(),
            message,
        }
    }

    fn cycle_err(&self, message: String) -> ProjectError {
        ProjectError::Cycle {
            file: self.file.clone(),
            key: self.key.clone(),
            message,
        }
    }

    fn offline(&self, variable: &str) -> ProjectError {
        ProjectError::Offline {
            file: self.file.clone(),
            key: self.key.clone(),
            variable: variable.to_string(),
        }
    }

    fn bump(&mut self, depth: usize) -> Result<(), ProjectError> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(self.cycle_err(format!(
                "variable resolution took more than {MAX_STEPS} steps (cycle or explosive nesting?)"
            )));
        }
        if depth > MAX_DEPTH {
            return Err(self.cycle_err(format!(
                "variables nest or re-resolve more than {MAX_DEPTH} levels deep (cycle?)"
            )));
        }
        Ok(())
    }

    /// Walks `path` from `root` (the document when `None`), resolving any variable
    /// strings met on the way.
    fn resolve_in(
        &mut self,
        root: Option<Value>,
        path: &[String],
        depth: usize,
    ) -> Result<Lookup, ProjectError> {
        let from_doc = root.is_none();
        let mut owned = root;
        let mut done = 0usize;
        let mut skip_root = false;
        loop {
            self.bump(depth)?;
            let base = owned.as_ref().unwrap_or(&self.doc);
            let step = match walk(base, &path[done..], skip_root) {
                Walk::Done(v) => return Ok(Lookup::Found(v.clone())),
                Walk::Missing(k, parent) => {
                    return Ok(Lookup::Missing(Some(MissKey {
                        map: path[..done + k].join("."),
                        missing: path[done + k].clone(),
                        has: keys_of(parent),
                    })));
                }
                Walk::VarStr(k, s) => (k, s.to_string()),
            };
            let (k, s) = step;
            let at = done + k;
            let value = if from_doc && owned.is_none() {
                let name = path[..at].join(".");
                if let Some(pos) = self.stack.iter().position(|p| *p == name) {
                    let mut chain = self.stack[pos..].to_vec();
                    chain.push(name);
                    return Err(self.cycle_err(format!(
                        "variables refer to each other in a cycle: {}",
                        chain.join(" -> ")
                    )));
                }
                self.stack.push(name);
                let r = self.resolve_string(&s, depth + 1);
                self.stack.pop();
                r?
            } else {
                self.resolve_string(&s, depth + 1)?
            };
            owned = Some(value);
            done = at;
            skip_root = true;
        }
    }

    fn resolve_path(&mut self, path: &[String], depth: usize) -> Result<Lookup, ProjectError> {
        self.resolve_in(None, path, depth)
    }

    /// Resolves every variable in `s`.
    fn resolve_string(&mut self, s: &str, depth: usize) -> Result<Value, ProjectError> {
        self.bump(depth)?;
        let tmpl = parse_template(s).map_err(|m| self.var_err(m))?;
        if let [Part::Var(v)] = tmpl.as_slice() {
            return self.resolve_var_full(v, depth);
        }
        if !tmpl.iter().any(|p| matches!(p, Part::Var(_))) {
            return Ok(Value::String(s.to_string()));
        }
        Ok(Value::String(self.interpolate(&tmpl, depth)?))
    }

    /// Resolves a variable, then any variables in the string it produced.
    fn resolve_var_full(&mut self, v: &Var, depth: usize) -> Result<Value, ProjectError> {
        let value = self.resolve_var(v, depth)?;
        match value {
            Value::String(ref s) if has_vars(s) => self.resolve_string(s, depth + 1),
            other => Ok(other),
        }
    }

    fn interpolate(&mut self, tmpl: &Tmpl, depth: usize) -> Result<String, ProjectError> {
        let mut out = String::new();
        for part in tmpl {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => {
                    let value = self.resolve_var_full(v, depth + 1)?;
                    match scalar_string(&value) {
                        Some(s) => out.push_str(&s),
                        None => {
                            return Err(self.var_err(format!(
                                "variable {} resolves to a {} but is part of a longer string; only strings, numbers and booleans can be interpolated",
                                v.raw,
                                kind_name(&value)
                            )));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn resolve_var(&mut self, var: &Var, depth: usize) -> Result<Value, ProjectError> {
        let mut last_miss: Option<MissKey> = None;
        for src in &var.sources {
            match src {
                Source::Literal(v) => return Ok(v.clone()),
                Source::Typed {
                    ty,
                    params,
                    address,
                } => {
                    self.bump(depth)?;
                    match self.source(ty, params, address.as_ref(), var, depth)? {
                        Lookup::Found(v) if !v.is_null() => return Ok(v),
                        Lookup::Found(_) => last_miss = None,
                        Lookup::Missing(m) => last_miss = m,
                    }
                }
            }
        }
        if let (Some(m), StageState::Known(stage)) = (&last_miss, &self.stage)
            && m.missing == *stage
        {
            return Err(ProjectError::StageNotInMap {
                file: self.file.clone(),
                key: self.key.clone(),
                stage: stage.clone(),
                map: if m.map.is_empty() {
                    "the document".into()
                } else {
                    m.map.clone()
                },
                has: m.has.join(", "),
            });
        }
        let detail = match &last_miss {
            Some(m) if m.map.is_empty() => format!(" (no top-level key '{}')", m.missing),
            Some(m) if m.has.is_empty() => {
                format!(
                    " (key '{}' is not in {}, which is not a mapping)",
                    m.missing, m.map
                )
            }
            Some(m) => format!(
                " (key '{}' is not in {}; has: {})",
                m.missing,
                m.map,
                m.has.join(", ")
            ),
            None => String::new(),
        };
        Err(ProjectError::NoValue {
            file: self.file.clone(),
            key: self.key.clone(),
            variable: var.raw.clone(),
            detail,
        })
    }

    fn tmpl_string(&mut self, t: &Tmpl, var: &Var, depth: usize) -> Result<String, ProjectError> {
        if let [Part::Var(v)] = t.as_slice() {
            let value = self.resolve_var_full(v, depth + 1)?;
            return scalar_string(&value).ok_or_else(|| {
                self.var_err(format!(
                    "{} inside {} resolves to a {}, expected a string",
                    v.raw,
                    var.raw,
                    kind_name(&value)
                ))
            });
        }
        self.interpolate(t, depth)
    }

    fn source(
        &mut self,
        ty: &str,
        params: &[Tmpl],
        address: Option<&Tmpl>,
        var: &Var,
        depth: usize,
    ) -> Result<Lookup, ProjectError> {
        let addr = match address {
            Some(t) => Some(self.tmpl_string(t, var, depth)?),
            None => None,
        };
        let mut ps = Vec::new();
        for p in params {
            ps.push(self.tmpl_string(p, var, depth)?);
        }
        let addr = addr.filter(|a| !a.is_empty());
        let found = |v: Option<String>| match v {
            Some(s) => Lookup::Found(Value::String(s)),
            None => Lookup::Missing(None),
        };
        match ty {
            "opt" => Ok(match addr.as_deref() {
                None => {
                    let mut m = Mapping::new();
                    if let Some(s) = &self.sel.stage {
                        m.insert("stage".into(), s.clone().into());
                    }
                    if let Some(p) = &self.sel.aws_profile {
                        m.insert("aws-profile".into(), p.clone().into());
                    }
                    for (k, v) in &self.sel.options {
                        m.insert(k.clone().into(), v.clone().into());
                    }
                    Lookup::Found(Value::Mapping(m))
                }
                Some("stage") => found(self.sel.stage.clone()),
                Some("aws-profile") => found(self.sel.aws_profile.clone()),
                Some(name) if self.sel.options.iter().any(|(k, _)| k == name) => found(
                    self.sel
                        .options
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone()),
                ),
                Some("param") if !self.sel.params.is_empty() => Lookup::Found(Value::Sequence(
                    self.sel
                        .params
                        .iter()
                        .map(|(k, v)| Value::String(format!("{k}={v}")))
                        .collect(),
                )),
                Some(_) => Lookup::Missing(None),
            }),
            "self" => {
                let segs: Vec<String> = match addr {
                    Some(a) => a.split('.').map(String::from).collect(),
                    None => Vec::new(),
                };
                self.resolve_path(&segs, depth + 1)
            }
            "env" => {
                let Some(name) = addr else {
                    return Err(
                        self.var_err(format!("{}: missing address for env source", var.raw))
                    );
                };
                Ok(found(
                    (self.env)(&name).or_else(|| self.dotenv.get(&name).cloned()),
                ))
            }
            "sls" => match addr.as_deref() {
                Some("stage") => match &self.stage {
                    StageState::Known(s) => Ok(Lookup::Found(Value::String(s.clone()))),
                    StageState::Resolving => Err(self.cycle_err(format!(
                        "{} is used while resolving the stage itself",
                        var.raw
                    ))),
                },
                Some("instanceId") => Err(self.offline(&var.raw)),
                _ => Err(self.var_err(format!(
                    "{}: unsupported sls address (only sls:stage can be resolved offline)",
                    var.raw
                ))),
            },
            "param" => {
                let Some(name) = addr else {
                    return Err(
                        self.var_err(format!("{}: missing address for param source", var.raw))
                    );
                };
                if let Some((_, v)) = self.sel.params.iter().rev().find(|(k, _)| *k == name) {
                    return Ok(Lookup::Found(Value::String(v.clone())));
                }
                let stage = match &self.stage {
                    StageState::Known(s) => s.clone(),
                    StageState::Resolving => {
                        return Err(self.cycle_err(format!(
                            "{} is used while resolving the stage itself",
                            var.raw
                        )));
                    }
                };
                let candidates = [
                    vec!["params".to_string(), stage.clone(), name.clone()],
                    vec![
                        "stages".into(),
                        stage.clone(),
                        "params".into(),
                        name.clone(),
                    ],
                    vec!["params".into(), "default".into(), name.clone()],
                    vec![
                        "stages".into(),
                        "default".into(),
                        "params".into(),
                        name.clone(),
                    ],
                ];
                for path in candidates {
                    if let Lookup::Found(v) = self.resolve_path(&path, depth + 1)?
                        && !v.is_null()
                    {
                        return Ok(Lookup::Found(v));
                    }
                }
                Ok(Lookup::Missing(None))
            }
            "file" => self.file_source(ps.first().map(String::as_str), addr, var, depth),
            "strToBool" => {
                let input = ps.first().map(|s| s.trim().to_ascii_lowercase());
                match input.as_deref() {
                    Some("true" | "1") => Ok(Lookup::Found(Value::Bool(true))),
                    Some("false" | "0") => Ok(Lookup::Found(Value::Bool(false))),
                    _ => Err(self.var_err(format!(
                        "{}: strToBool expects \"true\", \"false\", \"0\" or \"1\"",
                        var.raw
                    ))),
                }
            }
            _ => Err(self.offline(&var.raw)),
        }
    }

    fn file_source(
        &mut self,
        rel: Option<&str>,
        addr: Option<String>,
        var: &Var,
        depth: usize,
    ) -> Result<Lookup, ProjectError> {
        let Some(rel) = rel.filter(|r| !r.is_empty()) else {
            return Err(self.var_err(format!(
                "{}: missing path argument for file source",
                var.raw
            )));
        };
        let path = normalize(&self.dir.join(rel));
        if !path.starts_with(&self.dir) || path == self.dir {
            return Err(self.var_err(format!(
                "{}: cannot load a file from outside the service folder",
                var.raw
            )));
        }
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if matches!(ext.as_str(), "js" | "cjs" | "mjs" | "ts") {
            return Err(self.offline(&var.raw));
        }
        let content = match self.files.get(&path) {
            Some(c) => c.clone(),
            None => {
                let c = match read_text(&path)? {
                    None => None,
                    Some(text) => Some(match ext.as_str() {
                        "yml" | "yaml" => parse_yaml(&path, &text)?,
                        "json" | "tfstate" => parse_json(&path, &text)?,
                        _ => Value::String(text),
                    }),
                };
                self.files.insert(path.clone(), c.clone());
                c
            }
        };
        let Some(content) = content else {
            return Ok(Lookup::Missing(None));
        };
        match addr {
            None => Ok(Lookup::Found(content)),
            Some(a) => {
                let segs: Vec<String> = a.split('.').map(String::from).collect();
                match self.resolve_in(Some(content), &segs, depth + 1)? {
                    Lookup::Missing(Some(m)) => Ok(Lookup::Missing(Some(MissKey {
                        map: format!("{rel}:{}", m.map),
                        ..m
                    }))),
                    other => Ok(other),
                }
            }
        }
    }

    /// Resolves a top-level property to a string (`None` when absent or null).
    fn resolve_top(&mut self, path: &[&str]) -> Result<Option<String>, ProjectError> {
        self.key = path.join(".");
        let segs: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        match self.resolve_path(&segs, 0)? {
            Lookup::Missing(_) => Ok(None),
            Lookup::Found(v) if v.is_null() => Ok(None),
            Lookup::Found(v) => scalar_string(&v).map(Some).ok_or_else(|| {
                self.var_err(format!(
                    "resolves to a {}, expected a string",
                    kind_name(&v)
                ))
            }),
        }
    }

    fn raw_at(&self, path: &[&str]) -> Option<String> {
        let mut node = &self.doc;
        for seg in path {
            node = child(node, seg)?;
        }
        scalar_string(node)
    }

    fn load_dotenv(&mut self, stage: &str) -> Result<(), ProjectError> {
        let staged = self.dir.join(format!(".env.{stage}"));
        let text = match read_text(&staged)? {
            Some(t) => Some(t),
            None => read_text(&self.dir.join(".env"))?,
        };
        let Some(text) = text else { return Ok(()) };
        for (k, v, expand) in parse_dotenv(&text) {
            let v = if expand {
                let env = self.env;
                let known = &self.dotenv;
                expand_dotenv(&v, &|n: &str| env(n).or_else(|| known.get(n).cloned()))
            } else {
                v
            };
            self.dotenv.insert(k, v);
        }
        Ok(())
    }

    /// The profile/region of the single `type: aws` v4 resolver for `stage`.
    fn v4_resolver(
        &mut self,
        stage: &str,
    ) -> Result<Option<(String, Option<String>, String)>, ProjectError> {
        for st in [stage, "default"] {
            let base = ["stages", st, "resolvers"];
            let names = {
                let mut node = Some(&self.doc);
                for seg in base {
                    node = node.and_then(|n| child(n, seg));
                }
                node.map(keys_of).unwrap_or_default()
            };
            let mut aws = Vec::new();
            for name in &names {
                let ty = self.resolve_top(&["stages", st, "resolvers", name, "type"])?;
                if ty.as_deref() == Some("aws") {
                    aws.push(name.clone());
                }
            }
            match aws.as_slice() {
                [] => continue,
                [name] => {
                    let Some(profile) =
                        self.resolve_top(&["stages", st, "resolvers", name, "profile"])?
                    else {
                        continue;
                    };
                    let region = self
                        .resolve_top(&["stages", st, "resolvers", name, "region"])
                        .ok()
                        .flatten();
                    return Ok(Some((
                        profile,
                        region,
                        format!("stages.{st}.resolvers.{name}.profile"),
                    )));
                }
                many => {
                    self.key = format!("stages.{st}.resolvers");
                    return Err(self.var_err(format!(
                        "several aws resolvers ({}); map the stages in .credport.toml instead",
                        many.join(", ")
                    )));
                }
            }
        }
        Ok(None)
    }
}

/// Resolves a Serverless project file (`serverless.{yml,yaml,json}`; `.js`/`.ts`
/// configs are rejected with [`ProjectError::Unsupported`]).
pub fn resolve(
    file: &Path,
    sel: &Selection,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolution, ProjectError> {
    let mut r = open(file, sel, env)?;
    let use_dotenv = matches!(child(&r.doc, "useDotenv"), Some(Value::Bool(true)));
    let (stage, stage_rule) = stage_of(&mut r)?;
    // The stage names files (`.env.<stage>`) and URLs: nothing but a plain name will do
    // (serverless itself only accepts letters, digits and dashes).
    if let Err(message) = crate::config::check_name("stage", &stage) {
        return Err(ProjectError::Stage {
            file: file.to_path_buf(),
            message,
            known: "none".into(),
        });
    }
    r.stage = StageState::Known(stage.clone());
    if use_dotenv {
        r.load_dotenv(&stage)?;
    }

    // Profile.
    let mut v4_region = None;
    let profile_rule;
    let profile = if let Some(p) = &sel.aws_profile {
        profile_rule = "--aws-profile (overrides provider.profile)".to_string();
        p.clone()
    } else if let Some(p) = r.resolve_top(&["provider", "profile"])? {
        let raw = r
            .raw_at(&["provider", "profile"])
            .unwrap_or_else(|| p.clone());
        profile_rule = format!("provider.profile = {raw}");
        p
    } else if let Some((p, region, path)) = r.v4_resolver(&stage)? {
        profile_rule = format!("{path} = {p}");
        v4_region = region;
        p
    } else {
        return Err(ProjectError::NoProfile {
            file: file.to_path_buf(),
            stage,
            hint: "provider.profile is not set; pass --aws-profile or map the stages in .credport.toml"
                .into(),
        });
    };

    let region = r
        .resolve_top(&["provider", "region"])
        .ok()
        .flatten()
        .or(v4_region);
    let project = service_name(&mut r).unwrap_or_else(|| folder_name(file));

    Ok(Resolution {
        project,
        stage,
        profile,
        region,
        file: file.to_path_buf(),
        kind: ProjectKind::Serverless,
        rule: format!("{profile_rule} with stage {stage_rule}"),
    })
}

/// Reads and parses a Serverless file into a resolver.
fn open<'a>(
    file: &Path,
    sel: &'a Selection,
    env: &'a dyn Fn(&str) -> Option<String>,
) -> Result<Resolver<'a>, ProjectError> {
    let ext = file
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if matches!(ext.as_str(), "js" | "ts" | "cjs" | "mjs") {
        return Err(ProjectError::Unsupported {
            file: file.to_path_buf(),
            reason: "JavaScript/TypeScript service files cannot be evaluated offline".into(),
        });
    }
    let text = read_text(file)?.ok_or_else(|| ProjectError::Io {
        file: file.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    let doc = if ext == "json" {
        parse_json(file, &text)?
    } else {
        parse_yaml(file, &text)?
    };
    let doc = match doc {
        Value::Null => Value::Mapping(Mapping::new()),
        m @ Value::Mapping(_) => m,
        other => {
            return Err(ProjectError::Invalid {
                file: file.to_path_buf(),
                message: format!("top level is a {}, expected a mapping", kind_name(&other)),
            });
        }
    };
    Ok(Resolver::new(file, doc, sel, env))
}

/// The stage serverless runs: `--stage`, else `provider.stage`, else `dev`; with the rule.
fn stage_of(r: &mut Resolver<'_>) -> Result<(String, String), ProjectError> {
    Ok(match &r.sel.stage {
        Some(s) => (s.clone(), "from --stage".to_string()),
        None => match r.resolve_top(&["provider", "stage"])? {
            Some(s) => {
                let raw = r
                    .raw_at(&["provider", "stage"])
                    .unwrap_or_else(|| s.clone());
                let rule = if raw == s {
                    format!("from provider.stage = {s}")
                } else {
                    format!("from provider.stage = {raw} (= {s})")
                };
                (s, rule)
            }
            None => (
                "dev".to_string(),
                "'dev' (no --stage, no provider.stage)".to_string(),
            ),
        },
    })
}

/// The stage serverless itself runs for `sel` (its `--stage`, else `provider.stage`, else
/// `dev`), with the rule that decided, without resolving a profile.
pub fn stage_for(
    file: &Path,
    sel: &Selection,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, String), ProjectError> {
    let mut r = open(file, sel, env)?;
    stage_of(&mut r)
}

/// Stage names the file itself spells out: `provider.stage`, the keys of `params` and
/// `stages` (v4), and the keys of the map that `provider.profile` looks the stage up in
/// (`${self:custom.myProfile.${sls:stage}}`), found by resolving with a stage no map has.
pub fn declared_stages(
    file: &Path,
    sel: &Selection,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    let push = |s: String, out: &mut Vec<String>| {
        if crate::config::check_name("stage", &s).is_ok() && !out.contains(&s) {
            out.push(s);
        }
    };
    if let Ok((s, _)) = stage_for(
        file,
        &Selection {
            stage: None,
            ..sel.clone()
        },
        env,
    ) {
        push(s, &mut out);
    }
    if let Ok(r) = open(file, sel, env) {
        for key in ["params", "stages"] {
            if let Some(Value::Mapping(m)) = child(&r.doc, key) {
                for k in m.keys().filter_map(scalar_string) {
                    if k != "default" {
                        push(k, &mut out);
                    }
                }
            }
        }
    }
    let probe = Selection {
        stage: Some("credport-probe-no-such-stage".into()),
        ..sel.clone()
    };
    if let Err(ProjectError::StageNotInMap { has, .. }) = resolve(file, &probe, env) {
        for k in has.split(", ").filter(|k| !k.is_empty()) {
            push(k.to_string(), &mut out);
        }
    }
    out
}

fn service_name(r: &mut Resolver<'_>) -> Option<String> {
    r.key = "service".into();
    match r.resolve_path(&["service".to_string()], 0).ok()? {
        Lookup::Found(Value::Mapping(_)) => r.resolve_top(&["service", "name"]).ok().flatten(),
        Lookup::Found(v) => scalar_string(&v),
        Lookup::Missing(_) => None,
    }
}

/// Best-effort service name of a Serverless file (used by `.credport.toml` for its
/// default project name); `None` when absent or not resolvable offline.
pub fn service_name_of(
    file: &Path,
    sel: &Selection,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let ext = file.extension()?.to_string_lossy().to_ascii_lowercase();
    let text = read_text(file).ok()??;
    let doc = match ext.as_str() {
        "json" => parse_json(file, &text).ok()?,
        "yml" | "yaml" => parse_yaml(file, &text).ok()?,
        _ => return None,
    };
    let mut r = Resolver::new(file, doc, sel, env);
    if let Some(s) = &sel.stage {
        r.stage = StageState::Known(s.clone());
    } else if let Ok(Some(s)) = r.resolve_top(&["provider", "stage"]) {
        r.stage = StageState::Known(s);
    } else {
        r.stage = StageState::Known("dev".into());
    }
    service_name(&mut r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::fs;

    const SEED: &str = "service: orders
custom:
  myStage: ${opt:stage, self:provider.stage}
  myProfile:
    prod: prodAccount
    dev: devAccount
provider:
  name: aws
  stage: dev
  profile: ${self:custom.myProfile.${self:custom.myStage}}
";

    struct Fx {
        dir: tempfile::TempDir,
        env: HashMap<String, String>,
    }

    impl Fx {
        fn new(yml: &str) -> Fx {
            Fx::named("serverless.yml", yml)
        }
        fn named(name: &str, text: &str) -> Fx {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(name), text).unwrap();
            Fx {
                dir,
                env: HashMap::new(),
            }
        }
        fn file(&self, name: &str, text: &str) -> &Self {
            let p = self.dir.path().join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
            self
        }
        fn env(mut self, k: &str, v: &str) -> Self {
            self.env.insert(k.into(), v.into());
            self
        }
        fn run(&self, args: &str) -> Result<Resolution, ProjectError> {
            let mut argv = vec!["sls".to_string()];
            argv.extend(args.split_whitespace().map(String::from));
            let sel = crate::projects::parse_wrapped_args(&argv);
            let env = |k: &str| self.env.get(k).cloned();
            let (file, _) = crate::projects::find_project_file(self.dir.path()).unwrap();
            resolve(&file, &sel, &env)
        }
        fn profile(&self, args: &str) -> String {
            match self.run(args) {
                Ok(r) => r.profile,
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        fn err(&self, args: &str) -> String {
            match self.run(args) {
                Ok(r) => panic!("expected an error, got {r:?}"),
                Err(e) => e.to_string(),
            }
        }
    }

    // ---- required cases ------------------------------------------------

    #[test]
    fn case1_seed() {
        let f = Fx::new(SEED);
        let r = f.run("").unwrap();
        assert_eq!(r.profile, "devAccount");
        assert_eq!(r.stage, "dev");
        assert_eq!(r.project, "orders");
        assert_eq!(
            r.rule,
            "provider.profile = ${self:custom.myProfile.${self:custom.myStage}} with stage from provider.stage = dev"
        );
        assert_eq!(f.profile("deploy --stage prod"), "prodAccount");
        assert_eq!(f.profile("deploy -s prod"), "prodAccount");
        assert_eq!(
            f.run("deploy --stage prod").unwrap().rule,
            "provider.profile = ${self:custom.myProfile.${self:custom.myStage}} with stage from --stage"
        );
        let e = f.err("deploy -s qa");
        assert!(e.ends_with("serverless.yml: provider.profile: stage 'qa' is not in custom.myProfile (has: prod, dev) and there is no fallback"), "{e}");
    }

    #[test]
    fn case2_no_provider_stage() {
        let f = Fx::new(&SEED.replace("  stage: dev\n", ""));
        let e = f.err("");
        assert!(e.contains("provider.profile: variable ${opt:stage, self:provider.stage} has no value and no fallback"), "{e}");
        assert!(e.contains("key 'stage' is not in provider"), "{e}");
        // with a flag it works
        assert_eq!(f.profile("-s prod"), "prodAccount");
    }

    const PROFILES: &str = "custom:\n  profiles:\n    dev: devP\n    prod: prodP\n";

    #[test]
    fn case3_sls_stage() {
        let f = Fx::new(&format!(
            "service: s\n{PROFILES}provider:\n  profile: ${{self:custom.profiles.${{sls:stage}}}}\n"
        ));
        assert_eq!(f.profile(""), "devP");
        assert_eq!(f.profile("-s prod"), "prodP");
    }

    #[test]
    fn case4_self_provider_stage_ignores_flag() {
        let f = Fx::new(&format!(
            "{PROFILES}provider:\n  stage: dev\n  profile: ${{self:custom.profiles.${{self:provider.stage}}}}\n"
        ));
        let r = f.run("-s prod").unwrap();
        assert_eq!(r.profile, "devP");
        assert_eq!(r.stage, "prod");
    }

    #[test]
    fn case5_env_stage_with_literal_fallback() {
        let yml = format!(
            "{PROFILES}provider:\n  stage: ${{env:STAGE, 'dev'}}\n  profile: ${{self:custom.profiles.${{sls:stage}}}}\n"
        );
        let f = Fx::new(&yml).env("STAGE", "prod");
        let r = f.run("").unwrap();
        assert_eq!((r.stage.as_str(), r.profile.as_str()), ("prod", "prodP"));
        assert!(
            r.rule
                .ends_with("with stage from provider.stage = ${env:STAGE, 'dev'} (= prod)"),
            "{}",
            r.rule
        );
        let f = Fx::new(&yml);
        assert_eq!(f.profile(""), "devP");
    }

    #[test]
    fn case6_bare_literal_is_error() {
        let f = Fx::new("provider:\n  profile: ${env:SLS_PROFILE, foo}\n");
        let e = f.err("");
        assert!(
            e.contains("provider.profile") && e.contains("invalid literal fallback 'foo'"),
            "{e}"
        );
        let f = Fx::new("provider:\n  profile: ${env:SLS_PROFILE, foo}\n").env("SLS_PROFILE", "x");
        assert!(
            f.run("").is_err(),
            "syntax errors are reported even if the first source has a value"
        );
    }

    #[test]
    fn case7_params() {
        let f = Fx::new(
            "params:\n  default:\n    profile: paramDefault\n  prod:\n    profile: paramProd\nprovider:\n  profile: ${param:profile}\n",
        );
        assert_eq!(f.profile(""), "paramDefault");
        assert_eq!(f.profile("-s prod"), "paramProd");
        assert_eq!(f.profile("--param profile=cliParam"), "cliParam");
        assert_eq!(f.profile("-s prod --param=profile=cliParam"), "cliParam");
        let f = Fx::new("provider:\n  profile: ${param:profile}\n");
        let e = f.err("");
        assert!(e.contains("${param:profile} has no value"), "{e}");
    }

    #[test]
    fn case7b_v4_stage_params() {
        let f = Fx::new(
            "stages:\n  default:\n    params:\n      profile: d4\n  prod:\n    params:\n      profile: p4\nprovider:\n  profile: ${param:profile}\n",
        );
        assert_eq!(f.profile(""), "d4");
        assert_eq!(f.profile("-s prod"), "p4");
    }

    #[test]
    fn case8_interpolation() {
        let f = Fx::new("provider:\n  profile: ${opt:stage}-account\n");
        let e = f.err("");
        assert!(
            e.contains("${opt:stage} has no value and no fallback"),
            "{e}"
        );
        assert_eq!(f.profile("-s prod"), "prod-account");
    }

    #[test]
    fn case9_aws_profile_flag_wins() {
        let f = Fx::new(SEED);
        let r = f.run("--aws-profile cliProfile").unwrap();
        assert_eq!(r.profile, "cliProfile");
        assert!(r.rule.starts_with("--aws-profile"));
        // even when provider.profile cannot be resolved
        let f = Fx::new("provider:\n  profile: ${ssm:/x}\n");
        assert_eq!(f.profile("--aws-profile cliProfile"), "cliProfile");
    }

    #[test]
    fn case10_cloudformation_tags_and_merge_keys() {
        let f = Fx::new(
            r#"service: cfn
x-base: &base
  name: aws
  runtime: nodejs18.x
  region: us-east-2
custom:
  profiles:
    dev: tagDev
provider:
  <<: *base
  profile: ${self:custom.profiles.${sls:stage}}
  environment:
    TABLE: !Ref OrdersTable
    ARN: !GetAtt OrdersTable.Arn
    COND: !If [IsProd, a, b]
    JOINED: !Join ['', [a, !Ref AWS::Region]]
    SUBBED: !Sub "arn:${AWS::Partition}:s3:::${Bucket}"
    SSM: ${ssm:/not/needed}
resources:
  Conditions:
    IsProd: !Equals [!Ref Stage, prod]
    Not: !Not [!Condition IsProd]
    Both: !And [!Condition IsProd, !Or [!Condition IsProd, !Condition IsProd]]
  Resources:
    OrdersTable:
      Type: AWS::DynamoDB::Table
      Properties:
        AZ: !Select [0, !GetAZs '']
        Imp: !ImportValue shared-vpc
        Map: !FindInMap [M, !Ref AWS::Region, x]
        B64: !Base64 abc
        Cidr: !Cidr [!Ref Block, 6, 5]
        Split: !Split [',', 'a,b']
        Raw: ${cf:other.output}
"#,
        );
        let r = f.run("").unwrap();
        assert_eq!(r.profile, "tagDev");
        assert_eq!(r.region.as_deref(), Some("us-east-2"));
        assert_eq!(r.project, "cfn");
    }

    // ---- sources -------------------------------------------------------

    #[test]
    fn opt_sources() {
        let f = Fx::new(
            "provider:\n  profile: ${opt:aws-profile, opt:region, opt:s, 'fallback'}\n  region: ${opt:region, 'eu-west-3'}\n",
        );
        let r = f.run("").unwrap();
        assert_eq!(r.profile, "fallback");
        assert_eq!(r.region.as_deref(), Some("eu-west-3"));
        let f = Fx::new("provider:\n  profile: p-${opt:stage, 'none'}\n");
        assert_eq!(f.profile("-s prod"), "p-prod");
        assert_eq!(f.profile(""), "p-none");
        // Every option of the wrapped command counts, by its full name.
        let f = Fx::new("provider:\n  profile: acct-${opt:region, 'us-east-1'}\n");
        assert_eq!(f.profile("--region eu-west-1"), "acct-eu-west-1");
        assert_eq!(f.profile("-r eu-west-2"), "acct-eu-west-2");
        assert_eq!(f.profile(""), "acct-us-east-1");
    }

    #[test]
    fn self_whole_document_and_paths() {
        let f = Fx::new("provider:\n  profile: ${self:}\n");
        assert!(f.err("").contains("resolves to a mapping"));
        let f = Fx::new("custom:\n  list: [a, b]\nprovider:\n  profile: ${self:custom.list.1}\n");
        assert_eq!(f.profile(""), "b");
        let f = Fx::new("custom:\n  n: 42\nprovider:\n  profile: ${self:custom.n}\n");
        assert_eq!(f.profile(""), "42");
        let f = Fx::new(
            "custom:\n  n: 42\nprovider:\n  profile: acct-${self:custom.n}-${self:custom.b}\ncustom2: x\n",
        );
        assert!(f.run("").is_err());
        let f = Fx::new(
            "custom:\n  n: 42\n  b: true\nprovider:\n  profile: acct-${self:custom.n}-${self:custom.b}\n",
        );
        assert_eq!(f.profile(""), "acct-42-true");
    }

    #[test]
    fn env_source() {
        let f = Fx::new("provider:\n  profile: ${env:P}\n").env("P", "envP");
        assert_eq!(f.profile(""), "envP");
        let f = Fx::new("provider:\n  profile: ${env:P}\n");
        assert!(f.err("").contains("${env:P} has no value and no fallback"));
        let f = Fx::new("provider:\n  profile: ${env:A, env:B, \"lit\"}\n").env("B", "b");
        assert_eq!(f.profile(""), "b");
        let f = Fx::new("provider:\n  profile: ${env:A, env:B, \"lit\"}\n");
        assert_eq!(f.profile(""), "lit");
    }

    #[test]
    fn sls_sources() {
        let f = Fx::new("provider:\n  profile: ${sls:instanceId}\n");
        let e = f.err("");
        assert!(e.contains("variable ${sls:instanceId} cannot be resolved offline; map the stages in .credport.toml instead"), "{e}");
        let f = Fx::new("provider:\n  stage: ${sls:stage}\n  profile: x\n");
        assert!(f.err("").contains("while resolving the stage itself"));
        // with --stage provider.stage is not needed
        assert_eq!(f.profile("-s dev"), "x");
    }

    #[test]
    fn file_source() {
        let f = Fx::new(
            "custom: ${file(./config/custom.yml)}\nprovider:\n  profile: ${file(./accounts.json):${sls:stage}.profile}\n  region: ${self:custom.region}\n",
        );
        f.file(
            "accounts.json",
            r#"{"dev":{"profile":"jsonDev"},"prod":{"profile":"jsonProd"}}"#,
        )
        .file("config/custom.yml", "region: ${opt:region, 'ap-south-1'}\n");
        let r = f.run("").unwrap();
        assert_eq!(r.profile, "jsonDev");
        assert_eq!(r.region.as_deref(), Some("ap-south-1"));
        assert_eq!(f.profile("-s prod"), "jsonProd");
        let e = f.err("-s qa");
        assert!(e.contains("stage 'qa' is not in ./accounts.json:"), "{e}");
    }

    #[test]
    fn file_source_missing_text_and_outside() {
        let f = Fx::new("provider:\n  profile: ${file(./nope.yml):x, 'fb'}\n");
        assert_eq!(f.profile(""), "fb");
        let f = Fx::new("provider:\n  profile: ${file(./nope.yml)}\n");
        assert!(f.err("").contains("has no value"));
        let f = Fx::new("provider:\n  profile: ${file(profile.txt)}\n");
        f.file("profile.txt", "textProfile");
        assert_eq!(f.profile(""), "textProfile");
        let f = Fx::new("provider:\n  profile: ${file(../outside.yml)}\n");
        assert!(f.err("").contains("outside the service folder"));
        let f = Fx::new("provider:\n  profile: ${file(./profile.js):name}\n");
        assert!(f.err("").contains("cannot be resolved offline"));
        let f = Fx::new("provider:\n  profile: ${file(./bad.yml):a}\n");
        f.file("bad.yml", "a: [\n");
        assert!(f.err("").contains("bad.yml"));
    }

    #[test]
    fn file_content_variables_resolve_against_main_doc() {
        let f = Fx::new("custom:\n  who: nested\nprovider:\n  profile: ${file(p.yml):profile}\n");
        f.file("p.yml", "profile: from-${self:custom.who}\n");
        assert_eq!(f.profile(""), "from-nested");
    }

    #[test]
    fn str_to_bool() {
        let f = Fx::new("custom:\n  flag: ${strToBool(${env:F})}\nprovider:\n  profile: p-${self:custom.flag}\n").env("F", "1");
        assert_eq!(f.profile(""), "p-true");
        let f = Fx::new(
            "custom:\n  flag: ${strToBool(nope)}\nprovider:\n  profile: p-${self:custom.flag}\n",
        );
        assert!(f.err("").contains("strToBool"));
    }

    #[test]
    fn offline_sources_error() {
        for v in [
            "${ssm:/x}",
            "${cf:stack.out}",
            "${s3:b/k}",
            "${aws:accountId}",
            "${cf.us-east-1:s.o}",
            "${vault:secret}",
        ] {
            let f = Fx::new(&format!("provider:\n  profile: {v}\n"));
            let e = f.err("");
            assert!(e.contains(&format!("provider.profile: variable {v} cannot be resolved offline; map the stages in .credport.toml instead")), "{e}");
        }
        // even with a fallback
        let f = Fx::new("provider:\n  profile: ${ssm:/x, 'dev'}\n");
        assert!(f.err("").contains("cannot be resolved offline"));
    }

    #[test]
    fn fallbacks_nesting_and_reresolution() {
        let f = Fx::new(
            "custom:\n  a: ${self:custom.b}\n  b: ${env:X, self:custom.c}\n  c: '${opt:stage, \"z\"}'\nprovider:\n  profile: ${self:custom.a}-${self:custom.missing, 1}\n",
        );
        assert_eq!(f.profile(""), "z-1");
        // an env value containing a variable is resolved again
        let f = Fx::new("provider:\n  profile: ${env:P}\n").env("P", "${opt:stage}-via-env");
        assert_eq!(f.profile("-s qa"), "qa-via-env");
        // numbers, null, true literal fallbacks
        let f = Fx::new("provider:\n  profile: ${env:A, 12.5}\n");
        assert_eq!(f.profile(""), "12.5");
        let f = Fx::new("provider:\n  profile: ${env:A, null}\n");
        assert!(f.err("").contains("no AWS profile"));
    }

    #[test]
    fn cycles_are_errors() {
        let f = Fx::new(
            "custom:\n  a: ${self:custom.b}\n  b: ${self:custom.a}\nprovider:\n  profile: ${self:custom.a}\n",
        );
        let e = f.err("");
        assert!(e.contains("cycle"), "{e}");
        let f = Fx::new("provider:\n  profile: ${self:provider.profile}\n");
        assert!(f.err("").contains("cycle"));
        let f =
            Fx::new("custom:\n  a: ${self:custom.a.b}\nprovider:\n  profile: ${self:custom.a}\n");
        assert!(f.err("").contains("cycle"));
        // re-resolution loop through env
        let f = Fx::new("provider:\n  profile: ${env:P}\n").env("P", "${env:P}");
        assert!(f.err("").contains("deep"));
        // exponential fan-out is bounded
        let mut y = String::from("custom:\n");
        for i in 0..30 {
            y.push_str(&format!(
                "  v{i}: ${{self:custom.v{n}}}${{self:custom.v{n}}}\n",
                n = i + 1
            ));
        }
        y.push_str("  v30: x\nprovider:\n  profile: ${self:custom.v0}\n");
        let e = Fx::new(&y).err("");
        assert!(e.contains("steps") || e.contains("deep"), "{e}");
        // wide fan-out at shallow depth hits the step budget
        let mut y = String::from("custom:\n  leaf: x\n");
        for i in 0..6 {
            let refs = format!("${{self:custom.l{}}}", i + 1).repeat(8);
            y.push_str(&format!("  l{i}: {refs}\n"));
        }
        y.push_str("  l6: ${self:custom.leaf}\nprovider:\n  profile: ${self:custom.l0}\n");
        let e = Fx::new(&y).err("");
        assert!(e.contains("steps"), "{e}");
    }

    #[test]
    fn escapes_and_foreign_braces_left_alone() {
        let f = Fx::new("provider:\n  profile: 'p\\${opt:stage}-${AWS::Region}-${Foo}-${foo}'\n");
        assert_eq!(
            f.profile("-s x"),
            "p\\${opt:stage}-${AWS::Region}-${Foo}-${foo}"
        );
    }

    #[test]
    fn syntax_errors() {
        let f = Fx::new("provider:\n  profile: ${opt:stage\n");
        assert!(f.err("").contains("missing closing bracket"));
        let f = Fx::new("provider:\n  profile: ${opt:stage, 'x}\n");
        assert!(f.err("").contains("unterminated"));
        let deep = format!(
            "provider:\n  profile: {}x{}\n",
            "${env:A, ".repeat(200),
            "}".repeat(200)
        );
        assert!(Fx::new(&deep).run("").is_err());
    }

    #[test]
    fn unrelated_garbage_is_ignored() {
        let f = Fx::new(
            "service: ok\nfunctions:\n  f:\n    handler: ${ssm:/x}\n    env: ${bad syntax\n    other: ${env:X, foo}\nprovider:\n  profile: p\n",
        );
        assert_eq!(f.profile(""), "p");
        // a broken region never fails the resolution
        let f = Fx::new("provider:\n  profile: p\n  region: ${ssm:/region}\n");
        assert_eq!(f.run("").unwrap().region, None);
        // an unresolvable service falls back to the folder name
        let f = Fx::new("service: ${ssm:/svc}\nprovider:\n  profile: p\n");
        let r = f.run("").unwrap();
        assert_eq!(r.project, folder_name(&r.file));
    }

    #[test]
    fn use_dotenv() {
        let yml = "useDotenv: true\nprovider:\n  profile: ${env:PROFILE}\n  region: ${env:REGION, 'none'}\n";
        let f = Fx::new(yml);
        f.file(
            ".env",
            "# comment\nexport PROFILE=\"base profile\"\nREGION=eu-north-1 # trailing\n",
        )
        .file(
            ".env.prod",
            "PROFILE='prod-$NOT_EXPANDED'\nREGION=${BASE}-x\nBASE=ignored\n",
        );
        let r = f.run("").unwrap();
        assert_eq!(r.profile, "base profile");
        assert_eq!(r.region.as_deref(), Some("eu-north-1"));
        // .env.<stage> replaces .env entirely (v3), expanding ${VAR}
        let r = f.run("-s prod").unwrap();
        assert_eq!(r.profile, "prod-$NOT_EXPANDED");
        assert_eq!(r.region.as_deref(), Some("-x"));
        // real environment wins
        let f2 = Fx::new(yml).env("PROFILE", "real");
        f2.file(".env", "PROFILE=fromfile\n");
        assert_eq!(f2.profile(""), "real");
        // without useDotenv the file is ignored
        let f3 = Fx::new("provider:\n  profile: ${env:PROFILE, 'no'}\n");
        f3.file(".env", "PROFILE=fromfile\n");
        assert_eq!(f3.profile(""), "no");
    }

    #[test]
    fn dotenv_parser() {
        let v = parse_dotenv(
            "A=1\n  export B = \"x\\ny\"\nC='lit # not comment'\n#D=no\nE\nF=a # c\nG=`t`\n",
        );
        let m: HashMap<_, _> = v.into_iter().map(|(k, v, _)| (k, v)).collect();
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "x\ny");
        assert_eq!(m["C"], "lit # not comment");
        assert_eq!(m["F"], "a");
        assert_eq!(m["G"], "t");
        assert!(!m.contains_key("D") && !m.contains_key("E"));
        let look = |n: &str| (n == "X").then(|| "1".to_string());
        assert_eq!(expand_dotenv("a$X-${X}-${Y:-d}-\\$X", &look), "a1-1-d-$X");
    }

    #[test]
    fn serverless_json() {
        let f = Fx::named(
            "serverless.json",
            r#"{"service":"js","custom":{"p":{"dev":"jDev"}},"provider":{"name":"aws","profile":"${self:custom.p.${sls:stage}}","region":"us-west-2"}}"#,
        );
        let r = f.run("").unwrap();
        assert_eq!((r.project.as_str(), r.profile.as_str()), ("js", "jDev"));
        assert_eq!(r.region.as_deref(), Some("us-west-2"));
    }

    #[test]
    fn js_and_ts_configs_unsupported() {
        for n in ["serverless.ts", "serverless.js"] {
            let f = Fx::named(n, "module.exports = {}");
            let e = f.err("");
            assert!(e.contains(n) && e.contains(".credport.toml"), "{e}");
        }
    }

    #[test]
    fn v4_resolvers() {
        let f = Fx::new(
            "stages:\n  default:\n    resolvers:\n      acct:\n        type: aws\n        profile: v4Profile\n        region: eu-central-1\n",
        );
        let r = f.run("").unwrap();
        assert_eq!(r.profile, "v4Profile");
        assert_eq!(r.region.as_deref(), Some("eu-central-1"));
        assert!(r.rule.starts_with("stages.default.resolvers.acct.profile"));
        let f = Fx::new(
            "stages:\n  prod:\n    resolvers:\n      a:\n        type: aws\n        profile: pa\n  default:\n    resolvers:\n      b:\n        type: aws\n        profile: pb\n      c:\n        type: aws\n        profile: pc\n",
        );
        assert_eq!(f.profile("-s prod"), "pa");
        assert!(f.err("").contains("several aws resolvers"));
    }

    #[test]
    fn no_profile_and_bad_documents() {
        let f = Fx::new("service: x\nprovider:\n  name: aws\n");
        let e = f.err("");
        assert!(e.contains("no AWS profile for stage 'dev'"), "{e}");
        let f = Fx::new("- a\n- b\n");
        assert!(f.err("").contains("expected a mapping"));
        let f = Fx::new("a: [\n");
        assert!(f.err("").contains("invalid YAML"));
        let f = Fx::new("");
        assert!(f.err("").contains("no AWS profile"));
        let f = Fx::new("provider:\n  profile: !Ref Prof\n");
        assert!(f.err("").contains("CloudFormation intrinsic"));
        let f = Fx::new("a: &a [*a]\nprovider:\n  profile: p\n");
        let _ = f.run("");
        let f = Fx::new("provider:\n  <<: 5\n  profile: p\n");
        assert_eq!(f.profile(""), "p");
    }

    #[test]
    fn service_mapping_form_and_numeric_stage() {
        let f = Fx::new(
            "service:\n  name: old-style\nprovider:\n  stage: 2024\n  profile: p${sls:stage}\n",
        );
        let r = f.run("").unwrap();
        assert_eq!(
            (r.project.as_str(), r.stage.as_str(), r.profile.as_str()),
            ("old-style", "2024", "p2024")
        );
    }

    #[test]
    fn parser_shapes() {
        let t = parse_template("a${opt:stage, self:x.${sls:stage}, 'q,}', 3}b").unwrap();
        assert_eq!(t.len(), 3);
        let Part::Var(v) = &t[1] else { panic!() };
        assert_eq!(v.sources.len(), 4);
        assert_eq!(v.raw, "${opt:stage, self:x.${sls:stage}, 'q,}', 3}");
        assert!(!has_vars("${AWS::Region} ${Foo} \\${opt:x} $$ {}"));
        assert!(has_vars("$${opt:x}"));
        assert!(parse_template("${file(a.yml, b):c}").is_ok());
        assert!(parse_template("${opt:a, ,}").is_err());
        assert!(parse_template("${opt:a, foo bar}").is_err());
    }

    #[test]
    fn random_variable_strings_never_panic() {
        let alphabet: Vec<char> = "${}():,.'\" \\aAs:elfoptnv1-_é".chars().collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let doc: Value = yaml_serde::from_str("custom:\n  a: ${self:custom.a}\n  b: x\n").unwrap();
        let sel = Selection {
            stage: Some("dev".into()),
            ..Default::default()
        };
        let env = |_: &str| Some("${env:X}".to_string());
        for _ in 0..3000 {
            let len = (seed % 40) as usize;
            let mut text = String::new();
            for _ in 0..len {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                text.push(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            let _ = parse_template(&text);
            let mut r = Resolver::new(Path::new("/tmp/x/serverless.yml"), doc.clone(), &sel, &env);
            r.stage = StageState::Known("dev".into());
            let _ = r.resolve_string(&text, 0);
        }
    }
}
