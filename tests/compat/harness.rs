//! The world a client runs in (moto, a temporary HOME, a `credport serve`), the clients
//! themselves, and running them once or as long-running loops.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::moto::Moto;
use crate::support::{BIN, Daemon, TestHome, repo_root, venv_python, write_atomic};

pub const PROJECT: &str = "orders";
/// Accounts of the dev and prod roles, the account dev moves to, and what moto reports for
/// the hostile `[default]` keys.
pub const DEV: &str = "111111111111";
pub const PROD: &str = "222222222222";
pub const MOVED: &str = "333333333333";
pub const DEFAULT_ACCOUNT: &str = "123456789012";

/// `[default]` holds long-term keys on purpose: a client that misses the endpoint reports
/// moto's default account instead of the stage's.
const CREDENTIALS: &str = "[default]\naws_access_key_id = AKIADEFAULT00001\naws_secret_access_key = SECRETDEFAULT\n\n[base]\naws_access_key_id = AKIABASE00000001\naws_secret_access_key = SECRETBASEKEY\n";
const ROLES: &str = "[profile devAccount]\nrole_arn = arn:aws:iam::111111111111:role/Dev\nsource_profile = base\n\n[profile prodAccount]\nrole_arn = arn:aws:iam::222222222222:role/Prod\nsource_profile = base\n";
const PROJECTS: &str = "[projects.orders]\ndefault_stage = \"dev\"\nstages = { dev = \"devAccount\", prod = \"prodAccount\" }\n";

fn config_toml(lifetime: Option<u64>) -> String {
    let server = lifetime
        .map(|s| format!("[server]\nserved_lifetime = {s}\n\n"))
        .unwrap_or_default();
    // Not a guard test: the matrix fetches prod without `credport unlock`.
    format!("{}{server}{PROJECTS}", crate::support::GUARD_OFF)
}

const SERVERLESS_YML: &str = "service: credport-compat\nframeworkVersion: '3'\nprovider: { name: aws, runtime: nodejs20.x, region: us-east-1 }\nfunctions:\n  hello: { handler: handler.hello }\n  hellopy: { handler: handler.hello, runtime: python3.11 }\n";

/// One moto for every client test running in this process (started by the first, stopped
/// by the last): it is the heaviest process of the suite.
static MOTO: Mutex<(Option<Moto>, usize)> = Mutex::new((None, 0));

/// A reference to the shared moto.
pub struct MotoLease {
    pub url: String,
}

impl MotoLease {
    pub fn acquire() -> MotoLease {
        let mut g = MOTO.lock().unwrap_or_else(|e| e.into_inner());
        if g.0.is_none() {
            g.0 = Some(Moto::start());
        }
        g.1 += 1;
        MotoLease {
            url: g.0.as_ref().unwrap().url(),
        }
    }
}

impl Drop for MotoLease {
    fn drop(&mut self) {
        let mut g = MOTO.lock().unwrap_or_else(|e| e.into_inner());
        g.1 -= 1;
        if g.1 == 0 {
            g.0 = None;
        }
    }
}

/// One HOME with its own daemon, pointing at a shared moto.
pub struct World {
    pub home: TestHome,
    pub daemon: Daemon,
    pub sts: String,
    /// An empty file used as the shared credentials/config file in the direct modes.
    pub empty: PathBuf,
}

impl World {
    /// A daemon with the dev/prod roles; `lifetime` sets `[server] served_lifetime`.
    pub fn new(sts: &str, lifetime: Option<u64>) -> World {
        let mut home = TestHome::new();
        home.write_credentials(CREDENTIALS);
        home.write_aws_config(ROLES);
        home.write_config(&config_toml(lifetime));
        home.extra_env
            .insert("AWS_ENDPOINT_URL_STS".into(), sts.into());
        home.extra_env
            .insert("AWS_REGION".into(), "us-east-1".into());
        let empty = home.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        std::fs::create_dir_all(home.path().join("clean")).unwrap();
        let daemon = home.serve();
        World {
            home,
            daemon,
            sts: sts.into(),
            empty,
        }
    }

    /// Changes `served_lifetime` in the running daemon (the config file is watched) and
    /// waits until it is served.
    pub fn set_lifetime(&self, lifetime: Option<u64>) {
        write_atomic(&self.home.config(), &config_toml(lifetime));
        let max = lifetime.unwrap_or(960) as i64 + 2;
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64
        };
        self.daemon.wait_until(
            Duration::from_secs(10),
            &format!("/v1/credentials/{PROJECT}/prod"),
            &self.token("prod"),
            |r| {
                r.status == 200
                    && r.json()["Expiration"]
                        .as_str()
                        .and_then(credport::credentials::parse_timestamp)
                        .is_some_and(|t| t.unix_timestamp() - now() <= max)
            },
        );
    }

    /// `credport token --rotate --now` (no grace: the old key stops at once, the worst
    /// case for a client), then at once the new token (computed from the new key
    /// in-process, to keep the gap short) into `file` by rename; waits until the daemon
    /// has loaded the key. Returns the time from starting `token --rotate` to the rename
    /// (an upper bound of the window in which the file holds a refused token).
    pub fn rotate_and_replace(&self, file: &Path, stage: &str) -> Duration {
        let rotated = Instant::now();
        let out = self.home.run(&["token", "--rotate", "--now"]);
        assert!(
            out.status.success(),
            "token --rotate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = credport::tokens::TokenKey::load(&self.home.state_dir().join("token-key"))
            .expect("token key")
            .expect("token key exists");
        replace_by_rename(file, key.token(PROJECT, stage).expose());
        let gap = rotated.elapsed();
        self.rotate_wait();
        gap
    }

    pub fn url(&self, stage: &str) -> String {
        format!("{}/v1/credentials/{PROJECT}/{stage}", self.daemon.url())
    }

    pub fn token(&self, stage: &str) -> String {
        self.home.token(PROJECT, stage)
    }

    /// `credport token --rotate --now` (no grace), then waits until the daemon has loaded
    /// the new key
    /// (probed on the prod stage, so dev's counters only show the client's requests).
    pub fn rotate(&self) {
        let out = self.home.run(&["token", "--rotate", "--now"]);
        assert!(
            out.status.success(),
            "token --rotate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.rotate_wait();
    }

    /// Waits until the daemon has loaded the rotated key.
    pub fn rotate_wait(&self) {
        let fresh = self.token("prod");
        self.daemon.wait_until(
            Duration::from_secs(10),
            &format!("/v1/credentials/{PROJECT}/prod"),
            &fresh,
            |r| r.status == 200,
        );
    }

    /// `credport_requests_total` for (project, stage, outcome); unauthenticated requests
    /// have empty project and stage labels.
    pub fn requests(&self, stage: &str, outcome: &str) -> u64 {
        let body = self.daemon.get("/metrics", None).body;
        let (p, s) = if stage.is_empty() {
            ("", "")
        } else {
            (PROJECT, stage)
        };
        let want = format!(
            "credport_requests_total{{project=\"{p}\",stage=\"{s}\",outcome=\"{outcome}\"}} "
        );
        body.lines()
            .find_map(|l| l.strip_prefix(&want))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .map(|n| n as u64)
            .unwrap_or(0)
    }

    /// Rewrites `~/.aws/config` so that devAccount is a role in `account`.
    pub fn move_dev_to(&self, account: &str) {
        write_atomic(
            &self.home.aws_config(),
            &ROLES.replace("111111111111:role/Dev", &format!("{account}:role/Dev")),
        );
    }

    /// The environment `TestHome::command()` gives credport (HOME, XDG dirs, runtime dir,
    /// STS endpoint, region).
    pub fn credport_env(&self) -> Vec<(String, String)> {
        self.home
            .command()
            .get_envs()
            .filter_map(|(k, v)| {
                Some((
                    k.to_string_lossy().into_owned(),
                    v?.to_string_lossy().into_owned(),
                ))
            })
            .collect()
    }

    /// A serverless service directory with both handlers (created once).
    pub fn service_dir(&self) -> PathBuf {
        let dir = self.home.path().join("service");
        if !dir.exists() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("serverless.yml"), SERVERLESS_YML).unwrap();
            let clients = repo_root().join("tests/clients");
            std::fs::copy(clients.join("node/handler.js"), dir.join("handler.js")).unwrap();
            std::fs::copy(clients.join("python/handler.py"), dir.join("handler.py")).unwrap();
            std::os::unix::fs::symlink(clients.join("node/node_modules"), dir.join("node_modules"))
                .unwrap();
        }
        dir
    }

    /// PATH for the clients: the test venv's `bin` first (its `python3` finds the venv's
    /// `pyvenv.cfg` and boto3; a symlink elsewhere would not), then node_modules/.bin,
    /// then the system's.
    pub fn client_path(&self) -> String {
        let bin = venv_python().parent().unwrap().to_path_buf();
        format!(
            "{}:{}:{}",
            bin.display(),
            repo_root()
                .join("tests/clients/node/node_modules/.bin")
                .display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

/// How a client gets its token in the direct modes.
pub enum Creds<'a> {
    Token(&'a str),
    TokenFile(&'a Path),
}

/// One client of the matrix.
pub struct Client {
    /// File name of its results (`target/compat/<id>.json`).
    pub id: &'static str,
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Runs many calls in one process (`--loop N --interval S`) with the SDK's own cache.
    pub long_running: bool,
    /// Why the client cannot use `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (None: it can).
    pub no_token_file: Option<&'static str>,
    /// Why a running process keeps the token it read first (None: re-read per fetch).
    pub token_file_read_once: Option<&'static str>,
    /// A serverless service: runs in `World::service_dir()`.
    pub serverless: bool,
    /// How its credential cache refreshes (for the refresh and account-switch notes).
    pub refresh: &'static str,
    pub switch: &'static str,
    /// The version string, from one successful output line.
    pub version_of: fn(&serde_json::Value) -> String,
    /// Version known before any run (serverless's own).
    pub version_prefix: String,
}

fn s(v: &serde_json::Value, k: &str) -> String {
    v[k].as_str().unwrap_or("?").to_string()
}

fn must_exist(p: PathBuf, what: &str) -> PathBuf {
    assert!(
        p.exists(),
        "{what}: {} is missing. Run `bash scripts/test-deps` (the README's test command does); \
         the compatibility matrix never skips a client",
        p.display()
    );
    p
}

fn cache(rel: &str) -> PathBuf {
    repo_root().join(".cache").join(rel)
}

fn clients_dir(rel: &str) -> String {
    repo_root()
        .join("tests/clients")
        .join(rel)
        .display()
        .to_string()
}

fn node() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "command -v node"])
        .output()
        .expect("sh");
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !p.is_empty(),
        "node is not on PATH: the JS clients cannot run"
    );
    let _ = must_exist(
        repo_root().join("tests/clients/node/node_modules/@aws-sdk/client-sts"),
        "JS SDK v3",
    );
    PathBuf::from(p)
}

fn boto3_version(v: &serde_json::Value) -> String {
    format!("boto3 {} / botocore {}", s(v, "version"), s(v, "botocore"))
}

pub fn boto3_latest() -> Client {
    Client {
        id: "boto3",
        name: "boto3 (latest)",
        program: must_exist(cache("venv/bin/python"), "boto3 venv"),
        args: vec![clients_dir("python/whoami.py")],
        long_running: true,
        no_token_file: None,
        token_file_read_once: None,
        serverless: false,
        refresh: "botocore re-fetches on every credential access with < 15 min left (blocking with < 10 min), so one fetch per call",
        switch: "botocore re-fetches on every call with < 15 min left, so the next call switches",
        version_of: boto3_version,
        version_prefix: String::new(),
    }
}

pub fn boto3_132() -> Client {
    Client {
        id: "boto3-1.32",
        name: "boto3 / botocore 1.32",
        program: must_exist(cache("venv-boto132/bin/python"), "botocore 1.32 venv"),
        token_file_read_once: Some(
            "botocore 1.32.0 reads the token file once per process: ContainerProvider._retrieve_or_fail builds the headers once and the refresh fetcher reuses them (botocore 1.44.8 re-reads per fetch); restart the process after a rotation",
        ),
        ..boto3_latest()
    }
}

fn cli_version(v: &serde_json::Value) -> String {
    format!("aws-cli {}", s(v, "version"))
}

fn awscli(
    id: &'static str,
    name: &'static str,
    aws: PathBuf,
    no_token_file: Option<&'static str>,
) -> Client {
    Client {
        id,
        name,
        program: PathBuf::from(clients_dir("cli.sh")),
        args: vec![must_exist(aws, name).display().to_string()],
        long_running: false,
        no_token_file,
        token_file_read_once: None,
        serverless: false,
        refresh: "",
        switch: "",
        version_of: cli_version,
        version_prefix: String::new(),
    }
}

pub fn awscli_v1() -> Client {
    awscli("awscli-v1", "AWS CLI v1", cache("venv/bin/aws"), None)
}

/// Debian's `awscli` package, called by full path (another `aws` may be first on PATH).
pub fn awscli_v2() -> Client {
    awscli(
        "awscli-v2",
        "AWS CLI v2 (Debian)",
        PathBuf::from("/usr/bin/aws"),
        Some(
            "CLI v2 2.9.19 does not read container token files: it ignores AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE and sends no Authorization",
        ),
    )
}

pub fn js_v3() -> Client {
    Client {
        id: "js-v3",
        name: "AWS SDK JS v3",
        program: node(),
        args: vec![clients_dir("node/whoami-v3.mjs")],
        long_running: true,
        no_token_file: None,
        token_file_read_once: None,
        serverless: false,
        refresh: "with < 5 min left each call starts a background fetch (stale-while-revalidate) and signs with the previous one",
        switch: "with < 5 min left each call refreshes in the background and signs with what the previous call fetched, so the second call after the rewrite switches",
        version_of: |v| {
            format!(
                "client-sts {} / credential-provider-node {}",
                s(v, "version"),
                s(v, "credential_provider_node")
            )
        },
        version_prefix: String::new(),
    }
}

pub fn js_v2() -> Client {
    Client {
        id: "js-v2",
        name: "AWS SDK JS v2",
        args: vec![clients_dir("node/whoami-v2.js")],
        refresh: "expiryWindow 15 s: with a lifetime under 15 s every call fetches (twice: chain, then the service's get())",
        switch: "expiryWindow 15 s: credentials are kept until 15 s before expiry, so up to lifetime - 15 s = 5 s",
        version_of: |v| format!("aws-sdk {}", s(v, "version")),
        ..js_v3()
    }
}

pub fn rust() -> Client {
    Client {
        id: "rust",
        name: "AWS SDK for Rust",
        program: must_exist(
            cache("rust-client-target/release/whoami"),
            "Rust client (aws-config + aws-sdk-sts)",
        ),
        args: vec![],
        long_running: true,
        no_token_file: None,
        token_file_read_once: None,
        serverless: false,
        refresh: "the identity cache re-fetches 5-10 s before expiry (10 s buffer minus up to 50 % jitter)",
        switch: "the identity cache keeps credentials until 5-10 s before expiry, so up to lifetime - 5 s = 15 s",
        version_of: |v| {
            format!(
                "aws-config {} / aws-sdk-sts {}",
                s(v, "aws_config"),
                s(v, "version")
            )
        },
        version_prefix: String::new(),
    }
}

fn serverless_version() -> String {
    let pkg = must_exist(
        repo_root().join("tests/clients/node/node_modules/serverless/package.json"),
        "serverless@3",
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pkg).unwrap()).unwrap();
    format!("serverless {}", s(&v, "version"))
}

pub fn serverless(python: bool) -> Client {
    Client {
        id: if python {
            "serverless-python"
        } else {
            "serverless-node"
        },
        name: if python {
            "serverless@3 invoke local (Python handler)"
        } else {
            "serverless@3 invoke local (Node handler)"
        },
        program: must_exist(
            repo_root().join("tests/clients/node/node_modules/.bin/serverless"),
            "serverless@3",
        ),
        args: [
            "invoke",
            "local",
            "-f",
            if python { "hellopy" } else { "hello" },
        ]
        .map(String::from)
        .to_vec(),
        long_running: false,
        no_token_file: None,
        token_file_read_once: None,
        serverless: true,
        refresh: "",
        switch: "",
        version_of: if python {
            |v| format!("boto3 {}", s(v, "version"))
        } else {
            |v| format!("client-sts {}", s(v, "version"))
        },
        version_prefix: serverless_version(),
    }
}

impl Client {
    /// The client's command line for `n` calls `interval` seconds apart.
    pub fn argv(&self, looping: Option<(u32, f64)>) -> Vec<String> {
        let mut v = vec![self.program.display().to_string()];
        v.extend(self.args.iter().cloned());
        if let Some((n, i)) = looping {
            v.extend([
                "--loop".into(),
                n.to_string(),
                "--interval".into(),
                i.to_string(),
            ]);
        }
        v
    }

    fn base_env(&self, w: &World, cmd: &mut Command) {
        cmd.env("PATH", w.client_path())
            .env("HOME", w.home.path())
            .env("AWS_ENDPOINT_URL_STS", &w.sts)
            .env("AWS_REGION", "us-east-1")
            .env("SLS_TELEMETRY_DISABLED", "1")
            .env("SLS_NOTIFICATIONS_MODE", "off")
            .env("SLS_DEPRECATION_DISABLE", "*")
            .env("AWS_SDK_JS_SUPPRESS_MAINTENANCE_MODE_MESSAGE", "1");
        if let Ok(l) = std::env::var("LANG") {
            cmd.env("LANG", l);
        }
        if self.serverless {
            // serverless@3 runs Python handlers as `python3` (the runtime name cut at the
            // first dot), after putting $VIRTUAL_ENV/bin first on PATH.
            cmd.current_dir(w.service_dir())
                .env("VIRTUAL_ENV", repo_root().join(".cache/venv"));
        }
    }

    /// The client with only the container provider configured: FULL_URI plus a token
    /// variable, empty shared files.
    pub fn direct(
        &self,
        w: &World,
        stage: &str,
        creds: Creds,
        looping: Option<(u32, f64)>,
    ) -> Command {
        let argv = self.argv(looping);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).env_clear();
        self.base_env(w, &mut cmd);
        cmd.env("HOME", w.home.path().join("clean"))
            .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", w.url(stage))
            .env("AWS_SHARED_CREDENTIALS_FILE", &w.empty)
            .env("AWS_CONFIG_FILE", &w.empty);
        match creds {
            Creds::Token(t) => cmd.env("AWS_CONTAINER_AUTHORIZATION_TOKEN", t),
            Creds::TokenFile(p) => cmd.env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", p),
        };
        cmd
    }

    /// A hostile shell: `AWS_PROFILE=default` (with `[default]` keys in ~/.aws) and stray
    /// env keys.
    fn hostile(&self, w: &World, cmd: &mut Command) {
        cmd.env_clear().envs(w.credport_env());
        self.base_env(w, cmd);
        cmd.env("AWS_PROFILE", "default");
    }

    /// `credport exec --project orders --stage STAGE [--env-token] -- CLIENT`.
    pub fn exec(&self, w: &World, stage: &str, env_token: bool) -> Command {
        let mut cmd = Command::new(BIN);
        self.hostile(w, &mut cmd);
        cmd.env("RUST_LOG", "credport=warn")
            .args(["exec", "--project", PROJECT, "--stage", stage]);
        if env_token {
            cmd.arg("--env-token");
        }
        cmd.arg("--").args(self.argv(None));
        cmd
    }

    /// `eval "$(credport env --project orders --stage STAGE [--env-token])"` in bash, then
    /// the client.
    pub fn env(&self, w: &World, stage: &str, env_token: bool) -> Command {
        let mut cmd = Command::new("bash");
        self.hostile(w, &mut cmd);
        cmd.env("AWS_ACCESS_KEY_ID", "AKIASTRAY0000001")
            .env("AWS_SECRET_ACCESS_KEY", "stray")
            .env("RUST_LOG", "credport=warn")
            .env("CREDPORT_BIN", BIN)
            .env("CREDPORT_STAGE", stage)
            .env("CREDPORT_ENV_FLAGS", if env_token { "--env-token" } else { "" })
            .arg("-c")
            .arg(
                "set -e\nvars=$(\"$CREDPORT_BIN\" env --project orders --stage \"$CREDPORT_STAGE\" $CREDPORT_ENV_FLAGS)\neval \"$vars\"\nexec \"$@\"",
            )
            .arg("bash")
            .args(self.argv(None));
        cmd
    }
}

/// The outcome of one client run.
pub struct Outcome {
    pub status: Option<ExitStatus>,
    pub lines: Vec<serde_json::Value>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Outcome {
    /// The last result line (one with `account` or `error`).
    pub fn last(&self) -> Option<&serde_json::Value> {
        self.lines.last()
    }
    pub fn account(&self) -> Option<&str> {
        self.last().and_then(|v| v["account"].as_str())
    }
    pub fn error(&self) -> Option<String> {
        self.last()
            .and_then(|v| v["error"].as_str())
            .map(String::from)
    }
    /// What went wrong, for a note.
    pub fn describe(&self) -> String {
        if let Some(e) = self.error() {
            return short(&e, 240);
        }
        match self.last() {
            Some(v) => short(&v.to_string(), 240),
            None => format!(
                "no result line (exit {:?}); stderr: {}",
                self.status,
                short(self.stderr.trim(), 300)
            ),
        }
    }
}

/// The first `n` characters of `s` on one line.
pub fn short(s: &str, n: usize) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() <= n {
        one
    } else {
        one.chars().take(n).collect::<String>() + "…"
    }
}

/// A result line: a JSON object with `account` or `error`.
fn result_line(line: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    (v.get("account").is_some() || v.get("error").is_some()).then_some(v)
}

/// Runs a command to completion (killed after `timeout`).
pub fn run_once(mut cmd: Command, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let r = Running::spawn(&mut cmd);
    r.finish(started, timeout)
}

/// A client process whose result lines arrive as they are printed.
pub struct Running {
    pub child: Child,
    readers: Vec<std::thread::JoinHandle<()>>,
    lines: Receiver<(Instant, serde_json::Value)>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    seen: Vec<serde_json::Value>,
}

impl Running {
    pub fn spawn(cmd: &mut Command) -> Running {
        let shown = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        let (tx, rx) = channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let so = stdout.clone();
        let out_reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let now = Instant::now();
                {
                    let mut s = so.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
                if let Some(v) = result_line(&line) {
                    let _ = tx.send((now, v));
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let se = stderr.clone();
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(err).read_to_string(&mut s);
            se.lock().unwrap().push_str(&s);
        });
        Running {
            child,
            readers: vec![out_reader, err_reader],
            lines: rx,
            stdout,
            stderr,
            seen: Vec::new(),
        }
    }

    /// The next result line, or None at end of output or after `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<(Instant, serde_json::Value)> {
        match self.lines.recv_timeout(timeout) {
            Ok((t, v)) => {
                self.seen.push(v.clone());
                Some((t, v))
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Waits for the exit (killing the process after `timeout` from `started`).
    pub fn finish(mut self, started: Instant, timeout: Duration) -> Outcome {
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break Some(s);
            }
            if started.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = started.elapsed();
        // Let the readers drain the pipes (closed when every process holding them exits;
        // bounded, in case a grandchild keeps one open).
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.readers.iter().any(|h| !h.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        while let Ok((_, v)) = self.lines.try_recv() {
            self.seen.push(v);
        }
        Outcome {
            status,
            lines: self.seen,
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
            took,
        }
    }

    /// Kills the process and collects what it printed.
    pub fn kill(mut self) -> Outcome {
        let _ = self.child.kill();
        self.finish(Instant::now(), Duration::from_secs(5))
    }
}

/// Writes `text` to a temporary file beside `path` and renames it over `path`.
pub fn replace_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
