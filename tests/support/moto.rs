//! moto's server as the STS emulator, and a counting proxy in front of it.
//!
//! `moto_server` comes from the test virtualenv that `scripts/test-deps` builds; without
//! it the tests fail with instructions (they never skip).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{repo_root, request};

/// A moto server on a loopback port, killed on drop.
pub struct Moto {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
}

fn moto_bin() -> PathBuf {
    let p = std::env::var_os("CREDPORT_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache/venv"))
        .join("bin/moto_server");
    assert!(
        p.exists(),
        "{} is missing: run `bash scripts/test-deps` first (the README's test command does)",
        p.display()
    );
    p
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Moto {
    /// Starts moto on a free port and waits until it answers.
    pub fn start() -> Moto {
        let mut m = Moto {
            child: None,
            port: free_port(),
        };
        m.restart();
        m
    }

    /// The endpoint URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops moto (the port then refuses connections).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts moto on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new(moto_bin())
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        self.child = Some(child);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(addr).is_ok() {
                let r = request(addr, "GET", "/moto-api/", &[("Host", "127.0.0.1")]);
                if r.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not start within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback HTTP proxy that forwards to `upstream` and counts STS actions.
pub struct CountingProxy {
    /// The proxy's URL.
    pub url: String,
    counts: Arc<Mutex<BTreeMap<String, usize>>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl CountingProxy {
    /// Starts the proxy on a free port.
    pub fn start(upstream: String) -> CountingProxy {
        let counts: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let c = counts.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client = credport::sources::http::client_builder().build().unwrap();
                let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
                    let (client, c, upstream) = (client.clone(), c.clone(), upstream.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = axum::body::to_bytes(body, 1 << 20)
                            .await
                            .unwrap_or_default();
                        let text = String::from_utf8_lossy(&body);
                        let action = text
                            .split('&')
                            .find_map(|kv| kv.strip_prefix("Action="))
                            .unwrap_or("other")
                            .to_string();
                        *c.lock().unwrap().entry(action).or_default() += 1;
                        let mut out = client.request(
                            parts.method.clone(),
                            format!(
                                "{upstream}{}",
                                parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.as_str())
                                    .unwrap_or("/")
                            ),
                        );
                        for (k, v) in parts.headers.iter() {
                            if k != "host" {
                                out = out.header(k, v);
                            }
                        }
                        match out.body(body).send().await {
                            Ok(r) => {
                                let status = r.status();
                                let headers = r.headers().clone();
                                let bytes = r.bytes().await.unwrap_or_default();
                                let mut resp =
                                    axum::response::Response::new(axum::body::Body::from(bytes));
                                *resp.status_mut() = status;
                                for (k, v) in headers.iter() {
                                    if k != "transfer-encoding" && k != "content-length" {
                                        resp.headers_mut().insert(k, v.clone());
                                    }
                                }
                                resp
                            }
                            Err(_) => {
                                let mut resp =
                                    axum::response::Response::new(axum::body::Body::empty());
                                *resp.status_mut() = axum::http::StatusCode::BAD_GATEWAY;
                                resp
                            }
                        }
                    }
                });
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(l, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        CountingProxy {
            url,
            counts,
            _shutdown: tx,
        }
    }

    /// How many requests of `action` went through.
    pub fn count(&self, action: &str) -> usize {
        self.counts
            .lock()
            .unwrap()
            .get(action)
            .copied()
            .unwrap_or(0)
    }
}
