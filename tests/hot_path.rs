//! The hot path does no I/O that a change did not cause: a scope served from the daemon's
//! per-scope cache reads no file and looks up no environment variable, whether it is
//! declared in config.toml or registered by directory, and an edit of a project file is
//! still served at once.
//!
//! The daemon counts its file reads and environment lookups in `/metrics`
//! (`credport_file_reads_total`, `credport_env_lookups_total`); these tests read them
//! around 10,000 requests on one keep-alive connection.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

/// One keep-alive HTTP/1.1 connection to the daemon.
struct Client {
    reader: BufReader<TcpStream>,
    host: String,
}

impl Client {
    fn connect(d: &Daemon) -> Self {
        let s = TcpStream::connect(d.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::new(s),
            host: d.addr.to_string(),
        }
    }

    /// GETs `path` and returns (status, body).
    fn get(&mut self, path: &str, token: Option<&str>) -> (u16, String) {
        let auth = token.map_or(String::new(), |t| format!("Authorization: {t}\r\n"));
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}User-Agent: hot-path-test\r\n\r\n",
            self.host
        );
        self.reader.get_mut().write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).unwrap();
            if h == "\r\n" || h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        (status, String::from_utf8(body).unwrap())
    }

    /// The value of an unlabelled counter in `/metrics`.
    fn counter(&mut self, name: &str) -> u64 {
        let (status, text) = self.get("/metrics", None);
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
            .trim()
            .parse::<f64>()
            .unwrap() as u64
    }
}

fn key_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["AccessKeyId"].as_str().unwrap().to_string()
}

const SERVERLESS: &str = r#"service: shop
provider:
  name: aws
  stage: dev
  profile: ${self:custom.profiles.${sls:stage}}
custom:
  profiles:
    dev: devAccount
    qa: devAccount
"#;

/// A HOME with two session profiles, `decl` declared in config.toml and `shop`
/// registered by directory.
fn setup() -> (TestHome, std::path::PathBuf) {
    let h = TestHome::new();
    h.write_credentials(&format!(
        "{}{}",
        session_profile("devAccount", "DEV1"),
        session_profile("otherAccount", "OTHER1")
    ));
    // Not a test of trust or the guard: the edits below remap `dev` on purpose.
    h.write_config(&format!(
        "{TRUST_ALL}{}",
        fixture(
            r#"
            [projects.decl]
            stages = { dev = "devAccount" }
            "#
        )
    ));
    let shop = h.path().join("shop");
    std::fs::create_dir_all(&shop).unwrap();
    std::fs::write(shop.join("serverless.yml"), SERVERLESS).unwrap();
    let out = h.run(&["project", "add", shop.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "credport project add failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (h, shop)
}

fn explain(h: &TestHome, d: &Daemon, shop: &Path) -> String {
    format!(
        "daemon output:\n{}\nserverless.yml:\n{}\nconfig.toml:\n{}",
        d.output(),
        std::fs::read_to_string(shop.join("serverless.yml")).unwrap_or_default(),
        std::fs::read_to_string(h.config()).unwrap_or_default()
    )
}

#[test]
fn ten_thousand_hot_requests_read_no_file_and_no_environment() {
    let (h, shop) = setup();
    let d = h.serve();
    let decl = h.token("decl", "dev");
    let reg = h.token("shop", "dev");
    let mut c = Client::connect(&d);
    // Warm up: the first request of each scope resolves it and starts watching the
    // project files; that start counts as one change, resolved once more.
    for _ in 0..3 {
        for (path, tok) in [
            ("/v1/credentials/decl/dev", &decl),
            ("/v1/credentials/shop/dev", &reg),
        ] {
            let (status, body) = c.get(path, Some(tok));
            assert_eq!(status, 200, "{path}: {body}\n{}", explain(&h, &d, &shop));
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let reads = c.counter("credport_file_reads_total");
    let lookups = c.counter("credport_env_lookups_total");
    for i in 0..10_000 {
        let (path, tok) = if i % 2 == 0 {
            ("/v1/credentials/decl/dev", &decl)
        } else {
            ("/v1/credentials/shop/dev", &reg)
        };
        let (status, body) = c.get(path, Some(tok));
        assert_eq!(status, 200, "request {i} {path}: {body}");
        assert_eq!(key_of(&body), "ASIADEV1", "request {i} {path}");
    }
    let reads_after = c.counter("credport_file_reads_total");
    let lookups_after = c.counter("credport_env_lookups_total");
    assert_eq!(
        reads_after - reads,
        0,
        "files read while serving 10,000 cached requests\n{}",
        explain(&h, &d, &shop)
    );
    assert_eq!(
        lookups_after - lookups,
        0,
        "environment lookups while serving 10,000 cached requests"
    );

    // An edit of the project file is served at once (within the watcher's debounce).
    let changes = c.counter("credport_project_file_changes_total");
    write_atomic(
        &shop.join("serverless.yml"),
        &SERVERLESS.replace("dev: devAccount", "dev: otherAccount"),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut served = String::new();
    let mut requests = 0;
    while Instant::now() < deadline {
        let (status, body) = c.get("/v1/credentials/shop/dev", Some(&reg));
        assert_eq!(status, 200, "{body}");
        requests += 1;
        served = key_of(&body);
        if served == "ASIAOTHER1" {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        served,
        "ASIAOTHER1",
        "the edited mapping was not served within 5 s\n{}",
        explain(&h, &d, &shop)
    );
    assert!(
        c.counter("credport_project_file_changes_total") > changes,
        "the edit was not seen as a project-file change"
    );
    assert!(
        c.counter("credport_file_reads_total") > reads_after,
        "the edit was served without reading the file again?"
    );
    eprintln!("edit served after {requests} request(s)");
    // The declared scope is unaffected by the project file.
    let (status, body) = c.get("/v1/credentials/decl/dev", Some(&decl));
    assert_eq!((status, key_of(&body).as_str()), (200, "ASIADEV1"));
}

#[test]
fn creating_a_nearer_project_file_counts_as_a_change() {
    // A `.credport.toml` that appears beside serverless.yml takes over the mapping: the
    // resolution probed that path (missing) and watches it.
    let (h, shop) = setup();
    let d = h.serve();
    let reg = h.token("shop", "dev");
    let mut c = Client::connect(&d);
    let (status, body) = c.get("/v1/credentials/shop/dev", Some(&reg));
    assert_eq!(status, 200, "{body}\n{}", explain(&h, &d, &shop));
    assert_eq!(key_of(&body), "ASIADEV1");
    std::thread::sleep(Duration::from_millis(200));
    write_atomic(
        &shop.join(".credport.toml"),
        &fixture(
            r#"
            project = "shop"
            [stages]
            dev = "otherAccount"
            "#,
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut served = String::new();
    while Instant::now() < deadline && served != "ASIAOTHER1" {
        let (status, body) = c.get("/v1/credentials/shop/dev", Some(&reg));
        assert_eq!(status, 200, "{body}\n{}", explain(&h, &d, &shop));
        served = key_of(&body);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        served,
        "ASIAOTHER1",
        "the new .credport.toml was not served\n{}",
        explain(&h, &d, &shop)
    );
}
