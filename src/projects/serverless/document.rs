//! Walking a parsed service document: children by key, dotted paths that stop at a string
//! holding variables (to resolve it first), key lists and type names for messages.

use std::path::{Component, Path, PathBuf};

use yaml_serde::Value;

use super::template::has_vars;

pub(super) fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(super) fn child<'v>(node: &'v Value, seg: &str) -> Option<&'v Value> {
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

pub(super) fn keys_of(v: &Value) -> Vec<String> {
    match v {
        Value::Mapping(m) => m.keys().filter_map(scalar_string).collect(),
        Value::Sequence(s) => (0..s.len()).map(|i| i.to_string()).collect(),
        _ => Vec::new(),
    }
}

pub(super) fn kind_name(v: &Value) -> &'static str {
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

pub(super) enum Walk<'v> {
    Done(&'v Value),
    /// A string holding variables after consuming this many segments.
    VarStr(usize, &'v str),
    /// Segment at this index is absent from the given parent.
    Missing(usize, &'v Value),
}

pub(super) fn walk<'v>(root: &'v Value, segs: &[String], skip_root: bool) -> Walk<'v> {
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
pub(super) fn normalize(p: &Path) -> PathBuf {
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
