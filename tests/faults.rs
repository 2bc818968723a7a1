//! Faults around the daemon: STS slow or throttling, a full disk, SIGKILL in the middle of
//! a write, the wall clock jumping, and a sweep of every command's output for canary
//! secrets at the most verbose log level.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use support::moto::Moto;
use support::*;

const ROLES: &str = r#"[profile dev]
role_arn = arn:aws:iam::111111111111:role/Dev
source_profile = base
"#;
const CONFIG: &str = r#"[projects.orders]
default_stage = "dev"
stages = { dev = "dev" }
"#;

fn home(sts: &str) -> TestHome {
    let mut h = TestHome::new();
    h.write_credentials(
        "[base]\naws_access_key_id = AKIABASE00000001\naws_secret_access_key = SECRETBASEKEY\n",
    );
    h.write_aws_config(ROLES);
    h.write_config(CONFIG);
    h.extra_env
        .insert("AWS_ENDPOINT_URL_STS".into(), sts.into());
    h.extra_env.insert("AWS_REGION".into(), "us-east-1".into());
    h
}

/// A fake STS: accepts connections and answers with `respond` (or never, when `None`).
/// Returns its URL and a request counter.
fn fake_sts(
    respond: Option<&'static str>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = n.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut s = s;
            match respond {
                None => held.push(s), // accept and never answer
                Some(body) => {
                    let mut buf = [0u8; 65536];
                    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                    let _ = s.read(&mut buf);
                    let _ = write!(
                        s,
                        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
            }
        }
    });
    (url, n)
}

#[test]
fn slow_sts_fails_fast_with_a_clear_error() {
    let (url, _) = fake_sts(None);
    let h = home(&url);
    let d = h.serve();
    let start = Instant::now();
    let r = d.get(
        "/v1/credentials/orders/dev",
        Some(&h.token("orders", "dev")),
    );
    let took = start.elapsed();
    assert_eq!(r.status, 503, "{}", r.body);
    let msg = r.json()["Message"].as_str().unwrap().to_string();
    assert!(
        msg.contains(&url) && (msg.contains("no response") || msg.contains("unreachable")),
        "{msg}"
    );
    assert!(
        took < Duration::from_secs(12),
        "the request waited {took:?}"
    );
    eprintln!("slow STS answered in {took:?}: {msg}");
    assert_eq!(
        d.get("/healthz", None).status,
        200,
        "the daemon still answers"
    );
}

#[test]
fn throttling_sts_is_retried_then_reported() {
    const THROTTLED: &str = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>";
    let (url, count) = fake_sts(Some(THROTTLED));
    let h = home(&url);
    let d = h.serve();
    let r = d.get(
        "/v1/credentials/orders/dev",
        Some(&h.token("orders", "dev")),
    );
    assert_eq!(r.status, 503, "{}", r.body);
    let msg = r.json()["Message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("throttled") && msg.contains("Throttling"),
        "{msg}"
    );
    let calls = count.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=5).contains(&calls), "bounded retries: {calls} calls");
}

/// A tiny tmpfs, filled up; unmounted on drop.
struct FullDisk(std::path::PathBuf);

impl FullDisk {
    fn new(at: &std::path::Path) -> FullDisk {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        FullDisk(at.to_path_buf())
    }
    fn fill(&self) {
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

#[test]
fn full_disk_keeps_the_old_key_and_leaves_no_partial_files() {
    let mut h = home("http://127.0.0.1:9");
    let state = h.path().join("state");
    let disk = FullDisk::new(&state);
    h.extra_env
        .insert("CREDPORT_STATE_DIR".into(), state.display().to_string());
    let before = h.token("orders", "dev");
    let key_before = std::fs::read(state.join("token-key")).unwrap();
    disk.fill();
    let out = h.run(&["token", "--rotate"]);
    assert!(!out.status.success(), "rotation on a full disk must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("token-key") && err.contains("No space left"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(state.join("token-key")).unwrap(),
        key_before,
        "old key intact"
    );
    assert_eq!(h.token("orders", "dev"), before, "tokens unchanged");
    let leftovers: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "partial files left: {leftovers:?}");
    // `env` writes its token file there too: a clear error, nothing partial.
    h.write_config(CONFIG);
    let out = h.run(&["env", "--project", "orders"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No space left"));
    assert!(!state.join("tokens/orders@dev.token").exists());
}

#[test]
fn sigkill_during_rotation_never_leaves_a_partial_key() {
    let h = home("http://127.0.0.1:9");
    h.token("orders", "dev");
    let key = h.state_dir().join("token-key");
    for i in 0..60u64 {
        let mut child = h
            .command()
            .args(["token", "--rotate"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(200 + (i * 97) % 3000));
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        let text = std::fs::read_to_string(&key).unwrap();
        assert!(
            text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()),
            "partial key after kill {i}: {text:?}"
        );
    }
    // The key still works for tokens, and a later write clears old temp files.
    assert!(
        h.run(&["token", "--project", "orders", "--stage", "dev"])
            .status
            .success()
    );
}

#[test]
fn wall_clock_jumps_do_not_break_serving() {
    let libfaketime = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("libfaketime is missing: run `bash scripts/test-deps` (Debian package faketime)");
    let moto = Moto::start();
    let mut h = home(&moto.url());
    let clock = h.path().join("faketime");
    std::fs::write(&clock, "+0").unwrap();
    h.extra_env.insert("LD_PRELOAD".into(), libfaketime.into());
    h.extra_env.insert(
        "FAKETIME_TIMESTAMP_FILE".into(),
        clock.display().to_string(),
    );
    h.extra_env.insert("FAKETIME_NO_CACHE".into(), "1".into());
    h.extra_env
        .insert("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into());
    let d = h.serve();
    let tok = h.token("orders", "dev");
    let first = served_credentials(&d.get("/v1/credentials/orders/dev", Some(&tok)));
    for jump in ["+3h", "-2d", "+0"] {
        std::fs::write(&clock, jump).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let r = d.get("/v1/credentials/orders/dev", Some(&tok));
        let creds = served_credentials(&r);
        assert_eq!(
            caller_account(&moto.url(), &creds),
            "111111111111",
            "after a {jump} jump"
        );
        assert!(r.json()["Expiration"].as_str().unwrap().ends_with('Z'));
        if jump == "+3h" {
            assert_ne!(
                creds.access_key_id, first.access_key_id,
                "a session that looks expired is replaced"
            );
        }
    }
    assert_eq!(d.get("/healthz", None).status, 200);
}

/// Every command and endpoint, at trace level, with canary secrets in every file: none of
/// them may print a canary (except the credentials response itself, whose job it is).
#[test]
fn canary_secrets_never_appear_in_any_output() {
    const CANARIES: [&str; 6] = [
        "CANARYSECRETKEY1",
        "CANARYSESSIONTOKEN1",
        "CANARYLONGTERMSECRET",
        "CANARYSSOTOKEN",
        "CANARYPROCSECRET",
        "CANARYCONFIGSECRET",
    ];
    let moto = Moto::start();
    let mut h = TestHome::new();
    h.write_credentials(&fixture(
        r#"
        [session]
        aws_access_key_id = ASIACANARY000001
        aws_secret_access_key = CANARYSECRETKEY1
        aws_session_token = CANARYSESSIONTOKEN1
        [base]
        aws_access_key_id = AKIACANARY000001
        aws_secret_access_key = CANARYLONGTERMSECRET
        [broken]
        aws_secret_access_key = CANARYSECRETKEY1 # comment
        aws_access_key_id = A
        aws_session_token = CANARYSESSIONTOKEN1
        "#,
    ));
    let proc_script = h.path().join("proc.sh");
    std::fs::write(
        &proc_script,
        fixture(
            r#"
            #!/bin/sh
            echo '{"Version": 1, "AccessKeyId": "ASIAPROC", "SecretAccessKey": "CANARYPROCSECRET", "SessionToken": "CANARYPROCSECRET"}'
            echo CANARYPROCSECRET >&2
            "#,
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&proc_script, std::fs::Permissions::from_mode(0o755)).unwrap();
    h.write_aws_config(&format!(
        "{ROLES}{}",
        fixture(&format!(
            r#"
            [profile proc]
            credential_process = {}
            [profile mfa]
            role_arn = arn:aws:iam::1:role/M
            source_profile = base
            mfa_serial = arn:aws:iam::1:mfa/me
            [profile cfgkeys]
            aws_access_key_id = AKIACFG
            aws_secret_access_key = CANARYCONFIGSECRET
            [profile sso]
            sso_session = corp
            sso_account_id = 1
            sso_role_name = R
            [sso-session corp]
            sso_start_url = https://x/start
            sso_region = us-east-1
            "#,
            proc_script.display()
        ))
    ));
    let cache = h.path().join(".aws/sso/cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(
        cache.join("0ad374308c5a4e22f723adf10145eafad7c4031c.json"),
        r#"{"accessToken": "CANARYSSOTOKEN", "expiresAt": "2000-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    h.write_config(&fixture(
        r#"
        [projects.p]
        default_stage = "session"
        stages = { session = "session", dev = "dev", base = "base", proc = "proc", mfa = "mfa", cfg = "cfgkeys", sso = "sso", broken = "broken", missing = "nope" }
        "#,
    ));
    h.extra_env
        .insert("AWS_ENDPOINT_URL_STS".into(), moto.url());
    h.extra_env
        .insert("AWS_ENDPOINT_URL_SSO".into(), "http://127.0.0.1:9".into());
    h.extra_env.insert("AWS_REGION".into(), "us-east-1".into());
    let d = h.serve();
    let mut outputs = Vec::new();
    for stage in [
        "session", "dev", "base", "proc", "mfa", "cfg", "sso", "broken", "missing",
    ] {
        let r = d.get(
            &format!("/v1/credentials/p/{stage}"),
            Some(&h.token("p", stage)),
        );
        if r.status != 200 {
            outputs.push((format!("GET p/{stage} -> {}", r.status), r.body.clone()));
        }
        let r = d.get(
            &format!("/v1/credentials/p/{stage}"),
            Some("cpt1.bad.bad.bad"),
        );
        outputs.push((format!("GET p/{stage} bad token"), r.body));
    }
    for path in ["/healthz", "/metrics", "/nope"] {
        outputs.push((path.to_string(), d.get(path, None).body));
    }
    let commands: Vec<Vec<&str>> = vec![
        vec!["status"],
        vec!["status", "--json"],
        vec!["doctor"],
        vec!["doctor", "--json"],
        vec!["resolve", "--project", "p", "--stage", "dev"],
        vec!["env", "--project", "p", "--stage", "dev"],
        vec!["env", "--project", "p", "--format", "json"],
        vec!["project", "list"],
        vec!["login", "mfa", "--code", "123456"],
        vec!["login", "session", "--code", "123456"],
        vec!["exec", "--project", "p", "--stage", "dev", "--", "true"],
        vec![
            "exec",
            "--project",
            "p",
            "--stage",
            "session",
            "--",
            "sh",
            "-c",
            "exit 3",
        ],
        vec!["service", "install", "--dry-run", "--platform", "systemd"],
        vec!["token", "--project", "p", "--stage", "dev"],
    ];
    for args in &commands {
        let out = h.run(args);
        outputs.push((
            format!("credport {}", args.join(" ")),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    assert!(d.wait_output("credentials issued", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(200));
    outputs.push(("daemon log".into(), d.output()));
    assert!(
        d.output().contains("TRACE") || d.output().contains("DEBUG"),
        "ran at the most verbose level"
    );
    for (what, text) in &outputs {
        for c in CANARIES {
            assert!(!text.contains(c), "{what} printed canary {c}:\n{text}");
        }
    }
}
