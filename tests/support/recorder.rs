//! A recording proxy in front of moto's STS: a loopback HTTP forwarder that keeps every
//! request's form body, decoded, so a test can say which call carried which parameters
//! (`Policy` on the last `AssumeRole` of a chain, `GetFederationToken` for bare keys).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One STS request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct StsCall {
    /// `Action`.
    pub action: String,
    /// Every form parameter, decoded.
    pub params: BTreeMap<String, String>,
}

impl StsCall {
    /// A parameter's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// `PolicyArns.member.N.arn`, in order.
    pub fn policy_arns(&self) -> Vec<String> {
        (1..)
            .map_while(|n| self.get(&format!("PolicyArns.member.{n}.arn")))
            .map(str::to_string)
            .collect()
    }
}

/// Forwards to `upstream` and records each request; stops on drop.
pub struct RecordingProxy {
    /// The proxy's URL (what `AWS_ENDPOINT_URL_STS` points at).
    pub url: String,
    calls: Arc<Mutex<Vec<StsCall>>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl RecordingProxy {
    /// Starts the proxy on a free loopback port.
    pub fn start(upstream: String) -> RecordingProxy {
        let calls: Arc<Mutex<Vec<StsCall>>> = Arc::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let recorded = calls.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client = credport::sources::http::client_builder().build().unwrap();
                let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
                    let (client, recorded, upstream) =
                        (client.clone(), recorded.clone(), upstream.clone());
                    async move { forward(req, &client, &recorded, &upstream).await }
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
        RecordingProxy {
            url,
            calls,
            _shutdown: tx,
        }
    }

    /// Every request so far, in order.
    pub fn calls(&self) -> Vec<StsCall> {
        self.calls.lock().unwrap().clone()
    }

    /// The requests of one action.
    pub fn of(&self, action: &str) -> Vec<StsCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.action == action)
            .collect()
    }

    /// The actions so far, for failure messages.
    pub fn summary(&self) -> String {
        self.calls()
            .iter()
            .map(|c| format!("{} {:?}", c.action, c.params))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

async fn forward(
    req: axum::extract::Request,
    client: &reqwest::Client,
    recorded: &Mutex<Vec<StsCall>>,
    upstream: &str,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let params: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    recorded.lock().unwrap().push(StsCall {
        action: params.get("Action").cloned().unwrap_or_default(),
        params,
    });
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = client.request(parts.method.clone(), format!("{upstream}{path}"));
    for (k, v) in parts.headers.iter() {
        if k != "host" {
            out = out.header(k, v);
        }
    }
    let mut resp = axum::response::Response::new(axum::body::Body::empty());
    match out.body(body).send().await {
        Ok(r) => {
            *resp.status_mut() = r.status();
            for (k, v) in r.headers() {
                if k != "transfer-encoding" && k != "content-length" {
                    resp.headers_mut().insert(k, v.clone());
                }
            }
            *resp.body_mut() = axum::body::Body::from(r.bytes().await.unwrap_or_default());
        }
        Err(_) => *resp.status_mut() = axum::http::StatusCode::BAD_GATEWAY,
    }
    resp
}
