//! The editor path, end to end: the env files `credport init --editor vscode` writes (the
//! output of `credport env --format dotenv`) are parsed by the parsers editors and their
//! launchers use, python-dotenv and Node's `dotenv` package, and a Python handler
//! (`python handler.py`) and a Node handler (`node -e`) are started as VS Code starts them:
//! with the parsed variables and nothing else from the shell; the Node handler also with
//! node's own `--env-file` (as the JetBrains configuration runs it). Each gets its stage's account
//! from moto's STS, through the running daemon, and keeps getting it after a token rotation.
//!
//! The only variable added to the env file's is `AWS_ENDPOINT_URL_STS` (the test's STS is
//! moto on loopback; in real use the SDK's default STS endpoint applies).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::moto::Moto;
use support::sls::{CREDENTIALS, SEED_ONE_FUNCTION as SEED, SEED_ROLES as ROLES};
use support::*;

fn clients() -> PathBuf {
    repo_root().join("tests/clients")
}

fn node_dir() -> PathBuf {
    let d = clients().join("node");
    assert!(
        d.join("node_modules/dotenv/package.json").exists()
            && d.join("node_modules/@aws-sdk/client-sts").exists(),
        "{}/node_modules lacks dotenv or @aws-sdk/client-sts: run `bash scripts/test-deps`",
        d.display()
    );
    d
}

fn output_of(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("{shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json_line(out: &Output, what: &str) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        .filter(|v| v.is_object())
        .unwrap_or_else(|| {
            panic!(
                "{what}: no JSON line\nstdout:\n{stdout}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

fn as_map(v: &serde_json::Value) -> BTreeMap<String, String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

/// The env file as python-dotenv reads it (`dotenv_values`, what `python -m dotenv`,
/// Flask and most Python launchers use).
fn python_dotenv(file: &Path) -> BTreeMap<String, String> {
    let out = output_of(
        Command::new(venv_python())
            .arg("-c")
            .arg("import json, sys\nfrom dotenv import dotenv_values\nprint(json.dumps(dotenv_values(sys.argv[1])))")
            .arg(file),
    );
    as_map(&json_line(&out, "python-dotenv"))
}

/// The env file as Node's `dotenv` package parses it.
fn node_dotenv(file: &Path) -> BTreeMap<String, String> {
    let out = output_of(
        Command::new("node")
            .current_dir(node_dir())
            .arg("-e")
            .arg("const fs = require('fs'); console.log(JSON.stringify(require('dotenv').parse(fs.readFileSync(process.argv[1]))))")
            .arg(file),
    );
    as_map(&json_line(&out, "node dotenv"))
}

/// `program` with exactly `vars` (plus the test's STS endpoint) as its environment.
fn editor_launch(program: &mut Command, vars: &BTreeMap<String, String>, sts: &str) -> Output {
    program
        .env_clear()
        .envs(vars)
        .env("AWS_ENDPOINT_URL_STS", sts);
    output_of(program)
}

fn python_handler(vars: &BTreeMap<String, String>, sts: &str) -> serde_json::Value {
    let out = editor_launch(
        Command::new(venv_python())
            .current_dir(clients().join("python"))
            .arg("handler.py"),
        vars,
        sts,
    );
    json_line(&out, "python handler.py")
}

fn node_bin() -> String {
    Command::new("which")
        .arg("node")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|p| !p.is_empty())
        .expect("node on PATH (Node.js >= 18)")
}

const NODE_HANDLER: &str =
    "require('./handler').hello({}, {}).catch((e) => { console.error(e); process.exit(1); })";

fn node_handler(vars: &BTreeMap<String, String>, sts: &str) -> serde_json::Value {
    let out = editor_launch(
        Command::new(node_bin())
            .current_dir(node_dir())
            .arg("-e")
            .arg(NODE_HANDLER),
        vars,
        sts,
    );
    json_line(&out, "node -e handler")
}

/// The Node handler started with node's own `--env-file` (what the JetBrains Node.js
/// configuration `init` writes uses), with no other variable than the STS endpoint.
fn node_env_file_handler(file: &Path, sts: &str) -> Option<serde_json::Value> {
    let node = node_bin();
    let supported = Command::new(&node)
        .arg(format!("--env-file={}", file.display()))
        .args(["-e", "0"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !supported {
        eprintln!("NOTE: this node has no --env-file (Node < 20.6): that launch is not checked");
        return None;
    }
    let out = editor_launch(
        Command::new(node)
            .current_dir(node_dir())
            .arg(format!("--env-file={}", file.display()))
            .arg("-e")
            .arg(NODE_HANDLER),
        &BTreeMap::new(),
        sts,
    );
    Some(json_line(&out, "node --env-file handler"))
}

#[test]
fn editor_env_files_parse_and_handlers_get_the_stage_account() {
    let moto = Moto::start();
    let mut h = TestHome::new();
    h.write_credentials(CREDENTIALS);
    h.write_aws_config(ROLES);
    h.extra_env
        .insert("AWS_ENDPOINT_URL_STS".into(), moto.url());
    let project = h.path().join("orders");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("serverless.yml"), SEED).unwrap();
    // Editor run configurations are checked here, not trust or the guard: use the project
    // file's mappings and serve prod without an unlock (see TRUST_ALL, GUARD_OFF).
    h.write_config(&format!("{TRUST_ALL}{GUARD_OFF}"));
    let daemon = h.serve();

    let out = h
        .command()
        .current_dir(&project)
        .args(["init", "--editor", "vscode"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    for (stage, account) in [("dev", "111111111111"), ("prod", "222222222222")] {
        let file = project.join(format!(".credport/{stage}.env"));
        // What `credport env` means to set, as JSON: both parsers must agree with it.
        let json = h
            .command()
            .current_dir(&project)
            .args(["env", "--stage", stage, "--format", "json"])
            .output()
            .unwrap();
        let expected =
            as_map(&serde_json::from_slice::<serde_json::Value>(&json.stdout).unwrap()["set"]);
        assert!(
            expected["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
                .starts_with(&format!("{}/v1/credentials/orders/{stage}", daemon.url())),
            "{expected:?}"
        );
        let py = python_dotenv(&file);
        let js = node_dotenv(&file);
        assert_eq!(
            py, expected,
            "python-dotenv vs credport env (stage {stage})"
        );
        assert_eq!(js, expected, "node dotenv vs credport env (stage {stage})");

        let p = python_handler(&py, &moto.url());
        assert_eq!(
            p["account"], account,
            "python handler.py, stage {stage}: {p}"
        );
        let n = node_handler(&js, &moto.url());
        assert_eq!(n["account"], account, "node -e handler, stage {stage}: {n}");
        if let Some(n) = node_env_file_handler(&file, &moto.url()) {
            assert_eq!(n["account"], account, "node --env-file, stage {stage}: {n}");
        }
    }

    // The same env file keeps working after the token key is rotated (the daemon rewrites
    // the token file it names).
    let rotated = h.run(&["token", "--rotate"]);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let vars = python_dotenv(&project.join(".credport/prod.env"));
    let token_file = PathBuf::from(&vars["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]);
    let fresh = h.token("orders", "prod");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_to_string(&token_file).unwrap_or_default() != fresh {
        assert!(
            std::time::Instant::now() < deadline,
            "{} was not rewritten after rotation",
            token_file.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        python_handler(&vars, &moto.url())["account"],
        "222222222222"
    );
    assert_eq!(node_handler(&vars, &moto.url())["account"], "222222222222");
    drop(daemon);
}
