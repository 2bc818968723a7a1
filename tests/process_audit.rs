//! Process audit: every fetch names its process. Real SDK clients (boto3, the JS SDK v3)
//! fetch from the real daemon and appear in `credport log --json` with their own pid,
//! executable and command line; `--project`/`--stage` filter, `--follow` streams a new
//! event, refusals are audited, `status` names the last client per scope, and a request
//! through `credport relay` names the relay's process and the client it forwarded for.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const CONFIG: &str = r#"[projects.orders]
default_stage = "dev"
stages = { dev = "devAccount", prod = "prodAccount" }
"#;

fn home() -> TestHome {
    let h = TestHome::new();
    h.write_credentials(&format!(
        "{}{}",
        session_profile("devAccount", "DEV1"),
        session_profile("prodAccount", "PROD1")
    ));
    std::fs::set_permissions(h.credentials(), std::fs::Permissions::from_mode(0o600)).unwrap();
    // The audit, not the guard, is under test: prod is served without an unlock.
    h.write_config(&format!("{GUARD_OFF}{CONFIG}"));
    h
}

fn explain(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `credport log --json ARGS...`, one event per line.
fn log_json(h: &TestHome, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["log", "--json"];
    all.extend(args);
    let out = h.run(&all);
    assert!(
        out.status.success(),
        "{}",
        explain(&format!("{all:?}"), &out)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event ({e}): {l:?}"))
        })
        .collect()
}

/// Polls `credport log --json ARGS` until an event passes `want` (the audit of a request
/// is written once its connection's process is known, which may trail the response).
fn wait_event(h: &TestHome, args: &[&str], want: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let events = log_json(h, args);
        if let Some(e) = events.iter().find(|e| want(e)) {
            return e.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no such event in `credport log --json {args:?}`:\n{}",
            events
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs an SDK client with only the container provider configured.
fn sdk_client(program: &str, args: &[&str], url: &str, token: &str) -> (u32, Value) {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", url)
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", token)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        // The environment is never read: this must not reach the journal.
        .env("AUDIT_ENV_MARKER", "ENVMARKER42")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = format!("{cmd:?}");
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{shown}: {e}"));
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "{}",
            explain(&format!("{shown} printed no JSON ({e})"), &out)
        )
    });
    assert!(v.get("error").is_none(), "{}", explain(&shown, &out));
    (pid, v)
}

#[test]
fn python_and_node_clients_are_named_with_their_pid_and_command() {
    let h = home();
    let d = h.serve();
    let whoami_py = repo_root().join("tests/clients/python/whoami.py");
    let (py_pid, py) = sdk_client(
        venv_python().to_str().unwrap(),
        &[whoami_py.to_str().unwrap(), "--mode", "creds-only"],
        &format!("{}/v1/credentials/orders/dev", d.url()),
        &h.token("orders", "dev"),
    );
    assert_eq!(py["access_key_id_suffix"], "DEV1", "{py}");
    let node_dir = repo_root().join("tests/clients/node");
    assert!(
        node_dir.join("node_modules/@aws-sdk/client-sts").exists(),
        "{}/node_modules lacks @aws-sdk/client-sts: run `bash scripts/test-deps`",
        node_dir.display()
    );
    let whoami_js = node_dir.join("whoami-v3.mjs");
    let (js_pid, js) = sdk_client(
        "node",
        &[whoami_js.to_str().unwrap(), "--mode", "creds-only"],
        &format!("{}/v1/credentials/orders/prod", d.url()),
        &h.token("orders", "prod"),
    );
    assert_eq!(js["access_key_id_suffix"], "ROD1", "{js}");

    let py_event = wait_event(&h, &[], |e| e["client"]["pid"] == py_pid);
    assert_eq!(py_event["event"], "issued", "{py_event}");
    assert_eq!(
        (&py_event["project"], &py_event["stage"]),
        (&"orders".into(), &"dev".into())
    );
    assert_eq!(py_event["profile"], "devAccount");
    let cmd = py_event["client"]["cmd"].as_str().unwrap();
    assert!(
        cmd.contains("whoami.py --mode creds-only"),
        "the Python client's command line: {py_event}"
    );
    assert!(
        py_event["client"]["exe"]
            .as_str()
            .is_some_and(|e| e.contains("python")),
        "{py_event}"
    );
    let js_event = wait_event(&h, &[], |e| e["client"]["pid"] == js_pid);
    assert_eq!(js_event["event"], "issued", "{js_event}");
    assert_eq!(js_event["stage"], "prod");
    assert_eq!(js_event["profile"], "prodAccount");
    assert!(
        js_event["client"]["cmd"]
            .as_str()
            .unwrap()
            .contains("whoami-v3.mjs --mode creds-only"),
        "the Node client's command line: {js_event}"
    );
    assert!(
        js_event["client"]["exe"]
            .as_str()
            .is_some_and(|e| e.contains("node")),
        "{js_event}"
    );
    // Nothing secret in the journal: no key secret, session token or credport token.
    let all = h.run(&["log", "--json"]);
    let text = String::from_utf8_lossy(&all.stdout);
    for secret in [
        "SECRETDEV1",
        "TOKENDEV1",
        "SECRETPROD1",
        "TOKENPROD1",
        "cpt1.",
    ] {
        assert!(!text.contains(secret), "{secret} in the journal:\n{text}");
    }

    // status: the last fetch per scope, with its process.
    let out = h.run(&["status", "--json"]);
    assert!(out.status.success(), "{}", explain("status --json", &out));
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    let scope = |stage: &str| {
        st["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["project"] == "orders" && s["stage"] == stage)
            .unwrap_or_else(|| panic!("orders/{stage} missing from status: {st}"))
            .clone()
    };
    assert_eq!(scope("dev")["last_issued"]["client"]["pid"], py_pid, "{st}");
    assert_eq!(
        scope("dev")["last_issued"]["process"],
        format!(
            "pid {py_pid} ({})",
            py_event["client"]["name"].as_str().unwrap()
        ),
        "{st}"
    );
    assert_eq!(
        scope("prod")["last_issued"]["client"]["pid"],
        js_pid,
        "{st}"
    );
    assert!(
        scope("prod")["last_issued"]["client"]["cmd"]
            .as_str()
            .unwrap()
            .contains("whoami-v3.mjs"),
        "{st}"
    );
    // The human log names them too.
    let out = h.run(&["log", "--stage", "prod"]);
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(
        human.contains(&format!("pid {js_pid} (node)")) && human.contains("whoami-v3.mjs"),
        "{}",
        explain("credport log --stage prod", &out)
    );
    assert!(!human.contains(&format!("pid {py_pid} ")), "{human}");
    drop(d);
}

#[test]
fn filters_refusals_and_follow() {
    let h = home();
    let d = h.serve();
    let me = std::process::id();
    let dev = h.token("orders", "dev");
    let prod = h.token("orders", "prod");
    assert_eq!(d.get("/v1/credentials/orders/dev", Some(&dev)).status, 200);
    assert_eq!(
        d.get("/v1/credentials/orders/prod", Some(&prod)).status,
        200
    );
    // Refusals: a bad token (no scope: its path is anyone's text), a token for another
    // scope, and a valid token for a stage that maps to no profile.
    assert_eq!(
        d.get("/v1/credentials/orders/dev", Some("nope")).status,
        401
    );
    assert_eq!(d.get("/v1/credentials/orders/prod", Some(&dev)).status, 403);
    let qa = h.token("orders", "qa");
    assert_eq!(d.get("/v1/credentials/orders/qa", Some(&qa)).status, 404);
    wait_event(&h, &[], |e| e["code"] == "NotFound");
    // Every request's audit is written once its process is known (which may trail).
    let start = Instant::now();
    let all = loop {
        let all = log_json(&h, &[]);
        if all.len() >= 5 || start.elapsed() > Duration::from_secs(10) {
            break all;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(all.len(), 5, "{all:?}");
    for e in &all {
        // Each request came from this test process.
        assert_eq!(e["client"]["pid"], me, "{e}");
        assert!(
            e["client"]["address"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:"),
            "{e}"
        );
    }
    let invalid = all.iter().find(|e| e["code"] == "InvalidToken").unwrap();
    assert_eq!(invalid["event"], "refused");
    assert_eq!(invalid["status"], 401);
    assert!(invalid.get("project").is_none(), "{invalid}");
    assert_eq!(invalid["path"], "/v1/credentials/orders/dev");
    let other = all.iter().find(|e| e["code"] == "AccessDenied").unwrap();
    assert_eq!(other["status"], 403);

    // Filters over the five events above.
    struct Case {
        name: &'static str,
        /// The arguments after `log --json`.
        args: &'static [&'static str],
        /// Per event shown, in order: fields and their values.
        want: Vec<Vec<(&'static str, Value)>>,
    }
    let cases = [
        Case {
            name: "project and stage",
            args: &["--project", "orders", "--stage", "prod"],
            want: vec![vec![("event", "issued".into())]],
        },
        Case {
            name: "stage",
            args: &["--stage", "dev"],
            want: vec![vec![("profile", "devAccount".into())]],
        },
        Case {
            name: "a stage with only a refusal",
            args: &["--stage", "qa"],
            want: vec![vec![
                ("event", "refused".into()),
                ("code", "NotFound".into()),
            ]],
        },
        Case {
            name: "a project never asked for",
            args: &["--project", "billing"],
            want: vec![],
        },
        Case {
            name: "the last two",
            args: &["-n", "2"],
            want: vec![vec![("seq", 4.into())], vec![("seq", 5.into())]],
        },
    ];
    for case in &cases {
        let name = case.name;
        let shown = log_json(&h, case.args);
        assert_eq!(shown.len(), case.want.len(), "case {name}: {shown:?}");
        for (e, fields) in shown.iter().zip(&case.want) {
            for (field, value) in fields {
                assert_eq!(&e[*field], value, "case {name}: {field} of {e}");
            }
        }
    }
    // Text: one line per event.
    let out = h.run(&["log"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 5, "{}", explain("credport log", &out));
    assert!(
        text.lines()
            .any(|l| l.contains("refused") && l.contains("401 InvalidToken")),
        "{text}"
    );

    // --follow: the backlog (filtered), then each new event as it happens.
    let mut follower = h
        .command()
        .args(["log", "--follow", "--json", "--stage", "dev"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("`credport log --follow` printed no {what}"))
    };
    let backlog: Value = serde_json::from_str(&next("backlog")).unwrap();
    assert_eq!(backlog["seq"], 1, "{backlog}");
    // Not dev: not shown. Then dev: shown.
    assert_eq!(
        d.get("/v1/credentials/orders/prod", Some(&prod)).status,
        200
    );
    assert_eq!(d.get("/v1/credentials/orders/dev", Some(&dev)).status, 200);
    let new: Value = serde_json::from_str(&next("new event")).unwrap();
    assert_eq!(
        (&new["event"], &new["stage"]),
        (&"issued".into(), &"dev".into()),
        "{new}"
    );
    assert!(new["seq"].as_u64().unwrap() > 5, "a new event: {new}");
    assert_eq!(new["client"]["pid"], me);
    assert!(
        follower.try_wait().unwrap().is_none(),
        "--follow keeps running"
    );
    let _ = follower.kill();
    let _ = follower.wait();
    drop(d);
}

#[test]
fn a_relayed_request_names_the_relay_and_its_client() {
    let h = home();
    let d = h.serve();
    let mut relay = h
        .command()
        .args(["relay", "--listen", "127.0.0.1:0", "--upstream", &d.url()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(relay.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr: std::net::SocketAddr = first
        .strip_prefix("listening on http://")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("relay did not report its address: {first:?}"));
    // A client with a socket whose address the test knows.
    let sock = std::net::TcpStream::connect(addr).unwrap();
    let client_addr = sock.local_addr().unwrap();
    let tok = h.token("orders", "dev");
    let raw = format!(
        "GET /v1/credentials/orders/dev HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {tok}\r\nConnection: close\r\n\r\n"
    );
    use std::io::{Read, Write};
    let mut sock = sock;
    sock.write_all(raw.as_bytes()).unwrap();
    let mut buf = Vec::new();
    sock.read_to_end(&mut buf).unwrap();
    let r = parse_response(&buf);
    assert_eq!(r.status, 200, "{}", r.body);
    let e = wait_event(&h, &["--stage", "dev"], |e| e["event"] == "issued");
    let c = &e["client"];
    assert_eq!(c["relay_for"], client_addr.to_string(), "{e}");
    assert_eq!(c["pid"], relay.id(), "the relay's own process: {e}");
    assert!(c["cmd"].as_str().unwrap().contains("relay --listen"), "{e}");
    let out = h.run(&["log", "--stage", "dev"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "container {client_addr} via relay pid {}",
            relay.id()
        )),
        "{text}"
    );
    let _ = relay.kill();
    let _ = relay.wait();
    drop(d);
}

#[test]
fn log_without_a_daemon_says_how_to_start_one() {
    let h = home();
    let out = h.run(&["log"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        explain("credport log", &out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no credport daemon is running") && err.contains("credport serve"),
        "{err}"
    );
}

#[test]
fn a_keep_alive_connection_is_looked_up_once() {
    use std::io::{Read, Write};
    let h = home();
    let d = h.serve();
    let tok = h.token("orders", "dev");
    let mut sock = std::net::TcpStream::connect(d.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let me = sock.local_addr().unwrap();
    let host = d.addr.to_string();
    for i in 0..3 {
        let close = if i == 2 { "Connection: close\r\n" } else { "" };
        sock.write_all(
            format!(
                "GET /v1/credentials/orders/dev HTTP/1.1\r\nHost: {host}\r\nAuthorization: {tok}\r\n{close}\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        // Read one response: head, then Content-Length bytes of body.
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            assert_eq!(sock.read(&mut byte).unwrap(), 1, "connection closed early");
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no content-length: {head}"));
        let mut body = vec![0u8; len];
        sock.read_exact(&mut body).unwrap();
    }
    let mine = |e: &Value| e["client"]["address"] == me.to_string();
    let start = Instant::now();
    let events = loop {
        let events = log_json(&h, &[]);
        if events.iter().filter(|e| mine(e)).count() >= 3
            || start.elapsed() > Duration::from_secs(10)
        {
            break events;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(events.iter().filter(|e| mine(e)).count(), 3, "{events:?}");
    for e in &events {
        assert_eq!(e["client"]["pid"], std::process::id(), "{e}");
    }
    // One lookup for the three requests (the daemon logs each at debug, through its log
    // writer thread, which may lag the responses).
    assert!(
        d.wait_output("client process lookup", Duration::from_secs(5)),
        "daemon output:\n{}",
        d.output()
    );
    let lookups = d
        .output()
        .lines()
        .filter(|l| l.contains("client process lookup") && l.contains(&format!("peer={me}")))
        .count();
    assert_eq!(lookups, 1, "daemon output:\n{}", d.output());
}

#[test]
fn secrets_on_a_command_line_are_masked() {
    let h = home();
    let d = h.serve();
    let tok = h.token("orders", "dev");
    // A client whose argv holds its token and a password (its own business, but the
    // journal must not repeat them).
    std::fs::write(
        h.path().join("c.py"),
        fixture(
            r#"
            import sys, urllib.request
            r = urllib.request.Request(sys.argv[-1], headers={'Authorization': sys.argv[-2]})
            print(urllib.request.urlopen(r).status)
            "#,
        ),
    )
    .unwrap();
    let url = format!("{}/v1/credentials/orders/dev", d.url());
    let out = Command::new(venv_python())
        .current_dir(h.path())
        .args([
            "c.py",
            "--password",
            "hunter2",
            "--api-key=abc123",
            &tok,
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "200",
        "{}",
        explain("python client", &out)
    );
    let e = wait_event(&h, &[], |e| e["event"] == "issued");
    let cmd = e["client"]["cmd"].as_str().unwrap();
    assert!(cmd.contains("cpt1.***"), "{e}");
    assert!(cmd.contains("--password ***"), "{e}");
    assert!(cmd.contains("--api-key=***"), "{e}");
    assert!(cmd.chars().count() <= 121, "{e}");
    let all = String::from_utf8_lossy(&h.run(&["log", "--json"]).stdout).into_owned();
    for secret in [tok.as_str(), "hunter2", "abc123"] {
        assert!(!all.contains(secret), "{secret} in the journal: {all}");
    }
    assert!(!d.output().contains("hunter2"), "{}", d.output());
}
