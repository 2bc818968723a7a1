//! Result rows and `target/compat/<client>.json`, which `scripts/compat-table` merges.

use std::path::PathBuf;

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

/// The order modes appear in (also `scripts/compat-table`'s column order).
pub const MODES: &[&str] = &[
    "full-uri+token",
    "full-uri+token-file",
    "exec",
    "exec --env-token",
    "env",
    "env --env-token",
    "token-file-rotation",
    "refresh",
    "account-switch",
    "rotated-token-failure",
];

/// `target/compat`.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("compat")
}

/// Writes the client's rows and returns the file.
pub fn write(id: &str, name: &str, version: &str, wall: f64, rows: &[Row]) -> PathBuf {
    let mut rows = rows.to_vec();
    rows.sort_by_key(|r| {
        MODES
            .iter()
            .position(|m| *m == r.mode)
            .unwrap_or(usize::MAX)
    });
    let json = serde_json::json!({
        "client": name,
        "id": id,
        "version": version,
        "finished_at": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        "wall_seconds": (wall * 10.0).round() / 10.0,
        "rows": rows.iter().map(|r| serde_json::json!({
            "client": name,
            "version": version,
            "mode": r.mode,
            "result": r.verdict.as_str(),
            "seconds": r.seconds.map(|s| (s * 10.0).round() / 10.0),
            "note": r.note,
        })).collect::<Vec<_>>(),
    });
    let dir = dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{id}.json"));
    let tmp = dir.join(format!(".{id}.json.tmp"));
    std::fs::write(&tmp, serde_json::to_string_pretty(&json).unwrap() + "\n").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}
