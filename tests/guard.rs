//! Protected stages end to end, with the real binary, moto's STS and boto3: `prod` answers
//! `403 Locked` until `credport unlock`, is served (to an SDK through `exec` too) inside
//! the window with an `Expiration` capped at the window's end plus 5 minutes, and is locked
//! again when the window ends and after `credport lock`; `status` shows the window;
//! `[guard]`, per-project `protected` and `.credport.toml` change the list; `exec` on a
//! terminal (a pty from `script`) unlocks inline when the stage name is typed.

mod support;

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use support::sls::{World, assert_account, last_json};
use support::*;

const CONFIG: &str = r#"[projects.orders]
default_stage = "dev"
stages = { dev = "devAccount", prod = "prodAccount" }
"#;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({})\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn boto3_exec(w: &World, stage: &str) -> Output {
    let py = venv_python().display().to_string();
    let whoami = repo_root()
        .join("tests/clients/python/whoami.py")
        .display()
        .to_string();
    w.credport(&["exec", "--stage", stage, "--", &py, &whoami])
}

fn assert_locked(r: &Response, scope: &str) {
    assert_eq!(r.status, 403, "{scope}: {}", r.body);
    let j = r.json();
    assert_eq!(j["Code"], "Locked", "{scope}: {}", r.body);
    let (project, stage) = scope.split_once('/').unwrap();
    let fix = format!("credport unlock {project} {stage}");
    assert!(
        j["Message"].as_str().unwrap().contains(&fix),
        "the refusal names the fix `{fix}`: {}",
        r.body
    );
}

fn status_json(w: &World) -> serde_json::Value {
    last_json(&w.credport(&["status", "--json"]))
}

/// The `guard` field of a scope in `status --json`.
fn scope_guard(s: &serde_json::Value, project: &str, stage: &str) -> serde_json::Value {
    s["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|sc| sc["project"] == project && sc["stage"] == stage)
        .unwrap_or_else(|| panic!("no scope {project}/{stage} in {s}"))["guard"]
        .clone()
}

#[test]
fn prod_is_locked_until_unlock_then_served_until_the_window_ends_or_lock() {
    let w = World::new();
    w.home.write_config(CONFIG);
    let d = w.home.serve();
    let prod = w.home.token("orders", "prod");
    let dev = w.home.token("orders", "dev");
    let path = "/v1/credentials/orders/prod";

    // Locked by default; dev is not.
    assert_locked(&d.get(path, Some(&prod)), "orders/prod");
    assert_eq!(d.get("/v1/credentials/orders/dev", Some(&dev)).status, 200);
    // status says so, per scope.
    let s = status_json(&w);
    assert_eq!(scope_guard(&s, "orders", "prod"), "locked", "{s}");
    assert!(
        scope_guard(&s, "orders", "dev").is_null(),
        "dev is not protected: {s}"
    );
    let human = ok(&w.credport(&["status"]), "status");
    assert!(
        human.contains("locked (`credport unlock orders prod`)"),
        "{human}"
    );

    // exec without a terminal refuses before running the command, naming the fix.
    let out = boto3_exec(&w, "prod");
    assert!(!out.status.success(), "exec of a locked stage ran");
    let err = text(&out.stderr);
    assert!(
        err.contains("credport unlock orders prod") && err.contains("terminal"),
        "{err}"
    );
    assert!(
        !text(&out.stdout).contains("account"),
        "the command must not run: {}",
        text(&out.stdout)
    );

    // Unlocked for a short window (long enough for the checks below on a loaded machine):
    // served, to boto3 through exec too.
    let said = ok(
        &w.credport(&["unlock", "orders", "prod", "--for", "20s"]),
        "unlock",
    );
    assert!(said.contains("unlocked orders/prod for 20s"), "{said}");
    let unlocked_at = Instant::now();
    let r = d.get(path, Some(&prod));
    assert_eq!(r.status, 200, "{}", r.body);
    // The served Expiration is capped at the window's end plus 5 minutes (the JS SDK's
    // refresh margin), well under the 16-minute served lifetime.
    let exp =
        credport::credentials::parse_timestamp(r.json()["Expiration"].as_str().unwrap()).unwrap();
    let left = exp - time::OffsetDateTime::now_utc();
    assert!(
        left <= Duration::from_secs(20 + 300 + 2) && left >= Duration::from_secs(300),
        "Expiration {exp} is {left} away; expected the window's end + 5 min"
    );
    assert_account(
        &boto3_exec(&w, "prod"),
        "222222222222",
        "exec in the window",
    );

    // status shows the window and its remaining time, in JSON and as text.
    let s = status_json(&w);
    let u = &s["unlocks"][0];
    assert_eq!(
        (u["project"].as_str(), u["stage"].as_str()),
        (Some("orders"), Some("prod")),
        "{s}"
    );
    let remaining = u["remaining_seconds"].as_u64().unwrap();
    assert!((1..=20).contains(&remaining), "{s}");
    assert!(
        scope_guard(&s, "orders", "prod")
            .as_str()
            .unwrap()
            .starts_with("unlocked until "),
        "{s}"
    );
    let human = ok(&w.credport(&["status"]), "status");
    assert!(
        human.contains("unlocked: orders/prod until") && human.contains("left"),
        "{human}"
    );

    // The window ends: new fetches are refused again.
    let (r, _) = d.wait_until(Duration::from_secs(30), path, &prod, |r| r.status == 403);
    assert_locked(&r, "orders/prod");
    assert!(
        unlocked_at.elapsed() >= Duration::from_secs(19),
        "locked too early: {:?}",
        unlocked_at.elapsed()
    );
    assert!(status_json(&w)["unlocks"].as_array().unwrap().is_empty());

    // `credport lock` ends a window early; `--all` closes every one.
    ok(&w.credport(&["unlock", "orders", "prod"]), "unlock");
    assert_eq!(d.get(path, Some(&prod)).status, 200);
    let said = ok(&w.credport(&["lock", "orders", "prod"]), "lock");
    assert!(said.contains("locked orders/prod"), "{said}");
    assert_locked(&d.get(path, Some(&prod)), "orders/prod");
    ok(
        &w.credport(&["unlock", "orders", "prod", "--for", "1h"]),
        "unlock",
    );
    let said = ok(&w.credport(&["lock", "--all"]), "lock --all");
    assert!(said.contains("locked orders/prod"), "{said}");
    assert_locked(&d.get(path, Some(&prod)), "orders/prod");

    // Longer than the maximum (1h unless set), and a stage that is not protected.
    let out = w.credport(&["unlock", "orders", "prod", "--for", "2h"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("max_unlock"),
        "{}",
        text(&out.stderr)
    );
    let said = ok(&w.credport(&["unlock", "orders", "dev"]), "unlock dev");
    assert!(said.contains("not a protected stage"), "{said}");

    // Audited: each unlock and lock is a log line of the daemon.
    assert!(
        d.wait_output("unlocked", Duration::from_secs(5)),
        "{}",
        d.output()
    );
    let log = d.output();
    for reason in ["window ended", "credport lock", "credport lock --all"] {
        assert!(
            log.contains(reason),
            "no 'locked' line for {reason}:\n{log}"
        );
    }
    // And an event of the journal that `credport log` reads.
    let journal = ok(
        &w.credport(&["log", "--json", "--project", "orders", "--stage", "prod"]),
        "credport log",
    );
    let events: Vec<serde_json::Value> = journal
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "unlocked" && e["until"].is_string()),
        "no 'unlocked' event: {journal}"
    );
    for reason in ["window ended", "credport lock", "credport lock --all"] {
        assert!(
            events
                .iter()
                .any(|e| e["event"] == "locked" && e["reason"] == reason),
            "no 'locked' event for {reason}: {journal}"
        );
    }
}

#[test]
fn guard_settings_change_the_list() {
    let w = World::new();
    let d = w.home.serve();
    let token = |s: &str| w.home.token("orders", s);
    let get = |s: &str| d.get(&format!("/v1/credentials/orders/{s}"), Some(&token(s)));
    // Waits until the daemon has the config: a fetch of `probe` answers `status`.
    let set = |config: &str, probe: &str, status: u16| {
        // The guard, not trust, is under test here (see TRUST_ALL).
        w.home.write_config(&format!("{TRUST_ALL}{config}"));
        d.wait_until(
            Duration::from_secs(10),
            &format!("/v1/credentials/orders/{probe}"),
            &token(probe),
            |r| r.status == status,
        );
    };

    struct Case {
        name: &'static str,
        /// A `.credport.toml` written into the project before the config.
        credport_toml: Option<String>,
        config: String,
        /// The stage whose answer shows the daemon has the config, and that answer.
        probe: (&'static str, u16),
        locked: &'static [&'static str],
        served: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "`[guard] stages` replaces the default list",
            credport_toml: None,
            config: fixture(
                r#"
                [guard]
                stages = ["dev"]
                "#,
            ) + CONFIG,
            probe: ("dev", 403),
            locked: &["dev"],
            served: &["prod"],
        },
        Case {
            name: "`[guard] stages = []` turns the guard off",
            credport_toml: None,
            config: fixture(
                r#"
                [guard]
                stages = []
                "#,
            ) + CONFIG,
            probe: ("dev", 200),
            locked: &[],
            served: &["prod"],
        },
        Case {
            name: "the project's own list in config.toml wins over the default",
            credport_toml: None,
            config: format!(
                "{CONFIG}{}",
                fixture(
                    r#"
                    protected = ["dev"]
                    "#
                )
            ),
            probe: ("dev", 403),
            locked: &[],
            served: &["prod"],
        },
        Case {
            name: "a committed .credport.toml adds stages; it cannot unprotect prod",
            credport_toml: Some(fixture(
                r#"
                project = "orders"
                protected = ["dev"]
                [stages]
                dev = "devAccount"
                prod = "prodAccount"
                "#,
            )),
            config: fixture(&format!(
                r#"
                [projects.orders]
                path = "{}"
                "#,
                w.project.display()
            )),
            probe: ("prod", 403),
            locked: &["dev", "prod"],
            served: &[],
        },
    ];
    for case in &cases {
        if let Some(text) = &case.credport_toml {
            std::fs::write(w.project.join(".credport.toml"), text).unwrap();
        }
        // `set` panics from inside `wait_until`: the case is named in the output first.
        eprintln!("case {}", case.name);
        let (probe, status) = case.probe;
        set(&case.config, probe, status);
        for stage in case.locked {
            let r = get(stage);
            assert_eq!(r.status, 403, "case {}: {stage}: {}", case.name, r.body);
            assert_locked(&r, &format!("orders/{stage}"));
        }
        for stage in case.served {
            assert_eq!(get(stage).status, 200, "case {}: {stage}", case.name);
        }
    }
}

/// Runs `credport ARGS` in the project on a pseudo-terminal (`script`), typing `answer`.
fn on_a_terminal(w: &World, args: &str, answer: &str) -> Output {
    let mut c = w.sh_command();
    c.arg("-c")
        .arg(format!("script -qec 'credport {args}' /dev/null"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = format!("{c:?}");
    let mut child = c.spawn().expect("run script");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{answer}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "--- {shown}\n--- output:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

#[test]
fn exec_on_a_terminal_unlocks_inline_when_the_stage_is_typed() {
    let w = World::new();
    w.home.write_config(CONFIG);
    let py = venv_python().display().to_string();
    let whoami = repo_root()
        .join("tests/clients/python/whoami.py")
        .display()
        .to_string();
    let cmd = format!("exec --stage prod -- {py} {whoami}");

    // Without a daemon and without a terminal: refused, naming what to do.
    let out = boto3_exec(&w, "prod");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("credport serve") && err.contains("credport unlock orders prod"),
        "{err}"
    );

    // Without a daemon: the embedded server's own guard, unlocked for the run.
    let out = on_a_terminal(&w, &cmd, "nope");
    let all = text(&out.stdout);
    assert!(
        all.contains("type 'prod' to unlock it for this run"),
        "{all}"
    );
    assert!(all.contains("not unlocked"), "{all}");
    assert!(
        !all.contains("222222222222"),
        "ran without an unlock: {all}"
    );
    let out = on_a_terminal(&w, &cmd, "prod");
    let all = text(&out.stdout);
    assert!(all.contains("unlocked orders/prod for this run"), "{all}");
    assert!(all.contains("\"account\": \"222222222222\""), "{all}");

    // With the daemon: the prompt asks the daemon, whose window then shows in status.
    let d = w.home.serve();
    let out = on_a_terminal(&w, &cmd, "prod");
    let all = text(&out.stdout);
    assert!(all.contains("type 'prod' to unlock it for 15m"), "{all}");
    assert!(all.contains("\"account\": \"222222222222\""), "{all}");
    let s = status_json(&w);
    assert_eq!(s["unlocks"][0]["stage"], "prod", "{s}");
    // Unlocked now: the next exec runs without asking, even without a terminal.
    assert_account(
        &boto3_exec(&w, "prod"),
        "222222222222",
        "exec after the inline unlock",
    );
    drop(d);
}

/// Waits until `cond` holds for the file's text (or its absence); panics with the text.
fn wait_file(path: &std::path::Path, what: &str, cond: impl Fn(&str) -> bool) {
    let start = Instant::now();
    loop {
        let t = std::fs::read_to_string(path).unwrap_or_default();
        if cond(&t) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: {} holds:\n{t}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn env_standin_file_holds_prod_only_while_unlocked() {
    let w = World::new();
    // The guard's defaults (World turns it off for the other suites).
    // The guard, not trust, is under test here (see TRUST_ALL).
    w.home.write_config(TRUST_ALL);
    let d = w.home.serve();
    let out = w.credport(&["env", "--stage", "dev"]);
    ok(&out, "env");
    assert!(
        text(&out.stderr).contains("credport unlock orders prod"),
        "env says why prod's stand-in profile is missing: {}",
        text(&out.stderr)
    );
    let file = w.home.runtime_dir().join("standin/orders/credentials");
    wait_file(&file, "dev only while prod is locked", |t| {
        t.contains("[devAccount]") && !t.contains("[prodAccount]")
    });
    ok(&w.credport(&["unlock", "orders", "prod"]), "unlock");
    wait_file(&file, "prod once unlocked", |t| t.contains("[prodAccount]"));
    ok(&w.credport(&["lock", "orders", "prod"]), "lock");
    wait_file(&file, "prod gone once locked", |t| {
        t.contains("[devAccount]") && !t.contains("[prodAccount]")
    });
    drop(d);
}
