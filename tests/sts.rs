//! Profiles that go through STS, against moto's real STS emulation: roles and chains,
//! long-term keys, MFA with `credport login`, credential_process, outages and single
//! flight.

mod support;

use std::time::Duration;

use support::moto::{CountingProxy, Moto};
use support::*;

const BASE: &str = r#"[base]
aws_access_key_id = AKIABASE00000001
aws_secret_access_key = SECRETBASEKEY
"#;
const ROLES: &str = r#"[profile dev]
role_arn = arn:aws:iam::111111111111:role/Dev
source_profile = base

[profile prod]
role_arn = arn:aws:iam::222222222222:role/Prod
source_profile = base
"#;
const CONFIG: &str = r#"[projects.orders]
default_stage = "dev"
stages = { dev = "dev", prod = "prod" }
"#;

fn home(sts_url: &str, aws_config: &str, config: &str) -> TestHome {
    let mut h = TestHome::new();
    h.write_credentials(BASE);
    h.write_aws_config(aws_config);
    h.write_config(&format!("{GUARD_OFF}{config}"));
    h.extra_env
        .insert("AWS_ENDPOINT_URL_STS".into(), sts_url.into());
    h.extra_env.insert("AWS_REGION".into(), "us-east-1".into());
    h
}

fn fetch(d: &Daemon, h: &TestHome, project: &str, stage: &str) -> Response {
    d.get(
        &format!("/v1/credentials/{project}/{stage}"),
        Some(&h.token(project, stage)),
    )
}

#[test]
fn dev_and_prod_roles_reach_their_accounts_via_curl_and_boto3() {
    let moto = Moto::start();
    let h = home(&moto.url(), ROLES, CONFIG);
    let d = h.serve();
    for (stage, account) in [("dev", "111111111111"), ("prod", "222222222222")] {
        let r = fetch(&d, &h, "orders", stage);
        let creds = served_credentials(&r);
        assert!(
            creds.access_key_id.starts_with("ASIA"),
            "{}",
            creds.access_key_id
        );
        assert_eq!(r.json()["AccountId"], account);
        assert_eq!(
            caller_account(&moto.url(), &creds),
            account,
            "{stage} via raw HTTP"
        );
        let url = format!("{}/v1/credentials/orders/{stage}", d.url());
        let who = boto3_whoami(&url, &h.token("orders", stage), &moto.url(), &[]);
        assert_eq!(who["account"], account, "{stage} via boto3: {who}");
    }
}

#[test]
fn long_term_keys_are_exchanged_never_served() {
    let moto = Moto::start();
    let h = home(
        &moto.url(),
        "",
        &fixture(
            r#"
            [projects.keys]
            stages = { dev = "base" }
            "#,
        ),
    );
    let d = h.serve();
    let r = fetch(&d, &h, "keys", "dev");
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_ne!(
        j["SecretAccessKey"], "SECRETBASEKEY",
        "a long-term key must never be served"
    );
    assert!(j["Token"].as_str().is_some_and(|t| !t.is_empty()));
}

/// Profiles `a -> b -> c`, three hops from `base`, and `x <-> y`, a loop; stage `c` uses
/// the chain, `loop` the loop.
fn chain_home(sts_url: &str) -> TestHome {
    let chain = fixture(
        r#"
        [profile a]
        role_arn = arn:aws:iam::111111111111:role/A
        source_profile = base
        [profile b]
        role_arn = arn:aws:iam::222222222222:role/B
        source_profile = a
        [profile c]
        role_arn = arn:aws:iam::333333333333:role/C
        source_profile = b
        [profile x]
        role_arn = arn:aws:iam::1:role/X
        source_profile = y
        [profile y]
        role_arn = arn:aws:iam::1:role/Y
        source_profile = x
        "#,
    );
    home(
        sts_url,
        &chain,
        &fixture(
            r#"
            [projects.chain]
            stages = { c = "c", loop = "x" }
            "#,
        ),
    )
}

#[test]
fn three_hop_chain_reaches_the_last_account() {
    let moto = Moto::start();
    let h = chain_home(&moto.url());
    let d = h.serve();
    let r = fetch(&d, &h, "chain", "c");
    assert_eq!(
        caller_account(&moto.url(), &served_credentials(&r)),
        "333333333333"
    );
}

#[test]
fn role_chain_cycle_is_an_error_naming_the_loop() {
    let moto = Moto::start();
    let h = chain_home(&moto.url());
    let d = h.serve();
    let r = fetch(&d, &h, "chain", "loop");
    assert_eq!(r.status, 500);
    assert!(
        r.json()["Message"]
            .as_str()
            .unwrap()
            .contains("role chain loops: x -> y -> x"),
        "{}",
        r.body
    );
}

#[test]
fn profile_edit_moves_dev_to_another_account_within_a_second() {
    let moto = Moto::start();
    let h = home(&moto.url(), ROLES, CONFIG);
    let d = h.serve();
    let r = fetch(&d, &h, "orders", "dev");
    assert_eq!(
        caller_account(&moto.url(), &served_credentials(&r)),
        "111111111111"
    );
    write_atomic(
        &h.aws_config(),
        &ROLES.replace("111111111111:role/Dev", "333333333333:role/Dev"),
    );
    let tok = h.token("orders", "dev");
    let (r, took) = d.wait_until(
        Duration::from_secs(1),
        "/v1/credentials/orders/dev",
        &tok,
        |r| r.status == 200 && r.json()["AccountId"] == "333333333333",
    );
    assert_eq!(
        caller_account(&moto.url(), &served_credentials(&r)),
        "333333333333"
    );
    eprintln!("account switch visible after {took:?}");
}

#[test]
fn mfa_login_unlocks_every_role_behind_the_device() {
    let moto = Moto::start();
    let mfa = ROLES.replace(
        "source_profile = base\n",
        "source_profile = base\nmfa_serial = arn:aws:iam::000000000000:mfa/me\n",
    );
    let h = home(&moto.url(), &mfa, CONFIG);
    let d = h.serve();
    let r = fetch(&d, &h, "orders", "prod");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["Code"], "LoginRequired");
    assert!(
        r.json()["Message"]
            .as_str()
            .unwrap()
            .contains("run `credport login prod`"),
        "{}",
        r.body
    );
    let out = h.run(&["login", "prod", "--code", "123456"]);
    assert!(
        out.status.success(),
        "login failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("MFA session for 'prod' open until"));
    // One code, both roles.
    for (stage, account) in [("prod", "222222222222"), ("dev", "111111111111")] {
        let r = fetch(&d, &h, "orders", stage);
        assert_eq!(
            caller_account(&moto.url(), &served_credentials(&r)),
            account
        );
    }
    // The code can also come from the terminal (stdin).
    let mut child = h
        .command()
        .args(["login", "dev"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"654321\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Login for a profile without MFA says so.
    let out = h.run(&["login", "base", "--code", "123456"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs no login"));
}

#[test]
fn login_without_daemon_is_a_clear_error() {
    let h = TestHome::new();
    let out = h.run(&["login", "prod", "--code", "123456"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no credport daemon is running"), "{err}");
}

#[test]
fn sts_outage_serves_cached_sessions_and_recovers() {
    let mut moto = Moto::start();
    let h = home(&moto.url(), ROLES, CONFIG);
    let d = h.serve();
    let dev = fetch(&d, &h, "orders", "dev");
    assert_eq!(dev.status, 200);
    moto.stop();
    let again = fetch(&d, &h, "orders", "dev");
    assert_eq!(
        again.status, 200,
        "cached session still served: {}",
        again.body
    );
    assert_eq!(again.json()["AccessKeyId"], dev.json()["AccessKeyId"]);
    let prod = fetch(&d, &h, "orders", "prod");
    assert_eq!(prod.status, 503, "{}", prod.body);
    assert_eq!(prod.json()["Code"], "UpstreamUnavailable");
    assert!(
        prod.json()["Message"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{}",
        prod.body
    );
    moto.restart();
    let prod = fetch(&d, &h, "orders", "prod");
    assert_eq!(prod.status, 200, "recovered: {}", prod.body);
}

#[test]
fn concurrent_first_requests_cause_one_sts_call() {
    let moto = Moto::start();
    let proxy = CountingProxy::start(moto.url());
    let h = home(&proxy.url, ROLES, CONFIG);
    let d = h.serve();
    let tok = h.token("orders", "dev");
    let addr = d.addr;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(64));
    let handles: Vec<_> = (0..64)
        .map(|_| {
            let (tok, barrier) = (tok.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let host = addr.to_string();
                request(
                    addr,
                    "GET",
                    "/v1/credentials/orders/dev",
                    &[("Host", &host), ("Authorization", &tok)],
                )
            })
        })
        .collect();
    let keys: std::collections::BTreeSet<String> = handles
        .into_iter()
        .map(|h| {
            let r = h.join().unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()["AccessKeyId"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        proxy.count("AssumeRole"),
        1,
        "64 concurrent first requests, one STS call"
    );
    assert_eq!(keys.len(), 1, "all got the same session");
}

#[test]
fn credential_process_success_and_failures() {
    let moto = Moto::start();
    let h = home(&moto.url(), "", "");
    let bin = h.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = |name: &str, body: &str| {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    };
    let good = script(
        "good",
        r#"echo '{"Version": 1, "AccessKeyId": "ASIAPROC", "SecretAccessKey": "SECRETPROC", "SessionToken": "TOKENPROC", "Expiration": "2099-01-01T00:00:00Z"}'"#,
    );
    let bad_json = script("badjson", "echo 'SECRETLEAK not json'");
    let slow = script("slow", "sleep 30");
    let fails = script(
        "fails",
        "echo SECRETSTDOUT; echo 'token expired, run sso login' >&2; exit 3",
    );
    h.write_aws_config(&fixture(&format!(
        r#"
        [profile good]
        credential_process = {good}
        [profile badjson]
        credential_process = {bad_json}
        [profile slow]
        credential_process = {slow}
        [profile fails]
        credential_process = {fails}
        "#
    )));
    h.write_config(&fixture(
        r#"
        [server]
        process_timeout = 2
        [projects.p]
        stages = { good = "good", badjson = "badjson", slow = "slow", fails = "fails" }
        "#,
    ));
    let d = h.serve();
    let r = fetch(&d, &h, "p", "good");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["Token"], "TOKENPROC");
    for (stage, needle) in [
        ("badjson", "JSON"),
        ("slow", "2s"),
        ("fails", "token expired, run sso login"),
    ] {
        let r = fetch(&d, &h, "p", stage);
        assert_eq!(r.status, 502, "{stage}: {}", r.body);
        let msg = r.json()["Message"].as_str().unwrap().to_string();
        assert!(msg.contains(needle), "{stage}: {msg}");
        assert!(!msg.contains("SECRET"), "{stage} leaked stdout: {msg}");
    }
    assert!(d.wait_output("credentials refused", Duration::from_secs(5)));
    assert!(!d.output().contains("SECRETLEAK") && !d.output().contains("SECRETSTDOUT"));
}

/// A stand-in for the SSO portal's one call, GetRoleCredentials (moto does not emulate the
/// portal). Answers only the expected bearer token.
fn sso_portal() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/federation/credentials",
                axum::routing::get(move |q: axum::extract::Query<std::collections::HashMap<String, String>>, h: axum::http::HeaderMap| {
                    let c = c.clone();
                    async move {
                        c.fetch_add(1, Ordering::SeqCst);
                        let ok = h.get("x-amz-sso_bearer_token").and_then(|v| v.to_str().ok()) == Some("SSOACCESSTOKEN")
                            && q.get("account_id").map(String::as_str) == Some("111111111111")
                            && q.get("role_name").map(String::as_str) == Some("Developer");
                        if !ok {
                            return (axum::http::StatusCode::UNAUTHORIZED, "{\"message\":\"Session token not found or invalid\"}".to_string());
                        }
                        let exp = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() + 3_600_000) as u64;
                        (axum::http::StatusCode::OK, format!("{{\"roleCredentials\":{{\"accessKeyId\":\"ASIASSO1\",\"secretAccessKey\":\"SECRETSSO\",\"sessionToken\":\"TOKENSSO\",\"expiration\":{exp}}}}}"))
                    }
                }),
            );
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    (url, calls)
}

#[test]
fn sso_profiles_read_the_cli_token_cache() {
    let (portal, calls) = sso_portal();
    let mut h = home(
        "http://127.0.0.1:9",
        &fixture(
            r#"
            [profile sso-dev]
            sso_session = corp
            sso_account_id = 111111111111
            sso_role_name = Developer
            region = us-east-1
            [sso-session corp]
            sso_start_url = https://corp.awsapps.com/start
            sso_region = us-east-1
            [profile sso-legacy]
            sso_start_url = https://legacy.awsapps.com/start
            sso_region = us-east-1
            sso_account_id = 111111111111
            sso_role_name = Developer
            "#,
        ),
        &fixture(
            r#"
            [projects.sso]
            stages = { dev = "sso-dev", legacy = "sso-legacy" }
            "#,
        ),
    );
    h.extra_env.insert("AWS_ENDPOINT_URL_SSO".into(), portal);
    let d = h.serve();
    // Before `aws sso login`: the error names the command.
    let r = fetch(&d, &h, "sso", "dev");
    assert_eq!(
        (r.status, r.json()["Code"].as_str()),
        (503, Some("LoginRequired")),
        "{}",
        r.body
    );
    assert!(
        r.json()["Message"]
            .as_str()
            .unwrap()
            .contains("aws sso login --sso-session corp"),
        "{}",
        r.body
    );
    let r = fetch(&d, &h, "sso", "legacy");
    assert!(
        r.json()["Message"]
            .as_str()
            .unwrap()
            .contains("aws sso login --profile sso-legacy"),
        "{}",
        r.body
    );
    // The cache file the CLI writes: ~/.aws/sso/cache/sha1(session name).json.
    let cache = h.path().join(".aws/sso/cache");
    std::fs::create_dir_all(&cache).unwrap();
    let name = {
        use sha1::Digest;
        hex::encode(sha1::Sha1::digest(b"corp"))
    };
    std::fs::write(
        cache.join(format!("{name}.json")),
        r#"{"startUrl": "https://corp.awsapps.com/start", "region": "us-east-1", "accessToken": "SSOACCESSTOKEN", "expiresAt": "2099-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    let r = fetch(&d, &h, "sso", "dev");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["AccessKeyId"], "ASIASSO1");
    fetch(&d, &h, "sso", "dev");
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "cached until expiry"
    );
    assert!(d.wait_output("credentials issued", Duration::from_secs(5)));
    assert!(!d.output().contains("SSOACCESSTOKEN") && !d.output().contains("SECRETSSO"));
}

#[test]
fn web_identity_profiles_assume_their_role() {
    let moto = Moto::start();
    let h = home(
        &moto.url(),
        "",
        &fixture(
            r#"
            [projects.oidc]
            stages = { ci = "oidc" }
            "#,
        ),
    );
    let token_file = h.path().join("web-identity-token");
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaSJ9.c2ln\n").unwrap();
    h.write_aws_config(&fixture(&format!(
        r#"
        [profile oidc]
        role_arn = arn:aws:iam::444444444444:role/Oidc
        web_identity_token_file = {}
        "#,
        token_file.display()
    )));
    let d = h.serve();
    let r = fetch(&d, &h, "oidc", "ci");
    assert_eq!(
        caller_account(&moto.url(), &served_credentials(&r)),
        "444444444444"
    );
}

#[test]
fn audit_log_in_json() {
    let moto = Moto::start();
    let h = home(&moto.url(), ROLES, CONFIG);
    let d = h.serve_with(&["--listen", "127.0.0.1:0", "--log-format", "json"]);
    let mut req = h.command();
    req.args(["token", "--project", "orders", "--stage", "dev"]);
    let tok = String::from_utf8(req.output().unwrap().stdout).unwrap();
    d.get("/v1/credentials/orders/dev", Some(tok.trim()));
    assert!(d.wait_output("credentials issued", Duration::from_secs(5)));
    let out = d.output();
    let audit = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "credentials issued")
        .unwrap_or_else(|| panic!("no JSON audit line in:\n{out}"));
    assert_eq!(audit["fields"]["project"], "orders");
    assert_eq!(audit["fields"]["profile"], "dev");
    assert!(audit["fields"]["key"].as_str().unwrap().starts_with("..."));
}

#[test]
fn role_on_top_of_session_keys_from_the_file() {
    // saml2aws writes session keys; a role profile uses them as its source.
    let moto = Moto::start();
    let h = home(
        &moto.url(),
        &fixture(
            r#"
            [profile dev]
            role_arn = arn:aws:iam::111111111111:role/Dev
            source_profile = saml
            "#,
        ),
        CONFIG,
    );
    h.write_credentials(&fixture(
        r#"
        [saml]
        aws_access_key_id = ASIASAML00000001
        aws_secret_access_key = SECRETSAML
        aws_session_token = TOKENSAML
        x_security_token_expires = 2099-01-01T00:00:00Z
        "#,
    ));
    let d = h.serve();
    let r = fetch(&d, &h, "orders", "dev");
    assert_eq!(
        caller_account(&moto.url(), &served_credentials(&r)),
        "111111111111"
    );
}
