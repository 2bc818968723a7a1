//! Project-file trust, end to end with the real binary: a cloned repository whose
//! `serverless.yml` maps `dev` to a sensitive profile is refused until `credport allow`
//! (without a terminal: the refusal names the command; on a terminal, driven through a pty:
//! a y/N question), a mapping edit is refused again with `old -> new` while an unrelated
//! edit is not, the daemon answers 403 `Untrusted` for a registered directory until the
//! allow (without a restart), credport's own config needs no allow, and
//! `[trust] project_files = "all"` turns the check off.
//!
//! The profiles hold session keys, which credport serves as written: no STS is involved.

mod support;

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// The cloned repository's service file: `dev` is mapped to the admin profile.
const CLONED: &str = r#"service: orders
provider:
  name: aws
  stage: dev
  profile: ${self:custom.profiles.${sls:stage}}
custom:
  profiles:
    dev: adminAccount
    prod: prodAccount
functions:
  hello:
    handler: handler.hello
"#;

/// A HOME with session-key profiles and a fresh clone in `<home>/clone`.
struct Repo {
    home: TestHome,
    dir: PathBuf,
}

impl Repo {
    fn new() -> Repo {
        let home = TestHome::new();
        home.write_credentials(&format!(
            "{}{}{}",
            session_profile("adminAccount", "ADMIN"),
            session_profile("prodAccount", "PROD"),
            session_profile("devAccount", "DEV"),
        ));
        let dir = home.path().join("clone");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("serverless.yml"), CLONED).unwrap();
        Repo { home, dir }
    }

    /// `credport ARGS` in the clone, stdin not a terminal.
    fn run(&self, args: &[&str]) -> Output {
        let mut c = self.home.command();
        c.current_dir(&self.dir).stdin(Stdio::null()).args(args);
        let out = c.output().expect("run credport");
        eprintln!(
            "$ credport {}\n  exit {}\n  stdout: {}\n  stderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn trust_file(&self) -> PathBuf {
        self.home.state_dir().join("trust.toml")
    }

    fn canonical_dir(&self) -> String {
        std::fs::canonicalize(&self.dir)
            .unwrap()
            .display()
            .to_string()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `exec` that writes the served AccessKeyId to `marker` (through the endpoint, as an SDK).
fn exec_fetch(r: &Repo, marker: &Path) -> Output {
    let script = format!(
        "curl -fsS -H \"Authorization: $(cat \"$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE\")\" \"$AWS_CONTAINER_CREDENTIALS_FULL_URI\" > {}",
        marker.display()
    );
    r.run(&["exec", "--", "sh", "-c", &script])
}

#[test]
fn a_cloned_repo_is_refused_without_a_terminal_and_served_after_allow() {
    let r = Repo::new();
    let marker = r.home.path().join("fetched.json");
    let allow = format!("credport allow --dir {} --stage dev", r.canonical_dir());

    for args in [
        vec!["resolve"],
        vec!["env", "--stage", "dev"],
        vec!["exec", "--", "true"],
    ] {
        let out = r.run(&args);
        assert!(!out.status.success(), "{args:?} ran an untrusted mapping");
        let err = stderr(&out);
        assert!(
            err.contains("maps stage 'dev' to profile 'adminAccount'") && err.contains(&allow),
            "{args:?}: the refusal must show the mapping and the command: {err}"
        );
        assert!(
            err.contains("no terminal"),
            "{args:?}: says why it did not ask: {err}"
        );
    }
    let out = exec_fetch(&r, &marker);
    assert!(!out.status.success());
    assert!(!marker.exists(), "the command ran although refused");
    // A profile given on the command line is the user's: no trust needed.
    for args in [
        vec!["resolve", "--aws-profile", "devAccount"],
        vec!["exec", "--profile", "devAccount", "--", "true"],
    ] {
        let out = r.run(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    assert!(!r.trust_file().exists(), "a refusal recorded something");

    // `doctor` finds it, with the fix.
    let untrusted_findings = |out: &Output| -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
        let list = v
            .as_array()
            .or_else(|| v["findings"].as_array())
            .cloned()
            .unwrap_or_else(|| panic!("doctor --json shape: {v}"));
        list.into_iter()
            .filter(|f| f["check"] == "untrusted")
            .collect()
    };
    let doctor = r.run(&["doctor", "--json"]);
    let found = untrusted_findings(&doctor);
    assert!(
        found
            .iter()
            .any(|f| f["problem"].as_str().is_some_and(|p| p.contains(&allow))),
        "{found:?}"
    );

    // `allow` shows what the files map and records it.
    let out = r.run(&["allow"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("dev -> adminAccount"), "{text}");
    assert!(text.contains("prod -> prodAccount"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(r.trust_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "trust records are private");

    assert!(untrusted_findings(&r.run(&["doctor", "--json"])).is_empty());
    let out = exec_fetch(&r, &marker);
    assert!(out.status.success(), "{}", stderr(&out));
    let served = std::fs::read_to_string(&marker).unwrap();
    assert!(served.contains("ASIAADMIN"), "{served}");
    assert!(r.run(&["resolve"]).status.success());
    assert!(r.run(&["env", "--stage", "prod"]).status.success());

    // `deny` forgets: refused again.
    let out = r.run(&["deny", "--stage", "dev"]);
    assert!(
        stdout(&out).contains("forgot dev -> adminAccount"),
        "{}",
        stdout(&out)
    );
    assert!(!r.run(&["resolve"]).status.success());
    assert!(r.run(&["resolve", "--stage", "prod"]).status.success());
}

#[test]
fn a_mapping_edit_is_refused_again_and_an_unrelated_edit_is_not() {
    let r = Repo::new();
    assert!(r.run(&["allow", "--stage", "dev"]).status.success());
    assert!(r.run(&["resolve"]).status.success());
    // `env` also writes serverless's stand-in profiles for every stage a later command may
    // run: prod's mapping needs trust too.
    let out = r.run(&["env", "--stage", "dev"]);
    assert!(
        !out.status.success(),
        "env served prod's stand-in untrusted"
    );
    assert!(
        stderr(&out).contains("--stage prod") && !stderr(&out).contains("--stage dev`"),
        "{}",
        stderr(&out)
    );

    // Unrelated: a new function, a comment, another stage's region.
    let unrelated = CLONED.replace(
        "functions:\n",
        "# a teammate's edit\nfunctions:\n  bye:\n    handler: handler.bye\n",
    );
    std::fs::write(r.dir.join("serverless.yml"), &unrelated).unwrap();
    let out = r.run(&["resolve"]);
    assert!(
        out.status.success(),
        "an edit that keeps the mapping needs no allow: {}",
        stderr(&out)
    );

    // The mapping changes: dev now points at prodAccount.
    let remapped = unrelated.replace("dev: adminAccount", "dev: prodAccount");
    std::fs::write(r.dir.join("serverless.yml"), &remapped).unwrap();
    for args in [vec!["resolve"], vec!["exec", "--", "true"]] {
        let out = r.run(&args);
        assert!(!out.status.success(), "{args:?} used a changed mapping");
        let err = stderr(&out);
        assert!(
            err.contains("adminAccount -> prodAccount"),
            "{args:?}: the refusal says old -> new: {err}"
        );
        assert!(err.contains("credport allow --dir"), "{err}");
    }
    let out = r.run(&["allow", "--stage", "dev"]);
    assert!(
        stdout(&out).contains("was adminAccount -> prodAccount"),
        "{}",
        stdout(&out)
    );
    assert!(r.run(&["resolve"]).status.success());

    // Reverting is a change too: one record per (directory, stage).
    std::fs::write(r.dir.join("serverless.yml"), CLONED).unwrap();
    let out = r.run(&["resolve"]);
    assert!(
        stderr(&out).contains("prodAccount -> adminAccount"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_daemon_answers_403_untrusted_for_a_registered_directory_until_allowed() {
    let r = Repo::new();
    let d = r.home.serve();
    let out = r.run(&["project", "add", &r.dir.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let token = r.home.token("orders", "dev");
    let path = "/v1/credentials/orders/dev";

    let refused = d.get(path, Some(&token));
    assert_eq!(refused.status, 403, "{}", refused.body);
    let v = refused.json();
    assert_eq!(v["Code"], "Untrusted", "{v}");
    let msg = v["Message"].as_str().unwrap();
    assert!(
        msg.contains("adminAccount") && msg.contains("credport allow --dir"),
        "{msg}"
    );
    assert!(
        d.wait_output("trust refused", Duration::from_secs(5)),
        "the refusal is logged"
    );
    // `status` shows the error a request gets now.
    let st = r.run(&["status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).expect("status --json");
    let dev = st["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["project"] == "orders" && s["stage"] == "dev")
        .unwrap_or_else(|| panic!("orders/dev missing from status: {st}"))
        .clone();
    let error = dev["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("403 Untrusted") && error.contains("credport allow --dir"),
        "{dev}"
    );

    // Allowed while the daemon runs: served without a restart, at once (a refusal re-reads
    // the records, so the next request never races the watcher).
    assert!(r.run(&["allow", "--stage", "dev"]).status.success());
    let ok = d.get(path, Some(&token));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("ASIAADMIN"), "{}", ok.body);
    // Another stage of the same directory is still untrusted.
    let prod = d.get(
        "/v1/credentials/orders/prod",
        Some(&r.home.token("orders", "prod")),
    );
    assert_eq!(prod.status, 403, "{}", prod.body);

    // The watcher sees `deny` too.
    assert!(r.run(&["deny"]).status.success());
    let (gone, _) = d.wait_until(Duration::from_secs(5), path, &token, |resp| {
        resp.status == 403
    });
    assert_eq!(gone.json()["Code"], "Untrusted");

    // The journal (`credport log`) has both decisions, once the daemon reloaded them.
    let events = |name: &str| -> Vec<serde_json::Value> {
        let out = r.run(&["log", "--json", "--project", "orders"]);
        assert!(out.status.success(), "credport log: {}", stderr(&out));
        stdout(&out)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == name)
            .collect()
    };
    let allowed = events("allowed");
    assert!(
        allowed
            .iter()
            .any(|e| e["stage"] == "dev" && e["profile"] == "adminAccount"),
        "no 'allowed' event for orders/dev: {allowed:?}"
    );
    assert!(
        events("denied").iter().any(|e| e["stage"] == "dev"),
        "no 'denied' event for orders/dev"
    );

    // An edit that remaps the stage after an allow: refused, naming old -> new.
    assert!(r.run(&["allow", "--stage", "dev"]).status.success());
    d.wait_until(Duration::from_secs(5), path, &token, |resp| {
        resp.status == 200
    });
    std::fs::write(
        r.dir.join("serverless.yml"),
        CLONED.replace("dev: adminAccount", "dev: devAccount"),
    )
    .unwrap();
    // The daemon sees the edit through its project-file watcher (debounced, like the AWS
    // files), so the refusal comes within the reload propagation time, not at once.
    let (changed, _) = d.wait_until(Duration::from_secs(5), path, &token, |resp| {
        resp.status == 403
    });
    assert_eq!(changed.status, 403, "{}", changed.body);
    assert!(
        changed.body.contains("adminAccount -> devAccount"),
        "{}",
        changed.body
    );
}

#[test]
fn config_mappings_need_no_allow() {
    let r = Repo::new();
    r.home.write_config(
        "[projects.orders]\ndefault_stage = \"dev\"\nstages = { dev = \"devAccount\" }\n",
    );
    // The config wins for the stage it maps: no project file decides, nothing to trust.
    let out = r.run(&["resolve"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("\"profile\":\"devAccount\""),
        "{}",
        stdout(&out)
    );
    let marker = r.home.path().join("fetched.json");
    let out = exec_fetch(&r, &marker);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        std::fs::read_to_string(&marker)
            .unwrap()
            .contains("ASIADEV")
    );
    let d = r.home.serve();
    let ok = d.get(
        "/v1/credentials/orders/dev",
        Some(&r.home.token("orders", "dev")),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    // The stage the config does not map still comes from the file: refused.
    let out = r.run(&["resolve", "--stage", "prod"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("'prodAccount'"), "{}", stderr(&out));
    assert!(!r.trust_file().exists());
}

#[test]
fn trust_all_turns_the_check_off() {
    let r = Repo::new();
    r.home.write_config(&fixture(
        r#"
        [trust]
        project_files = "all"
        "#,
    ));
    let out = r.run(&["resolve"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("adminAccount"));
    let d = r.home.serve();
    assert!(
        r.run(&["project", "add", &r.dir.display().to_string()])
            .status
            .success()
    );
    let ok = d.get(
        "/v1/credentials/orders/dev",
        Some(&r.home.token("orders", "dev")),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
}

/// A typo is an error naming the key, never a silent "ask" or "all".
#[test]
fn a_trust_setting_typo_is_an_error_naming_the_line() {
    let r = Repo::new();
    r.home.write_config(&fixture(
        r#"
        [trust]
        project_files = "some"
        "#,
    ));
    let out = r.run(&["resolve"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("line 2"), "{}", stderr(&out));
}

/// Runs credport on a pty (stdin, stdout and stderr), answering `answer` once the y/N
/// question appears; returns the exit status and everything the terminal showed.
fn on_pty(r: &Repo, args: &[&str], answer: &str) -> (std::process::ExitStatus, String) {
    let (mut master, mut slave) = (0, 0);
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut c: Command = r.home.command();
    c.current_dir(&r.dir)
        .args(args)
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    let mut child = c.spawn().expect("spawn credport on a pty");
    drop(c); // closes the parent's copies of the slave
    let mut reader = std::fs::File::from(master.try_clone().unwrap());
    let mut writer = std::fs::File::from(master);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // EIO once the child and every copy of the slave are gone.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0
                || tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
            {
                break;
            }
        }
    });
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answered = false;
    loop {
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(50)) {
            seen.push_str(&chunk);
        }
        if !answered && seen.contains("[y/N]") {
            writer.write_all(answer.as_bytes()).unwrap();
            answered = true;
        }
        if let Some(status) = child.try_wait().unwrap() {
            while let Ok(chunk) = rx.recv_timeout(Duration::from_millis(200)) {
                seen.push_str(&chunk);
            }
            eprintln!("$ credport {} (on a pty)\n{seen}", args.join(" "));
            return (status, seen);
        }
        assert!(
            Instant::now() < deadline,
            "credport {args:?} on a pty did not finish; it showed:\n{seen}"
        );
    }
}

#[test]
fn on_a_terminal_exec_asks_once_and_records_a_yes() {
    let r = Repo::new();
    let marker = r.home.path().join("ran");
    let touch = format!("touch {}", marker.display());

    // No: refused, nothing ran, nothing recorded.
    let (status, seen) = on_pty(&r, &["exec", "--", "sh", "-c", &touch], "n\n");
    assert!(!status.success(), "{seen}");
    assert!(
        seen.contains("dev -> adminAccount"),
        "the question shows the mapping: {seen}"
    );
    assert!(seen.contains("not trusted; nothing ran"), "{seen}");
    assert!(!marker.exists());
    assert!(!r.trust_file().exists());

    // Yes: it runs, and the record makes the next run (without a terminal) silent.
    let (status, seen) = on_pty(&r, &["exec", "--", "sh", "-c", &touch], "y\n");
    assert!(status.success(), "{seen}");
    assert!(
        seen.contains("orders/dev -> profile adminAccount"),
        "{seen}"
    );
    assert!(marker.exists(), "the command did not run after yes: {seen}");
    let records = std::fs::read_to_string(r.trust_file()).unwrap();
    assert!(
        records.contains("profile = \"adminAccount\"") && records.contains("stage = \"dev\""),
        "{records}"
    );
    let out = r.run(&["exec", "--", "true"]);
    assert!(out.status.success(), "asked once: {}", stderr(&out));

    // A changed mapping asks again, showing old -> new.
    std::fs::write(
        r.dir.join("serverless.yml"),
        CLONED.replace("dev: adminAccount", "dev: devAccount"),
    )
    .unwrap();
    let (status, seen) = on_pty(&r, &["resolve"], "y\n");
    assert!(status.success(), "{seen}");
    assert!(
        seen.contains("changed: adminAccount -> devAccount"),
        "{seen}"
    );
}

#[test]
fn env_stand_ins_follow_the_trust_records() {
    let r = Repo::new();
    // Both stages' stand-ins are checked: trust, not the guard, is under test (GUARD_OFF).
    r.home.write_config(GUARD_OFF);
    let _d = r.home.serve();
    assert!(r.run(&["allow"]).status.success());
    let out = r.run(&["env", "--stage", "dev"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let file = r.home.runtime_dir().join("standin/orders/credentials");
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    let wait = |what: &str, ok: &dyn Fn(&str) -> bool| {
        let start = Instant::now();
        while !ok(&read()) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{what}; {} holds:\n{}",
                file.display(),
                read()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait("both stages' stand-ins are written", &|t| {
        t.contains("[adminAccount]") && t.contains("[prodAccount]")
    });
    // Forgetting prod takes its session out of the file the shell's serverless reads.
    assert!(r.run(&["deny", "--stage", "prod"]).status.success());
    wait("prod's stand-in is removed after deny", &|t| {
        t.contains("[adminAccount]") && !t.contains("[prodAccount]")
    });
}
