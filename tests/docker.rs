//! Dev containers on a real Docker engine: every way in that README's "Dev containers"
//! section describes, run as written, with boto3 inside the containers.
//!
//! The engine is started by the harness when it does not run (tests/support/docker.rs) and
//! uses only link-local addresses. Images are built offline on a debootstrapped Debian
//! bookworm base (`scripts/test-deps` prepares it). Each case prints the key boto3 was
//! served and the account STS (moto, on the host) reports for it. Tests that use the
//! `credport` network at 169.254.170.0/24 hold one lock (shared with tests/containers.rs),
//! and remove the network when done.
//!
//! Needs root (dockerd), as CI runs; the tests never skip.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::docker::{BRIDGE_GATEWAY, CREDPORT_SUBNET, Engine, FileLock, RELAY_IP};
use support::moto::{Moto, free_port};
use support::*;

/// Python in a container: `fetch URL TOKEN` prints `STATUS CODE`, `connect HOST PORT`
/// prints `open` or `closed ERROR`, `resolve NAME` prints the address.
const PROBE: &str = r#"
import sys, json, socket, urllib.request, urllib.error
cmd = sys.argv[1]
if cmd == "fetch":
    req = urllib.request.Request(sys.argv[2], headers={"Authorization": sys.argv[3]})
    try:
        r = urllib.request.urlopen(req, timeout=5)
        body = json.loads(r.read())
        print(r.status, "AccessKeyId" in body)
    except urllib.error.HTTPError as e:
        print(e.code, json.loads(e.read()).get("Code"))
    except Exception as e:
        print(0, type(e).__name__)
elif cmd == "connect":
    try:
        socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=3).close()
        print("open")
    except Exception as e:
        print("closed", type(e).__name__)
elif cmd == "resolve":
    print(socket.gethostbyname(sys.argv[2]))
"#;

/// The world of one test: moto, a HOME with two projects, the engine, and cleanup.
struct World {
    moto: Moto,
    home: TestHome,
    engine: Engine,
    /// Containers and compose projects removed on drop.
    containers: Vec<String>,
    compose: Vec<(PathBuf, Vec<String>)>,
    network: bool,
    _lock: Option<FileLock>,
    scratch: tempfile::TempDir,
}

impl World {
    /// `orders` (dev: 111111111111, prod: 222222222222) and `billing` (dev:
    /// 333333333333), all roles behind long-term keys exchanged at moto. With
    /// `network`, the `credport` network is created (under its lock).
    fn new(network: bool) -> World {
        Self::with(network, network)
    }

    /// With `lock`, holds the network lock; with `network`, also creates the network.
    fn with(lock: bool, network: bool) -> World {
        let lock = lock.then(support::docker::credentials_network_lock);
        let moto = Moto::start();
        let mut home = TestHome::new();
        home.write_credentials(&fixture(
            r#"
            [base]
            aws_access_key_id = AKIABASE00000001
            aws_secret_access_key = SECRETBASEKEY
            "#,
        ));
        home.write_aws_config(&fixture(
            r#"
            [profile devAccount]
            role_arn = arn:aws:iam::111111111111:role/Dev
            source_profile = base
            [profile prodAccount]
            role_arn = arn:aws:iam::222222222222:role/Prod
            source_profile = base
            [profile billingDev]
            role_arn = arn:aws:iam::333333333333:role/Dev
            source_profile = base
            "#,
        ));
        home.write_config(&format!(
            "{GUARD_OFF}{}",
            fixture(
                r#"
                [projects.orders]
                default_stage = "dev"
                stages = { dev = "devAccount", prod = "prodAccount" }
                region = "us-east-1"
                [projects.billing]
                default_stage = "dev"
                stages = { dev = "billingDev" }
                region = "us-east-1"
                "#
            )
        ));
        home.extra_env
            .insert("AWS_ENDPOINT_URL_STS".into(), moto.url());
        home.extra_env
            .insert("AWS_REGION".into(), "us-east-1".into());
        let engine = Engine::lease();
        let mut w = World {
            moto,
            home,
            engine,
            containers: vec![],
            compose: vec![],
            network: false,
            _lock: lock,
            scratch: tempfile::tempdir().unwrap(),
        };
        if network {
            w.create_network();
        }
        w
    }

    /// README: `docker network create --subnet 169.254.170.0/24 credport`.
    fn create_network(&mut self) {
        let _ = self.engine.output(&["network", "rm", "credport"]);
        self.engine
            .run(&["network", "create", "--subnet", CREDPORT_SUBNET, "credport"]);
        self.network = true;
    }

    /// A unique container name, removed on drop.
    fn name(&mut self, what: &str) -> String {
        let n = format!("credport-test-{}-{what}", std::process::id());
        let _ = self.engine.output(&["rm", "-f", &n]);
        self.containers.push(n.clone());
        n
    }

    /// The host daemon: loopback plus the engine's bridge gateway (what `host-gateway`
    /// means on Linux), on one port.
    fn serve(&self, port: u16) -> Daemon {
        self.home.serve_with(&[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--listen",
            &format!("{BRIDGE_GATEWAY}:{port}"),
            "--allow-non-loopback",
        ])
    }

    /// README: the relay container at 169.254.170.2 forwarding to the daemon's `port`.
    fn start_relay(&mut self, port: u16) -> String {
        let image = self.engine.credport_image();
        let name = self.name("relay");
        self.engine.run(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "credport",
            "--ip",
            RELAY_IP,
            "--add-host",
            "host.docker.internal:host-gateway",
            "--read-only",
            &image,
            "relay",
            "--upstream",
            &format!("http://host.docker.internal:{port}"),
        ]);
        // Ready once it logs its address.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let logs = self.engine.output(&["logs", &name]);
            if String::from_utf8_lossy(&logs.stderr).contains("listening on http://") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "relay did not start: {}",
                String::from_utf8_lossy(&logs.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        name
    }

    /// `credport env ARGS` on the host, asserting success; returns stdout.
    fn env(&self, args: &[&str]) -> String {
        let out = self.home.run(&[&["env"], args].concat());
        assert!(
            out.status.success(),
            "credport env {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Writes a file in the scratch directory.
    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.scratch.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `docker run --rm ARGS python-image python3 ...` with the client scripts at /clients.
    fn python(&self, docker_args: &[&str], cmd: &[&str]) -> Output {
        let image = self.engine.python_image();
        let clients = repo_root().join("tests/clients/python");
        let probe = self.write("probe.py", PROBE);
        let mount_clients = format!("{}:/clients:ro", clients.display());
        let mount_probe = format!("{}:/probe.py:ro", probe.display());
        let mut args = vec!["run", "--rm", "-v", &mount_clients, "-v", &mount_probe];
        args.extend_from_slice(docker_args);
        args.push(&image);
        args.extend_from_slice(cmd);
        self.engine.output(&args)
    }

    /// boto3's default chain in a container (whoami.py --mode creds-only): the served key.
    fn whoami(&self, docker_args: &[&str]) -> serde_json::Value {
        let out = self.python(
            docker_args,
            &["python3", "/clients/whoami.py", "--mode", "creds-only"],
        );
        parse_last_json(&out, &format!("boto3 in a container {docker_args:?}"))
    }

    /// Asserts that the key suffix boto3 saw is the session `daemon` serves for the scope,
    /// and that STS says it belongs to `account`; prints both.
    fn assert_account(
        &self,
        d: &Daemon,
        project: &str,
        stage: &str,
        seen: &serde_json::Value,
        account: &str,
    ) {
        let token = self.home.token(project, stage);
        let creds =
            served_credentials(&d.get(&format!("/v1/credentials/{project}/{stage}"), Some(&token)));
        let suffix = &creds.access_key_id[creds.access_key_id.len() - 4..];
        assert_eq!(seen["access_key_id_suffix"], suffix, "{seen}");
        let sts_says = caller_account(&self.moto.url(), &creds);
        println!(
            "{project}/{stage}: boto3 in the container was served ...{suffix}; STS says account {sts_says}"
        );
        assert_eq!(sts_says, account);
    }

    /// Runs the probe in a container with `docker_args`.
    fn probe(&self, docker_args: &[&str], args: &[&str]) -> String {
        let out = self.python(docker_args, &[&["python3", "/probe.py"], args].concat());
        assert!(
            out.status.success(),
            "probe {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The checks every network must pass: the dev token never yields prod, another
    /// project's token never yields this one, and the host's loopback-only services
    /// (moto here) are unreachable.
    fn assert_isolation(&self, docker_args: &[&str], base: &str) {
        let dev = self.home.token("orders", "dev");
        let billing = self.home.token("billing", "dev");
        let prod_with_dev = self.probe(
            docker_args,
            &["fetch", &format!("{base}/v1/credentials/orders/prod"), &dev],
        );
        assert_eq!(prod_with_dev, "403 AccessDenied", "dev token on prod");
        let orders_with_billing = self.probe(
            docker_args,
            &[
                "fetch",
                &format!("{base}/v1/credentials/orders/dev"),
                &billing,
            ],
        );
        assert_eq!(
            orders_with_billing, "403 AccessDenied",
            "second project's token on the first's scope"
        );
        let own = self.probe(
            docker_args,
            &[
                "fetch",
                &format!("{base}/v1/credentials/billing/dev"),
                &billing,
            ],
        );
        assert_eq!(own, "200 True", "second project's own scope");
        let port = self.moto.port.to_string();
        for host in ["127.0.0.1", BRIDGE_GATEWAY, "host.docker.internal"] {
            let r = self.probe(docker_args, &["connect", host, &port]);
            assert!(
                r.starts_with("closed"),
                "the host's loopback service (moto, 127.0.0.1:{port}) is reachable at {host}: {r}"
            );
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for (dir, files) in &self.compose {
            let mut args: Vec<String> = vec!["-p".into(), compose_project()];
            for f in files {
                args.push("-f".into());
                args.push(f.clone());
            }
            let _ = Command::new("docker-compose")
                .current_dir(dir)
                .env("DOCKER_HOST", &self.engine.host)
                .args(&args)
                .args(["down", "-v", "--remove-orphans", "-t", "1"])
                .output();
        }
        for n in &self.containers {
            if std::thread::panicking() {
                let logs = self.engine.output(&["logs", n]);
                eprintln!(
                    "--- container {n}:\n{}{}",
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
            let _ = self.engine.output(&["rm", "-f", "-v", n]);
        }
        if self.network {
            let _ = self.engine.output(&["network", "rm", "credport"]);
        }
    }
}

/// The compose project name of this test process.
fn compose_project() -> String {
    format!("credporttest{}", std::process::id())
}

fn parse_last_json(out: &Output, what: &str) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| {
            panic!(
                "{what}: no JSON ({e}), status {}\nstdout: {stdout}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(v.get("error").is_none(), "{what}: {v}");
    v
}

fn assert_no_host_path(text: &str, home: &Path, what: &str) {
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !line.contains(&home.display().to_string()) && !line.contains("_FILE="),
            "{what} names a host path: {line}\n{text}"
        );
    }
}

/// Linux engine, `docker run --network=host --env-file`: the env file from
/// `credport env --format docker-env --url <loopback>` holds no host path and works.
#[test]
fn host_network_with_the_env_file() {
    let w = World::new(false);
    let port = free_port();
    let d = w.serve(port);
    let env = w.env(&[
        "--project",
        "orders",
        "--stage",
        "dev",
        "--format",
        "docker-env",
        "--url",
        &format!("http://127.0.0.1:{port}"),
    ]);
    assert_no_host_path(&env, w.home.path(), "docker-env");
    let env_file = w.write("orders.env", &env);
    let ef = env_file.to_str().unwrap();
    let seen = w.whoami(&["--network=host", "--env-file", ef]);
    w.assert_account(&d, "orders", "dev", &seen, "111111111111");

    // The host's dotenv (for editors) still names the host token file and keeps working
    // there; the container variant is a different format.
    let dotenv = w.env(&[
        "--project",
        "orders",
        "--stage",
        "dev",
        "--format",
        "dotenv",
    ]);
    assert!(
        dotenv.contains("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="),
        "{dotenv}"
    );

    // Isolation on host networking: scopes and tokens; loopback is the host's own here
    // (the container *is* on the host's network), which README says.
    let dev = w.home.token("orders", "dev");
    let base = format!("http://127.0.0.1:{port}");
    let r = w.probe(
        &["--network=host"],
        &["fetch", &format!("{base}/v1/credentials/orders/prod"), &dev],
    );
    assert_eq!(r, "403 AccessDenied", "dev token on prod");
    let billing = w.home.token("billing", "dev");
    let r = w.probe(
        &["--network=host"],
        &[
            "fetch",
            &format!("{base}/v1/credentials/orders/dev"),
            &billing,
        ],
    );
    assert_eq!(
        r, "403 AccessDenied",
        "second project's token on the first's scope"
    );
}

/// The relay: the way in on every engine. The daemon stays on the host; the relay runs in
/// a container at 169.254.170.2 and forwards to it through host.docker.internal.
#[test]
fn relay_serves_exactly_the_tokens_scope() {
    let mut w = World::new(true);
    let port = free_port();
    let d = w.serve(port);
    w.start_relay(port);
    let env = w.env(&[
        "--project",
        "orders",
        "--stage",
        "dev",
        "--format",
        "docker-env",
    ]);
    assert_no_host_path(&env, w.home.path(), "docker-env");
    assert!(
        env.contains(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://169.254.170.2/v1/credentials/orders/dev\n"
        ),
        "{env}"
    );
    let env_file = w.write("orders.env", &env);
    let ef = env_file.to_str().unwrap();
    let seen = w.whoami(&["--network", "credport", "--env-file", ef]);
    w.assert_account(&d, "orders", "dev", &seen, "111111111111");

    w.assert_isolation(
        &[
            "--network",
            "credport",
            "--add-host",
            "host.docker.internal:host-gateway",
        ],
        "http://169.254.170.2",
    );
    // The relay forwards only the endpoint: no /metrics, and the daemon's log names it.
    let r = w.probe(
        &["--network", "credport"],
        &["fetch", "http://169.254.170.2/metrics", "x"],
    );
    assert_eq!(r, "404 NotFound");
}

/// README's compose walkthrough: app and db in one project, the override from
/// `credport env --format compose`, the env file from `--format docker-env`. `db` still
/// resolves. The daemon is started before the network and the app; then it stops, and the
/// app's fetches fail; started again (after the network and the app), the app's next fetch
/// works without a restart.
#[test]
fn compose_walkthrough_daemon_before_and_after() {
    let mut w = World::with(true, false);
    let port = free_port();
    let before = w.serve(port);
    w.create_network();
    w.start_relay(port);
    let image = w.engine.python_image();
    let project = w.scratch.path().join("orders");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::copy(
        repo_root().join("tests/clients/python/whoami.py"),
        project.join("whoami.py"),
    )
    .unwrap();
    std::fs::write(project.join("probe.py"), PROBE).unwrap();
    // The app: resolve and reach db, then fetch credentials with boto3 until it works.
    std::fs::write(
        project.join("app.py"),
        r#"
import json, socket, subprocess, sys, time
print("db", socket.gethostbyname("db"), flush=True)
for i in range(100):
    try:
        socket.create_connection(("db", 8000), timeout=5).close()
        print("db reachable", flush=True)
        break
    except OSError:
        time.sleep(0.2)
i = 0
while True:
    out = subprocess.run([sys.executable, "/app/whoami.py", "--mode", "creds-only"], capture_output=True, text=True).stdout.strip().splitlines()
    print("attempt", i, out[-1] if out else "{}", flush=True)
    i += 1
    time.sleep(0.5)
"#,
    )
    .unwrap();
    std::fs::write(
        project.join("docker-compose.yml"),
        fixture(&format!(
            r#"
            services:
              app:
                image: {image}
                command: ["python3", "/app/app.py"]
                volumes:
                  - .:/app:ro
              db:
                image: {image}
                command: ["python3", "-m", "http.server", "8000"]
            "#
        )),
    )
    .unwrap();
    // As README: the override (no secret) and the env file (the token; git-ignored).
    let override_text = w.env(&[
        "--project",
        "orders",
        "--stage",
        "dev",
        "--format",
        "compose",
    ]);
    assert!(!override_text.contains(&w.home.token("orders", "dev")));
    assert_no_host_path(&override_text, w.home.path(), "compose override");
    std::fs::write(project.join("docker-compose.credport.yml"), &override_text).unwrap();
    let env = w.env(&[
        "--project",
        "orders",
        "--stage",
        "dev",
        "--format",
        "docker-env",
    ]);
    std::fs::write(project.join("credport.env"), env).unwrap();

    let files = vec![
        "docker-compose.yml".to_string(),
        "docker-compose.credport.yml".to_string(),
    ];
    w.compose.push((project.clone(), files.clone()));
    let compose = |args: &[&str]| {
        let mut c = Command::new("docker-compose");
        c.current_dir(&project)
            .env("DOCKER_HOST", &w.engine.host)
            .args(["-p", &compose_project()]);
        for f in &files {
            c.args(["-f", f]);
        }
        let out = c
            .args(args)
            .output()
            .expect("run docker-compose (scripts/test-deps installs it)");
        assert!(
            out.status.success(),
            "docker-compose {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    compose(&["up", "-d"]);
    let logs = || compose(&["logs", "--no-color", "app"]);
    // The first attempt after `after` whose result satisfies `ok`.
    let wait_attempt = |after: i64, ok: &dyn Fn(&serde_json::Value) -> bool, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let l = logs();
            for line in l.lines() {
                let Some(rest) = line.split("attempt ").nth(1) else {
                    continue;
                };
                let (n, json) = rest.split_once(' ').unwrap_or((rest, "{}"));
                let n: i64 = n.parse().unwrap_or(-1);
                let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
                if n > after && ok(&v) {
                    assert!(l.contains("db reachable"), "{l}");
                    return (n, v);
                }
            }
            assert!(Instant::now() < deadline, "app never got {what}:\n{l}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let served = |v: &serde_json::Value| v.get("access_key_id_suffix").is_some();
    // Daemon started before the network and the app: the app's fetch works.
    let (n, seen) = wait_attempt(-1, &served, "credentials from the daemon started first");
    w.assert_account(&before, "orders", "dev", &seen, "111111111111");
    // The daemon stops: fetches fail (the relay answers 503 DaemonUnavailable).
    drop(before);
    let (n, failed) = wait_attempt(n, &|v| v.get("error").is_some(), "an error");
    println!("daemon down: {failed}");
    // Started again, after the network and the app: the next fetch works, no restart.
    let after = w.serve(port);
    let (_, seen) = wait_attempt(n, &served, "credentials from the restarted daemon");
    w.assert_account(&after, "orders", "dev", &seen, "111111111111");
    // The app is on both networks.
    let ps = compose(&["ps", "-q", "app"]);
    let nets = w.engine.run(&[
        "inspect",
        "--format",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        ps.trim(),
    ]);
    assert!(
        nets.contains("credport") && nets.contains("_default"),
        "{nets}"
    );
}

/// credport itself as a container (the Dockerfile's image), as the user who owns the
/// 0600 files: read-only, the user's files mounted read-only, live edits and token
/// rotation on the host reach it; the image's default uid cannot read them.
#[test]
fn credport_image_as_the_users_uid() {
    let mut w = World::new(true);
    let image = w.engine.credport_image();
    // The container has no STS: session credentials are served as written.
    let others = format!(
        "{}{}",
        session_profile("prodAccount", "PROD0000"),
        session_profile("billingDev", "BILL0000")
    );
    w.home.write_credentials(&format!(
        "{}{others}",
        session_profile("devAccount", "AAAA1111")
    ));
    w.home.write_aws_config("");
    let uid = "4242";
    let token_before = w.home.token("orders", "dev");
    let chown = Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(w.home.path())
        .status()
        .unwrap();
    assert!(chown.success());
    for f in [w.home.credentials(), w.home.aws_config(), w.home.config()] {
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    let h = w.home.path().display().to_string();
    let mounts = [
        format!("{h}/.aws:/home/credport/.aws:ro"),
        format!("{h}/.config/credport:/home/credport/.config/credport:ro"),
        format!("{h}/.local/share/credport:/home/credport/.local/share/credport:ro"),
    ];
    // CA certificates are in the image (profiles that need STS speak TLS).
    let certs = w.engine.output(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        &image,
        "-c",
        "test -s /etc/ssl/certs/ca-certificates.crt && echo certs",
    ]);
    assert_eq!(String::from_utf8_lossy(&certs.stdout).trim(), "certs");

    // The image's default uid cannot read the user's 0600 files.
    let mut args = vec![
        "run",
        "--rm",
        "--network",
        "credport",
        "--read-only",
        "--tmpfs",
        "/tmp",
    ];
    for m in &mounts {
        args.extend(["-v", m.as_str()]);
    }
    args.extend([
        image.as_str(),
        "serve",
        "--listen",
        "169.254.170.9:80",
        "--allow-non-loopback",
    ]);
    let denied = w.engine.output(&args);
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(
        !denied.status.success() && err.contains("ermission denied"),
        "{err}"
    );
    println!(
        "as the image's default uid 65532: {}",
        err.lines()
            .rfind(|l| l.contains("ermission denied"))
            .unwrap_or("")
    );

    // As README: --user "$(id -u):$(id -g)".
    let name = w.name("daemon");
    let user = format!("{uid}:{uid}");
    let mut args = vec![
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "credport",
        "--ip",
        RELAY_IP,
        "--user",
        &user,
        "--read-only",
        "--tmpfs",
        "/tmp",
    ];
    for m in &mounts {
        args.extend(["-v", m.as_str()]);
    }
    args.extend([
        image.as_str(),
        "serve",
        "--listen",
        "169.254.170.2:80",
        "--allow-non-loopback",
    ]);
    w.engine.run(&args);
    let env = w.env(&[
        "--project",
        "orders",
        "--stage",
        "dev",
        "--format",
        "docker-env",
    ]);
    let ef = w.write("orders.env", &env);
    let ef = ef.to_str().unwrap();
    let fetch_key = |w: &World| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = w.python(
                &["--network", "credport", "--env-file", ef],
                &["python3", "/clients/whoami.py", "--mode", "creds-only"],
            );
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            let v = serde_json::from_str::<serde_json::Value>(stdout.lines().last().unwrap_or(""))
                .unwrap_or_default();
            if let Some(suffix) = v["access_key_id_suffix"].as_str() {
                return suffix.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "containerized daemon never served: {stdout}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    assert_eq!(fetch_key(&w), "1111");
    println!("credport in a container as uid {uid} served ...1111");
    w.assert_isolation(
        &[
            "--network",
            "credport",
            "--add-host",
            "host.docker.internal:host-gateway",
        ],
        "http://169.254.170.2",
    );
    // A live edit on the host, through the read-only bind mount.
    w.home.write_credentials(&format!(
        "{}{others}",
        session_profile("devAccount", "BBBB2222")
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while fetch_key(&w) != "2222" {
        assert!(
            Instant::now() < deadline,
            "the edit never reached the container"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("after the host edit it served ...2222");
    // Token rotation on the host: the old token stops working in the container's daemon.
    // Rotated by the user who owns the files (the daemon in the container is that user).
    let out = {
        use std::os::unix::process::CommandExt;
        let mut c = w.home.command();
        c.uid(4242).gid(4242).args(["token", "--rotate", "--now"]);
        c.output().unwrap()
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token_after = w.home.token("orders", "dev");
    assert_ne!(token_before, token_after);
    let url = "http://169.254.170.2/v1/credentials/orders/dev";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let old = w.probe(&["--network", "credport"], &["fetch", url, &token_before]);
        let new = w.probe(&["--network", "credport"], &["fetch", url, &token_after]);
        if old == "401 InvalidToken" && new == "200 True" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rotation not seen: old {old}, new {new}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `devcontainer up` + `devcontainer exec` (@devcontainers/cli) with the fragment from
/// `credport env --format devcontainer`: the token reaches the container through the env
/// file and never the image's metadata label.
#[test]
fn devcontainer_up_and_exec() {
    let mut w = World::new(true);
    let port = free_port();
    let d = w.serve(port);
    w.start_relay(port);
    let cli = repo_root().join("tests/clients/devcontainer/node_modules/.bin/devcontainer");
    assert!(
        cli.exists(),
        "{} is missing: run `bash scripts/test-deps`",
        cli.display()
    );
    let image = w.engine.python_image();
    let ws = w.scratch.path().join("orders-ws");
    std::fs::create_dir_all(ws.join(".devcontainer")).unwrap();
    std::fs::copy(
        repo_root().join("tests/clients/python/whoami.py"),
        ws.join("whoami.py"),
    )
    .unwrap();
    let fragment: serde_json::Value = serde_json::from_str(&w.env(&[
        "--project",
        "orders",
        "--stage",
        "dev",
        "--format",
        "devcontainer",
    ]))
    .unwrap();
    let mut config = serde_json::json!({
        "image": image,
        "remoteUser": "root",
        "updateRemoteUserUID": false,
        "overrideCommand": true,
    });
    for (k, v) in fragment.as_object().unwrap() {
        config[k] = v.clone();
    }
    std::fs::write(
        ws.join(".devcontainer/devcontainer.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
    let env = w.env(&[
        "--project",
        "orders",
        "--stage",
        "dev",
        "--format",
        "docker-env",
    ]);
    std::fs::write(ws.join(".devcontainer/credport.env"), env).unwrap();
    let dc = |args: &[&str]| {
        let out = Command::new(&cli)
            .arg(args[0])
            .arg("--workspace-folder")
            .arg(&ws)
            .args(&args[1..])
            .env("DOCKER_HOST", &w.engine.host)
            .output()
            .expect("run devcontainer");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = dc(&["up"]);
    let up: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("devcontainer up printed no JSON ({e}): {stdout}\n{stderr}"));
    let id = up["containerId"].as_str().unwrap_or("").to_string();
    if !id.is_empty() {
        w.containers.push(id.clone());
    }
    assert!(
        ok && up["outcome"] == "success",
        "devcontainer up: {stdout}\n{stderr}"
    );
    let ws_in = up["remoteWorkspaceFolder"].as_str().unwrap().to_string();
    let (ok, stdout, stderr) = dc(&[
        "exec",
        "python3",
        &format!("{ws_in}/whoami.py"),
        "--mode",
        "creds-only",
    ]);
    assert!(ok, "devcontainer exec: {stdout}\n{stderr}");
    let seen: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    w.assert_account(&d, "orders", "dev", &seen, "111111111111");
    // From inside, the dev token does not yield prod.
    std::fs::write(ws.join("probe.py"), PROBE).unwrap();
    let (_, stdout, stderr) = dc(&[
        "exec",
        "sh",
        "-c",
        &format!(
            "python3 {ws_in}/probe.py fetch http://169.254.170.2/v1/credentials/orders/prod \"$AWS_CONTAINER_AUTHORIZATION_TOKEN\""
        ),
    ]);
    assert_eq!(
        stdout.trim().lines().last().unwrap_or(""),
        "403 AccessDenied",
        "{stderr}"
    );
    // The token is nowhere in the container's labels (devcontainer.metadata included).
    let labels = w
        .engine
        .run(&["inspect", "--format", "{{json .Config.Labels}}", &id]);
    assert!(labels.contains("devcontainer"), "{labels}");
    assert!(
        !labels.contains(&w.home.token("orders", "dev")),
        "token in labels: {labels}"
    );
}

/// CPU time (user + system) a process has used, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// A config.toml mapping orders/dev to devAccount.
const ORDERS_DEV: &str = r#"[projects.orders]
stages = { dev = "devAccount" }
"#;

/// `serve --poll`: with kernel events off, an edit is still served (within the interval),
/// and what polling costs an idle daemon is measured against event watching.
#[test]
fn poll_sees_edits_without_events_and_costs_little() {
    let h = TestHome::new();
    h.write_credentials(&session_profile("devAccount", "AAAA1111"));
    h.write_config(ORDERS_DEV);
    let token = h.token("orders", "dev");
    let polled = h.serve_with(&["--listen", "127.0.0.1:0", "--poll", "0.2"]);
    assert!(polled.wait_output("watching files by polling", Duration::from_secs(5)));
    let path = "/v1/credentials/orders/dev";
    let key = |d: &Daemon| served_credentials(&d.get(path, Some(&token))).access_key_id;
    assert_eq!(key(&polled), "ASIAAAAA1111");
    h.write_credentials(&session_profile("devAccount", "BBBB2222"));
    let (_, took) = polled.wait_until(Duration::from_secs(5), path, &token, |r| {
        r.status == 200 && r.body.contains("ASIABBBB2222")
    });
    println!("--poll 0.2: edit served after {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // Idle cost over the same wall time: polling every 0.2 s (4 watched files) vs events,
    // the evented daemon in a home of its own (one daemon per user and runtime directory).
    let h2 = TestHome::new();
    h2.write_credentials(&session_profile("devAccount", "AAAA1111"));
    h2.write_config(ORDERS_DEV);
    let evented = h2.serve();
    let wall = Duration::from_secs(5);
    let (p0, e0) = (cpu_time(polled.child.id()), cpu_time(evented.child.id()));
    std::thread::sleep(wall);
    let (p1, e1) = (cpu_time(polled.child.id()), cpu_time(evented.child.id()));
    let (pc, ec) = (p1 - p0, e1 - e0);
    println!(
        "idle CPU over {wall:?}: --poll 0.2 {pc:?} ({:.2} %), events {ec:?} ({:.2} %)",
        pc.as_secs_f64() * 100.0 / wall.as_secs_f64(),
        ec.as_secs_f64() * 100.0 / wall.as_secs_f64()
    );
    assert!(
        pc < wall / 50,
        "polling every 0.2 s costs over 2 % of a core: {pc:?} in {wall:?}"
    );
}

/// `credport relay` as a plain process (no engine): forwards a scope's fetch to the daemon
/// with its token and refuses what it does not forward.
#[test]
fn relay_process_forwards_and_refuses() {
    let h = TestHome::new();
    h.write_credentials(&session_profile("devAccount", "AAAA1111"));
    h.write_config(ORDERS_DEV);
    let d = h.serve();
    let token = h.token("orders", "dev");
    let mut relay = h
        .command()
        .args(["relay", "--listen", "127.0.0.1:0", "--upstream"])
        .arg(d.url())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = relay.stderr.take().unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stderr), &mut first).unwrap();
    let addr: std::net::SocketAddr = first
        .strip_prefix("listening on http://")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("relay printed no address: {first:?}"));
    let host = addr.to_string();
    struct Case {
        name: &'static str,
        path: &'static str,
        headers: Vec<(&'static str, String)>,
        status: u16,
        /// The body's `AccessKeyId` when served, else its `Code`.
        says: &'static str,
    }
    let creds = "/v1/credentials/orders/dev";
    let cases = [
        Case {
            name: "the scope's fetch with its token",
            path: creds,
            headers: vec![("Host", host.clone()), ("Authorization", token.clone())],
            status: 200,
            says: "ASIAAAAA1111",
        },
        Case {
            name: "no token",
            path: creds,
            headers: vec![("Host", host.clone())],
            status: 401,
            says: "MissingToken",
        },
        Case {
            name: "a path it does not forward",
            path: "/metrics",
            headers: vec![("Host", host.clone())],
            status: 404,
            says: "NotFound",
        },
        Case {
            name: "a foreign Host",
            path: creds,
            headers: vec![
                ("Host", "evil.example".into()),
                ("Authorization", token.clone()),
            ],
            status: 403,
            says: "InvalidHost",
        },
    ];
    // All requests first, so the relay is gone before any assert can fail.
    let outcomes: Vec<(u16, serde_json::Value)> = cases
        .iter()
        .map(|c| {
            let headers: Vec<(&str, &str)> =
                c.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = request(addr, "GET", c.path, &headers);
            let field = if c.status == 200 {
                "AccessKeyId"
            } else {
                "Code"
            };
            (r.status, r.json()[field].clone())
        })
        .collect();
    let _ = relay.kill();
    let _ = relay.wait();
    for (case, got) in cases.iter().zip(&outcomes) {
        assert_eq!(*got, (case.status, case.says.into()), "case {}", case.name);
    }
}

/// `credport relay` refuses a bad upstream, naming it.
#[test]
fn relay_process_refuses_a_bad_upstream() {
    let h = TestHome::new();
    let bad = h.run(&["relay", "--upstream", "https://host.docker.internal:9911"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success()
            && err.contains("invalid upstream 'https://host.docker.internal:9911'"),
        "{err}"
    );
}
