//! Session policies with the real binary, against moto's STS behind a proxy that records
//! every call: `Policy` / `PolicyArns` go on the last `AssumeRole` of a chain (never on the
//! first hop), bare long-term keys use `GetFederationToken`, sources that cannot take a
//! policy are refused before any call, a changed policy is a different session, and a
//! broken policy never reaches STS.

mod support;

use support::moto::Moto;
use support::recorder::RecordingProxy;
use support::*;

const BASE: &str = r#"[base]
aws_access_key_id = AKIABASE00000001
aws_secret_access_key = SECRETBASEKEY
"#;
const CHAIN: &str = r#"[profile hop]
role_arn = arn:aws:iam::111111111111:role/Hop
source_profile = base

[profile deploy]
role_arn = arn:aws:iam::222222222222:role/Deploy
source_profile = hop
"#;
/// One role on top of `base`, in account 111111111111.
const DEV_ROLE: &str = r#"[profile dev]
role_arn = arn:aws:iam::111111111111:role/Dev
source_profile = base
"#;
const READ_ONLY: &str = "arn:aws:iam::aws:policy/ReadOnlyAccess";
const POLICY: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]
}"#;
const PACKED: &str = r#"{"Statement":[{"Action":"s3:GetObject","Effect":"Allow","Resource":"*"}],"Version":"2012-10-17"}"#;

/// A HOME whose STS is the recording proxy in front of a fresh moto.
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

/// Fetches until `done` accepts the answer (an edit counts on the next fetch, or once a
/// file watcher noticed it), at most 10 s; panics with the last answer.
fn fetch_until(
    d: &Daemon,
    h: &TestHome,
    project: &str,
    stage: &str,
    proxy: &RecordingProxy,
    what: &str,
    done: impl Fn(&Response) -> bool,
) -> Response {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = fetch(d, h, project, stage);
        if done(&r) {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: still {} {}
STS calls:
{}",
            r.status,
            r.body,
            proxy.summary()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn ok(r: &Response, proxy: &RecordingProxy, what: &str) -> serde_json::Value {
    assert_eq!(
        r.status,
        200,
        "{what}: {}\nSTS calls:\n{}",
        r.body,
        proxy.summary()
    );
    r.json()
}

#[test]
fn policy_goes_on_the_last_assume_role_of_a_chain() {
    let moto = Moto::start();
    let proxy = RecordingProxy::start(moto.url());
    let h = home(
        &proxy.url,
        CHAIN,
        &fixture(&format!(
            r#"
            [projects.orders]
            stages = {{ dev = "deploy", qa = "deploy" }}
            policy = "policies/deploy.json"
            policy_arns = ["{READ_ONLY}"]
            [projects.orders.policies.qa]
            "#
        )),
    );
    // Relative to config.toml.
    write_atomic(
        &h.config().parent().unwrap().join("policies/deploy.json"),
        POLICY,
    );
    let d = h.serve();
    let j = ok(&fetch(&d, &h, "orders", "dev"), &proxy, "dev");
    assert_eq!(j["AccountId"], "222222222222", "{j}");

    let roles = proxy.of("AssumeRole");
    assert_eq!(roles.len(), 2, "{}", proxy.summary());
    let (first, last) = (&roles[0], &roles[1]);
    assert_eq!(
        first.get("RoleArn"),
        Some("arn:aws:iam::111111111111:role/Hop")
    );
    assert_eq!(first.get("Policy"), None, "first hop: {:?}", first.params);
    assert!(
        first.policy_arns().is_empty(),
        "first hop: {:?}",
        first.params
    );
    assert_eq!(
        last.get("RoleArn"),
        Some("arn:aws:iam::222222222222:role/Deploy")
    );
    assert_eq!(
        last.get("Policy"),
        Some(PACKED),
        "last hop: {:?}",
        last.params
    );
    assert_eq!(last.policy_arns(), vec![READ_ONLY.to_string()]);

    // qa's own (empty) table replaces the project-wide policy: an unscoped chain.
    ok(&fetch(&d, &h, "orders", "qa"), &proxy, "qa");
    let roles = proxy.of("AssumeRole");
    assert_eq!(roles.len(), 4, "{}", proxy.summary());
    for r in &roles[2..] {
        assert_eq!(r.get("RoleSessionName"), Some("credport-orders-qa"));
        assert_eq!(r.get("Policy"), None, "{:?}", r.params);
        assert!(r.policy_arns().is_empty(), "{:?}", r.params);
    }

    // A changed policy re-runs only the last call: the first hop's session is cached.
    write_atomic(
        &h.config().parent().unwrap().join("policies/deploy.json"),
        &POLICY.replace("s3:GetObject", "s3:PutObject"),
    );
    fetch_until(
        &d,
        &h,
        "orders",
        "dev",
        &proxy,
        "dev, changed policy",
        |r| r.status == 200 && proxy.of("AssumeRole").len() > 4,
    );
    let roles = proxy.of("AssumeRole");
    assert_eq!(roles.len(), 5, "{}", proxy.summary());
    assert_eq!(
        roles[4].get("RoleArn"),
        Some("arn:aws:iam::222222222222:role/Deploy")
    );
    assert!(
        roles[4]
            .get("Policy")
            .is_some_and(|p| p.contains("s3:PutObject")),
        "{:?}",
        roles[4].params
    );

    // status shows which session is scoped, and by what.
    let out = h.run(&["status", "--json"]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains("scoped by session policy") && status.contains("deploy.json"),
        "{status}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bare_keys_use_get_federation_token_with_the_policy() {
    let moto = Moto::start();
    let proxy = RecordingProxy::start(moto.url());
    let h = home(
        &proxy.url,
        "",
        &fixture(&format!(
            r#"
            [projects.keys]
            stages = {{ dev = "base", qa = "base" }}
            [projects.keys.policies.dev]
            policy = '{PACKED}'
            policy_arns = ["{READ_ONLY}", "arn:aws:iam::123456789012:policy/team/Deploy"]
            "#
        )),
    );
    let d = h.serve();
    let j = ok(&fetch(&d, &h, "keys", "dev"), &proxy, "dev");
    assert_ne!(j["SecretAccessKey"], "SECRETBASEKEY");
    assert!(j["Token"].as_str().is_some_and(|t| !t.is_empty()), "{j}");
    assert_eq!(
        j["AccountId"], "123456789012",
        "from the federated user: {j}"
    );
    let fed = proxy.of("GetFederationToken");
    assert_eq!(fed.len(), 1, "{}", proxy.summary());
    assert_eq!(fed[0].get("Name"), Some("credport-keys-dev"));
    assert_eq!(fed[0].get("Policy"), Some(PACKED));
    assert_eq!(
        fed[0].policy_arns(),
        vec![
            READ_ONLY.to_string(),
            "arn:aws:iam::123456789012:policy/team/Deploy".to_string()
        ]
    );
    assert!(
        proxy.of("GetSessionToken").is_empty(),
        "{}",
        proxy.summary()
    );

    // qa has no policy: the keys are exchanged with GetSessionToken as before.
    ok(&fetch(&d, &h, "keys", "qa"), &proxy, "qa");
    assert_eq!(proxy.of("GetSessionToken").len(), 1, "{}", proxy.summary());
    assert_eq!(proxy.of("GetFederationToken").len(), 1);
}

#[test]
fn sources_that_cannot_take_a_policy_are_refused_naming_profile_and_source() {
    let moto = Moto::start();
    let proxy = RecordingProxy::start(moto.url());
    let mut h = home(
        &proxy.url,
        &fixture(
            r#"
            [profile sso]
            sso_start_url = https://example.awsapps.com/start
            sso_region = us-east-1
            sso_account_id = 111111111111
            sso_role_name = Dev

            [profile helper]
            credential_process = /bin/false
            "#,
        ),
        &fixture(&format!(
            r#"
            [projects.web]
            stages = {{ sso = "sso", proc = "helper", file = "sess" }}
            policy_arns = ["{READ_ONLY}"]
            "#
        )),
    );
    h.write_credentials(&format!("{BASE}{}", session_profile("sess", "FILE0001")));
    h.extra_env.insert(
        "AWS_ENDPOINT_URL_SSO".into(),
        format!("{}/sso-must-not-be-called", proxy.url),
    );
    let d = h.serve();
    for (stage, profile, source) in [
        ("sso", "sso", "SSO role credentials"),
        ("proc", "helper", "credential_process"),
        ("file", "sess", "session keys in the shared files"),
    ] {
        let r = fetch(&d, &h, "web", stage);
        assert_eq!(r.status, 500, "{stage}: {}", r.body);
        let j = r.json();
        assert_eq!(j["Code"], "CredentialsUnavailable", "{stage}: {j}");
        let msg = j["Message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(&format!("profile '{profile}' cannot be scoped down"))
                && msg.contains(source),
            "{stage}: {msg}"
        );
        assert!(!msg.contains("SECRETFILE0001"), "{msg}");
    }
    assert!(
        proxy.calls().is_empty(),
        "nothing may be fetched unscoped:\n{}",
        proxy.summary()
    );
}

#[test]
fn a_changed_policy_is_a_different_session() {
    let moto = Moto::start();
    let proxy = RecordingProxy::start(moto.url());
    let h = home(&proxy.url, DEV_ROLE, "");
    // A project file registered with the daemon (and trusted, as a user would): its policy
    // file is watched, so an edit counts on the next fetch after the daemon sees it.
    let project = h.path().join("orders");
    std::fs::create_dir_all(project.join("policies")).unwrap();
    std::fs::write(
        project.join(".credport.toml"),
        fixture(
            r#"
            project = "orders"
            policy = "policies/dev.json"
            [stages]
            dev = "dev"
            "#,
        ),
    )
    .unwrap();
    let policy_file = project.join("policies/dev.json");
    write_atomic(&policy_file, POLICY);
    for args in [&["project", "add"][..], &["allow", "--dir"][..]] {
        let out = h.run(&[args, &[project.to_str().unwrap()]].concat());
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let d = h.serve();

    let first = ok(&fetch(&d, &h, "orders", "dev"), &proxy, "first");
    let again = ok(&fetch(&d, &h, "orders", "dev"), &proxy, "again");
    assert_eq!(first["AccessKeyId"], again["AccessKeyId"], "cached");
    assert_eq!(proxy.of("AssumeRole").len(), 1, "{}", proxy.summary());

    let narrower = POLICY.replace("s3:GetObject", "s3:ListBucket");
    write_atomic(&policy_file, &narrower);
    let changed = fetch_until(&d, &h, "orders", "dev", &proxy, "changed", |r| {
        r.status == 200 && r.json()["AccessKeyId"] != first["AccessKeyId"]
    })
    .json();
    let roles = proxy.of("AssumeRole");
    assert_eq!(
        roles.len(),
        2,
        "a new policy is a new call:\n{}",
        proxy.summary()
    );
    assert_ne!(first["AccessKeyId"], changed["AccessKeyId"]);
    assert!(
        roles[1]
            .get("Policy")
            .is_some_and(|p| p.contains("s3:ListBucket")),
        "{:?}",
        roles[1].params
    );

    // Whitespace is not part of the policy: the reformatted first policy is its session.
    write_atomic(&policy_file, &POLICY.replace('\n', "\n\n  "));
    fetch_until(&d, &h, "orders", "dev", &proxy, "back", |r| {
        r.status == 200 && r.json()["AccessKeyId"] == first["AccessKeyId"]
    });
    assert_eq!(proxy.of("AssumeRole").len(), 2, "{}", proxy.summary());
}

#[test]
fn broken_policies_are_refused_before_sts_naming_the_file() {
    let moto = Moto::start();
    let proxy = RecordingProxy::start(moto.url());
    let h = home(&proxy.url, DEV_ROLE, "");
    let project = h.path().join("api");
    std::fs::create_dir_all(&project).unwrap();
    let toml = project.join(".credport.toml");
    let out = {
        std::fs::write(
            &toml,
            fixture(
                r#"
                project = "api"
                [stages]
                dev = "dev"
                "#,
            ),
        )
        .unwrap();
        h.run(&["project", "add", project.to_str().unwrap()])
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Trusted as a user would: the policy edits below keep the mapping.
    let out = h.run(&["allow", "--dir", project.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = h.serve();
    let big = format!(
        "{{\"Statement\": [{}]}}",
        vec![r#"{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::a-bucket-with-a-long-name/*"}"#; 30].join(",")
    );
    let eleven = vec![format!("\"{READ_ONLY}\""); 11].join(", ");
    struct Case {
        name: &'static str,
        /// The policy line of .credport.toml.
        setting: String,
        /// What the refusal says.
        says: &'static str,
    }
    let cases = [
        Case {
            name: "missing policy file",
            setting: r#"policy = "missing.json""#.to_string(),
            says: "no such file",
        },
        Case {
            name: "policy not JSON",
            setting: r#"policy = '{"Statement": '"#.to_string(),
            says: "not valid JSON",
        },
        Case {
            name: "policy over 2048 characters",
            setting: format!("policy = '{big}'"),
            says: "STS accepts at most 2048",
        },
        Case {
            name: "eleven policy ARNs",
            setting: format!("policy_arns = [{eleven}]"),
            says: "11 ARNs",
        },
        Case {
            name: "a policy name, not an ARN",
            setting: r#"policy_arns = ["ReadOnlyAccess"]"#.to_string(),
            says: "is not an IAM policy ARN",
        },
    ];
    for case in &cases {
        let (text, says) = (&case.setting, case.says);
        write_atomic(
            &toml,
            &fixture(&format!(
                r#"
                project = "api"
                {text}
                [stages]
                dev = "dev"
                "#
            )),
        );
        let what = format!("case {}", case.name);
        let r = fetch_until(&d, &h, "api", "dev", &proxy, &what, |r| {
            r.status == 404 && r.body.contains(says)
        });
        let msg = r.json()["Message"].as_str().unwrap_or_default().to_string();
        assert!(
            msg.contains(says) && (msg.contains(".credport.toml") || msg.contains("missing.json")),
            "{what}: {msg}"
        );
        // The CLI says the same before anything runs.
        let out = h.run(&["resolve", "--dir", project.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{what}: {err}");
    }
    assert!(proxy.calls().is_empty(), "{}", proxy.summary());

    // Fixed: served, and `resolve` shows where the policy comes from.
    write_atomic(
        &toml,
        &fixture(&format!(
            r#"
            project = "api"
            policy_arns = ["{READ_ONLY}"]
            [stages]
            dev = "dev"
            "#
        )),
    );
    fetch_until(&d, &h, "api", "dev", &proxy, "fixed", |r| r.status == 200);
    let out = h.run(&["resolve", "--dir", project.to_str().unwrap()]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(j["policy"]["arns"][0], READ_ONLY, "{j}");
}

#[test]
fn exec_scopes_the_child_session_with_and_without_a_daemon() {
    let moto = Moto::start();
    let proxy = RecordingProxy::start(moto.url());
    let h = home(
        &proxy.url,
        DEV_ROLE,
        &fixture(&format!(
            r#"
            [projects.orders]
            stages = {{ dev = "dev" }}
            policy = '{PACKED}'
            "#
        )),
    );
    let whoami = repo_root().join("tests/clients/python/whoami.py");
    let py = venv_python();
    for daemon in [false, true] {
        let _d = daemon.then(|| h.serve());
        let before = proxy.of("AssumeRole").len();
        let out = h
            .command()
            .args(["exec", "--project", "orders", "--stage", "dev", "--"])
            .arg(&py)
            .arg(&whoami)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let j: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_default();
        assert_eq!(
            j["account"],
            "111111111111",
            "daemon={daemon}: {stdout}\n{}\nSTS calls:\n{}",
            String::from_utf8_lossy(&out.stderr),
            proxy.summary()
        );
        let roles = proxy.of("AssumeRole");
        assert_eq!(
            roles.len(),
            before + 1,
            "daemon={daemon}: {}",
            proxy.summary()
        );
        assert_eq!(
            roles[before].get("Policy"),
            Some(PACKED),
            "daemon={daemon}: the child's session is scoped: {:?}",
            roles[before].params
        );
    }
}

#[test]
fn web_identity_takes_the_policy_on_its_one_call() {
    let moto = Moto::start();
    let proxy = RecordingProxy::start(moto.url());
    let h = home(
        &proxy.url,
        "",
        &fixture(&format!(
            r#"
            [projects.oidc]
            stages = {{ ci = "oidc" }}
            policy_arns = ["{READ_ONLY}"]
            "#
        )),
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
    let j = ok(&fetch(&d, &h, "oidc", "ci"), &proxy, "ci");
    assert_eq!(j["AccountId"], "444444444444", "{j}");
    let calls = proxy.of("AssumeRoleWithWebIdentity");
    assert_eq!(calls.len(), 1, "{}", proxy.summary());
    assert_eq!(calls[0].policy_arns(), vec![READ_ONLY.to_string()]);
    assert_eq!(calls[0].get("Policy"), None);
}

/// serverless's stand-in profiles hold the same scoped sessions the endpoint serves: the
/// ones `env`'s file gets from the daemon's keeper, and those `exec` fetches from its
/// embedded server for every stage a `make` target may run.
#[test]
fn standin_profiles_hold_scoped_sessions() {
    let mut w = support::sls::World::new();
    let proxy = RecordingProxy::start(w.moto.url());
    w.home
        .extra_env
        .insert("AWS_ENDPOINT_URL_STS".into(), proxy.url.clone());
    // Stand-ins for prod are the point here, not the guard (see GUARD_OFF).
    w.home.write_config(&format!(
        "{}{}",
        support::GUARD_OFF,
        fixture(&format!(
            r#"
            [projects.orders]
            stages = {{ dev = "devAccount", prod = "prodAccount" }}
            [projects.orders.policies.dev]
            policy_arns = ["{READ_ONLY}"]
            "#
        ))
    ));
    let by_role = |role: &str| -> Vec<support::recorder::StsCall> {
        proxy
            .of("AssumeRole")
            .into_iter()
            .filter(|c| c.get("RoleArn") == Some(role))
            .collect()
    };
    let (dev_role, prod_role) = (
        "arn:aws:iam::111111111111:role/Dev",
        "arn:aws:iam::222222222222:role/Prod",
    );

    // exec without a daemon: the embedded server serves both stages, dev scoped.
    std::fs::write(
        w.project.join("Makefile"),
        fixture(
            "
            show:
            \t@cat \"$$AWS_SHARED_CREDENTIALS_FILE\"
            ",
        ),
    )
    .unwrap();
    let out = w.credport(&["exec", "--stage", "dev", "--", "make", "-s", "show"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("[devAccount]") && text.contains("[prodAccount]"),
        "{text}\n{}\nSTS calls:\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.summary()
    );
    let (dev, prod) = (by_role(dev_role), by_role(prod_role));
    assert_eq!((dev.len(), prod.len()), (1, 1), "{}", proxy.summary());
    assert_eq!(dev[0].policy_arns(), vec![READ_ONLY.to_string()]);
    assert!(prod[0].policy_arns().is_empty(), "{:?}", prod[0].params);

    // env with the daemon: its keeper writes the file with the same scoping.
    let _d = w.home.serve();
    let out = w.credport(&["env", "--stage", "dev", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let file = std::path::PathBuf::from(v["set"]["AWS_SHARED_CREDENTIALS_FILE"].as_str().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(&file)
        .unwrap_or_default()
        .contains("[prodAccount]")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (dev, prod) = (by_role(dev_role), by_role(prod_role));
    assert_eq!((dev.len(), prod.len()), (2, 2), "{}", proxy.summary());
    assert_eq!(dev[1].policy_arns(), vec![READ_ONLY.to_string()]);
    assert!(prod[1].policy_arns().is_empty(), "{:?}", prod[1].params);
}
