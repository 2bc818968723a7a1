//! README.md's shell examples, run as written.
//!
//! Every ```sh, ```bash and ```fish block in README.md is preceded by a marker comment
//! saying how it is tested, and a block without one fails this test:
//!
//! * `<!-- readme-test: run [in=orders] [daemon] -->`: run the block (bash, or fish for a
//!   fish block) in a throwaway HOME with moto as STS, `devAccount`/`prodAccount` roles
//!   (accounts 111111111111 / 222222222222), `[default]` keys and `AWS_PROFILE=default` in
//!   the environment, the Quick start's `config.toml`, and the seed Serverless project in
//!   `~/orders` (`in=orders` runs there, else in HOME); `daemon` starts `credport serve` first.
//! * `<!-- readme-test: envrc -->`: the block is a direnv `.envrc`: it is written to the
//!   project, allowed (`credport allow`, then `direnv allow`), and `direnv exec . serverless invoke local -f hello` must see dev.
//! * `<!-- readme-test: skip: REASON -->`: not run here, and the README says why nearby.
//!
//! Trailing comments are checked, so the examples' own words are the assertions:
//! `# ... -> PROFILE` (the handler or script the line runs prints PROFILE's account),
//! `# error: TEXT` (the line fails, and says TEXT), `# prints: TEXT` (it prints TEXT).
//! The daemon listens on a free port: `127.0.0.1:9911` in a block becomes that address.

mod support;

use std::path::Path;
use std::process::Command;

use support::fixture;
use support::sls::World;

/// A shell example and how it is tested.
#[derive(Debug)]
struct Block {
    line: usize,
    lang: String,
    marker: String,
    text: String,
}

fn blocks(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(lang) = lines[i].strip_prefix("```") else {
            i += 1;
            continue;
        };
        let lang = lang.trim().to_string();
        let start = i;
        let mut body = Vec::new();
        i += 1;
        while i < lines.len() && !lines[i].starts_with("```") {
            body.push(lines[i]);
            i += 1;
        }
        i += 1;
        if !matches!(lang.as_str(), "sh" | "bash" | "fish") {
            continue;
        }
        let marker = lines[..start]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| l.trim().strip_prefix("<!-- readme-test:"))
            .and_then(|l| l.strip_suffix("-->"))
            .map(|m| m.trim().to_string())
            .unwrap_or_default();
        out.push(Block {
            line: start + 1,
            lang,
            marker,
            text: body.join("\n"),
        });
    }
    out
}

/// The account a profile of the test world belongs to.
fn account_of(profile: &str) -> Option<&'static str> {
    match profile {
        "devAccount" => Some("111111111111"),
        "prodAccount" => Some("222222222222"),
        _ => None,
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Turns a block into a bash script that checks the lines' trailing comments.
fn script(block: &Block, port: u16) -> String {
    let text = block
        .text
        .replace("127.0.0.1:9911", &format!("127.0.0.1:{port}"));
    // Join continuation lines.
    let mut commands: Vec<String> = Vec::new();
    let mut pending = String::new();
    for l in text.lines() {
        if let Some(stripped) = l.strip_suffix('\\') {
            pending.push_str(stripped);
            pending.push(' ');
        } else {
            pending.push_str(l);
            commands.push(std::mem::take(&mut pending));
        }
    }
    let mut out = String::from("set -euo pipefail\nT=$(mktemp -d)\n");
    for c in commands {
        let (cmd, comment) = match c.find(" #") {
            Some(p) => (c[..p].trim_end().to_string(), c[p + 2..].trim().to_string()),
            None => (c.clone(), String::new()),
        };
        if cmd.trim().is_empty() {
            continue;
        }
        let shown = quote(cmd.trim());
        if let Some(text) = comment.strip_prefix("error:") {
            out.push_str(&format!(
                "if {{ {cmd}\n}} >\"$T/out\" 2>\"$T/err\"; then echo \"README: expected an error: \"{shown} >&2; exit 1; fi\n\
                 grep -qF -- {} \"$T/err\" || {{ echo \"README: \"{shown}\": error text not found: \"{}; cat \"$T/err\"; exit 1; }} >&2\n",
                quote(text.trim()),
                quote(text.trim())
            ));
        } else if let Some(account) = comment
            .rsplit_once("->")
            .and_then(|(_, p)| account_of(p.trim()))
        {
            out.push_str(&format!(
                "{{ {cmd}\n}} >\"$T/out\" 2>\"$T/err\" || {{ echo \"README: failed: \"{shown}; cat \"$T/out\" \"$T/err\"; exit 1; }} >&2\n\
                 grep -q '\"account\": \"{account}\"' \"$T/out\" || {{ echo \"README: \"{shown}\" did not print account {account}\"; cat \"$T/out\" \"$T/err\"; exit 1; }} >&2\n"
            ));
        } else if let Some(text) = comment.strip_prefix("prints:") {
            out.push_str(&format!(
                "{{ {cmd}\n}} >\"$T/out\" 2>&1 || {{ echo \"README: failed: \"{shown}; cat \"$T/out\"; exit 1; }} >&2\n\
                 grep -qF -- {} \"$T/out\" || {{ echo \"README: \"{shown}\" did not print \"{}; cat \"$T/out\"; exit 1; }} >&2\n",
                quote(text.trim()),
                quote(text.trim())
            ));
        } else {
            out.push_str(&cmd);
            out.push('\n');
        }
    }
    out
}

/// Runs one block; `Err` explains the failure.
fn run(block: &Block) -> Result<(), String> {
    let words: Vec<&str> = block.marker.split_whitespace().collect();
    let w = World::new().with_handlers();
    let port = support::moto::free_port();
    w.home.write_config(&fixture(&format!(
        r#"
        [server]
        listen = ["127.0.0.1:{port}"]

        [projects.orders-api]
        default_stage = "dev"
        stages = {{ dev = "devAccount", prod = "prodAccount" }}
        "#
    )));
    std::fs::copy(
        support::repo_root().join("tests/clients/python/whoami.py"),
        w.project.join("my_script.py"),
    )
    .map_err(|e| e.to_string())?;
    let _daemon = (words.contains(&"daemon") || words.first() == Some(&"envrc")).then(|| {
        w.home
            .serve_with(&["--listen", &format!("127.0.0.1:{port}")])
    });
    let dir = if words.contains(&"in=orders") || words.first() == Some(&"envrc") {
        w.project.clone()
    } else {
        w.home.path().to_path_buf()
    };
    let out = match (words.first().copied(), block.lang.as_str()) {
        (Some("envrc"), _) => {
            std::fs::write(w.project.join(".envrc"), &block.text).map_err(|e| e.to_string())?;
            // As the README says: `credport allow` once, as `direnv allow`.
            w.sh("credport allow && direnv allow . && direnv exec . serverless invoke local -f hello")
        }
        (_, "fish") => {
            let mut c = shell_like(&w, "fish", &dir);
            c.arg("-c").arg(
                block
                    .text
                    .replace("127.0.0.1:9911", &format!("127.0.0.1:{port}")),
            );
            c.output().map_err(|e| format!("fish: {e}"))?
        }
        _ => {
            let mut c = shell_like(&w, "bash", &dir);
            c.arg("-c").arg(script(block, port));
            c.output().map_err(|e| format!("bash: {e}"))?
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "exit {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        ));
    }
    if words.first() == Some(&"envrc") && !stdout.contains("\"account\": \"111111111111\"") {
        return Err(format!(
            "direnv: the handler did not see devAccount\n{stdout}\n{stderr}"
        ));
    }
    Ok(())
}

/// A shell with the world's environment and `credport` on PATH, in `dir`.
fn shell_like(w: &World, shell: &str, dir: &Path) -> Command {
    let template = w.sh_command();
    let mut c = Command::new(shell);
    c.env_clear();
    for (k, v) in template.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.current_dir(dir);
    c
}

#[test]
fn every_shell_example_in_the_readme_runs_or_says_why_not() {
    let readme = std::fs::read_to_string(support::repo_root().join("README.md")).unwrap();
    let all = blocks(&readme);
    assert!(all.len() >= 8, "found only {} shell examples", all.len());
    let mut unmarked = Vec::new();
    let mut to_run = Vec::new();
    for b in &all {
        let m = b.marker.as_str();
        if m.starts_with("skip:") && m.len() > "skip:".len() + 3 {
            eprintln!("README.md:{}: not run: {}", b.line, &m[5..].trim());
        } else if m.starts_with("run") || m == "envrc" {
            to_run.push(b);
        } else {
            unmarked.push(b.line);
        }
    }
    assert!(
        unmarked.is_empty(),
        "README.md: shell examples at lines {unmarked:?} have no `<!-- readme-test: run|envrc|skip: REASON -->` marker"
    );
    // Three at a time: each starts moto and maybe a daemon, and serverless is slow to start.
    let failures: Vec<String> = std::thread::scope(|s| {
        let mut failures = Vec::new();
        for chunk in to_run.chunks(3) {
            let handles: Vec<_> = chunk.iter().map(|b| (b, s.spawn(move || run(b)))).collect();
            for (b, h) in handles {
                match h.join() {
                    Ok(Ok(())) => eprintln!("README.md:{}: ok ({})", b.line, b.marker),
                    Ok(Err(e)) => failures.push(format!(
                        "README.md:{} ({}):\n{}\n---\n{e}",
                        b.line, b.marker, b.text
                    )),
                    Err(_) => failures.push(format!("README.md:{}: the runner panicked", b.line)),
                }
            }
        }
        failures
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(!to_run.is_empty(), "no README example ran");
}

#[test]
fn trailing_comments_become_checks() {
    let b = Block {
        line: 1,
        lang: "sh".into(),
        marker: "run".into(),
        text: fixture(
            r#"
            credport resolve -- sls deploy -s qa   # error: 'qa' is not
            credport exec -- x   # prod -> prodAccount
            curl http://127.0.0.1:9911/healthz \
              -s   # prints: ok"#,
        ),
    };
    let s = script(&b, 4242);
    assert!(
        s.contains(
            "then echo \"README: expected an error: \"'credport resolve -- sls deploy -s qa'"
        ),
        "{s}"
    );
    assert!(
        s.contains("grep -qF -- ''\\''qa'\\'' is not' \"$T/err\""),
        "{s}"
    );
    assert!(s.contains("grep -q '\"account\": \"222222222222\"'"), "{s}");
    assert!(
        s.contains("curl http://127.0.0.1:4242/healthz    -s\n}"),
        "{s}"
    );
    assert!(s.contains("grep -qF -- 'ok' \"$T/out\""), "{s}");
}
