//! `resolve`, `env` and `exec` end to end, with real clients: boto3, the JS SDK v3, and
//! serverless@3 `invoke local` with Node and Python handlers, against moto's STS.
//!
//! The shell is hostile on purpose: `[default]` holds long-term keys (moto reports them as
//! account 123456789012) and `AWS_PROFILE=default` is set, so any client that misses the
//! container endpoint shows the wrong account.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::sls::{World, assert_account, last_json};
use support::*;

fn world() -> World {
    World::new()
}

/// `credport ARGS` run in the project directory with a hostile shell environment.
fn credport(w: &World, args: &[&str]) -> Output {
    w.credport(args)
}

#[test]
fn resolve_reads_the_wrapped_command() {
    let w = world();
    enum Want {
        /// Project `orders` from `serverless.yml`, this stage and profile.
        Resolves(&'static str, &'static str),
        /// Refused with credport's error naming this.
        Refused(&'static str),
    }
    struct Case {
        name: &'static str,
        args: &'static [&'static str],
        want: Want,
    }
    let cases = [
        Case {
            name: "serverless.yml's default stage",
            args: &["resolve"],
            want: Want::Resolves("dev", "devAccount"),
        },
        Case {
            name: "--stage",
            args: &["resolve", "--stage", "prod"],
            want: Want::Resolves("prod", "prodAccount"),
        },
        Case {
            name: "the wrapped command's -s",
            args: &[
                "resolve",
                "--",
                "serverless",
                "invoke",
                "local",
                "-f",
                "hello",
                "-s",
                "prod",
            ],
            want: Want::Resolves("prod", "prodAccount"),
        },
        Case {
            name: "a stage serverless.yml does not map",
            args: &["resolve", "--", "serverless", "invoke", "local", "-s", "qa"],
            want: Want::Refused("'qa'"),
        },
    ];
    for case in &cases {
        let name = case.name;
        let out = credport(&w, case.args);
        match case.want {
            Want::Resolves(stage, profile) => {
                let v = last_json(&out);
                assert_eq!(
                    (
                        v["project"].as_str(),
                        v["stage"].as_str(),
                        v["profile"].as_str()
                    ),
                    (Some("orders"), Some(stage), Some(profile)),
                    "case {name}: {v}"
                );
                assert!(
                    v["file"].as_str().unwrap().ends_with("serverless.yml"),
                    "case {name}: {v}"
                );
            }
            Want::Refused(names) => {
                assert!(!out.status.success(), "case {name}: not refused");
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    err.contains("credport: error:") && err.contains(names),
                    "case {name}: {err}"
                );
            }
        }
    }
}

#[test]
fn exec_gives_boto3_and_js_v3_the_stage_account_with_and_without_daemon() {
    let w = world();
    let py = venv_python().display().to_string();
    let boto3 = repo_root()
        .join("tests/clients/python/whoami.py")
        .display()
        .to_string();
    let js = repo_root()
        .join("tests/clients/node/whoami-v3.mjs")
        .display()
        .to_string();
    for daemon in [false, true] {
        let _d = daemon.then(|| w.home.serve());
        for (stage_args, account) in [
            (vec![], "111111111111"),
            (vec!["--stage", "prod"], "222222222222"),
        ] {
            for client in [vec![py.as_str(), boto3.as_str()], vec!["node", js.as_str()]] {
                let mut args = vec!["exec"];
                args.extend(&stage_args);
                args.push("--");
                args.extend(&client);
                let out = credport(&w, &args);
                assert_account(&out, account, &format!("daemon={daemon} {args:?}"));
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    err.contains("credport: orders/"),
                    "announces the scope: {err}"
                );
            }
        }
    }
}

#[test]
fn exec_reads_stage_from_wrapped_serverless_and_runs_node_and_python_handlers() {
    let w = world().with_handlers();
    let _d = w.home.serve();
    for (stage, account) in [(None, "111111111111"), (Some("prod"), "222222222222")] {
        for function in ["hello", "pyhello"] {
            let mut args = vec![
                "exec",
                "--",
                "serverless",
                "invoke",
                "local",
                "-f",
                function,
            ];
            if let Some(s) = stage {
                args.extend(["-s", s]);
            }
            let out = credport(&w, &args);
            assert!(
                out.status.success(),
                "{args:?}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_account(&out, account, &format!("{args:?}"));
        }
    }
}

#[test]
fn env_output_works_in_a_shell_and_survives_restart_and_rotation() {
    let w = world();
    let mut d = w.home.serve_with(&["--listen", "127.0.0.1:0"]);
    let out = credport(&w, &["env", "--stage", "prod"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("unset AWS_ACCESS_KEY_ID"), "{script}");
    let run = |script: &str| {
        let boto3 = repo_root().join("tests/clients/python/whoami.py");
        let full = format!(
            "{script}\nexec {} {}\n",
            venv_python().display(),
            boto3.display()
        );
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(full)
            .env("AWS_PROFILE", "default")
            .env("AWS_ACCESS_KEY_ID", "AKIASTRAY")
            .env("AWS_SECRET_ACCESS_KEY", "x")
            .env("HOME", w.home.path());
        c.env("AWS_ENDPOINT_URL_STS", w.moto.url());
        c.output().unwrap()
    };
    assert_account(&run(&script), "222222222222", "eval of env --stage prod");
    // Rotation rewrites the token file the script points at.
    assert!(w.home.run(&["token", "--rotate"]).status.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_account(&run(&script), "222222222222", "after rotation");
    // Daemon restart on the same address: same script still works.
    let addr = d.addr;
    assert!(d.terminate().success());
    let _d2 = w.home.serve_with(&["--listen", &addr.to_string()]);
    assert_account(&run(&script), "222222222222", "after restart");
    // dotenv and json forms.
    let dotenv =
        String::from_utf8(credport(&w, &["env", "--stage", "dev", "--format", "dotenv"]).stdout)
            .unwrap();
    assert!(
        dotenv.contains(&format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://{addr}/v1/credentials/orders/dev\n"
        )),
        "{dotenv}"
    );
    let json: serde_json::Value = serde_json::from_slice(
        &credport(&w, &["env", "--stage", "dev", "--format", "json"]).stdout,
    )
    .unwrap();
    assert!(
        json["unset"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "AWS_PROFILE")
    );
}

#[test]
fn exec_passes_the_exit_code_and_cleans_up_the_token_file() {
    let w = world();
    let _d = w.home.serve();
    let out = credport(
        &w,
        &[
            "exec",
            "-q",
            "--",
            "sh",
            "-c",
            "cat \"$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE\" > tokcopy; stat -c %a \"$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE\" > mode; echo \"$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE\" > where; exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7));
    // The harness asks for trace logs (RUST_LOG); --quiet drops credport's own line.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.lines().any(|l| l.contains(" -> profile ")),
        "--quiet: {stderr}"
    );
    let tok = std::fs::read(w.project.join("tokcopy")).unwrap();
    assert!(
        !tok.ends_with(b"\n") && tok.starts_with(b"cpt1."),
        "token file has no trailing newline"
    );
    assert_eq!(
        std::fs::read_to_string(w.project.join("mode"))
            .unwrap()
            .trim(),
        "600"
    );
    let token_path = std::fs::read_to_string(w.project.join("where")).unwrap();
    assert!(
        !Path::new(token_path.trim()).exists(),
        "token file removed after exit"
    );
}

#[test]
fn exec_forwards_sigterm_and_passes_the_exit_code() {
    let w = world();
    let _d = w.home.serve();
    let mut child = w.home.command();
    child.current_dir(&w.project).args([
        "exec",
        "-q",
        "--",
        "sh",
        "-c",
        "trap 'exit 42' TERM; touch started; while true; do sleep 0.05; done",
    ]);
    let mut child = child.spawn().unwrap();
    let started = w.project.join("started");
    for _ in 0..200 {
        if started.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(
        child.wait().unwrap().code(),
        Some(42),
        "SIGTERM forwarded, exit code passed through"
    );
}

#[test]
fn exec_passes_death_by_signal_through() {
    let w = world();
    let _d = w.home.serve();
    let killed = credport(&w, &["exec", "-q", "--", "sh", "-c", "kill -KILL $$"]);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        killed.status.signal(),
        Some(9),
        "death by signal passes through"
    );
}
