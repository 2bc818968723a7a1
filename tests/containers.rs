//! Dev containers, with a real network namespace standing in for the container: credport
//! listens on 169.254.170.2 on the host side of a veth pair, and boto3 inside the namespace
//! uses `AWS_CONTAINER_CREDENTIALS_FULL_URI=http://169.254.170.2/...` with its scope's token.
//!
//! Needs root and iproute2 (CI runs as root; `scripts/test-deps` installs iproute2). The
//! namespace and links are removed on drop, also when an assertion fails.

mod support;

use std::process::Command;

use support::moto::Moto;
use support::*;

/// A network namespace joined to the host by a veth pair: host side 169.254.170.2/24,
/// namespace side 169.254.170.10/24.
struct Netns {
    name: String,
    host_if: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?} failed (these tests need root and iproute2): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn new() -> Netns {
        let id = std::process::id() % 100_000;
        let n = Netns {
            name: format!("credport-{id}"),
            host_if: format!("cph{id}"),
        };
        let peer = format!("cpn{id}");
        ip(&["netns", "add", &n.name]);
        ip(&[
            "link", "add", &n.host_if, "type", "veth", "peer", "name", &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &n.name]);
        ip(&["addr", "add", "169.254.170.2/24", "dev", &n.host_if]);
        ip(&["link", "set", &n.host_if, "up"]);
        ip(&[
            "-n",
            &n.name,
            "addr",
            "add",
            "169.254.170.10/24",
            "dev",
            &peer,
        ]);
        ip(&["-n", &n.name, "link", "set", &peer, "up"]);
        ip(&["-n", &n.name, "link", "set", "lo", "up"]);
        n
    }

    /// A command run inside the namespace.
    fn command(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Python, inside the namespace, fetching `url` with `token`; prints `STATUS BODY`.
const FETCH: &str = r#"import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1], headers={'Authorization': sys.argv[2]})
try:
    r = urllib.request.urlopen(req, timeout=5); print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except Exception as e:
    print(0, type(e).__name__, e)
"#;

#[test]
fn container_namespace_gets_exactly_its_scope() {
    // tests/docker.rs puts a bridge on 169.254.170.0/24: never at the same time.
    let _lock = support::docker::credentials_network_lock();
    let moto = Moto::start();
    let mut h = TestHome::new();
    h.write_credentials(&fixture(
        r#"
        [base]
        aws_access_key_id = AKIABASE00000001
        aws_secret_access_key = SECRETBASEKEY
        "#,
    ));
    h.write_aws_config(&fixture(
        r#"
        [profile devAccount]
        role_arn = arn:aws:iam::111111111111:role/Dev
        source_profile = base
        [profile prodAccount]
        role_arn = arn:aws:iam::222222222222:role/Prod
        source_profile = base
        "#,
    ));
    h.write_config(&format!(
        "{GUARD_OFF}{}",
        fixture(
            r#"
            [projects.orders]
            default_stage = "dev"
            stages = { dev = "devAccount", prod = "prodAccount" }
            "#
        )
    ));
    h.extra_env
        .insert("AWS_ENDPOINT_URL_STS".into(), moto.url());
    h.extra_env.insert("AWS_REGION".into(), "us-east-1".into());
    let ns = Netns::new();
    let d = h.serve_with(&[
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "169.254.170.2:80",
        "--allow-non-loopback",
    ]);
    let dev = h.token("orders", "dev");

    // boto3 in the "container": the endpoint and the token are all it has.
    let out = ns
        .command(&venv_python())
        .arg(repo_root().join("tests/clients/python/whoami.py"))
        .args(["--mode", "creds-only"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://169.254.170.2/v1/credentials/orders/dev",
        )
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", &dev)
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| {
            panic!(
                "no JSON from boto3 in the namespace ({e}): {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    // The same cached session, fetched on the host side, belongs to the dev account.
    let host_side = d.get("/v1/credentials/orders/dev", Some(&dev));
    let creds = served_credentials(&host_side);
    assert_eq!(
        v["access_key_id_suffix"],
        creds.access_key_id[creds.access_key_id.len() - 4..],
        "{v}"
    );
    assert_eq!(caller_account(&moto.url(), &creds), "111111111111");

    // The other scope with this token, and tricks on the path, are refused from inside.
    let python = venv_python();
    let fetch = |url: &str, token: &str| {
        let out = ns
            .command(&python)
            .args(["-c", FETCH, url, token])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for url in [
        "http://169.254.170.2/v1/credentials/orders/prod",
        "http://169.254.170.2/v1/credentials/orders/dev/../prod",
        "http://169.254.170.2/v1/credentials/orders%2Fprod",
        "http://169.254.170.2/v1/credentials/orders/PROD",
        "http://169.254.170.2/v1/credentials/orders/prod?stage=dev",
    ] {
        let r = fetch(url, &dev);
        assert!(r.starts_with("403 ") || r.starts_with("404 "), "{url}: {r}");
        assert!(!r.contains("AccessKeyId"), "{url}: {r}");
    }
    assert!(fetch("http://169.254.170.2/v1/credentials/orders/dev", &dev).starts_with("200 "));

    // The host's loopback-only services are not reachable from the namespace: neither the
    // daemon's loopback listener nor moto.
    for port in [d.addr.port(), moto.port] {
        for host in ["127.0.0.1", "169.254.170.2"] {
            let r = fetch(&format!("http://{host}:{port}/healthz"), &dev);
            assert!(
                r.starts_with("0 "),
                "{host}:{port} reachable from the namespace: {r}"
            );
        }
    }
}

/// What `credport env --format FORMAT` prints for orders/dev (region eu-west-1), with the
/// scope's token and the home's path, which renderings for committed files must not name.
struct Rendering {
    text: String,
    token: String,
    home: String,
}

fn rendering(format: &str) -> Rendering {
    let h = TestHome::new();
    h.write_credentials(&session_profile("devAccount", "AAAA1111"));
    h.write_config(&fixture(
        r#"
        [projects.orders]
        default_stage = "dev"
        stages = { dev = "devAccount" }
        region = "eu-west-1"
        "#,
    ));
    let token = h.token("orders", "dev");
    let out = h.run(&["env", "--project", "orders", "--format", format]);
    assert!(
        out.status.success(),
        "env --format {format}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Rendering {
        text: String::from_utf8(out.stdout).unwrap(),
        token,
        home: h.path().display().to_string(),
    }
}

/// docker-env: the relay's URL and the token's value, no host path.
#[test]
fn docker_env_names_the_relay_and_the_token_and_no_host_path() {
    let Rendering {
        text: env,
        token,
        home,
    } = rendering("docker-env");
    assert!(
        env.contains(
            "\nAWS_CONTAINER_CREDENTIALS_FULL_URI=http://169.254.170.2/v1/credentials/orders/dev\n"
        ),
        "{env}"
    );
    assert!(
        env.contains(&format!("\nAWS_CONTAINER_AUTHORIZATION_TOKEN={token}\n")),
        "{env}"
    );
    assert!(env.contains("\nAWS_REGION=eu-west-1\n"), "{env}");
    assert!(!env.contains(&home) && !env.contains("_FILE="), "{env}");
}

/// compose: an override naming credport.env and the external network; no secret.
#[test]
fn compose_override_names_the_env_file_and_the_network_and_no_secret() {
    let Rendering {
        text: compose,
        token,
        home,
    } = rendering("compose");
    assert!(
        !compose.contains(&token) && !compose.contains(&home),
        "{compose}"
    );
    let y: serde_json::Value = {
        let py = "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))";
        let mut c = Command::new(venv_python())
            .args(["-c", py])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin
            .take()
            .unwrap()
            .write_all(compose.as_bytes())
            .unwrap();
        serde_json::from_slice(&c.wait_with_output().unwrap().stdout)
            .expect("compose override is YAML")
    };
    assert_eq!(y["services"]["app"]["env_file"][0], "credport.env");
    assert!(
        y["services"]["app"]["networks"]["default"].is_object(),
        "{y}"
    );
    assert!(
        y["services"]["app"]["networks"]["credport"].is_object(),
        "{y}"
    );
    assert_eq!(y["networks"]["credport"]["external"], true);
}

/// devcontainer: the network and the env file; nothing for the metadata label.
#[test]
fn devcontainer_fragment_names_the_network_and_the_env_file() {
    let dc: serde_json::Value = serde_json::from_str(&rendering("devcontainer").text)
        .expect("devcontainer fragment is JSON");
    assert_eq!(
        dc["runArgs"],
        serde_json::json!([
            "--network=credport",
            "--env-file",
            "${localWorkspaceFolder}/.devcontainer/credport.env"
        ])
    );
    assert!(dc.get("containerEnv").is_none(), "{dc}");
}

/// The editor's dotenv (host side) keeps naming the host token file.
#[test]
fn the_editor_dotenv_keeps_naming_the_host_token_file() {
    let dotenv = rendering("dotenv").text;
    assert!(
        dotenv.contains("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="),
        "{dotenv}"
    );
}
