//! The daemon end to end: the real binary in a temporary HOME, fetched over TCP.

mod support;

use std::time::Duration;

use support::*;

const CONFIG: &str = r#"[projects.orders]
default_stage = "dev"
stages = { dev = "devAccount", prod = "prodAccount", gone = "missingProfile", lt = "longTerm" }

[projects.billing]
stages = { dev = "billingDev" }
"#;

fn home_with_profiles() -> TestHome {
    let mut h = TestHome::new();
    // Nothing listens on the discard port: long-term keys fail fast with STS unreachable.
    h.extra_env
        .insert("AWS_ENDPOINT_URL_STS".into(), "http://127.0.0.1:9".into());
    h.write_credentials(&format!(
        "{}{}{}{}",
        session_profile("devAccount", "DEV1"),
        session_profile("prodAccount", "PROD1"),
        session_profile("billingDev", "BILL1"),
        fixture(
            r#"
            [longTerm]
            aws_access_key_id = AKIALONGTERM
            aws_secret_access_key = SECRETLONGTERM
            "#
        ),
    ));
    h.write_config(&format!("{GUARD_OFF}{CONFIG}"));
    h
}

fn creds_path(project: &str, stage: &str) -> String {
    format!("/v1/credentials/{project}/{stage}")
}

#[test]
fn serves_each_scope_its_own_profile() {
    struct Case {
        project: &'static str,
        stage: &'static str,
        /// The session profile's tag: keys `ASIA{tag}`, `SECRET{tag}`, `TOKEN{tag}`.
        tag: &'static str,
    }
    let h = home_with_profiles();
    let d = h.serve();
    let cases = [
        Case {
            project: "orders",
            stage: "dev",
            tag: "DEV1",
        },
        Case {
            project: "orders",
            stage: "prod",
            tag: "PROD1",
        },
        Case {
            project: "billing",
            stage: "dev",
            tag: "BILL1",
        },
    ];
    for Case {
        project,
        stage,
        tag,
    } in cases
    {
        let name = format!("{project}/{stage}");
        let r = d.get(&creds_path(project, stage), Some(&h.token(project, stage)));
        assert_eq!(r.status, 200, "case {name}: {}", r.body);
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "case {name}"
        );
        let j = r.json();
        assert_eq!(j["AccessKeyId"], format!("ASIA{tag}"), "case {name}");
        assert_eq!(j["SecretAccessKey"], format!("SECRET{tag}"), "case {name}");
        assert_eq!(j["Token"], format!("TOKEN{tag}"), "case {name}");
        let exp = j["Expiration"].as_str().unwrap();
        assert!(exp.len() == 20 && exp.ends_with('Z'), "case {name}: {exp}");
    }
}

#[test]
fn healthz_says_ok() {
    let h = home_with_profiles();
    let d = h.serve();
    let health = d.get("/healthz", None);
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
}

#[test]
fn every_error_status() {
    let h = home_with_profiles();
    let d = h.serve();
    let dev = h.token("orders", "dev");
    let host = d.addr.to_string();
    let cases: Vec<(&str, Response, u16, &str)> = vec![
        (
            "no token",
            d.get(&creds_path("orders", "dev"), None),
            401,
            "MissingToken",
        ),
        (
            "garbage token",
            d.get(&creds_path("orders", "dev"), Some("cpt1.x.y.z")),
            401,
            "InvalidToken",
        ),
        (
            "other stage",
            d.get(&creds_path("orders", "prod"), Some(&dev)),
            403,
            "AccessDenied",
        ),
        (
            "other project",
            d.get(&creds_path("billing", "dev"), Some(&dev)),
            403,
            "AccessDenied",
        ),
        (
            "unknown project",
            d.get(&creds_path("nope", "dev"), Some(&h.token("nope", "dev"))),
            404,
            "NotFound",
        ),
        (
            "unknown stage",
            d.get(&creds_path("orders", "qa"), Some(&h.token("orders", "qa"))),
            404,
            "NotFound",
        ),
        (
            "encoded slash",
            d.get("/v1/credentials/orders%2Fdev", Some(&dev)),
            404,
            "NotFound",
        ),
        (
            "dot-dot",
            d.get("/v1/credentials/orders/dev/../prod", Some(&dev)),
            404,
            "NotFound",
        ),
        (
            "unknown route",
            d.get("/latest/meta-data", None),
            404,
            "NotFound",
        ),
        (
            "missing profile",
            d.get(
                &creds_path("orders", "gone"),
                Some(&h.token("orders", "gone")),
            ),
            500,
            "CredentialsUnavailable",
        ),
        (
            "long-term keys, STS down",
            d.get(&creds_path("orders", "lt"), Some(&h.token("orders", "lt"))),
            503,
            "UpstreamUnavailable",
        ),
        (
            "POST",
            request(
                d.addr,
                "POST",
                &creds_path("orders", "dev"),
                &[("Host", &host), ("Authorization", &dev)],
            ),
            405,
            "MethodNotAllowed",
        ),
        (
            "foreign Host",
            request(
                d.addr,
                "GET",
                &creds_path("orders", "dev"),
                &[("Host", "evil.example:80"), ("Authorization", &dev)],
            ),
            403,
            "InvalidHost",
        ),
        (
            "Origin",
            request(
                d.addr,
                "GET",
                &creds_path("orders", "dev"),
                &[
                    ("Host", &host),
                    ("Authorization", &dev),
                    ("Origin", "http://evil.example"),
                ],
            ),
            403,
            "BrowserRequestRefused",
        ),
        (
            "Referer",
            request(
                d.addr,
                "GET",
                &creds_path("orders", "dev"),
                &[
                    ("Host", &host),
                    ("Authorization", &dev),
                    ("Referer", "http://evil.example/"),
                ],
            ),
            403,
            "BrowserRequestRefused",
        ),
        (
            "Sec-Fetch-Site",
            request(
                d.addr,
                "GET",
                "/healthz",
                &[
                    ("Host", &host),
                    ("Sec-Fetch-Mode", "no-cors"),
                    ("Sec-Fetch-Site", "cross-site"),
                ],
            ),
            403,
            "BrowserRequestRefused",
        ),
        (
            "two tokens",
            request(
                d.addr,
                "GET",
                &creds_path("orders", "dev"),
                &[
                    ("Host", &host),
                    ("Authorization", &dev),
                    ("Authorization", &dev),
                ],
            ),
            400,
            "InvalidToken",
        ),
    ];
    for (what, r, status, code) in cases {
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
        let j = r.json();
        assert_eq!(j["Code"], code, "{what}: {}", r.body);
        assert!(
            j["Message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        assert!(
            !r.body.contains("SECRET") && !r.body.contains("TOKEN"),
            "{what}: {}",
            r.body
        );
    }
    let lt = d.get(&creds_path("orders", "lt"), Some(&h.token("orders", "lt")));
    let msg = lt.json()["Message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("profile 'longTerm'") && msg.contains("unreachable"),
        "{msg}"
    );
}

#[test]
fn reloads_in_place_rename_delete_recreate_and_broken_writes() {
    let h = home_with_profiles();
    let d = h.serve();
    let tok = h.token("orders", "dev");
    let path = creds_path("orders", "dev");
    let has = |tag: &'static str| {
        move |r: &Response| r.status == 200 && r.json()["AccessKeyId"] == format!("ASIA{tag}")
    };
    let limit = Duration::from_secs(1);

    // In place (truncate + write, like `aws configure set`).
    std::fs::write(h.credentials(), session_profile("devAccount", "INPLACE")).unwrap();
    d.wait_until(limit, &path, &tok, has("INPLACE"));
    // Atomic rename.
    write_atomic(&h.credentials(), &session_profile("devAccount", "RENAMED"));
    d.wait_until(limit, &path, &tok, has("RENAMED"));
    // Delete, then re-create.
    std::fs::remove_file(h.credentials()).unwrap();
    d.wait_until(limit, &path, &tok, |r| r.status == 500);
    std::fs::write(h.credentials(), session_profile("devAccount", "RECREATED")).unwrap();
    d.wait_until(limit, &path, &tok, has("RECREATED"));
    // A broken save keeps the last good version...
    std::fs::write(
        h.credentials(),
        fixture(
            r#"
            [devAccount]
            aws_access_key_id = ASIABROKEN
            [devAccount]
            "#,
        ),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r = d.get(&path, Some(&tok));
    assert_eq!(
        r.json()["AccessKeyId"],
        "ASIARECREATED",
        "broken save must not be served"
    );
    assert!(
        d.wait_output("line=3", Duration::from_secs(5)),
        "the parse error is reported with its line"
    );
    // ...and the fix is picked up.
    std::fs::write(h.credentials(), session_profile("devAccount", "FIXED")).unwrap();
    d.wait_until(limit, &path, &tok, has("FIXED"));
}

#[test]
fn removed_profile_stops_being_served() {
    let h = home_with_profiles();
    let d = h.serve();
    let tok = h.token("orders", "prod");
    let path = creds_path("orders", "prod");
    assert_eq!(d.get(&path, Some(&tok)).status, 200);
    write_atomic(&h.credentials(), &session_profile("devAccount", "DEV2"));
    let (r, _) = d.wait_until(Duration::from_secs(1), &path, &tok, |r| r.status != 200);
    assert!(
        r.json()["Message"]
            .as_str()
            .unwrap()
            .contains("profile 'prodAccount' is not in"),
        "{}",
        r.body
    );
}

#[test]
fn starts_without_aws_dir_and_picks_files_up() {
    let h = TestHome::bare();
    h.write_config(&format!("{GUARD_OFF}{CONFIG}"));
    let d = h.serve();
    assert!(
        d.wait_output("not found yet", Duration::from_secs(5)),
        "says that the files are missing"
    );
    let tok = h.token("orders", "dev");
    let path = creds_path("orders", "dev");
    assert_eq!(d.get(&path, Some(&tok)).status, 500);
    h.write_credentials(&session_profile("devAccount", "LATE"));
    d.wait_until(Duration::from_secs(2), &path, &tok, |r| r.status == 200);
}

#[test]
fn config_edits_and_symlinked_credentials() {
    let h = home_with_profiles();
    let dotfiles = h.path().join("dotfiles");
    std::fs::create_dir_all(&dotfiles).unwrap();
    std::fs::write(
        dotfiles.join("credentials"),
        session_profile("devAccount", "LINKED1"),
    )
    .unwrap();
    std::fs::remove_file(h.credentials()).unwrap();
    std::os::unix::fs::symlink(dotfiles.join("credentials"), h.credentials()).unwrap();
    let d = h.serve();
    let tok = h.token("orders", "dev");
    let path = creds_path("orders", "dev");
    assert_eq!(
        d.get(&path, Some(&tok)).json()["AccessKeyId"],
        "ASIALINKED1"
    );
    std::fs::write(
        dotfiles.join("credentials"),
        session_profile("devAccount", "LINKED2"),
    )
    .unwrap();
    d.wait_until(Duration::from_secs(1), &path, &tok, |r| {
        r.json()["AccessKeyId"] == "ASIALINKED2"
    });
    // Remap dev to another profile in credport's config.
    std::fs::write(
        dotfiles.join("credentials"),
        format!(
            "{}{}",
            session_profile("devAccount", "LINKED2"),
            session_profile("otherAccount", "OTHER")
        ),
    )
    .unwrap();
    h.write_config(&format!(
        "{GUARD_OFF}{}",
        CONFIG.replace("dev = \"devAccount\"", "dev = \"otherAccount\"")
    ));
    d.wait_until(Duration::from_secs(1), &path, &tok, |r| {
        r.json()["AccessKeyId"] == "ASIAOTHER"
    });
    // A broken config keeps the last good one.
    h.write_config("[projects.orders\n");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.get(&path, Some(&tok)).json()["AccessKeyId"], "ASIAOTHER");
}

#[test]
fn rotation_invalidates_tokens_and_tokens_survive_restarts() {
    let h = home_with_profiles();
    let before = h.token("orders", "dev");
    let mut d = h.serve();
    let path = creds_path("orders", "dev");
    assert_eq!(d.get(&path, Some(&before)).status, 200);
    assert!(d.terminate().success(), "clean exit on SIGTERM");
    assert!(
        !h.runtime_dir().join("daemon.json").exists(),
        "state file removed on exit"
    );
    let d = h.serve();
    assert_eq!(
        d.get(&path, Some(&before)).status,
        200,
        "token survives a restart"
    );
    // --now: no grace for the old key (the default grace is covered in diagnostics.rs).
    let out = h.run(&["token", "--rotate", "--now"]);
    assert!(out.status.success());
    d.wait_until(Duration::from_secs(2), &path, &before, |r| r.status == 401);
    let after = h.token("orders", "dev");
    assert_ne!(before, after);
    assert_eq!(d.get(&path, Some(&after)).status, 200);
    let key = h.state_dir().join("token-key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(h.state_dir())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
}

#[test]
fn refuses_non_loopback_without_flag() {
    let h = home_with_profiles();
    let out = h.run(&["serve", "--listen", "0.0.0.0:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0") && err.contains("--allow-non-loopback"),
        "{err}"
    );
}

#[test]
fn state_file_names_the_listener() {
    let h = home_with_profiles();
    let d = h.serve();
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(h.runtime_dir().join("daemon.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(info["url"], d.url());
}

/// Clients fetch while the file is rewritten `writes` times; every response must be one
/// version of the profile, never a mix of two, and never a failure.
fn churn(in_place: bool, writes: usize, interval: Duration, readers: usize) {
    let h = home_with_profiles();
    let d = h.serve();
    let tok = h.token("orders", "dev");
    let addr = d.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..readers {
        let tok = tok.clone();
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || {
            let host = addr.to_string();
            let mut seen = std::collections::BTreeSet::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = request(
                    addr,
                    "GET",
                    "/v1/credentials/orders/dev",
                    &[("Host", &host), ("Authorization", &tok)],
                );
                assert_eq!(r.status, 200, "{}", r.body);
                let j = r.json();
                let id = j["AccessKeyId"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("ASIA")
                    .to_string();
                assert_eq!(
                    j["SecretAccessKey"],
                    format!("SECRET{id}"),
                    "mixed versions"
                );
                assert_eq!(j["Token"], format!("TOKEN{id}"), "mixed versions");
                seen.insert(id);
                n += 1;
            }
            (n, seen.len())
        }));
    }
    let others = format!(
        "{}{}",
        session_profile("prodAccount", "PROD1"),
        session_profile("billingDev", "BILL1")
    );
    for i in 0..writes {
        let text = format!(
            "{}{others}",
            session_profile("devAccount", &format!("V{i}"))
        );
        if in_place {
            std::fs::write(h.credentials(), text).unwrap();
        } else {
            write_atomic(&h.credentials(), &text);
        }
        std::thread::sleep(interval);
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    let mut versions = 0;
    for r in handles {
        let (n, v) = r.join().expect("reader panicked");
        total += n;
        versions = versions.max(v);
    }
    assert!(total > 50, "only {total} fetches");
    assert!(
        versions > 3,
        "reloads not observed during the run ({versions} versions)"
    );
    let last = d.get("/v1/credentials/orders/dev", Some(&tok));
    assert_eq!(last.json()["AccessKeyId"], format!("ASIAV{}", writes - 1));
}

/// Hundreds of atomic rewrites (temp file + rename, as editors and most tools save) under
/// eight concurrent clients.
#[test]
fn concurrent_fetches_during_atomic_rewrites_are_consistent() {
    churn(false, 300, Duration::from_millis(2), 8);
}

/// In-place rewrites (truncate + write, as `aws configure set` saves) are only read after
/// the writer closes the file; a file caught empty mid-rewrite is read again.
#[test]
fn concurrent_fetches_during_in_place_rewrites_are_consistent() {
    churn(true, 40, Duration::from_millis(30), 2);
}

/// Everything the daemon and the CLI print, at trace level, is free of the fixtures'
/// secrets (the access key id is not secret, but secret keys and session tokens are).
#[test]
fn no_secret_in_any_output() {
    let h = home_with_profiles();
    let d = h.serve();
    let tok = h.token("orders", "dev");
    for (p, s) in [
        ("orders", "dev"),
        ("orders", "prod"),
        ("orders", "gone"),
        ("orders", "lt"),
        ("billing", "dev"),
    ] {
        let t = h.token(p, s);
        d.get(&creds_path(p, s), Some(&t));
        d.get(&creds_path(p, s), Some(&tok));
    }
    d.get(&creds_path("orders", "dev"), None);
    h.write_credentials(&fixture(
        r#"
        [devAccount]
        aws_secret_access_key = SECRETBROKEN
        [devAccount]
        "#,
    ));
    assert!(
        d.wait_output("credentials issued", Duration::from_secs(5)),
        "audit line present"
    );
    assert!(
        d.wait_output("reload failed", Duration::from_secs(5)),
        "broken file reported"
    );
    let out = d.output();
    for secret in [
        "SECRETDEV1",
        "TOKENDEV1",
        "SECRETPROD1",
        "TOKENPROD1",
        "SECRETLONGTERM",
        "SECRETBROKEN",
        &tok,
    ] {
        assert!(
            !out.contains(secret),
            "daemon output contains {secret}:\n{out}"
        );
    }
    let key = std::fs::read_to_string(h.state_dir().join("token-key")).unwrap();
    assert!(!out.contains(key.trim()));
}
