//! The module map's one rule, checked: no file uses a file that uses it back.
//!
//! ARCHITECTURE.md draws the library as layers whose arrows point down only. This test reads
//! every file under `src/` (the library; `main.rs` is the binary and only calls into it),
//! collects the paths each one uses (`crate::…`, `super::…`, `self::…`, and in a `mod.rs` or
//! `lib.rs` its own child modules by name), resolves each path to the file that defines it
//! (following `pub use` re-exports, which are a module's face and not a use), and fails on
//! any cycle between files, printing the files and the edges that close it.
//!
//! Not counted: unit-test modules (`#[cfg(test)] mod tests`, which may reach anywhere),
//! comments and doc comments (an intra-doc link is not a use), and `pub use` lines
//! themselves.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path from the crate root: `["daemon", "control"]`; the root is `[]`.
type ModPath = Vec<String>;

/// What the test knows about one source file.
struct File {
    /// Where it is, for messages.
    path: PathBuf,
    /// Its text without comments and without its unit-test module.
    code: String,
    /// Whether it is a `mod.rs` or `lib.rs` (it may name its child modules bare).
    is_dir_module: bool,
}

/// Every library file under `src`, keyed by module path.
fn library(src: &Path) -> BTreeMap<ModPath, File> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs")
                || path == src.join("main.rs")
            {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: ModPath = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let is_dir_module = matches!(module.last().map(String::as_str), Some("mod" | "lib"));
            if is_dir_module {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            out.insert(
                module,
                File {
                    path,
                    code: strip(&text),
                    is_dir_module,
                },
            );
        }
    }
    out
}

/// `text` without `//` comments (doc comments included), string literals' contents, and
/// everything from `#[cfg(test)]` followed by a `mod` onwards (unit tests sit at the end).
fn strip(text: &str) -> String {
    let mut code = String::with_capacity(text.len());
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break;
        }
        let without_comment = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        code.push_str(without_comment);
        code.push('\n');
    }
    code
}

/// The paths in `code`: every `a::b::c` chain starting at `crate`,
/// `super` or `self`, or at one of `children` (for a `mod.rs`), with `use` groups
/// (`use crate::a::{b, c::d}`) expanded. Paths on a `pub use` line are skipped.
fn paths(code: &str, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let code = without_reexports(code);
    let stmt = code.as_str();
    let bytes = stmt.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b':';
        if starts_word && is_ident(bytes[i]) {
            let (chain, end) = chain_at(stmt, i);
            let head = chain[0].as_str();
            if (chain.len() > 1 || stmt[end..].starts_with("::{"))
                && (matches!(head, "crate" | "super" | "self") || children.contains(head))
            {
                out.extend(expand(stmt, end, chain));
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// `code` without its `pub use …;` and `pub(crate) use …;` statements.
fn without_reexports(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    loop {
        let next = ["pub use ", "pub(crate) use "]
            .iter()
            .filter_map(|k| rest.find(k))
            .min();
        let Some(at) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        rest = match rest[at..].find(';') {
            Some(end) => &rest[at + end + 1..],
            None => "",
        };
    }
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Reads `ident(::ident)*` at `start`; returns the segments and where it ended.
fn chain_at(s: &str, start: usize) -> (Vec<String>, usize) {
    let b = s.as_bytes();
    let mut segs = Vec::new();
    let mut i = start;
    loop {
        let begin = i;
        while i < b.len() && is_ident(b[i]) {
            i += 1;
        }
        if i == begin {
            break;
        }
        segs.push(s[begin..i].to_string());
        if s[i..].starts_with("::")
            && s[i + 2..].starts_with(|c: char| c == '_' || c.is_alphanumeric())
        {
            i += 2;
        } else {
            break;
        }
    }
    (segs, i)
}

/// `prefix`, or when a `::{…}` group follows at `end`, `prefix` joined to each member of
/// the group (`self` standing for `prefix` itself).
fn expand(s: &str, end: usize, prefix: Vec<String>) -> Vec<Vec<String>> {
    let rest = &s[end..];
    let Some(group) = rest.strip_prefix("::{") else {
        return vec![prefix];
    };
    let mut depth = 1;
    let mut close = group.len();
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = i;
                    break;
                }
            }
            _ => {}
        }
    }
    let inner = &group[..close];
    let mut members = Vec::new();
    let mut depth = 0;
    let mut from = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                members.push(&inner[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    members.push(&inner[from..]);
    let mut out = Vec::new();
    for m in members {
        let m = m.trim();
        if m == "self" {
            out.push(prefix.clone());
        }
        if m.is_empty() || m == "self" {
            continue;
        }
        let (segs, e) = chain_at(m, 0);
        if segs.is_empty() {
            continue;
        }
        let mut full = prefix.clone();
        full.extend(segs.iter().cloned());
        out.extend(expand(m, e, full));
    }
    out
}

/// The names a module re-exports with `pub use`, mapped to the path they name.
fn reexports(code: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for stmt in code.split(';') {
        let t = stmt.trim_start();
        let Some(body) = t
            .strip_prefix("pub use ")
            .or_else(|| t.strip_prefix("pub(crate) use "))
        else {
            continue;
        };
        let (chain, end) = chain_at(body, 0);
        for full in expand(body, end, chain) {
            if let Some(last) = full.last() {
                out.insert(last.clone(), full.clone());
            }
        }
    }
    out
}

/// The file a path used from module `from` lands in, if it names something in this crate.
fn resolve(
    files: &BTreeMap<ModPath, File>,
    exports: &BTreeMap<ModPath, BTreeMap<String, Vec<String>>>,
    from: &ModPath,
    path: &[String],
    depth: usize,
) -> Option<ModPath> {
    if depth > 8 {
        return None;
    }
    let mut at: ModPath = Vec::new();
    let mut segs = path.iter().peekable();
    match segs.peek().map(|s| s.as_str()) {
        Some("crate") => {
            segs.next();
        }
        Some("super") => {
            at = from.clone();
            while segs.peek().map(|s| s.as_str()) == Some("super") {
                segs.next();
                at.pop();
            }
        }
        Some("self") => {
            segs.next();
            at = from.clone();
        }
        _ => at = from.clone(),
    }
    for seg in segs {
        let mut child = at.clone();
        child.push(seg.clone());
        if files.contains_key(&child) {
            at = child;
            continue;
        }
        // Not a file: an item of `at`, or a name `at` re-exports from elsewhere.
        if let Some(target) = exports.get(&at).and_then(|e| e.get(seg)) {
            return resolve(files, exports, &at, target, depth + 1);
        }
        break;
    }
    files.contains_key(&at).then_some(at)
}

fn name(m: &ModPath) -> String {
    if m.is_empty() {
        "lib".into()
    } else {
        m.join("/")
    }
}

/// Strongly connected components with more than one file (Tarjan).
fn cycles(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    struct T<'a> {
        edges: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<ModPath, usize>,
        low: BTreeMap<ModPath, usize>,
        stack: Vec<ModPath>,
        on: BTreeSet<ModPath>,
        out: Vec<Vec<ModPath>>,
    }
    fn visit(t: &mut T, v: &ModPath) {
        let n = t.index.len();
        t.index.insert(v.clone(), n);
        t.low.insert(v.clone(), n);
        t.stack.push(v.clone());
        t.on.insert(v.clone());
        for w in t.edges.get(v).into_iter().flatten() {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(&w);
                let done = &w == v;
                comp.push(w);
                if done {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// Which file uses which, across the library.
fn graph(
    src: &Path,
) -> (
    BTreeMap<ModPath, File>,
    BTreeMap<ModPath, BTreeSet<ModPath>>,
) {
    let files = library(src);
    let exports: BTreeMap<ModPath, BTreeMap<String, Vec<String>>> = files
        .iter()
        .map(|(m, f)| (m.clone(), reexports(&f.code)))
        .collect();
    let mut edges = BTreeMap::new();
    for (module, file) in &files {
        let children: BTreeSet<String> = if file.is_dir_module {
            files
                .keys()
                .filter(|k| k.len() == module.len() + 1 && k.starts_with(module))
                .map(|k| k.last().unwrap().clone())
                .collect()
        } else {
            BTreeSet::new()
        };
        let mut set = BTreeSet::new();
        for p in paths(&file.code, &children) {
            if let Some(target) = resolve(&files, &exports, module, &p, 0)
                && &target != module
            {
                set.insert(target);
            }
        }
        edges.insert(module.clone(), set);
    }
    (files, edges)
}

#[test]
fn no_file_uses_a_file_that_uses_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (files, edges) = graph(&src);
    assert!(
        files.len() > 50,
        "read only {} files under {}",
        files.len(),
        src.display()
    );
    let found = cycles(&edges);
    let mut report = String::new();
    for comp in &found {
        let set: BTreeSet<&ModPath> = comp.iter().collect();
        report.push_str(&format!(
            "cycle between {}:\n",
            comp.iter().map(name).collect::<Vec<_>>().join(", ")
        ));
        for a in comp {
            for b in edges[a].iter().filter(|b| set.contains(b)) {
                report.push_str(&format!("  {} uses {}\n", files[a].path.display(), name(b)));
            }
        }
    }
    assert!(found.is_empty(), "{report}");
}

/// The checker itself: a planted cycle is found, and each way of naming a module is seen.
#[test]
fn the_checker_sees_each_form_of_use() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |rel: &str, text: &str| {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod d;\n");
    // a -> b by a `use` group, b -> c through a re-export in d, c -> a by `super`.
    write(
        "a.rs",
        "use crate::{b::Thing, d};\n// crate::c::Ignored in a comment\n",
    );
    write("b.rs", "fn f() { crate::d::Reexported::new(); }\n");
    write(
        "d/mod.rs",
        "pub mod inner;\npub use crate::c::Reexported;\n",
    );
    write("d/inner.rs", "fn g() { super::super::a::x(); }\n");
    write(
        "c.rs",
        "fn h() { super::a::x(); }\n#[cfg(test)]\nmod tests { use crate::b::Thing; }\n",
    );
    let (_, edges) = graph(src);
    let m = |s: &str| -> ModPath { s.split('/').map(String::from).collect() };
    assert!(edges[&m("a")].contains(&m("b")), "{edges:?}");
    assert!(edges[&m("a")].contains(&m("d")), "{edges:?}");
    assert!(
        edges[&m("b")].contains(&m("c")),
        "re-export not followed: {edges:?}"
    );
    assert!(edges[&m("d/inner")].contains(&m("a")), "{edges:?}");
    assert!(
        !edges[&m("a")].contains(&m("c")),
        "a comment counted: {edges:?}"
    );
    assert!(
        !edges[&m("c")].contains(&m("b")),
        "a unit test counted: {edges:?}"
    );
    let found = cycles(&edges);
    assert_eq!(found.len(), 1, "{found:?}");
    let mut names: Vec<String> = found[0].iter().map(name).collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
}
