//! Running as a service: the units checked by systemd's own tools, the plist by Python's
//! plistlib, `service install --dry-run` for both platforms, a real socket-activated start
//! with `systemd-socket-activate`, and readiness notification over `NOTIFY_SOCKET`.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use credport::service::units::{
    LAUNCHD_PLIST_TEMPLATE, PLACEHOLDER_BINARY, PLACEHOLDER_HOME, SYSTEMD_SERVICE_TEMPLATE,
    SYSTEMD_SOCKET_TEMPLATE, render_launchd_plist, render_systemd_service, render_systemd_socket,
};
use support::*;

/// Highest `systemd-analyze security` exposure accepted (the scale is 0 to 10; below 2 is
/// "OK", 10 is an unconfined service).
const MAX_EXPOSURE: f64 = 2.0;

fn bin() -> PathBuf {
    Path::new(BIN).canonicalize().unwrap()
}

/// The units rendered for the test binary, in a fresh directory.
fn rendered_units() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("credport.service"),
        render_systemd_service(&bin()),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("credport.socket"),
        render_systemd_socket(&[]),
    )
    .unwrap();
    dir
}

/// `systemd-analyze --user ARGS`: a user manager needs `$XDG_RUNTIME_DIR`, which CI (root,
/// no login session) does not have, so it gets a private one.
fn systemd_analyze(args: &[&str]) -> (bool, String) {
    let runtime = tempfile::tempdir().unwrap();
    let out = Command::new("systemd-analyze")
        .arg("--user")
        .args(args)
        .env("XDG_RUNTIME_DIR", runtime.path())
        .env("SYSTEMD_PAGER", "")
        .env("SYSTEMD_COLORS", "0")
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn committed_units_match_the_renderer() {
    struct Case {
        /// The committed file, from the repository root.
        name: &'static str,
        template: &'static str,
        /// What the renderer makes of the placeholders.
        rendered: String,
    }
    let placeholder = Path::new(PLACEHOLDER_BINARY);
    let cases = [
        Case {
            name: "systemd/credport.service",
            template: SYSTEMD_SERVICE_TEMPLATE,
            rendered: render_systemd_service(placeholder),
        },
        Case {
            name: "systemd/credport.socket",
            template: SYSTEMD_SOCKET_TEMPLATE,
            rendered: render_systemd_socket(&[]),
        },
        Case {
            name: "launchd/dev.credport.agent.plist",
            template: LAUNCHD_PLIST_TEMPLATE,
            rendered: render_launchd_plist(placeholder, Path::new(PLACEHOLDER_HOME)),
        },
    ];
    for case in &cases {
        let name = case.name;
        let committed = std::fs::read_to_string(repo_root().join(name)).unwrap();
        assert_eq!(
            committed, case.template,
            "case {name}: the committed file is the template"
        );
        assert_eq!(
            case.rendered, committed,
            "case {name}: rendered with the placeholders"
        );
    }
}

#[test]
fn systemd_analyze_verify_passes() {
    let dir = rendered_units();
    let service = dir.path().join("credport.service");
    let socket = dir.path().join("credport.socket");
    let (ok, text) = systemd_analyze(&[
        "verify",
        service.to_str().unwrap(),
        socket.to_str().unwrap(),
    ]);
    // Warnings (unknown keys, bad values, a missing binary) name the unit or its file;
    // anything else systemd-analyze says is about the machine, not our units.
    let problems: Vec<&str> = text.lines().filter(|l| l.contains("credport")).collect();
    assert!(
        ok && problems.is_empty(),
        "systemd-analyze verify failed:\n{text}\n--- unit:\n{}",
        std::fs::read_to_string(&service).unwrap()
    );
}

/// The check above is real: a typo and a missing binary are reported.
#[test]
fn systemd_analyze_verify_reports_a_typo_and_a_missing_binary() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken").join("credport.service");
    std::fs::create_dir_all(broken.parent().unwrap()).unwrap();
    std::fs::write(
        &broken,
        render_systemd_service(Path::new("/nonexistent/credport"))
            .replace("NoNewPrivileges=", "NoNewPrivilege="),
    )
    .unwrap();
    let (_, text) = systemd_analyze(&["verify", broken.to_str().unwrap()]);
    assert!(text.contains("NoNewPrivilege"), "{text}");
    assert!(text.contains("/nonexistent/credport"), "{text}");
}

#[test]
fn systemd_analyze_security_exposure_is_low() {
    let dir = rendered_units();
    let service = dir.path().join("credport.service");
    let (ok, text) = systemd_analyze(&["security", "--offline=yes", service.to_str().unwrap()]);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level for credport.service"))
        .unwrap_or_else(|| panic!("no exposure level (ok={ok}):\n{text}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"));
    println!("systemd-analyze --user security --offline=yes credport.service: {score}");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{text}"
    );
}

/// The plist at `path` parsed by Python's plistlib, as JSON.
fn plistlib(path: &Path) -> serde_json::Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))",
        ])
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "plistlib rejected {}: {}\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(path).unwrap_or_default()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_plist(p: &serde_json::Value, binary: &str, home: &str) {
    assert_eq!(p["Label"], "dev.credport.agent");
    assert_eq!(p["ProgramArguments"], serde_json::json!([binary, "serve"]));
    assert_eq!(p["RunAtLoad"], true);
    assert_eq!(p["KeepAlive"], serde_json::json!({"SuccessfulExit": false}));
    assert_eq!(p["ProcessType"], "Background");
    let log = format!("{home}/Library/Logs/credport.log");
    assert_eq!(p["StandardOutPath"], log);
    assert_eq!(p["StandardErrorPath"], log);
    assert_eq!(p["EnvironmentVariables"]["RUST_LOG"], "credport=info");
    assert!(
        p["EnvironmentVariables"]["PATH"]
            .as_str()
            .unwrap()
            .contains("/usr/bin")
    );
}

#[test]
fn the_committed_plist_parses_as_a_plist() {
    let committed = repo_root().join("launchd/dev.credport.agent.plist");
    assert_plist(&plistlib(&committed), PLACEHOLDER_BINARY, PLACEHOLDER_HOME);
}

#[test]
fn a_plist_rendered_with_xml_special_characters_parses_as_a_plist() {
    let dir = tempfile::tempdir().unwrap();
    let home = "/Users/Jane & <Co>";
    let rendered = dir.path().join("agent.plist");
    std::fs::write(
        &rendered,
        render_launchd_plist(Path::new("/opt/a&b/credport"), Path::new(home)),
    )
    .unwrap();
    assert_plist(&plistlib(&rendered), "/opt/a&b/credport", home);
}

/// Every file and directory under `dir`.
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut all = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            all.insert(p);
        }
    }
    all
}

/// The content that a dry run printed for `path`.
fn printed_file(out: &str, path: &Path) -> String {
    let start = format!("would write {} (mode 0644):\n", path.display());
    let end = format!("(end of {})", path.display());
    let from = out
        .find(&start)
        .unwrap_or_else(|| panic!("{start:?} not in:\n{out}"))
        + start.len();
    let to = out[from..].find(&end).unwrap() + from;
    out[from..to].to_string()
}

#[test]
fn dry_run_install_systemd() {
    let h = TestHome::new();
    h.write_config(&fixture(
        r#"
        [server]
        listen = ["127.0.0.1:9444"]
        "#,
    ));
    let before = tree(h.path());
    let out = h.run(&["service", "install", "--dry-run", "--platform", "systemd"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit_dir = h.path().join(".config/systemd/user");
    let service = printed_file(&stdout, &unit_dir.join("credport.service"));
    assert_eq!(service, render_systemd_service(&bin()));
    assert!(service.contains(&format!("\nExecStart={} serve\n", bin().display())));
    let socket = printed_file(&stdout, &unit_dir.join("credport.socket"));
    assert!(
        socket.contains("\nListenStream=127.0.0.1:9444\n"),
        "{socket}"
    );
    assert!(!socket.contains("9911\n"), "{socket}");
    let commands: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("would run: "))
        .collect();
    assert_eq!(
        commands,
        [
            "systemctl --user daemon-reload",
            "systemctl --user enable credport.socket",
            "systemctl --user stop credport.service",
            "systemctl --user restart credport.socket",
            "systemctl --user start credport.service",
        ],
        "{stdout}"
    );
    assert!(stdout.contains(&format!(
        "would create directory {}",
        h.path().join(".local/share/credport").display()
    )));
    assert_eq!(tree(h.path()), before, "a dry run wrote files");
}

#[test]
fn dry_run_install_launchd() {
    let h = TestHome::new();
    let before = tree(h.path());
    let out = h.run(&["service", "install", "--dry-run", "--platform", "launchd"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plist_path = h
        .path()
        .join("Library/LaunchAgents/dev.credport.agent.plist");
    let plist = printed_file(&stdout, &plist_path);
    assert_eq!(plist, render_launchd_plist(&bin(), h.path()));
    // What it would write is a valid plist with the real paths.
    let copy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(copy.path(), &plist).unwrap();
    assert_plist(
        &plistlib(copy.path()),
        bin().to_str().unwrap(),
        h.path().to_str().unwrap(),
    );
    let uid = unsafe { libc::getuid() };
    let commands: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("would run: "))
        .collect();
    assert_eq!(
        commands,
        [
            format!("launchctl bootout gui/{uid}/dev.credport.agent (a failure is ignored)"),
            format!("launchctl enable gui/{uid}/dev.credport.agent"),
            format!("launchctl bootstrap gui/{uid} {}", plist_path.display()),
        ],
        "{stdout}"
    );
    assert_eq!(tree(h.path()), before, "a dry run wrote files");

    // Nothing installed: uninstall and status say so and run nothing.
    let out = h.run(&["service", "uninstall", "--platform", "launchd"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("not installed"));
    let out = h.run(&["service", "status", "--platform", "launchd"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{}: not installed", plist_path.display())),
        "{text}"
    );
}

/// A home with session keys for `P/dev`.
fn home_with_project() -> TestHome {
    let h = TestHome::new();
    h.write_credentials(&session_profile("devAccount", "DEV1"));
    h.write_config(&fixture(
        r#"
        [projects.P]
        stages = { dev = "devAccount" }
        "#,
    ));
    h
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child whose stderr is collected; killed on drop, its output shown on a panic.
struct Child {
    child: std::process::Child,
    stderr: Arc<Mutex<String>>,
    what: String,
}

impl Child {
    fn spawn(mut cmd: Command) -> Child {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Child {
            child,
            stderr,
            what,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.stderr().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {}\n--- stderr:\n{}", self.what, self.stderr());
        }
    }
}

/// `program` with the isolated environment of `h.command()`.
fn command_in(h: &TestHome, program: &str) -> Command {
    let base = h.command();
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd
}

#[test]
fn socket_activated_start_serves_credentials() {
    let h = home_with_project();
    let token = h.token("P", "dev");
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cmd = command_in(&h, "systemd-socket-activate");
    cmd.args(["-l", &addr.to_string()]);
    // It gives the child only LISTEN_* and what -E names, not its own environment.
    for (k, v) in h.command().get_envs() {
        if let Some(v) = v {
            cmd.arg(format!("-E{}={}", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    cmd.arg(BIN).arg("serve");
    // Ignored under socket activation: the passed socket is served instead.
    cmd.args(["--listen", "127.0.0.1:0"]);
    let mut child = Child::spawn(cmd);
    child.wait_for(&format!("Listening on {addr}"));

    // The first connection starts credport, which serves it on the passed socket.
    let host = addr.to_string();
    let r = request(
        addr,
        "GET",
        "/v1/credentials/P/dev",
        &[("Host", &host), ("Authorization", &token)],
    );
    assert_eq!(r.status, 200, "{}\n{}", r.body, child.stderr());
    let j = r.json();
    assert_eq!(j["AccessKeyId"], "ASIADEV1");
    assert_eq!(j["SecretAccessKey"], "SECRETDEV1");
    assert_eq!(j["Token"], "TOKENDEV1");
    assert!(j["Expiration"].as_str().unwrap().ends_with('Z'));
    // The log goes through a writer thread, so its lines may land after the response.
    child.wait_for(&format!("listening on http://{addr}"));
    child.wait_for("socket activation");
    let err = child.stderr();
    assert!(!err.contains("listening on http://127.0.0.1:0"), "{err}");
    // Other commands find the socket-activated daemon through daemon.json.
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(h.runtime_dir().join("daemon.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(info["url"], format!("http://{addr}"));
    let status = child.terminate();
    assert!(status.success(), "{status:?}\n{}", child.stderr());
}

#[test]
fn activation_variables_for_another_process_are_ignored() {
    let mut h = home_with_project();
    h.extra_env.insert("LISTEN_PID".into(), "1".into());
    h.extra_env.insert("LISTEN_FDS".into(), "1".into());
    let d = h.serve();
    let r = d.get("/v1/credentials/P/dev", Some(&h.token("P", "dev")));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_passed_descriptor_that_is_not_a_listener_is_refused() {
    let h = home_with_project();
    let mut cmd = command_in(&h, "sh");
    cmd.args([
        "-c",
        "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" serve 3</dev/null",
        BIN,
    ]);
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("credport: error: socket activation: passed descriptor 3"),
        "{err}"
    );
    assert!(err.contains("not a socket"), "{err}");
}

#[test]
fn notifies_readiness_reload_and_stopping() {
    let mut h = home_with_project();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    h.extra_env
        .insert("NOTIFY_SOCKET".into(), path.to_str().unwrap().into());
    // One datagram of newline-separated KEY=VALUE fields (sd_notify(3)); a trailing
    // newline is allowed.
    let recv = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        text.strip_suffix('\n').map(str::to_string).unwrap_or(text)
    };
    let mut d = h.serve();
    assert_eq!(recv(), "READY=1");
    // Ready means serving.
    let r = d.get("/v1/credentials/P/dev", Some(&h.token("P", "dev")));
    assert_eq!(r.status, 200, "{}", r.body);

    unsafe { libc::kill(d.child.id() as i32, libc::SIGHUP) };
    let reloading = recv();
    let usec = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("{reloading:?}"));
    assert!(usec.parse::<u64>().unwrap() > 0);
    assert_eq!(recv(), "READY=1");

    let status = d.terminate();
    assert!(status.success(), "{status:?}");
    assert_eq!(recv(), "STOPPING=1");
}
