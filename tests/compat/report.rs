//! The matrix's clients and modes, its result rows, `target/compat/<client>.json`, and
//! the table merged from those files into README.md and docs/COMPATIBILITY.md.
//!
//! The compat tests call [`write`]; the `compat-table` example (`tests/compat/table.rs`,
//! `cargo run --example compat-table [-- --write]`) calls [`load`], [`render`] and
//! [`replace_between`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a mode did with a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// The client cannot do this (the note says why); not a failure.
    Unsupported,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Unsupported => "unsupported",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Row {
    pub mode: &'static str,
    pub verdict: Verdict,
    /// The mode's own measure (the one-shot call, the switch delay, time to fail...).
    pub seconds: Option<f64>,
    pub note: String,
}

impl Row {
    pub fn pass(mode: &'static str, seconds: f64, note: impl Into<String>) -> Row {
        Row {
            mode,
            verdict: Verdict::Pass,
            seconds: Some(seconds),
            note: note.into(),
        }
    }
    pub fn fail(mode: &'static str, seconds: Option<f64>, note: impl Into<String>) -> Row {
        Row {
            mode,
            verdict: Verdict::Fail,
            seconds,
            note: note.into(),
        }
    }
    pub fn unsupported(mode: &'static str, seconds: Option<f64>, note: impl Into<String>) -> Row {
        Row {
            mode,
            verdict: Verdict::Unsupported,
            seconds,
            note: note.into(),
        }
    }
}

/// Every client of the matrix by id (its results file is `target/compat/<id>.json`), in
/// table order. A client missing from the results is a row of its own ("no results").
pub const CLIENTS: &[&str] = &[
    "boto3",
    "boto3-1.32",
    "awscli-v1",
    "awscli-v2",
    "js-v3",
    "js-v2",
    "rust",
    "serverless-node",
    "serverless-python",
];

/// Every mode, in column order: its id (in the rows) and its column label.
pub const MODES: &[(&str, &str)] = &[
    ("full-uri+token", "FULL_URI + token"),
    ("full-uri+token-file", "FULL_URI + token file"),
    ("exec", "`exec`"),
    ("exec --env-token", "`exec --env-token`"),
    ("env", "`env`"),
    ("env --env-token", "`env --env-token`"),
    ("token-file-rotation", "token file rotation"),
    ("refresh", "refresh"),
    ("account-switch", "account switch"),
    ("rotated-token-failure", "rotated token"),
];

/// One client's results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientResults {
    /// The client's display name.
    pub client: String,
    /// Its id (one of [`CLIENTS`]).
    pub id: String,
    pub version: String,
    /// When the client's test finished, in seconds since the Unix epoch.
    pub finished_at: u64,
    pub wall_seconds: f64,
    pub rows: Vec<ResultRow>,
}

/// One row of a results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    pub client: String,
    pub version: String,
    pub mode: String,
    /// `pass`, `fail` or `unsupported`.
    pub result: String,
    pub seconds: Option<f64>,
    pub note: String,
}

/// `target/compat`: next to the tests' `CARGO_TARGET_TMPDIR` when compiled into a test,
/// else under `$CARGO_TARGET_DIR` or the repository's `target/`.
pub fn dir() -> PathBuf {
    let target = match option_env!("CARGO_TARGET_TMPDIR") {
        Some(tmp) => Path::new(tmp).parent().expect("target dir").to_path_buf(),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target")),
    };
    target.join("compat")
}

/// Writes the client's rows and returns the file. `id` must be one of [`CLIENTS`].
pub fn write(id: &str, name: &str, version: &str, wall: f64, rows: &[Row]) -> PathBuf {
    assert!(
        CLIENTS.contains(&id),
        "client id {id:?} is not in tests/compat/report.rs CLIENTS; add it there (the table's row order)"
    );
    let mut rows = rows.to_vec();
    rows.sort_by_key(|r| {
        MODES
            .iter()
            .position(|(m, _)| *m == r.mode)
            .unwrap_or(usize::MAX)
    });
    let tenths = |s: f64| (s * 10.0).round() / 10.0;
    let results = ClientResults {
        client: name.to_string(),
        id: id.to_string(),
        version: version.to_string(),
        finished_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        wall_seconds: tenths(wall),
        rows: rows
            .iter()
            .map(|r| ResultRow {
                client: name.to_string(),
                version: version.to_string(),
                mode: r.mode.to_string(),
                result: r.verdict.as_str().to_string(),
                seconds: r.seconds.map(tenths),
                note: r.note.clone(),
            })
            .collect(),
    };
    let dir = dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{id}.json"));
    let tmp = dir.join(format!(".{id}.json.tmp"));
    std::fs::write(&tmp, serde_json::to_string_pretty(&results).unwrap() + "\n").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// The results in `dir`: every client of [`CLIENTS`] that has a file, in that order, then
/// any other `*.json` by file name; and the ids of the [`CLIENTS`] without a file.
pub fn load(dir: &Path) -> Result<(Vec<ClientResults>, Vec<&'static str>), String> {
    let read = |path: &Path| -> Result<ClientResults, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    };
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for id in CLIENTS {
        let path = dir.join(format!("{id}.json"));
        if path.exists() {
            found.push(read(&path)?);
        } else {
            missing.push(*id);
        }
    }
    let mut extra: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && p.file_stem()
                        .and_then(|s| s.to_str())
                        .is_some_and(|s| !s.starts_with('.') && !CLIENTS.contains(&s))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    extra.sort();
    for path in extra {
        found.push(read(&path)?);
    }
    Ok((found, missing))
}

fn secs(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1} s")).unwrap_or_default()
}

fn cell(row: Option<&ResultRow>) -> String {
    let Some(row) = row else {
        return String::new();
    };
    let mark = match row.result.as_str() {
        "pass" => "✅",
        "fail" => "❌",
        "unsupported" => "—",
        other => other,
    };
    match (row.result.as_str(), row.seconds) {
        ("pass", Some(s)) => format!("{mark} {}", secs(Some(s))),
        _ => mark.to_string(),
    }
}

/// A table cell's text: `|` escaped, newlines as spaces.
fn esc(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The markdown table: a caption with the last run's date, one row per client (columns:
/// the modes any client ran), a "no results" row per missing client, then every row in a
/// `<details>` block.
pub fn render(results: &[ClientResults], missing: &[&str]) -> String {
    let date = results
        .iter()
        .map(|r| r.finished_at)
        .max()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t as i64).ok())
        .map(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .expect("a date formats")
        })
        .unwrap_or_else(|| "never".to_string());
    let used: Vec<&(&str, &str)> = MODES
        .iter()
        .filter(|(m, _)| {
            results
                .iter()
                .any(|r| r.rows.iter().any(|row| row.mode == *m))
        })
        .collect();
    let labels: Vec<&str> = used.iter().map(|(_, label)| *label).collect();
    let mut out = vec![
        format!(
            "SDK compatibility matrix, last run {date} (`cargo test --test compat`, then \
             `cargo run --example compat-table -- --write`). ✅ passed (seconds: the call, the \
             switch delay or the time to fail, see docs/COMPATIBILITY.md), — unsupported by the \
             client (reason below), ❌ failed."
        ),
        String::new(),
        format!("| client | version | {} |", labels.join(" | ")),
        format!("|---|---|{}", "---|".repeat(used.len())),
    ];
    for r in results {
        let cells: Vec<String> = used
            .iter()
            .map(|(m, _)| cell(r.rows.iter().find(|row| row.mode == *m)))
            .collect();
        out.push(format!(
            "| {} | {} | {} |",
            esc(&r.client),
            esc(&r.version),
            cells.join(" | ")
        ));
    }
    for id in missing {
        out.push(format!(
            "| {id} | **no results** | {} |",
            vec![""; used.len()].join(" | ")
        ));
    }
    out.extend(
        [
            "",
            "<details><summary>Every row (client, version, mode, result, seconds, note)</summary>",
            "",
            "| client | version | mode | result | seconds | note |",
            "|---|---|---|---|---|---|",
        ]
        .map(String::from),
    );
    for row in results.iter().flat_map(|r| &r.rows) {
        out.push(format!(
            "| {} | {} | {} | {} | {} | {} |",
            esc(&row.client),
            esc(&row.version),
            row.mode,
            row.result,
            secs(row.seconds),
            esc(&row.note)
        ));
    }
    out.extend(["", "</details>"].map(String::from));
    out.join("\n") + "\n"
}

/// The markers the table goes between in README.md and docs/COMPATIBILITY.md.
pub const START: &str = "<!-- compat:start -->";
/// See [`START`].
pub const END: &str = "<!-- compat:end -->";

/// `text` with everything between [`START`] and [`END`] replaced by `table`; `None` when a
/// marker is missing.
pub fn replace_between(text: &str, table: &str) -> Option<String> {
    let (head, rest) = text.split_once(START)?;
    let (_, tail) = rest.split_once(END)?;
    Some(format!("{head}{START}\n{table}{END}{tail}"))
}

/// The table of a fixed set of results files, in the format README.md and
/// docs/COMPATIBILITY.md hold: known clients in [`CLIENTS`] order, an unknown client after
/// them, "no results" rows, every result kind, cell escaping, rounding to tenths.
#[test]
fn table_renders_results_in_the_committed_format() {
    let dir = tempfile::tempdir().unwrap();
    for (id, json) in [
        ("boto3", BOTO3_RESULTS),
        ("rust", RUST_RESULTS),
        ("zz-extra", EXTRA_RESULTS),
    ] {
        std::fs::write(dir.path().join(format!("{id}.json")), json).unwrap();
    }
    let (results, missing) = load(dir.path()).unwrap();
    let ids: Vec<&str> = results.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["boto3", "rust", "zz-extra"]);
    assert_eq!(
        missing,
        [
            "boto3-1.32",
            "awscli-v1",
            "awscli-v2",
            "js-v3",
            "js-v2",
            "serverless-node",
            "serverless-python"
        ]
    );
    let table = render(&results, &missing);
    assert_eq!(table, EXPECTED_TABLE, "rendered:\n{table}");

    let doc = format!("# Title\n\n{START}\nold table\n{END}\n\nafter\n");
    assert_eq!(
        replace_between(&doc, &table).unwrap(),
        format!("# Title\n\n{START}\n{table}{END}\n\nafter\n")
    );
    assert_eq!(replace_between("no markers here", &table), None);
    assert_eq!(replace_between(&format!("{START} only"), &table), None);
}

/// No results at all: a table that says so, one row per client.
#[test]
fn table_without_results_lists_every_client_as_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (results, missing) = load(&dir.path().join("absent")).unwrap();
    assert!(results.is_empty());
    assert_eq!(missing, CLIENTS);
    let table = render(&results, &missing);
    assert!(
        table.starts_with("SDK compatibility matrix, last run never ("),
        "{table}"
    );
    assert!(
        table.contains("\n| client | version |  |\n|---|---|\n| boto3 | **no results** |  |\n"),
        "{table}"
    );
}

const BOTO3_RESULTS: &str = r#"{"client": "boto3 (latest)", "id": "boto3", "version": "1.40.1", "finished_at": 1764400000, "wall_seconds": 12.3,
 "rows": [
  {"client": "boto3 (latest)", "version": "1.40.1", "mode": "full-uri+token", "result": "pass", "seconds": 0.4, "note": "one call"},
  {"client": "boto3 (latest)", "version": "1.40.1", "mode": "exec", "result": "fail", "seconds": 2.0, "note": "a | pipe\nand a newline"},
  {"client": "boto3 (latest)", "version": "1.40.1", "mode": "refresh", "result": "unsupported", "seconds": null, "note": "no refresh"},
  {"client": "boto3 (latest)", "version": "1.40.1", "mode": "env", "result": "pass", "seconds": null, "note": ""}
 ]}
"#;

const RUST_RESULTS: &str = r#"{"client": "AWS SDK for Rust", "id": "rust", "version": "1.5 | x", "finished_at": 1764403661, "wall_seconds": 3,
 "rows": [
  {"client": "AWS SDK for Rust", "version": "1.5 | x", "mode": "full-uri+token", "result": "pass", "seconds": 10, "note": "n"},
  {"client": "AWS SDK for Rust", "version": "1.5 | x", "mode": "account-switch", "result": "weird", "seconds": 0.05, "note": "w"}
 ]}
"#;

const EXTRA_RESULTS: &str = r#"{"client": "Extra", "id": "zz-extra", "version": "0", "finished_at": 1764300000, "wall_seconds": 1,
 "rows": [{"client": "Extra", "version": "0", "mode": "custom-mode", "result": "pass", "seconds": 1.25, "note": "x"}]}
"#;

const EXPECTED_TABLE: &str = r#"SDK compatibility matrix, last run 2025-11-29 08:07 UTC (`cargo test --test compat`, then `cargo run --example compat-table -- --write`). ✅ passed (seconds: the call, the switch delay or the time to fail, see docs/COMPATIBILITY.md), — unsupported by the client (reason below), ❌ failed.

| client | version | FULL_URI + token | `exec` | `env` | refresh | account switch |
|---|---|---|---|---|---|---|
| boto3 (latest) | 1.40.1 | ✅ 0.4 s | ❌ | ✅ | — |  |
| AWS SDK for Rust | 1.5 \| x | ✅ 10.0 s |  |  |  | weird |
| Extra | 0 |  |  |  |  |  |
| boto3-1.32 | **no results** |  |  |  |  |  |
| awscli-v1 | **no results** |  |  |  |  |  |
| awscli-v2 | **no results** |  |  |  |  |  |
| js-v3 | **no results** |  |  |  |  |  |
| js-v2 | **no results** |  |  |  |  |  |
| serverless-node | **no results** |  |  |  |  |  |
| serverless-python | **no results** |  |  |  |  |  |

<details><summary>Every row (client, version, mode, result, seconds, note)</summary>

| client | version | mode | result | seconds | note |
|---|---|---|---|---|---|
| boto3 (latest) | 1.40.1 | full-uri+token | pass | 0.4 s | one call |
| boto3 (latest) | 1.40.1 | exec | fail | 2.0 s | a \| pipe and a newline |
| boto3 (latest) | 1.40.1 | refresh | unsupported |  | no refresh |
| boto3 (latest) | 1.40.1 | env | pass |  |  |
| AWS SDK for Rust | 1.5 \| x | full-uri+token | pass | 10.0 s | n |
| AWS SDK for Rust | 1.5 \| x | account-switch | weird | 0.1 s | w |
| Extra | 0 | custom-mode | pass | 1.2 s | x |

</details>
"#;
