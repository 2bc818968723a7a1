//! Profiles that go through STS, against moto's real STS emulation: roles and chains,
//! long-term keys, MFA with `credport login`, credential_process, outages and single
//! flight.

mod support;

use std::time::Duration;

use support::moto::{CountingProxy, Moto};
use support::*;

const BASE: &str =
    "[base]\naws_access_key_id = AKIABASE00000001\naws_secret_access_key = SECRETBASEKEY\n";
const ROLES: &str = "[profile dev]\nrole_arn = arn:aws:iam::111111111111:role/Dev\nsource_profile = base\n\n[profile prod]\nrole_arn = arn:aws:iam::222222222222:role/Prod\nsource_profile = base\n";
const CONFIG: &str =
    "[projects.orders]\ndefault_stage = \"dev\"\nstages = { dev = \"dev\", prod = \"prod\" }\n";

fn home(sts_url: &str, aws_config: &str, config: &str) -> TestHome {
    let mut h = TestHome::new();
    h.write_credentials(BASE);
    h.write_aws_config(aws_config);
    h.write_config(config);
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
        "[projects.keys]\nstages = { dev = \"base\" }\n",
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

#[test]
fn three_hop_chain_and_cycle() {
    let moto = Moto::start();
    let chain = "[profile a]\nrole_arn = arn:aws:iam::111111111111:role/A\nsource_profile = base\n[profile b]\nrole_arn = arn:aws:iam::222222222222:role/B\nsource_profile = a\n[profile c]\nrole_arn = arn:aws:iam::333333333333:role/C\nsource_profile = b\n[profile x]\nrole_arn = arn:aws:iam::1:role/X\nsource_profile = y\n[profile y]\nrole_arn = arn:aws:iam::1:role/Y\nsource_profile = x\n";
    let h = home(
        &moto.url(),
        chain,
        "[projects.chain]\nstages = { c = \"c\", loop = \"x\" }\n",
    );
    let d = h.serve();
    let r = fetch(&d, &h, "chain", "c");
    assert_eq!(
        caller_account(&moto.url(), &served_credentials(&r)),
        "333333333333"
    );
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
    h.write_aws_config(&format!(
        "[profile good]\ncredential_process = {good}\n[profile badjson]\ncredential_process = {bad_json}\n[profile slow]\ncredential_process = {slow}\n[profile fails]\ncredential_process = {fails}\n"
    ));
    h.write_config("[server]\nprocess_timeout = 2\n[projects.p]\nstages = { good = \"good\", badjson = \"badjson\", slow = \"slow\", fails = \"fails\" }\n");
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
    assert!(!d.output().contains("SECRETLEAK") && !d.output().contains("SECRETSTDOUT"));
}
