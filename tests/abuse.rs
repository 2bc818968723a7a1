//! Hostile local clients and broken files against the real daemon.
//!
//! Every attack runs against a spawned `credport serve` on 127.0.0.1 while a "valid
//! client" keeps fetching its own scope's credentials over fresh connections (as the SDKs
//! do) and records each latency. Each test asserts what the attack must not do (crash the
//! daemon, leak another scope's keys, grow memory past a bound) and what the valid client
//! must keep getting. The numbers are printed (`cargo test --test abuse -- --nocapture`)
//! and recorded in docs/RELIABILITY.md.
//!
//! The attacks run one at a time (a process-wide lock): on a 2-core machine two floods at
//! once would measure each other.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use credport::server::Limits;
use support::*;

/// The limits `credport serve` runs with.
fn limits() -> Limits {
    Limits::default()
}

/// The valid client's p99 bound: it catches a stall at the scale of a lockout (the header
/// timeout is 5 s), not latency. The suite runs the Docker engine, release builds and
/// serverless next to this test on 2 cores, so p99 under attack is 4-55 ms there; latency
/// itself is measured by the benchmark (`scripts/bench`), and the p99 seen here is printed
/// and recorded in docs/RELIABILITY.md.
const P99_BOUND: Duration = Duration::from_millis(250);
/// Resident memory the daemon may reach during any attack.
const RSS_BOUND_KIB: u64 = 64 * 1024;

const CONFIG: &str = r#"[projects.P]
default_stage = "dev"
stages = { dev = "devAccount", prod = "prodAccount" }
"#;
const DEV: &str = "/v1/credentials/P/dev";
const PROD: &str = "/v1/credentials/P/prod";

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

struct Setup {
    _home: TestHome,
    d: Daemon,
    dev: String,
    prod: String,
}

fn setup() -> Setup {
    let mut home = TestHome::new();
    home.extra_env
        .insert("AWS_ENDPOINT_URL_STS".into(), "http://127.0.0.1:9".into());
    // The attacks log every refusal at info; keep the log quiet enough not to measure it.
    home.extra_env
        .insert("RUST_LOG".into(), "credport=warn".into());
    home.write_credentials(&format!(
        "{}{}",
        session_profile("devAccount", "DEV1"),
        session_profile("prodAccount", "PROD1")
    ));
    home.write_config(&format!("{GUARD_OFF}{CONFIG}"));
    let dev = home.token("P", "dev");
    let prod = home.token("P", "prod");
    let d = home.serve();
    assert_eq!(d.get(DEV, Some(&dev)).status, 200);
    Setup {
        _home: home,
        d,
        dev,
        prod,
    }
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// One request on a fresh connection; `Err` when the connection was refused, closed
/// without an answer, or timed out.
fn try_request(addr: SocketAddr, raw: &[u8]) -> Result<Response, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(raw).map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) => {}
        // A reset after a complete answer still is an answer.
        Err(e) if !buf.is_empty() => {
            let _ = e;
        }
        Err(e) => return Err(format!("read: {e}")),
    }
    if buf.is_empty() {
        return Err("closed without an answer".into());
    }
    Ok(parse_response(&buf))
}

fn raw_get(addr: SocketAddr, path: &str, token: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// The measured client: GETs its own scope every 5 ms on fresh connections.
struct ValidClient {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(Vec<Duration>, Vec<String>)>,
}

struct Measured {
    n: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    refused: Vec<String>,
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "valid client: {} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, refused {}",
            self.n,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3,
            self.refused.len()
        )
    }
}

impl ValidClient {
    fn start(addr: SocketAddr, token: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let raw = raw_get(addr, DEV, token);
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut lat = Vec::new();
            let mut refused = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = try_request(addr, &raw);
                let el = t.elapsed();
                match r {
                    Ok(r) if r.status == 200 && r.body.contains("ASIADEV1") => lat.push(el),
                    Ok(r) => refused.push(format!("status {} {}", r.status, r.body)),
                    Err(e) => refused.push(e),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (lat, refused)
        });
        ValidClient { stop, handle }
    }

    fn finish(self) -> Measured {
        self.stop.store(true, Ordering::Relaxed);
        let (mut lat, refused) = self.handle.join().unwrap();
        lat.sort();
        let pick = |q: f64| {
            lat.get(((lat.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        Measured {
            n: lat.len(),
            p50: pick(0.50),
            p99: pick(0.99),
            max: lat.last().copied().unwrap_or_default(),
            refused,
        }
    }

    /// Stops, prints, and asserts the promise: never refused, p99 under the bound.
    fn assert_served(self, attack: &str) -> Measured {
        let m = self.finish();
        println!("[{attack}] {m}");
        assert!(m.n >= 3, "[{attack}] the valid client barely ran: {m}");
        assert!(
            m.refused.is_empty(),
            "[{attack}] the valid client was refused: {m}; first: {:?}",
            &m.refused[..m.refused.len().min(3)]
        );
        assert!(m.p99 < P99_BOUND, "[{attack}] {m}");
        m
    }
}

fn assert_alive(s: &Setup) {
    let r = s.d.get(DEV, Some(&s.dev));
    assert_eq!(r.status, 200, "daemon no longer serves: {}", r.body);
    assert!(s.d.get("/healthz", None).status == 200);
}

fn report_rss(attack: &str, pid: u32, before: u64, peak: u64) {
    let after = rss_kib(pid);
    println!(
        "[{attack}] daemon VmRSS before {before} KiB, peak {peak} KiB, after {after} KiB (bound {RSS_BOUND_KIB} KiB)"
    );
    assert!(
        peak.max(after) < RSS_BOUND_KIB,
        "[{attack}] memory bound exceeded"
    );
}

#[test]
fn slowloris_connections_are_cut_at_the_header_timeout() {
    let _g = serial();
    let s = setup();
    let pid = s.d.child.id();
    let before = rss_kib(pid);
    let valid = ValidClient::start(s.d.addr, &s.dev);
    const N: usize = 300;
    let start = Instant::now();
    let mut conns: Vec<Option<TcpStream>> = (0..N)
        .map(|_| {
            let mut c = TcpStream::connect(s.d.addr).unwrap();
            c.write_all(
                format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Slow: ", s.d.addr).as_bytes(),
            )
            .unwrap();
            c.set_nonblocking(true).unwrap();
            Some(c)
        })
        .collect();
    let mut closed_at = vec![None; N];
    let mut peak = before;
    // One more header byte per connection per second, for up to 9 s.
    let mut last_tick = 0;
    while start.elapsed() < Duration::from_secs(9) && closed_at.iter().any(Option::is_none) {
        let tick = start.elapsed().as_secs();
        let write = tick != last_tick;
        last_tick = tick;
        for (i, slot) in conns.iter_mut().enumerate() {
            let Some(c) = slot else { continue };
            let mut buf = [0u8; 512];
            let gone = match c.read(&mut buf) {
                Ok(_) => true, // EOF, or an error answer before closing
                Err(e) if e.kind() == ErrorKind::WouldBlock => write && c.write_all(b"a").is_err(),
                Err(_) => true,
            };
            if gone {
                closed_at[i] = Some(start.elapsed());
                *slot = None;
            }
        }
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let closed: Vec<Duration> = closed_at.iter().flatten().copied().collect();
    let first = closed.iter().min().copied().unwrap_or_default();
    let last = closed.iter().max().copied().unwrap_or_default();
    println!(
        "[slowloris] {N} connections: {} cut, first at {:.2} s, last at {:.2} s",
        closed.len(),
        first.as_secs_f64(),
        last.as_secs_f64()
    );
    valid.assert_served("slowloris");
    assert_eq!(closed.len(), N, "some slowloris connections were never cut");
    assert!(
        first >= limits().header_timeout - Duration::from_millis(500),
        "cut too early: {first:?}"
    );
    assert!(
        last <= limits().header_timeout + Duration::from_millis(2500),
        "cut too late: {last:?}"
    );
    report_rss("slowloris", pid, before, peak);
    assert_alive(&s);
}

/// What an idle flood saw: connect failures, and for each connection the daemon closed,
/// how long after its own connect that happened.
struct Flood {
    connect_failed: usize,
    connect_time: Duration,
    lifetimes: Vec<Duration>,
    still_open: usize,
}

/// Opens `n` connections that never send a byte and watches them until all are closed or
/// the header timeout plus 3 s after the last connect.
fn idle_flood(addr: SocketAddr, n: usize, pid: u32, peak: &mut u64) -> Flood {
    let start = Instant::now();
    let mut conns: Vec<Option<(TcpStream, Instant)>> = Vec::with_capacity(n);
    let mut connect_failed = 0;
    let mut lifetimes = Vec::new();
    // Polls every open connection once; closed ones are recorded with their lifetime.
    let poll = |conns: &mut Vec<Option<(TcpStream, Instant)>>, lifetimes: &mut Vec<Duration>| {
        for slot in conns.iter_mut() {
            let Some((c, at)) = slot else { continue };
            let mut buf = [0u8; 64];
            match c.read(&mut buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                _ => {
                    lifetimes.push(at.elapsed());
                    *slot = None;
                }
            }
        }
    };
    for i in 0..n {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(c) => {
                c.set_nonblocking(true).unwrap();
                conns.push(Some((c, Instant::now())));
            }
            Err(_) => connect_failed += 1,
        }
        if i % 64 == 63 {
            poll(&mut conns, &mut lifetimes);
        }
    }
    let connect_time = start.elapsed();
    let deadline = Instant::now() + limits().header_timeout + Duration::from_secs(3);
    while Instant::now() < deadline && conns.iter().any(Option::is_some) {
        poll(&mut conns, &mut lifetimes);
        *peak = (*peak).max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    Flood {
        connect_failed,
        connect_time,
        still_open: conns.iter().filter(|c| c.is_some()).count(),
        lifetimes,
    }
}

impl Flood {
    fn longest(&self) -> Duration {
        self.lifetimes.iter().max().copied().unwrap_or_default()
    }
}

impl std::fmt::Display for Flood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let early = self
            .lifetimes
            .iter()
            .filter(|l| **l < limits().header_timeout - Duration::from_millis(500))
            .count();
        write!(
            f,
            "connected in {:.2} s ({} failed); closed by the daemon: {} ({} before the header timeout), longest lived {:.2} s; still open {}",
            self.connect_time.as_secs_f64(),
            self.connect_failed,
            self.lifetimes.len(),
            early,
            self.longest().as_secs_f64(),
            self.still_open
        )
    }
}

#[test]
fn idle_connections_below_the_limit_do_not_disturb_clients() {
    let _g = serial();
    let s = setup();
    let pid = s.d.child.id();
    let before = rss_kib(pid);
    let mut peak = before;
    let valid = ValidClient::start(s.d.addr, &s.dev);
    // Leave room for the valid client's own connections.
    let n = limits().max_connections - 24;
    let f = idle_flood(s.d.addr, n, pid, &mut peak);
    println!("[idle {n}] {f}; daemon fds after {}", open_fds(pid));
    valid.assert_served(&format!("idle {n}"));
    assert_eq!(f.connect_failed, 0);
    assert_eq!(
        f.still_open, 0,
        "idle connections must be closed at the header timeout"
    );
    assert!(
        f.longest() < limits().header_timeout + Duration::from_millis(2500),
        "{f}"
    );
    report_rss(&format!("idle {n}"), pid, before, peak);
    assert_alive(&s);
}

/// 2,000 idle connections: twice the connection limit. At the limit each new connection
/// closes the connection idle the longest (never one with a request in flight), so the
/// valid client keeps being served while the flood holds every slot; the rest are closed
/// at the header timeout, and memory stays bounded.
#[test]
fn idle_connections_over_the_limit_never_lock_out_clients() {
    let _g = serial();
    let s = setup();
    let pid = s.d.child.id();
    let before = rss_kib(pid);
    let mut peak = before;
    let valid = ValidClient::start(s.d.addr, &s.dev);
    let n = 2000;
    assert!(
        n > limits().max_connections,
        "the flood must exceed the limit"
    );
    let f = idle_flood(s.d.addr, n, pid, &mut peak);
    println!("[idle {n}] {f}");
    valid.assert_served(&format!("idle {n}"));
    assert_eq!(f.still_open, 0, "every idle connection is closed: {f}");
    assert!(
        f.longest() < limits().header_timeout + Duration::from_millis(2500),
        "{f}"
    );
    report_rss(&format!("idle {n}"), pid, before, peak);
    assert_alive(&s);
}

#[test]
fn oversized_heads_paths_and_malformed_tokens_never_yield_credentials() {
    let _g = serial();
    let s = setup();
    let a = s.d.addr;
    let pid = s.d.child.id();
    let before = rss_kib(pid);
    let valid = ValidClient::start(a, &s.dev);
    let big = "a".repeat(20 * 1024);
    let huge_token = format!("{}{}", s.dev, "A".repeat(100 * 1024));
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("20 KiB header", format!("GET {DEV} HTTP/1.1\r\nHost: {a}\r\nAuthorization: {}\r\nX-Big: {big}\r\n\r\n", s.dev).into_bytes()),
        ("200 headers", format!("GET {DEV} HTTP/1.1\r\nHost: {a}\r\nAuthorization: {}\r\n{many_headers}\r\n", s.dev).into_bytes()),
        ("20 KiB path", format!("GET /v1/credentials/P/{big} HTTP/1.1\r\nHost: {a}\r\nAuthorization: {}\r\n\r\n", s.dev).into_bytes()),
        ("8 KiB path", format!("GET /v1/credentials/P/{} HTTP/1.1\r\nHost: {a}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n", &big[..8000], s.dev).into_bytes()),
        ("100 KiB token", format!("GET {DEV} HTTP/1.1\r\nHost: {a}\r\nAuthorization: {huge_token}\r\n\r\n").into_bytes()),
        ("1 MiB body", {
            let mut v = format!("POST {DEV} HTTP/1.1\r\nHost: {a}\r\nAuthorization: {}\r\nContent-Length: 1048576\r\n\r\n", s.dev).into_bytes();
            v.extend(std::iter::repeat_n(b'x', 1 << 20));
            v
        }),
        ("CR inside token", format!("GET {DEV} HTTP/1.1\r\nHost: {a}\r\nAuthorization: {}\rX-Evil: 1\r\nConnection: close\r\n\r\n", s.dev).into_bytes()),
        ("LF injects a 2nd Host", format!("GET {DEV} HTTP/1.1\r\nHost: {a}\r\nAuthorization: {}\nHost: evil.example\r\nConnection: close\r\n\r\n", s.dev).into_bytes()),
        ("LF injects a 2nd Authorization", format!("GET {PROD} HTTP/1.1\r\nHost: {a}\r\nAuthorization: {}\nAuthorization: {}\r\nConnection: close\r\n\r\n", s.dev, s.prod).into_bytes()),
        ("obs-fold token", format!("GET {DEV} HTTP/1.1\r\nHost: {a}\r\nAuthorization: cpt1\r\n .x\r\nConnection: close\r\n\r\n").into_bytes()),
        ("encoded CRLF token", format!("GET {DEV} HTTP/1.1\r\nHost: {a}\r\nAuthorization: {}%0d%0aX: 1\r\nConnection: close\r\n\r\n", s.dev).into_bytes()),
        ("non-UTF-8 token", {
            let mut v = format!("GET {DEV} HTTP/1.1\r\nHost: {a}\r\nAuthorization: cpt1.").into_bytes();
            v.extend_from_slice(b"\xff\xfe\xc3\x28");
            v.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
            v
        }),
        ("NUL in token", format!("GET {DEV} HTTP/1.1\r\nHost: {a}\r\nAuthorization: {}\0\r\nConnection: close\r\n\r\n", s.dev).into_bytes()),
        ("Bearer prefix", format!("GET {DEV} HTTP/1.1\r\nHost: {a}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n", s.dev).into_bytes()),
        ("empty token", format!("GET {DEV} HTTP/1.1\r\nHost: {a}\r\nAuthorization:\r\nConnection: close\r\n\r\n").into_bytes()),
        ("binary garbage", (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect()),
        ("request line only", b"GET\r\n\r\n".to_vec()),
    ];
    for (what, raw) in cases {
        let t = Instant::now();
        let r = try_request(a, &raw);
        let shown = match &r {
            Ok(r) => format!(
                "{} {}",
                r.status,
                r.body.chars().take(90).collect::<String>()
            ),
            Err(e) => e.clone(),
        };
        println!(
            "[malformed] {what}: {shown} ({:.1} ms)",
            t.elapsed().as_secs_f64() * 1e3
        );
        if let Ok(r) = &r {
            assert!(
                matches!(r.status, 400 | 401 | 403 | 404 | 405 | 413 | 414 | 431),
                "{what}: {shown}"
            );
            assert!(!r.body.contains("SECRET"), "{what}: {shown}");
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    valid.assert_served("malformed");
    report_rss("malformed", pid, before, rss_kib(pid));
    assert_alive(&s);
}

#[test]
fn methods_http10_and_pipelining() {
    let _g = serial();
    let s = setup();
    let a = s.d.addr;
    for m in [
        "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "FOO",
    ] {
        let r = request(
            a,
            m,
            DEV,
            &[("Host", &a.to_string()), ("Authorization", &s.dev)],
        );
        assert_eq!(r.status, 405, "{m}: {}", r.body);
        assert_eq!(r.json()["Code"], "MethodNotAllowed", "{m}");
    }
    // CONNECT needs an authority-form target; hyper refuses the origin form.
    let r = request(a, "CONNECT", DEV, &[("Host", &a.to_string())]);
    assert!(
        matches!(r.status, 400 | 405),
        "CONNECT: {} {}",
        r.status,
        r.body
    );
    // HEAD is GET without a body: allowed, and it carries no keys.
    let r = try_request(
        a,
        format!(
            "HEAD {DEV} HTTP/1.1\r\nHost: {a}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            s.dev
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "HEAD has no body: {}", r.body);

    // HTTP/1.0 without Host: refused; with Host: served, then closed.
    let r = send_raw(
        a,
        format!("GET {DEV} HTTP/1.0\r\nAuthorization: {}\r\n\r\n", s.dev).as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["Code"], "InvalidHost");
    let r = send_raw(
        a,
        format!(
            "GET {DEV} HTTP/1.0\r\nHost: {a}\r\nAuthorization: {}\r\n\r\n",
            s.dev
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Ten pipelined requests on one connection: ten answers, in order.
    let mut raw = String::new();
    let mut expect = Vec::new();
    for i in 0..10 {
        let (path, tok, status) = match i % 3 {
            0 => (DEV, s.dev.as_str(), 200),
            1 => ("/healthz", "", 200),
            _ => (PROD, s.dev.as_str(), 403),
        };
        let close = if i == 9 { "Connection: close\r\n" } else { "" };
        raw.push_str(&format!(
            "GET {path} HTTP/1.1\r\nHost: {a}\r\nAuthorization: {tok}\r\nX-Seq: {i}\r\n{close}\r\n"
        ));
        expect.push((status, path));
    }
    let mut c = TcpStream::connect(a).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(raw.as_bytes()).unwrap();
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).unwrap();
    let answers = split_responses(&buf);
    assert_eq!(answers.len(), 10, "{}", String::from_utf8_lossy(&buf));
    for (i, ((status, path), r)) in expect.iter().zip(&answers).enumerate() {
        assert_eq!(r.status, *status, "answer {i} for {path}: {}", r.body);
        match (i % 3, path) {
            (0, _) => assert!(r.body.contains("ASIADEV1"), "{i}: {}", r.body),
            (1, _) => assert!(r.body.contains("\"status\""), "{i}: {}", r.body),
            _ => assert_eq!(r.json()["Code"], "AccessDenied"),
        }
    }
    println!("[pipelining] 10 requests, 10 answers in order");
}

/// Splits a byte stream of HTTP/1.1 responses with `content-length` bodies.
fn split_responses(mut buf: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let total = (end + 4 + len).min(buf.len());
        out.push(parse_response(&buf[..total]));
        buf = &buf[total..];
    }
    out
}

#[test]
fn scope_isolation_against_path_and_header_tricks() {
    let _g = serial();
    let s = setup();
    let a = s.d.addr;
    let host = a.to_string();
    let dev = s.dev.as_str();
    // (what, request target, extra headers); all with the dev token.
    #[allow(clippy::type_complexity)]
    let tricks: Vec<(&str, String, Vec<(&str, String)>)> = vec![
        ("dot-dot", format!("{DEV}/../prod"), vec![]),
        (
            "dot-dot in the middle",
            "/v1/credentials/P/../P/prod".into(),
            vec![],
        ),
        ("dot segment", "/v1/credentials/P/./prod".into(), vec![]),
        ("%2F", "/v1/credentials/P%2Fprod".into(), vec![]),
        ("%2f lower", "/v1/credentials/P%2fprod".into(), vec![]),
        (
            "percent-encoded letters",
            "/v1/credentials/P/%70rod".into(),
            vec![],
        ),
        ("%2e%2e", "/v1/credentials/P/dev/%2e%2e/prod".into(), vec![]),
        ("double slash", "/v1/credentials//P/prod".into(), vec![]),
        ("leading double slash", format!("/{PROD}"), vec![]),
        ("trailing slash", format!("{PROD}/"), vec![]),
        ("case change PROD", "/v1/credentials/P/PROD".into(), vec![]),
        ("case change DEV", "/v1/credentials/P/DEV".into(), vec![]),
        ("case change p", "/v1/credentials/p/dev".into(), vec![]),
        ("query stage=prod", format!("{DEV}?stage=prod"), vec![]),
        ("prod with query", format!("{PROD}?stage=dev"), vec![]),
        ("fragment", format!("{PROD}#dev"), vec![]),
        ("fragment hides dot-dot", format!("{DEV}#/../prod"), vec![]),
        ("semicolon", format!("{PROD};dev"), vec![]),
        ("NUL escape", format!("{PROD}%00"), vec![]),
        ("backslash", "/v1/credentials/P\\prod".into(), vec![]),
        ("absolute form", format!("http://{a}{PROD}"), vec![]),
        (
            "absolute form, other host",
            format!("http://evil.example{PROD}"),
            vec![],
        ),
        ("dev token on prod", PROD.into(), vec![]),
        (
            "dev then prod Authorization",
            PROD.into(),
            vec![("Authorization", s.prod.clone())],
        ),
        (
            "X-Forwarded-Host",
            PROD.into(),
            vec![("X-Forwarded-Host", "x".into())],
        ),
        (
            "X-Original-URL",
            DEV.into(),
            vec![("X-Original-URL", PROD.into())],
        ),
    ];
    for (what, target, extra) in &tricks {
        let mut raw = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {dev}\r\n");
        for (k, v) in extra {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        raw.push_str("Connection: close\r\n\r\n");
        let r = try_request(a, raw.as_bytes());
        let shown = match &r {
            Ok(r) => format!(
                "{} {}",
                r.status,
                r.body.chars().take(100).collect::<String>()
            ),
            Err(e) => e.clone(),
        };
        println!("[scope] {what}: {target} -> {shown}");
        if let Ok(r) = &r {
            assert!(
                !r.body.contains("PROD1"),
                "{what}: prod's keys leaked: {shown}"
            );
            if r.status == 200 {
                // Only the dev scope's own path (a query or fragment is ignored).
                assert!(r.body.contains("ASIADEV1"), "{what}: {shown}");
                assert!(
                    target.starts_with(&format!("{DEV}?"))
                        || target.starts_with(&format!("{DEV}#"))
                        || target == DEV,
                    "{what}: 200 on another path: {shown}"
                );
            }
        }
    }
    // The duplicate-Authorization case is refused as such.
    let r = request(
        a,
        "GET",
        PROD,
        &[
            ("Host", &host),
            ("Authorization", dev),
            ("Authorization", &s.prod),
        ],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // And prod's own token does work, so the checks above are not vacuous.
    assert!(s.d.get(PROD, Some(&s.prod)).body.contains("PROD1"));
}

#[test]
fn wrong_token_storm_is_answered_without_starving_the_valid_client() {
    let _g = serial();
    let s = setup();
    let a = s.d.addr;
    let pid = s.d.child.id();
    let before = rss_kib(pid);
    let valid = ValidClient::start(a, &s.dev);
    const TOTAL: usize = 10_000;
    const THREADS: usize = 4;
    let start = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|w| {
            let dev = s.dev.clone();
            std::thread::spawn(move || {
                let mut counts = std::collections::BTreeMap::<u16, usize>::new();
                // Keep-alive batches of 50 pipelined requests: the fastest an attacker on
                // the machine can guess.
                let per = TOTAL / THREADS;
                let mut sent = 0;
                while sent < per {
                    let batch = 50.min(per - sent);
                    let mut raw = String::new();
                    for i in 0..batch {
                        // Forged MACs of the right shape, for the dev scope.
                        let mut forged = dev.clone();
                        forged.truncate(forged.len() - 8);
                        forged.push_str(&format!("{:08}", w * per + sent + i));
                        let close = if i + 1 == batch { "Connection: close\r\n" } else { "" };
                        raw.push_str(&format!("GET {DEV} HTTP/1.1\r\nHost: {a}\r\nAuthorization: {forged}\r\n{close}\r\n"));
                    }
                    let mut c = TcpStream::connect(a).unwrap();
                    c.write_all(raw.as_bytes()).unwrap();
                    let mut buf = Vec::new();
                    let _ = c.read_to_end(&mut buf);
                    for r in split_responses(&buf) {
                        *counts.entry(r.status).or_default() += 1;
                    }
                    sent += batch;
                }
                counts
            })
        })
        .collect();
    let mut counts = std::collections::BTreeMap::<u16, usize>::new();
    let mut peak = before;
    for w in workers {
        for (k, v) in w.join().unwrap() {
            *counts.entry(k).or_default() += v;
        }
        peak = peak.max(rss_kib(pid));
    }
    let el = start.elapsed();
    println!(
        "[storm] {TOTAL} wrong tokens in {:.2} s ({:.0}/s): statuses {counts:?}",
        el.as_secs_f64(),
        TOTAL as f64 / el.as_secs_f64()
    );
    assert_eq!(counts.get(&200), None, "a forged token was accepted");
    assert_eq!(
        counts.values().sum::<usize>(),
        TOTAL,
        "every guess is answered"
    );
    // No lockout or rate limit exists today: every guess gets its 401.
    assert_eq!(counts.get(&401), Some(&TOTAL));
    // No rate limit: the storm competes with the valid client for the same two cores, so
    // its p99 is the finding here (RELIABILITY.md); it must still never be refused and stay
    // under the JS SDK's 1 s timeout.
    let m = valid.finish();
    println!("[storm] {m}");
    assert!(
        m.refused.is_empty(),
        "[storm] refused: {:?}",
        &m.refused[..m.refused.len().min(3)]
    );
    assert!(m.p99 < Duration::from_secs(1), "[storm] {m}");
    report_rss("storm", pid, before, peak);
    assert_alive(&s);
}

fn count(out: &str, needle: &str) -> usize {
    out.matches(needle).count()
}

/// Waits until the daemon's log holds `needle` more than `seen` times.
fn wait_log(d: &Daemon, needle: &str, seen: usize) -> String {
    let start = Instant::now();
    loop {
        let out = d.output();
        if count(&out, needle) > seen {
            return out;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no log line containing {needle:?} within 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Spawns the daemon as `nobody` so a chmod 000 file is really unreadable (the tests
/// run as root in CI), by giving the whole temp home to that user.
fn serve_unprivileged(home: &TestHome) -> Daemon {
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    let chown = |p: &std::path::Path| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        unsafe { libc::chown(c.as_ptr(), NOBODY, NOBODY) };
    };
    fn walk(p: &std::path::Path, f: &dyn Fn(&std::path::Path)) {
        f(p);
        if p.is_dir() && !p.is_symlink() {
            for e in std::fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), f);
            }
        }
    }
    walk(home.path(), &chown);
    let mut cmd = home.command();
    cmd.args(["serve", "--listen", "127.0.0.1:0"]);
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgid(NOBODY) != 0 || libc::setuid(NOBODY) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let output = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let out = output.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("listening on http://") {
                let _ = tx.send(rest.parse::<SocketAddr>().ok());
            }
            let mut o = out.lock().unwrap();
            o.push_str(&line);
            o.push('\n');
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!(
                "unprivileged daemon did not start: {}",
                output.lock().unwrap()
            )
        });
    Daemon {
        child,
        addr,
        output,
        command: shown,
        files: vec![home.credentials(), home.config()],
    }
}

/// Broken files: each fault keeps the last good snapshot served, logs the file and the
/// reason, and a good save afterwards is picked up again.
#[test]
fn broken_files_keep_the_last_good_snapshot() {
    let _g = serial();
    let mut home = TestHome::new();
    home.extra_env
        .insert("AWS_ENDPOINT_URL_STS".into(), "http://127.0.0.1:9".into());
    let good = format!(
        "{}{}",
        session_profile("devAccount", "DEV1"),
        session_profile("prodAccount", "PROD1")
    );
    home.write_credentials(&good);
    home.write_config(&format!("{GUARD_OFF}{CONFIG}"));
    let dev = home.token("P", "dev");
    let root = unsafe { libc::geteuid() } == 0;
    let d = if root {
        serve_unprivileged(&home)
    } else {
        home.serve()
    };
    let creds = home.credentials();
    let shown = creds.display().to_string();
    let serves_dev = |what: &str| {
        let t = Instant::now();
        let r = d.get(DEV, Some(&dev));
        assert_eq!(r.status, 200, "{what}: {}", r.body);
        assert!(r.body.contains("ASIADEV1"), "{what}: {}", r.body);
        assert!(t.elapsed() < Duration::from_secs(1), "{what}: slow answer");
    };
    let restore = |tag: &str| {
        let _ = std::fs::remove_dir_all(&creds);
        let _ = std::fs::remove_file(&creds);
        write_atomic(&creds, &good.replace("DEV1", tag));
        d.wait_until(Duration::from_secs(3), DEV, &dev, |r| r.body.contains(tag));
        write_atomic(&creds, &good);
        d.wait_until(Duration::from_secs(3), DEV, &dev, |r| {
            r.body.contains("ASIADEV1")
        });
    };
    const FAILED: &str = "reload failed; keeping the last good version";
    #[allow(clippy::type_complexity)]
    let mut faults: Vec<(&str, Box<dyn Fn()>, &str)> = vec![
        (
            "not UTF-8",
            Box::new(|| {
                let mut bytes = good.clone().into_bytes();
                bytes.extend_from_slice(b"[x]\nk = \xff\xfe\n");
                let tmp = creds.with_extension("tmp");
                std::fs::write(&tmp, bytes).unwrap();
                std::fs::rename(&tmp, &creds).unwrap();
            }),
            "not valid UTF-8",
        ),
        (
            "100 MB",
            Box::new(|| {
                let tmp = creds.with_extension("tmp");
                let f = std::fs::File::create(&tmp).unwrap();
                f.set_len(100 * 1024 * 1024).unwrap();
                drop(f);
                std::fs::rename(&tmp, &creds).unwrap();
            }),
            "too large",
        ),
        (
            "a directory",
            Box::new(|| {
                std::fs::remove_file(&creds).unwrap();
                std::fs::create_dir(&creds).unwrap();
            }),
            "not a regular file",
        ),
        (
            "a FIFO",
            Box::new(|| {
                std::fs::remove_file(&creds).unwrap();
                let c = std::ffi::CString::new(creds.as_os_str().as_encoded_bytes()).unwrap();
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            }),
            "not a regular file",
        ),
        (
            "a parse error",
            Box::new(|| write_atomic(&creds, &format!("{good}[broken\n"))),
            "section header without closing",
        ),
    ];
    if root {
        // Only meaningful when the daemon cannot bypass permissions (it runs as nobody).
        faults.push((
            "unreadable (chmod 000)",
            Box::new(|| {
                use std::os::unix::fs::PermissionsExt;
                let tmp = creds.with_extension("tmp");
                std::fs::write(&tmp, good.replace("DEV1", "NEVER")).unwrap();
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o000)).unwrap();
                std::fs::rename(&tmp, &creds).unwrap();
            }),
            "Permission denied",
        ));
    } else {
        faults.push((
            "unreadable (chmod 000)",
            Box::new(|| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o000)).unwrap();
            }),
            "Permission denied",
        ));
    }
    for (i, (what, inject, reason)) in faults.iter().enumerate() {
        let seen = count(&d.output(), FAILED);
        let t = Instant::now();
        inject();
        let out = wait_log(&d, FAILED, seen);
        let line = out
            .lines()
            .rfind(|l| l.contains(FAILED))
            .unwrap()
            .to_string();
        println!(
            "[fault] {what}: logged after {:.0} ms: {line}",
            t.elapsed().as_secs_f64() * 1e3
        );
        assert!(
            line.contains(&shown),
            "{what}: the log names the file: {line}"
        );
        assert!(
            line.contains(reason),
            "{what}: the log gives the reason: {line}"
        );
        assert!(!line.contains("SECRET"), "{what}: {line}");
        serves_dev(what);
        restore(&format!("FIX{i}"));
    }

    // A broken credport config keeps the last good one.
    let cfg_seen = count(&d.output(), "config reload failed");
    let cfg_path = home.config();
    write_atomic(
        &cfg_path,
        &fixture(
            r#"
            [projects.P
            stages = nope
            "#,
        ),
    );
    let out = wait_log(&d, "config reload failed", cfg_seen);
    let line = out
        .lines()
        .rfind(|l| l.contains("config reload failed"))
        .unwrap();
    println!("[fault] broken config: {line}");
    assert!(line.contains(&cfg_path.display().to_string()), "{line}");
    serves_dev("broken config");
    assert_eq!(d.get(PROD, Some(&home.token("P", "prod"))).status, 200);
}
