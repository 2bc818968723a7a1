//! The resolver proper: evaluates variables against the document, the options of the
//! wrapped command, the environment, `.env` files and referenced files, within depth and
//! step bounds, and reports what is missing with the keys that do exist.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use yaml_serde::{Mapping, Value};

use super::document::*;
use super::dotenv::*;
use super::template::*;
use crate::projects::Selection;
use crate::projects::error::ProjectError;
use crate::projects::files::{parse_json, parse_yaml, read_text};

/// A v4 `type: aws` resolver's account: its profile, region, and where it was found.
pub(super) struct V4Account {
    /// The profile.
    pub(super) profile: String,
    /// The region, if it names one.
    pub(super) region: Option<String>,
    /// The dotted path of the profile (`stages.prod.resolvers.main.profile`).
    pub(super) path: String,
}

/// Deepest nesting of variables / re-resolutions followed.
pub(super) const MAX_DEPTH: usize = 48;
/// Total source look-ups allowed for one resolution.
pub(super) const MAX_STEPS: usize = 20_000;

pub(super) enum Lookup {
    Found(Value),
    Missing(Option<MissKey>),
}

#[derive(Debug, Clone)]
pub(super) struct MissKey {
    pub(super) map: String,
    pub(super) missing: String,
    pub(super) has: Vec<String>,
}

pub(super) enum StageState {
    Resolving,
    Known(String),
}

pub(super) struct Evaluator<'a> {
    pub(super) file: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) doc: Value,
    pub(super) sel: &'a Selection,
    pub(super) env: &'a dyn crate::env::Env,
    pub(super) dotenv: HashMap<String, String>,
    pub(super) stage: StageState,
    pub(super) key: String,
    pub(super) steps: usize,
    pub(super) stack: Vec<String>,
    pub(super) files: HashMap<PathBuf, Option<Value>>,
}

impl<'a> Evaluator<'a> {
    pub(super) fn new(
        file: &Path,
        doc: Value,
        sel: &'a Selection,
        env: &'a dyn crate::env::Env,
    ) -> Self {
        Evaluator {
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

    pub(super) fn resolve_path(
        &mut self,
        path: &[String],
        depth: usize,
    ) -> Result<Lookup, ProjectError> {
        self.resolve_in(None, path, depth)
    }

    /// Resolves every variable in `s`.
    pub(super) fn resolve_string(&mut self, s: &str, depth: usize) -> Result<Value, ProjectError> {
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
    pub(super) fn resolve_top(&mut self, path: &[&str]) -> Result<Option<String>, ProjectError> {
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

    pub(super) fn raw_at(&self, path: &[&str]) -> Option<String> {
        let mut node = &self.doc;
        for seg in path {
            node = child(node, seg)?;
        }
        scalar_string(node)
    }

    pub(super) fn load_dotenv(&mut self, stage: &str) -> Result<(), ProjectError> {
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
    pub(super) fn v4_resolver(&mut self, stage: &str) -> Result<Option<V4Account>, ProjectError> {
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
                    return Ok(Some(V4Account {
                        profile,
                        region,
                        path: format!("stages.{st}.resolvers.{name}.profile"),
                    }));
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
