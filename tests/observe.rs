//! Observability: `status`, `doctor` and `/metrics`, each on crafted environments.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;

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
    h.write_config(&format!("{GUARD_OFF}{CONFIG}"));
    h
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn status_reports_files_scopes_and_errors_without_secrets() {
    let h = home();
    let down = h.run(&["status"]);
    assert_eq!(down.status.code(), Some(1));
    assert!(
        text(&down).contains("daemon: not running"),
        "{}",
        text(&down)
    );

    let d = h.serve();
    d.get(
        "/v1/credentials/orders/dev",
        Some(&h.token("orders", "dev")),
    );
    let out = h.run(&["status"]);
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    assert!(s.contains(&format!("listening on {}", d.url())), "{s}");
    // The scopes table: the default stage is starred.
    assert!(
        s.lines().any(|l| l.contains("orders/dev *")
            && l.contains("devAccount")
            && l.contains("session-keys")
            && l.trim_end().ends_with("ok")),
        "{s}"
    );
    assert!(
        s.contains("credentials") && s.contains("ok (2 sections)"),
        "{s}"
    );

    h.write_credentials(&fixture(
        r#"
        [devAccount]
        aws_access_key_id = ASIADEV1
        [devAccount]
        "#,
    ));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let s = text(&h.run(&["status"]));
    assert!(
        s.contains("ERROR line 3: section [devAccount] repeated"),
        "{s}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&h.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json["running"], true);
    assert_eq!(json["scopes"].as_array().unwrap().len(), 2);
    for secret in ["SECRETDEV1", "TOKENDEV1", "SECRETPROD1"] {
        assert!(!s.contains(secret) && !json.to_string().contains(secret));
    }
}

#[test]
fn metrics_parse_as_prometheus_text() {
    let h = home();
    let d = h.serve();
    let tok = h.token("orders", "dev");
    for _ in 0..3 {
        assert_eq!(d.get("/v1/credentials/orders/dev", Some(&tok)).status, 200);
    }
    d.get("/v1/credentials/orders/dev", Some("wrong"));
    d.get("/v1/credentials/orders/prod", Some(&tok));
    let r = d.get("/metrics", None);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let lines = r.body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
    let value = |name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => -1.0,
            })
    };
    assert_eq!(
        value(
            "credport_requests_total",
            &[("project", "orders"), ("stage", "dev"), ("outcome", "ok")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            "credport_requests_total",
            &[("project", ""), ("outcome", "InvalidToken")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            "credport_requests_total",
            &[("project", ""), ("outcome", "AccessDenied")]
        ),
        Some(1.0),
        "unauthenticated scopes are not labels"
    );
    assert!(value("credport_reloads_total", &[]).unwrap() >= 1.0);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "credport_request_duration_seconds"),
        "histogram present"
    );
    assert!(!r.body.contains("SECRET") && !r.body.contains(&tok));
}

/// A fake STS that only answers with a `Date` header ten minutes in the past.
fn skewed_sts() -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let date = httpdate::fmt_http_date(
                std::time::SystemTime::now() - std::time::Duration::from_secs(600),
            );
            let _ = write!(
                s,
                "HTTP/1.1 404 Not Found\r\nDate: {date}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (url, h)
}

/// Clean: daemon up, files private, no stray variables.
#[test]
fn doctor_passes_a_clean_setup() {
    let mut h = home();
    let clean_sts = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap()) // refused: clock check is a note only
    };
    h.extra_env.insert("AWS_ENDPOINT_URL_STS".into(), clean_sts);
    let _d = h.serve();
    let out = h.run(&["doctor"]);
    assert!(out.status.success(), "clean setup: {}", text(&out));
    assert!(text(&out).contains("no problems found"));
}

/// Everything wrong at once.
#[test]
fn doctor_finds_each_problem_once() {
    let mut h = home();
    let (sts, t) = skewed_sts();
    h.write_credentials(&format!(
        "{}{}",
        fixture(
            r#"
            [default]
            aws_access_key_id = AKIADEFAULT
            aws_secret_access_key = SECRETDEFAULT
            "#
        ),
        session_profile("devAccount", "DEV1")
    ));
    std::fs::set_permissions(h.credentials(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = fixture(&format!(
        r#"
        [server]
        listen = ["{}"]
        "#,
        taken.local_addr().unwrap()
    ));
    h.write_config(&format!("{server}{CONFIG}"));
    let fake_python = h.path().join("oldpython");
    std::fs::write(
        &fake_python,
        fixture(
            r#"
            #!/bin/sh
            echo 1.31.0
            "#,
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake_python, std::fs::Permissions::from_mode(0o755)).unwrap();
    h.extra_env.insert("AWS_ENDPOINT_URL_STS".into(), sts);
    h.extra_env.insert("AWS_PROFILE".into(), "default".into());
    h.extra_env
        .insert("AWS_ACCESS_KEY_ID".into(), "AKIASTRAY".into());
    h.extra_env.insert(
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI".into(),
        "/v2/credentials/x".into(),
    );
    h.extra_env.insert(
        "CREDPORT_DOCTOR_PYTHON".into(),
        fake_python.display().to_string(),
    );
    let out = h.run(&["doctor", "--json"]);
    t.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    for want in [
        "env-profile",
        "env-keys",
        "env-relative-uri",
        "file-mode",
        "default-keys",
        "missing-profile",
        "daemon-down",
        "port-taken",
        "old-sdk",
        "clock-skew",
    ] {
        assert_eq!(
            checks.iter().filter(|c| **c == want).count(),
            1,
            "{want} in {checks:?}"
        );
    }
    for f in v["findings"].as_array().unwrap() {
        assert!(f["fix"].as_str().is_some_and(|s| !s.is_empty()), "{f}");
    }
    assert!(!String::from_utf8_lossy(&out.stdout).contains("SECRETDEFAULT"));
}

/// An unreadable credentials file (root reads anything, so a directory in the file's place).
#[test]
fn doctor_reports_an_unreadable_credentials_file() {
    let h2 = home();
    std::fs::remove_file(h2.credentials()).unwrap();
    std::fs::create_dir(h2.credentials()).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&h2.run(&["doctor", "--json"]).stdout).unwrap();
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"] == "file-parse"
                && f["problem"]
                    .as_str()
                    .unwrap()
                    .contains("not a regular file")),
        "{v}"
    );
}

/// A config file that does not parse: one finding naming its line and reason, and the
/// store's warning once on stderr (doctor used to read the file three times and warn
/// three times).
#[test]
fn doctor_reports_a_broken_config_once() {
    let h = home();
    h.write_config("[server]\nserved_lifetime = 4\n");
    let out = h.run(&["doctor", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}; stderr:\n{stderr}"));
    let parse: Vec<&serde_json::Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "config-parse")
        .collect();
    assert_eq!(parse.len(), 1, "{v}");
    let problem = parse[0]["problem"].as_str().unwrap();
    assert!(
        problem.contains("line 2") && problem.contains("served_lifetime = 4"),
        "{problem}"
    );
    assert_eq!(
        stderr.matches("served_lifetime = 4").count(),
        1,
        "stderr:\n{stderr}"
    );
}
