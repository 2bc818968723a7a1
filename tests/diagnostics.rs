//! "What credport tells you is true": one test per reproduced user report, each with the
//! real binary in a throwaway HOME, asserting what a user now sees instead.
//!
//! One daemon per user, clients that verify the daemon, status listing every scope, a
//! doctor that checks the directory's project files, errors a person can act on, no
//! leftover run directories, quoted audit values, Node's `fetch()`, rotation without a
//! gap, and permissions handled like ssh. README's Commands and Troubleshooting sections
//! describe the behaviour these tests pin down.

mod support;

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

const CONFIG: &str = r#"[projects.orders]
default_stage = "dev"
stages = { dev = "devAccount", prod = "prodAccount" }
"#;

const SERVERLESS: &str = r#"service: shop
custom:
  myStage: ${opt:stage, self:provider.stage}
  myProfile:
    prod: prodAccount
    dev: devAccount
provider:
  name: aws
  stage: dev
  profile: ${self:custom.myProfile.${self:custom.myStage}}
"#;

/// A HOME with two session profiles, the `orders` project, and STS on a dead loopback
/// port (doctor's clock check and any exchange fail fast, never leave the machine).
fn home() -> TestHome {
    let mut h = TestHome::new();
    h.extra_env
        .insert("AWS_ENDPOINT_URL_STS".into(), "http://127.0.0.1:9".into());
    h.write_credentials(&format!(
        "{}{}",
        session_profile("devAccount", "DEV1"),
        session_profile("prodAccount", "PROD1")
    ));
    // Not a test of project-file trust or the guard (see TRUST_ALL, GUARD_OFF).
    h.write_config(&format!("{TRUST_ALL}{GUARD_OFF}{CONFIG}"));
    h
}

/// A free loopback port (bound and released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Panics with the command's output and the files involved.
fn explain(what: &str, out: &Output, files: &[PathBuf]) -> String {
    let mut s = format!(
        "{what}\n--- status: {}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    for f in files {
        match std::fs::read_to_string(f) {
            Ok(t) => s.push_str(&format!("\n--- {}:\n{t}", f.display())),
            Err(e) => s.push_str(&format!("\n--- {}: {e}", f.display())),
        }
    }
    s
}

fn run_in(h: &TestHome, dir: &Path, args: &[&str]) -> Output {
    h.command()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run credport")
}

fn status_json(h: &TestHome) -> serde_json::Value {
    let out = h.run(&["status", "--json"]);
    serde_json::from_str(&text(&out.stdout))
        .unwrap_or_else(|e| panic!("{}", explain(&format!("status --json: {e}"), &out, &[])))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

// Row: a second `serve` with the same HOME took over daemon.json and control.sock and
// deleted both on exit, so `status` said "not running" while the first still served.
#[test]
fn second_serve_refuses_and_leaves_the_first_alone() {
    let h = home();
    let first = h.serve();
    let state = h.runtime_dir().join("daemon.json");
    let before = std::fs::read_to_string(&state).unwrap();
    let out = h.run(&["serve", "--listen", "127.0.0.1:0"]);
    let err = text(&out.stderr);
    let files = [state.clone()];
    assert!(
        !out.status.success(),
        "{}",
        explain("second serve must refuse", &out, &files)
    );
    assert!(
        err.contains("already runs")
            && err.contains(&format!("pid {}", first.child.id()))
            && err.contains(&first.url())
            && err.contains("credport status")
            && err.contains("--replace"),
        "{}",
        explain("the refusal names the running daemon", &out, &files)
    );
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        before,
        "daemon.json untouched"
    );
    assert!(h.runtime_dir().join("control.sock").exists());
    let st = status_json(&h);
    assert_eq!(st["running"], true, "{st}");
    assert_eq!(st["pid"], first.child.id(), "{st}");

    // --replace takes over cleanly: the first exits, the new one owns the files.
    let mut first = first;
    let second = h.serve_with(&["--listen", "127.0.0.1:0", "--replace"]);
    assert!(
        wait_for(Duration::from_secs(10), || first
            .child
            .try_wait()
            .unwrap()
            .is_some()),
        "the replaced daemon exits"
    );
    let st = status_json(&h);
    assert_eq!(st["pid"], second.child.id(), "{st}");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(info["url"], second.url());
    assert_eq!(
        second.get("/healthz", None).json()["instance"],
        info["instance"],
        "/healthz echoes daemon.json's instance id"
    );
}

// Row: after `credport exec` in a serverless project, `status` listed only config.toml
// scopes.
#[test]
fn status_lists_registered_project_scopes() {
    let h = home();
    let project = h.path().join("shop");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("serverless.yml"), SERVERLESS).unwrap();
    let d = h.serve();
    let out = run_in(&h, &project, &["exec", "--", "true"]);
    assert!(out.status.success(), "{}", explain("exec", &out, &[]));
    // A fetch, so the scope has a last issuance.
    let host = d.addr.to_string();
    let tok = h.token("shop", "prod");
    let r = request(
        d.addr,
        "GET",
        "/v1/credentials/shop/prod",
        &[
            ("Host", &host),
            ("Authorization", &tok),
            ("User-Agent", "Boto3/1.40 md/Botocore#1.40"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let st = status_json(&h);
    let scopes = st["scopes"].as_array().unwrap();
    let find = |p: &str, s: &str| {
        scopes
            .iter()
            .find(|x| x["project"] == p && x["stage"] == s)
            .unwrap_or_else(|| panic!("{p}/{s} missing from status: {st}"))
    };
    let dev = find("shop", "dev");
    assert_eq!(dev["origin"], "registered");
    assert_eq!(dev["profile"], "devAccount");
    assert_eq!(dev["default"], true);
    assert_eq!(dev["kind"], "session-keys", "{dev}");
    let prod = find("shop", "prod");
    assert_eq!(prod["profile"], "prodAccount");
    assert_eq!(
        prod["last_issued"]["user_agent"],
        "Boto3/1.40 md/Botocore#1.40"
    );
    assert!(prod["last_issued"]["at"].as_str().unwrap().ends_with('Z'));
    // The request came from this test process: status names it.
    assert_eq!(
        prod["last_issued"]["process"]
            .as_str()
            .and_then(|p| p.strip_prefix("pid "))
            .and_then(|p| p.split(' ').next()),
        Some(std::process::id().to_string().as_str()),
        "{prod}"
    );
    assert_eq!(find("orders", "dev")["origin"], "config");
    let human = h.run(&["status"]);
    let t = text(&human.stdout);
    assert!(
        t.contains("SCOPE")
            && t.contains("shop/dev *")
            && t.contains("shop/prod")
            && t.contains("prodAccount")
            && t.contains(&format!("(pid {} (", std::process::id())),
        "{}",
        explain("human status table", &human, &[])
    );
}

// Row: daemon.json left behind with a live but unrelated pid: exec handed the child a
// URL nobody answered.
#[test]
fn stale_state_file_with_a_live_pid_is_not_trusted() {
    let h = home();
    let dead = free_port();
    std::fs::create_dir_all(h.runtime_dir()).unwrap();
    let stale = format!(
        r#"{{"url":"http://127.0.0.1:{dead}","listen":["127.0.0.1:{dead}"],"pid":{},"instance":"0123456789abcdef"}}"#,
        std::process::id()
    );
    let state = h.runtime_dir().join("daemon.json");
    std::fs::write(&state, &stale).unwrap();
    // The child fetches its credentials through the URL and token file it was given.
    let script = "curl -sS -H \"Authorization: $(cat \"$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE\")\" \"$AWS_CONTAINER_CREDENTIALS_FULL_URI\"";
    let out = h.run(&[
        "exec",
        "--project",
        "orders",
        "--stage",
        "dev",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let files = [state.clone()];
    assert!(out.status.success(), "{}", explain("exec", &out, &files));
    let body: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap_or_else(|e| {
        panic!(
            "{}",
            explain(&format!("child got no JSON: {e}"), &out, &files)
        )
    });
    assert_eq!(body["AccessKeyId"], "ASIADEV1");
    let err = text(&out.stderr);
    assert!(
        err.contains("credport: warning:")
            && err.contains("no longer runs")
            && err.contains("embedded server"),
        "{}",
        explain("exec says it fell back", &out, &files)
    );
    assert!(!state.exists(), "the stale state file is removed");

    // status and env say so too.
    std::fs::write(&state, &stale).unwrap();
    let st = h.run(&["status"]);
    assert_eq!(st.status.code(), Some(1));
    assert!(
        text(&st.stdout).contains("not running (stale state file removed"),
        "{}",
        explain("status", &st, &files)
    );
    std::fs::write(&state, &stale).unwrap();
    let env = h.run(&["env", "--project", "orders", "--stage", "dev"]);
    assert!(env.status.success(), "{}", explain("env", &env, &files));
    assert!(
        !text(&env.stdout).contains(&format!(":{dead}/")),
        "{}",
        explain("env must not print the stale URL", &env, &files)
    );
    assert!(
        text(&env.stderr).contains("credport: warning: no credport daemon answers"),
        "{}",
        explain("env warns", &env, &files)
    );
}

// Row: `kill -9` of a running `credport exec` left its exec-PID-* directory (with the
// token) for good.
#[test]
fn killed_exec_leaves_no_run_directory() {
    use std::os::unix::process::CommandExt;
    let h = home();
    let mut child = h
        .command()
        .args([
            "exec",
            "--project",
            "orders",
            "--stage",
            "dev",
            "--",
            "sleep",
            "30",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let run_dirs = || -> Vec<PathBuf> {
        std::fs::read_dir(h.runtime_dir())
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .unwrap()
                            .to_string_lossy()
                            .starts_with("exec-")
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        wait_for(Duration::from_secs(10), || run_dirs().len() == 1),
        "exec created its run directory"
    );
    let left = run_dirs();
    assert!(left[0].join("token").exists());
    unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    assert_eq!(
        run_dirs(),
        left,
        "kill -9 leaves it (nothing can run at SIGKILL)"
    );

    // The next exec removes it.
    let out = h.run(&[
        "exec",
        "--project",
        "orders",
        "--stage",
        "dev",
        "--",
        "true",
    ]);
    assert!(out.status.success(), "{}", explain("exec", &out, &[]));
    assert!(run_dirs().is_empty(), "left over: {:?}", run_dirs());

    // So does the daemon at start (a PID above any pid_max never runs).
    let fake = h.runtime_dir().join("exec-99999999-abcdef");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::write(fake.join("token"), "cpt1.x").unwrap();
    let _d = h.serve();
    assert!(!fake.exists(), "the daemon removed {}", fake.display());
}

// Row: a typo in serverless.yml's profile map, then `credport doctor` in that directory
// said nothing.
#[test]
fn doctor_checks_the_directorys_project_file() {
    let h = home();
    let project = h.path().join("shop");
    std::fs::create_dir_all(&project).unwrap();
    let yml = project.join("serverless.yml");
    std::fs::write(
        &yml,
        SERVERLESS.replace("prod: prodAccount", "prod: prodAcount"),
    )
    .unwrap();
    let out = run_in(&h, &project, &["doctor", "--json"]);
    let files = [yml.clone()];
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        explain("doctor", &out, &files)
    );
    let j: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let found = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "missing-profile")
        .unwrap_or_else(|| panic!("{}", explain("no missing-profile finding", &out, &files)))
        .clone();
    let problem = found["problem"].as_str().unwrap();
    let fix = found["fix"].as_str().unwrap();
    assert!(
        problem.contains("shop/prod")
            && problem.contains("'prodAcount'")
            && problem.contains("serverless.yml"),
        "{found}"
    );
    assert!(fix.contains("did you mean 'prodAccount'?"), "{found}");
    // The fix is right: applying it leaves no problem about that mapping.
    std::fs::write(&yml, SERVERLESS).unwrap();
    let out = run_in(&h, &project, &["doctor", "--json"]);
    let j: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert!(
        !j["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"] == "missing-profile" || f["check"] == "project-file"),
        "{}",
        explain("after the fix", &out, &files)
    );
}

// Row: a line without `=` in ~/.aws/credentials made doctor say the mapped profile "is
// in neither AWS file" and advise adding it.
#[test]
fn doctor_reports_a_broken_file_at_its_line_not_missing_profiles() {
    let h = home();
    let creds = std::fs::read_to_string(h.credentials()).unwrap();
    h.write_credentials(&format!("{creds}this line has no equals sign\n"));
    let out = h.run(&["doctor"]);
    let t = text(&out.stdout);
    let files = [h.credentials()];
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        explain("doctor", &out, &files)
    );
    let broken_line = creds.lines().count() + 1;
    assert!(
        t.contains(&format!(
            "{}: line {broken_line}:",
            h.credentials().display()
        )),
        "{}",
        explain("the broken file is named with its line", &out, &files)
    );
    assert!(
        !t.contains("in neither AWS file") && !t.contains("add [profile devAccount]"),
        "{}",
        explain("no false missing-profile advice", &out, &files)
    );
}

// Row: `serve` on a taken port printed the OS error twice and no hint.
#[test]
fn taken_port_is_one_line_with_a_hint() {
    let h = home();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = h.run(&["serve", "--listen", &addr]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("credport: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", explain("one error line", &out, &[]));
    let line = errors[0];
    assert!(
        line.contains(&addr)
            && line.contains("already in use")
            && line.contains("is credport already running? `credport status`"),
        "{line}"
    );
    assert!(
        line.matches("in use").count() == 1 && !line.contains("os error 98"),
        "no doubled OS message: {line}"
    );
}

// Row: `serve --listen 169.254.170.2:80` before the bridge with that address existed
// exited with "Cannot assign requested address" (doubled). It now waits for the
// address and binds once it appears (in a private network namespace, so the host's
// network is untouched).
#[test]
fn serve_waits_for_an_address_that_appears_later() {
    let h = home();
    let script = "ip link set lo up; \"$0\" serve --listen 127.0.0.1:0 --listen 169.254.170.99:8080 --allow-non-loopback & pid=$!; sleep 1.5; kill -0 $pid || exit 3; ip addr add 169.254.170.99/32 dev lo; sleep 1.5; kill $pid; wait $pid";
    let cmd = h.command();
    let bin = cmd.get_program().to_owned();
    let envs: Vec<(std::ffi::OsString, std::ffi::OsString)> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
        .collect();
    let mut sh = Command::new("unshare");
    sh.args(["--net", "sh", "-c", script])
        .arg(&bin)
        .env_clear()
        .envs(envs);
    let out = sh.output().expect("run unshare");
    let err = text(&out.stderr);
    assert!(
        !err.contains("Operation not permitted"),
        "this test needs root for a network namespace (`unshare --net`): {err}"
    );
    assert_ne!(
        out.status.code(),
        Some(3),
        "{}",
        explain("serve exited instead of waiting", &out, &[])
    );
    assert_eq!(
        err.matches("no network interface has this address yet")
            .count(),
        1,
        "{}",
        explain("logged once", &out, &[])
    );
    assert!(
        err.contains("listening on http://169.254.170.99:8080"),
        "{}",
        explain("bound once the address appeared", &out, &[])
    );
    assert!(!err.contains("Cannot assign requested address"), "{err}");
}

// Row: exec, resolve and doctor with a broken credentials file printed timestamped
// daemon-style WARN log lines.
#[test]
fn one_shot_commands_print_plain_warning_lines() {
    let mut h = home();
    h.extra_env
        .insert("RUST_LOG".into(), "credport=warn".into());
    h.write_credentials(&fixture(
        r#"
        [devAccount
        aws_access_key_id = x
        "#,
    ));
    for args in [
        &["resolve", "--project", "orders", "--stage", "dev"][..],
        &["doctor"][..],
        &[
            "exec",
            "--project",
            "orders",
            "--stage",
            "dev",
            "--",
            "true",
        ][..],
    ] {
        let out = h.run(args);
        let err = text(&out.stderr);
        let files = [h.credentials()];
        assert!(
            err.lines().any(|l| l.starts_with("credport: warning: ")),
            "{}",
            explain(&format!("{args:?}: a plain warning"), &out, &files)
        );
        for line in err.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                line.starts_with("credport: ") && !line.contains(" WARN "),
                "{}",
                explain(&format!("{args:?}: not a plain line: {line}"), &out, &files)
            );
        }
    }
}

// Row: `credport token --project nope --stage dev` printed a token with no word that no
// such project is known.
#[test]
fn token_for_an_unknown_project_warns_naming_the_known_ones() {
    let h = home();
    let out = h.run(&["token", "--project", "nope", "--stage", "dev"]);
    assert!(out.status.success(), "{}", explain("token", &out, &[]));
    assert!(text(&out.stdout).starts_with("cpt1."));
    let err = text(&out.stderr);
    assert!(
        err.contains("credport: warning: no project 'nope' is known (known: orders)"),
        "{}",
        explain("warning", &out, &[])
    );
    let out = h.run(&["token", "--project", "orders", "--stage", "dev"]);
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        explain("a known project is quiet", &out, &[])
    );
}

// Row: `credport env` with no daemon running printed the 9911 URL without a warning.
#[test]
fn env_without_a_daemon_warns() {
    let h = home();
    let port = free_port();
    let server = fixture(&format!(
        r#"
        [server]
        listen = ["127.0.0.1:{port}"]
        "#
    ));
    h.write_config(&format!("{server}{CONFIG}"));
    let out = h.run(&["env", "--project", "orders", "--stage", "dev"]);
    assert!(out.status.success(), "{}", explain("env", &out, &[]));
    assert!(text(&out.stdout).contains(&format!(
        "http://127.0.0.1:{port}/v1/credentials/orders/dev"
    )));
    assert!(
        text(&out.stderr).contains(&format!(
            "credport: warning: no credport daemon answers at http://127.0.0.1:{port}"
        )) && text(&out.stderr).contains("credport serve"),
        "{}",
        explain("env warns", &out, &[])
    );
    // With the daemon up on that address, no warning.
    let _d = h.serve_with(&["--listen", &format!("127.0.0.1:{port}")]);
    let out = h.run(&["env", "--project", "orders", "--stage", "dev"]);
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        explain("env with a daemon", &out, &[])
    );
}

// Row: a Node script using the global fetch() got 403 BrowserRequestRefused (undici
// sends Sec-Fetch-Mode), while browsers' requests must still be refused.
#[test]
fn node_fetch_is_served_and_browser_requests_are_not() {
    let h = home();
    let d = h.serve();
    let tok = h.token("orders", "dev");
    let script = "const r = await fetch(process.env.URL, {headers: {Authorization: process.env.TOKEN}}); console.log(JSON.stringify({status: r.status, body: await r.json()}));";
    let out = Command::new("node")
        .args(["--input-type=module", "-e", script])
        .env("URL", format!("{}/v1/credentials/orders/dev", d.url()))
        .env("TOKEN", &tok)
        .output()
        .expect("node is on PATH (scripts/test-deps installs it)");
    let j: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap_or_else(|e| {
        panic!(
            "{}",
            explain(&format!("node printed no JSON: {e}"), &out, &[])
        )
    });
    assert_eq!(j["status"], 200, "{j}");
    assert_eq!(j["body"]["AccessKeyId"], "ASIADEV1");
    let host = d.addr.to_string();
    for (name, value) in [
        ("Origin", "http://evil.example"),
        ("Referer", "http://evil.example/"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let r = request(
            d.addr,
            "GET",
            "/v1/credentials/orders/dev",
            &[
                ("Host", &host),
                ("Authorization", &tok),
                ("Sec-Fetch-Mode", "no-cors"),
                (name, value),
            ],
        );
        assert_eq!(r.status, 403, "{name}: {}", r.body);
        assert_eq!(
            r.json()["Code"],
            "BrowserRequestRefused",
            "{name}: {}",
            r.body
        );
    }
}

fn serve_json(h: &TestHome) -> Daemon {
    h.serve_with(&["--listen", "127.0.0.1:0", "--log-format", "json"])
}

// Row: a User-Agent `x project=evil stage=prod` was logged bare, so it forged fields; a
// non-ASCII agent was logged empty.
#[test]
fn audit_values_are_quoted_and_cannot_forge_fields() {
    let h = home();
    let tok = h.token("orders", "dev");
    let forged = "x project=evil stage=prod";
    {
        let d = h.serve();
        let host = d.addr.to_string();
        let r = request(
            d.addr,
            "GET",
            "/v1/credentials/orders/dev",
            &[
                ("Host", &host),
                ("Authorization", &tok),
                ("User-Agent", forged),
            ],
        );
        assert_eq!(r.status, 200);
        let mut raw = format!(
            "GET /v1/credentials/orders/dev HTTP/1.1\r\nHost: {host}\r\nAuthorization: {tok}\r\nUser-Agent: "
        )
        .into_bytes();
        raw.extend_from_slice("café-tool/1.0".as_bytes());
        raw.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        assert_eq!(send_raw(d.addr, &raw).status, 200);
        assert!(
            d.wait_output("café-tool", Duration::from_secs(5)),
            "non-ASCII agent logged: {}",
            d.output()
        );
        let log = d.output();
        let line = log
            .lines()
            .find(|l| l.contains("credentials issued") && l.contains("evil"))
            .unwrap_or_else(|| panic!("no audit line: {log}"));
        assert!(
            line.contains(r#"user_agent="x project=evil stage=prod""#),
            "{line}"
        );
        assert!(line.contains("project=orders stage=dev"), "{line}");
        assert!(log.contains(r#"user_agent="café-tool/1.0""#), "{log}");
    }
    let d = serve_json(&h);
    let host = d.addr.to_string();
    let r = request(
        d.addr,
        "GET",
        "/v1/credentials/orders/dev",
        &[
            ("Host", &host),
            ("Authorization", &tok),
            ("User-Agent", forged),
        ],
    );
    assert_eq!(r.status, 200);
    assert!(d.wait_output("evil", Duration::from_secs(5)));
    let log = d.output();
    let line = log
        .lines()
        .find(|l| l.contains("evil"))
        .unwrap_or_else(|| panic!("{log}"));
    let j: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(j["fields"]["user_agent"], forged, "{line}");
    assert_eq!(j["fields"]["project"], "orders", "{line}");
    assert_eq!(j["fields"]["stage"], "dev", "{line}");
}

// Row: `token --rotate` while a botocore process was between reading its token file and
// the rewrite: the old token was refused at once.
#[test]
fn rotation_keeps_the_old_token_for_a_grace_period() {
    let h = home();
    let d = h.serve();
    let path = "/v1/credentials/orders/dev";
    let old = h.token("orders", "dev");
    // A token file that `env` wrote, as an editor would point at.
    let out = h.run(&["env", "--project", "orders", "--stage", "dev"]);
    assert!(out.status.success(), "{}", explain("env", &out, &[]));
    let file = h.state_dir().join("tokens/orders@dev.token");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), old);

    let out = h.run(&["token", "--rotate"]);
    assert!(out.status.success(), "{}", explain("rotate", &out, &[]));
    assert!(
        text(&out.stderr).contains("the old ones keep working for 60 s"),
        "{}",
        explain("rotate says so", &out, &[])
    );
    let new = h.token("orders", "dev");
    assert_ne!(new, old);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        new,
        "file rewritten"
    );
    d.wait_until(Duration::from_secs(5), path, &new, |r| r.status == 200);
    assert_eq!(
        d.get(path, Some(&old)).status,
        200,
        "old token in its grace"
    );
    let st = status_json(&h);
    assert!(
        st["token_key"]["previous_valid_until"].as_str().is_some(),
        "status shows the grace: {st}"
    );
    assert!(
        text(&h.run(&["status"]).stdout).contains("tokens of the previous key keep working until")
    );

    // A short grace ends by itself.
    let before = h.token("orders", "dev");
    assert!(
        h.run(&["token", "--rotate", "--grace", "1"])
            .status
            .success()
    );
    let after = h.token("orders", "dev");
    d.wait_until(Duration::from_secs(5), path, &after, |r| r.status == 200);
    d.wait_until(Duration::from_secs(5), path, &before, |r| r.status == 401);

    // --now cuts at once.
    assert!(h.run(&["token", "--rotate", "--now"]).status.success());
    d.wait_until(Duration::from_secs(5), path, &after, |r| r.status == 401);
    assert!(status_json(&h)["token_key"]["previous_valid_until"].is_null());
}

// Row: a pre-existing token-key at 0644 or a state directory at 0755 was used silently;
// parents credport created followed the umask.
#[test]
fn permissions_are_enforced_like_ssh() {
    let h = home();
    // A fresh HOME: every directory credport creates is 0700, parents included.
    assert!(!h.path().join(".local").exists());
    let out = h.run(&["token", "--project", "orders", "--stage", "dev"]);
    assert!(out.status.success(), "{}", explain("token", &out, &[]));
    for d in [
        h.path().join(".local"),
        h.path().join(".local/share"),
        h.state_dir(),
    ] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    // A key others can read is refused, with the fix.
    let key = h.state_dir().join("token-key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = h.run(&["token", "--project", "orders", "--stage", "dev"]);
    assert!(!out.status.success(), "{}", explain("0644 key", &out, &[]));
    let fix = format!("chmod 600 {}", key.display());
    assert!(
        text(&out.stderr).contains(&fix),
        "{}",
        explain("fix", &out, &[])
    );
    let serve = h.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(!serve.status.success());
    assert!(
        text(&serve.stderr).contains(&fix),
        "{}",
        explain("serve", &serve, &[])
    );
    // The fix works.
    let chmod = Command::new("sh").arg("-c").arg(&fix).output().unwrap();
    assert!(chmod.status.success());
    assert!(
        h.run(&["token", "--project", "orders", "--stage", "dev"])
            .status
            .success()
    );
    // A state directory others can enter is made 0700, with a warning.
    std::fs::set_permissions(h.state_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = h.run(&["token", "--project", "orders", "--stage", "dev"]);
    assert!(out.status.success(), "{}", explain("token", &out, &[]));
    assert!(
        text(&out.stderr).contains(&format!(
            "credport: warning: {} was accessible to other users (mode 755); credport made it 0700",
            h.state_dir().display()
        )),
        "{}",
        explain("warning", &out, &[])
    );
    assert_eq!(mode(&h.state_dir()), 0o700);
    let _ = std::io::stderr().flush();
}

/// Findings of `credport doctor --json` run in `dir`, as (check, problem, fix).
fn doctor_findings(h: &TestHome, dir: &Path) -> Vec<(String, String, String)> {
    let out = run_in(h, dir, &["doctor", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{}", explain(&format!("doctor --json: {e}"), &out, &[])));
    j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (s("check"), s("problem"), s("fix"))
        })
        .collect()
}

// Item 4's other new checks, each provoked, and each printed fix applied to show it is
// right: an unresolvable project file in the current directory, a registered project
// whose files are gone, a token key others can read, a stale daemon.json.

/// An unresolvable project file in the current directory.
#[test]
fn doctor_reports_an_unresolvable_project_file_and_its_fix_works() {
    let h = home();
    let project = h.path().join("ssm-project");
    std::fs::create_dir_all(&project).unwrap();
    let yml = project.join("serverless.yml");
    std::fs::write(
        &yml,
        fixture(
            r#"
            service: ssmapp
            provider:
              name: aws
              profile: ${ssm:/team/profile}
            "#,
        ),
    )
    .unwrap();
    let found = doctor_findings(&h, &project);
    let f = found
        .iter()
        .find(|f| f.0 == "project-file")
        .unwrap_or_else(|| panic!("no project-file finding: {found:?}"));
    assert!(
        f.1.contains("serverless.yml") && f.1.contains("${ssm:/team/profile}"),
        "{f:?}"
    );
    // The fix the resolver suggests (map the stages in .credport.toml) clears it.
    assert!(f.1.contains(".credport.toml"), "{f:?}");
    std::fs::write(
        project.join(".credport.toml"),
        fixture(
            r#"
            project = "ssmapp"
            default_stage = "dev"
            [stages]
            dev = "devAccount"
            "#,
        ),
    )
    .unwrap();
    let found = doctor_findings(&h, &project);
    assert!(
        !found.iter().any(|f| f.0.starts_with("project")),
        "{found:?}"
    );
}

/// A registered project whose directory lost its file.
#[test]
fn doctor_reports_a_registered_project_without_its_file_and_its_fix_works() {
    let h = home();
    let gone = h.path().join("gone");
    std::fs::create_dir_all(&gone).unwrap();
    std::fs::write(
        gone.join(".credport.toml"),
        fixture(
            r#"
            project = "goneapp"
            [stages]
            dev = "devAccount"
            "#,
        ),
    )
    .unwrap();
    let out = h.run(&["project", "add", gone.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        explain("project add", &out, &[])
    );
    std::fs::remove_file(gone.join(".credport.toml")).unwrap();
    let found = doctor_findings(&h, h.path());
    let f = found
        .iter()
        .find(|f| f.0 == "project")
        .unwrap_or_else(|| panic!("no project finding: {found:?}"));
    assert!(f.1.contains("goneapp"), "{f:?}");
    assert!(h.run(&["project", "remove", "goneapp"]).status.success());
    assert!(
        !doctor_findings(&h, h.path())
            .iter()
            .any(|f| f.0 == "project")
    );
}

/// A token key others can read: an error whose fix (chmod, then rotate) clears it.
#[test]
fn doctor_reports_a_token_key_others_can_read_and_its_fix_works() {
    let h = home();
    h.token("orders", "dev");
    let key = h.state_dir().join("token-key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let found = doctor_findings(&h, h.path());
    let f = found
        .iter()
        .find(|f| f.0 == "file-mode" && f.1.contains("token-key"))
        .unwrap_or_else(|| panic!("no token-key finding: {found:?}"))
        .clone();
    assert_eq!(
        f.2,
        format!(
            "chmod 600 {} && credport token --rotate --now",
            key.display()
        )
    );
    let mut fix = Command::new("sh");
    fix.arg("-c").arg(&f.2).env(
        "PATH",
        format!(
            "{}:{}",
            Path::new(BIN).parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    for (k, v) in h.command().get_envs() {
        if let (k, Some(v)) = (k, v)
            && k != "PATH"
        {
            fix.env(k, v);
        }
    }
    let out = fix.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        explain("the printed fix", &out, &[])
    );
    assert!(
        !doctor_findings(&h, h.path())
            .iter()
            .any(|f| f.0 == "file-mode" && f.1.contains("token-key"))
    );
}

/// A stale daemon.json is noted (and removed).
#[test]
fn doctor_notes_and_removes_a_stale_daemon_json() {
    let h = home();
    std::fs::create_dir_all(h.runtime_dir()).unwrap();
    std::fs::write(
        h.runtime_dir().join("daemon.json"),
        r#"{"url":"http://127.0.0.1:9","listen":["127.0.0.1:9"],"pid":1,"instance":"x"}"#,
    )
    .unwrap();
    let found = doctor_findings(&h, h.path());
    assert!(
        found
            .iter()
            .any(|f| f.0 == "stale-state" && f.1.contains("no longer runs")),
        "{found:?}"
    );
    assert!(!h.runtime_dir().join("daemon.json").exists());
}
