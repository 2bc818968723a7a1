//! `cargo run --example compat-table [-- --write] [--dir DIR]`: merges the SDK
//! compatibility matrix results (`target/compat/<client>.json`, written by
//! `cargo test --test compat`) into one markdown table and prints it. The clients, modes
//! and the table's format are `report.rs`'s.
//!
//! With `--write` it also replaces the table in README.md and docs/COMPATIBILITY.md,
//! between `<!-- compat:start -->` and `<!-- compat:end -->`. `--dir` reads another
//! directory than `target/compat` (or `$CARGO_TARGET_DIR/compat`).
//!
//! Exits 1 when a client's file is missing (the matrix must cover every client), when a
//! row failed, or (with `--write`) when a file lacks the markers; the table is printed
//! regardless. Exits 2 on a bad argument or an unreadable results file.

#[allow(dead_code)]
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage: cargo run --example compat-table -- [--write] [--dir DIR]";

fn main() -> ExitCode {
    let mut write = false;
    let mut dir = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--write") => write = true,
            Some("--dir") => match args.next() {
                Some(d) => dir = Some(PathBuf::from(d)),
                None => {
                    eprintln!("compat-table: --dir needs a directory\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("compat-table: unknown argument {a:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let dir = dir.unwrap_or_else(report::dir);
    let (results, missing) = match report::load(&dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("compat-table: {e}");
            return ExitCode::from(2);
        }
    };
    let table = report::render(&results, &missing);
    print!("{table}");
    let mut ok = true;
    if !missing.is_empty() {
        eprintln!(
            "compat-table: no results for {} in {}",
            missing.join(", "),
            dir.display()
        );
        ok = false;
    }
    let failed: Vec<String> = results
        .iter()
        .flat_map(|r| {
            r.rows
                .iter()
                .filter(|row| row.result == "fail")
                .map(|row| format!("{}: {}", r.client, row.mode))
        })
        .collect();
    if !failed.is_empty() {
        eprintln!("compat-table: failed rows: {}", failed.join("; "));
        ok = false;
    }
    if write {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for rel in ["README.md", "docs/COMPATIBILITY.md"] {
            let path = root.join(rel);
            let written = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| {
                    report::replace_between(&text, &table).ok_or_else(|| {
                        format!(
                            "no {} ... {} markers; add them where the table belongs",
                            report::START,
                            report::END
                        )
                    })
                })
                .and_then(|text| std::fs::write(&path, text).map_err(|e| e.to_string()));
            match written {
                Ok(()) => eprintln!("compat-table: wrote the table into {rel}"),
                Err(e) => {
                    eprintln!("compat-table: {rel}: {e}");
                    ok = false;
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
