//! Shared helpers for the integration tests: a temporary HOME, the real `credport` binary
//! spawned in it, and a tiny raw HTTP client (raw, so tests control every header byte).
//!
//! On failure (a panic while a [`Daemon`] is alive) the command line, everything the
//! daemon printed and the files involved are printed, so a CI log explains itself.

#![allow(dead_code)]

pub mod docker;
pub mod moto;
pub mod recorder;
pub mod sls;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_credport");

/// A config.toml head that turns the guard off, for suites that serve prod but are not
/// about protected stages (tests/guard.rs is): without it every prod fetch would need a
/// `credport unlock` first. Prepend it to the suite's config.
pub const GUARD_OFF: &str = r#"# Not a guard test (tests/guard.rs is): serve prod without `credport unlock`.
[guard]
stages = []

"#;

/// A temporary HOME with credport's directories, and the environment to run commands in.
pub struct TestHome {
    pub dir: tempfile::TempDir,
    pub extra_env: BTreeMap<String, String>,
}

impl TestHome {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(".aws")).unwrap();
        TestHome {
            dir,
            extra_env: BTreeMap::new(),
        }
    }

    /// A HOME without `~/.aws`.
    pub fn bare() -> Self {
        TestHome {
            dir: tempfile::tempdir().expect("tempdir"),
            extra_env: BTreeMap::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn credentials(&self) -> PathBuf {
        self.path().join(".aws/credentials")
    }
    pub fn aws_config(&self) -> PathBuf {
        self.path().join(".aws/config")
    }
    pub fn config(&self) -> PathBuf {
        self.path().join(".config/credport/config.toml")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.path().join(".local/share/credport")
    }
    pub fn runtime_dir(&self) -> PathBuf {
        self.path().join("run")
    }

    pub fn write_credentials(&self, text: &str) {
        write_atomic(&self.credentials(), text);
    }
    pub fn write_aws_config(&self, text: &str) {
        write_atomic(&self.aws_config(), text);
    }
    pub fn write_config(&self, text: &str) {
        write_atomic(&self.config(), text);
    }

    /// A `Command` for the binary with a clean, isolated environment.
    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear();
        for k in ["PATH", "LANG", "TMPDIR"] {
            if let Ok(v) = std::env::var(k) {
                c.env(k, v);
            }
        }
        c.env("HOME", self.path())
            .env("XDG_CONFIG_HOME", self.path().join(".config"))
            .env("XDG_DATA_HOME", self.path().join(".local/share"))
            .env("CREDPORT_RUNTIME_DIR", self.runtime_dir())
            .env("RUST_LOG", "credport=trace");
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c
    }

    /// Runs a command to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run credport")
    }

    /// `credport token --project P --stage S`.
    pub fn token(&self, project: &str, stage: &str) -> String {
        let out = self.run(&["token", "--project", project, "--stage", stage]);
        assert!(
            out.status.success(),
            "token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Starts `credport serve --listen 127.0.0.1:0` and waits until it listens.
    pub fn serve(&self) -> Daemon {
        self.serve_with(&["--listen", "127.0.0.1:0"])
    }

    pub fn serve_with(&self, args: &[&str]) -> Daemon {
        let mut cmd = self.command();
        cmd.arg("serve").args(args);
        let shown = format!("{cmd:?}");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn credport serve");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("listening on http://") {
                    let _ = tx.send(rest.parse::<SocketAddr>().ok());
                }
                let mut o = out.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        });
        let stdout = child.stdout.take().unwrap();
        let out = output.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(stdout).read_to_string(&mut s);
            out.lock().unwrap().push_str(&s);
        });
        let addr = rx.recv_timeout(Duration::from_secs(20)).ok().flatten();
        let mut d = Daemon {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            output,
            command: shown,
            files: vec![self.credentials(), self.aws_config(), self.config()],
        };
        match addr {
            Some(a) => d.addr = a,
            None => panic!("daemon did not report its address"),
        }
        d
    }
}

/// A `config.toml` section for suites that are not about project-file trust: they serve
/// project files' mappings without `credport allow`, as a user who sets it does
/// (`tests/trust.rs` covers the default, "ask").
pub const TRUST_ALL: &str = r#"# Not a test of project-file trust: use project files' mappings as they are.
[trust]
project_files = "all"
"#;

/// A fixture file written as an indented raw string, as the file's text: drops the one
/// newline right after the opening quote, the indentation every non-blank line shares, and
/// the closing quote's indentation, so
///
/// ```text
///     fixture(r#"
///         [default]
///           region = us-east-1
///     "#)
/// ```
///
/// is `"[default]\n  region = us-east-1\n"`. Lines of only spaces or tabs become empty lines
/// (no fixture relies on trailing spaces). Text that does not start with a newline is
/// dedented the same way.
pub fn fixture(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let blank = |l: &str| {
        l.trim_matches(|c| c == ' ' || c == '\t' || c == '\n')
            .is_empty()
    };
    let indent = text
        .split_inclusive('\n')
        .filter(|l| !blank(l))
        .map(|l| l.len() - l.trim_start_matches(' ').len())
        .min()
        .unwrap_or(0);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if blank(line) {
            // An empty line stays one; the closing quote's indentation goes.
            if line.ends_with('\n') {
                out.push('\n');
            }
        } else {
            out.push_str(&line[indent..]);
        }
    }
    out
}

#[test]
fn fixture_strips_the_first_newline_and_the_common_indentation() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "indented, closing quote indented",
            "\n        [default]\n          region = us-east-1\n\n        [x]\n    ",
            "[default]\n  region = us-east-1\n\n[x]\n",
        ),
        (
            "first line on the quote's line",
            "[a]\nk = v\n",
            "[a]\nk = v\n",
        ),
        ("no final newline", "\n  a: 1\n  b: 2", "a: 1\nb: 2"),
        ("blank line of spaces", "\n  a\n     \n  b\n", "a\n\nb\n"),
        ("only one newline dropped", "\n\n  a\n", "\na\n"),
        ("empty", "", ""),
    ];
    for (name, text, want) in cases {
        assert_eq!(fixture(text), *want, "case {name}");
    }
}

/// Writes `text` to `path` by temp file + rename (how most tools save).
pub fn write_atomic(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A running `credport serve`. Killed on drop; on a panic its output is printed.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub output: Arc<Mutex<String>>,
    pub command: String,
    pub files: Vec<PathBuf>,
}

impl Daemon {
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until the daemon's output contains `needle` (its log is written by a
    /// background thread, so it may trail the `listening on` line); false on timeout.
    pub fn wait_output(&self, needle: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.output().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// GET with the right Host and an optional token.
    pub fn get(&self, path: &str, token: Option<&str>) -> Response {
        let host = self.addr.to_string();
        let mut headers = vec![("Host", host.as_str())];
        if let Some(t) = token {
            headers.push(("Authorization", t));
        }
        request(self.addr, "GET", path, &headers)
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls until `check` holds for a fetch, or panics after `timeout`.
    pub fn wait_until(
        &self,
        timeout: Duration,
        path: &str,
        token: &str,
        check: impl Fn(&Response) -> bool,
    ) -> (Response, Duration) {
        let start = Instant::now();
        loop {
            let r = self.get(path, Some(token));
            if check(&r) {
                return (r, start.elapsed());
            }
            assert!(
                start.elapsed() < timeout,
                "condition not met within {timeout:?}; last response {} {}",
                r.status,
                r.body
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- command: {}", self.command);
            eprintln!("--- daemon output:\n{}", self.output());
            for f in &self.files {
                match std::fs::read_to_string(f) {
                    Ok(t) => eprintln!("--- {}:\n{t}", f.display()),
                    Err(e) => eprintln!("--- {}: {e}", f.display()),
                }
            }
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one raw HTTP/1.1 request with exactly the given headers and `Connection: close`.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut raw = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("Connection: close\r\n\r\n");
    send_raw(addr, raw.as_bytes())
}

/// Sends raw bytes and parses the (first) response.
pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf)
}

pub fn parse_response(buf: &[u8]) -> Response {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Session credentials in the shared-file form, all parts carrying `tag`.
pub fn session_profile(name: &str, tag: &str) -> String {
    fixture(&format!(
        r#"
        [{name}]
        aws_access_key_id = ASIA{tag}
        aws_secret_access_key = SECRET{tag}
        aws_session_token = TOKEN{tag}
        "#
    ))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python of the test virtualenv that `scripts/test-deps` builds. Fails loudly when
/// it is missing: compatibility tests never skip silently.
pub fn venv_python() -> PathBuf {
    let p = std::env::var_os("CREDPORT_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache/venv"))
        .join("bin/python");
    assert!(
        p.exists(),
        "{} is missing: run `bash scripts/test-deps` first (the README's test command does)",
        p.display()
    );
    p
}

/// Runs the boto3 client script with only the container provider configured (plus the
/// given extra variables) and returns its parsed JSON line.
pub fn boto3_whoami(
    url: &str,
    token: &str,
    sts: &str,
    extra: &[(&str, &str)],
) -> serde_json::Value {
    let mut cmd = Command::new(venv_python());
    cmd.arg(repo_root().join("tests/clients/python/whoami.py"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", url)
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", token)
        .env("AWS_ENDPOINT_URL_STS", sts)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run boto3 client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "boto3 client printed no JSON ({e}); status {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Credentials parsed from a container-credentials response body.
pub fn served_credentials(r: &Response) -> credport::credentials::Credentials {
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    credport::credentials::Credentials {
        access_key_id: j["AccessKeyId"].as_str().unwrap().into(),
        secret_access_key: credport::credentials::Secret::new(
            j["SecretAccessKey"].as_str().unwrap(),
        ),
        session_token: Some(credport::credentials::Secret::new(
            j["Token"].as_str().unwrap(),
        )),
        expiration: credport::credentials::parse_timestamp(j["Expiration"].as_str().unwrap()),
        account_id: None,
    }
}

/// The account that STS at `sts_url` reports for `creds` (our own SigV4 client).
pub fn caller_account(sts_url: &str, creds: &credport::credentials::Credentials) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = credport::sources::sts::StsClient::new(Default::default()).unwrap();
        let ep = credport::sources::endpoint::ServiceEndpoint {
            url: sts_url.into(),
            region: "us-east-1".into(),
            signing_region: "us-east-1".into(),
        };
        client
            .get_caller_identity(&ep, creds)
            .await
            .expect("GetCallerIdentity")
            .account
    })
}
