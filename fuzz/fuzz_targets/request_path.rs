//! The HTTP surface (guard, raw path parsing, token check, scope binding) through the
//! accept loop's own entry, `App::respond`: every answer has an expected status and a
//! JSON body, and only the exact scope's token on the exact scope's path yields 200 with
//! that scope's keys; prod's keys never leave for anything else.
#![no_main]

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, header};
use credport::config::ConfigStore;
use credport::profiles::AwsPaths;
use credport::profiles::store::ProfileStore;
use credport::server::{AppState, Parts};
use credport::server::routes::App;
use credport::sources::Resolver;
use credport::sources::cache::Sessions;
use credport::sources::http::HttpConfig;
use credport::sources::sso::SsoClient;
use credport::sources::sts::StsClient;
use credport::tokens::TokenKey;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;

const HOST: &str = "127.0.0.1:9911";

struct World {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    state: Arc<AppState>,
    dev: String,
    prod: String,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        std::fs::write(
            &creds,
            "[devAccount]\naws_access_key_id = ASIADEVKEY\naws_secret_access_key = SECRETDEV\naws_session_token = TOKENDEV\n\
             [prodAccount]\naws_access_key_id = ASIAPRODKEY\naws_secret_access_key = SECRETPROD\naws_session_token = TOKENPROD\n",
        )
        .unwrap();
        let config = credport::config::parse(
            "[projects.P]\ndefault_stage = \"dev\"\nstages = { dev = \"devAccount\", prod = \"prodAccount\", gone = \"missing\" }\n",
        )
        .unwrap();
        let profiles = Arc::new(ProfileStore::open(AwsPaths {
            credentials: creds,
            config: dir.path().join("config"),
        }));
        let key = TokenKey::load_or_create(&dir.path().join("token-key")).unwrap();
        let dev = key.token("P", "dev").expose().to_string();
        let prod = key.token("P", "prod").expose().to_string();
        let http = HttpConfig::default();
        let sessions = Sessions::new(
            StsClient::new(http.clone()).unwrap(),
            SsoClient::new(http).unwrap(),
            credport::env::Snapshot::default(),
        );
        let state = AppState::new(Parts {
            resolver: Resolver::new(
                profiles.clone(),
                sessions,
                dir.path().to_path_buf(),
                credport::env::Snapshot::default(),
            ),
            profiles,
            allowed_hosts: HashSet::from([HOST.to_string(), format!("localhost:9911")]),
            config: Arc::new(ConfigStore::fixed(config)),
            // Projects registered by directory: none here.
            registered: Arc::new(ConfigStore::fixed(Default::default())),
            tokens: key,
            instance: "fuzz".into(),
            env: credport::env::Snapshot::default(),
            // No trust records: project-file mappings are refused, config ones served.
            trust: Arc::new(credport::trust::TrustStore::empty()),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        World {
            _dir: dir,
            rt,
            state,
            dev,
            prod,
        }
    })
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "get",
    "X-CUSTOM",
];

fuzz_target!(|data: &[u8]| {
    let w = world();
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // First line: the request target; further lines: `name: value` headers.
    let mut lines = rest.split(|b| *b == b'\n');
    let target = lines.next().unwrap_or(b"/");
    let method =
        Method::from_bytes(METHODS[(flags & 0x0f) as usize % METHODS.len()].as_bytes()).unwrap();
    let Ok(target) = std::str::from_utf8(target) else {
        return;
    };
    let Ok(mut req) = Request::builder()
        .method(method.clone())
        .uri(target)
        .body(Body::empty())
    else {
        return; // hyper answers 400 before the router for what `Uri` cannot parse
    };
    let h = req.headers_mut();
    if flags & 0x10 != 0 {
        h.insert(header::HOST, HeaderValue::from_static(HOST));
    }
    let auth = match (flags >> 5) & 0x3 {
        0 => None,
        1 => Some(w.dev.clone()),
        2 => Some(w.prod.clone()),
        _ => Some(format!("{}x", w.dev)),
    };
    if let Some(a) = &auth {
        h.append(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
    }
    for line in lines {
        let Some(i) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&line[..i]),
            HeaderValue::from_bytes(line[i + 1..].trim_ascii()),
        ) else {
            continue;
        };
        h.append(n, v);
    }
    let hosts: Vec<_> = h.get_all(header::HOST).iter().cloned().collect();
    let auths: Vec<_> = h.get_all(header::AUTHORIZATION).iter().cloned().collect();
    let browser = h
        .keys()
        .any(|k| k == "origin" || k == "referer" || k.as_str().starts_with("sec-fetch-"));
    let path = req.uri().path().to_string();

    let resp = w.rt.block_on(App::new(w.state.clone()).respond(req, None));
    let status = resp.status().as_u16();
    assert!(
        matches!(status, 200 | 400 | 401 | 403 | 404 | 405 | 500 | 503),
        "unexpected status {status}"
    );
    // Every answer is JSON, but for /metrics (Prometheus text, no secrets, no auth).
    let metrics = status == 200 && path == "/metrics";
    let expected: &[u8] = if metrics {
        b"text/plain; version=0.0.4"
    } else {
        b"application/json"
    };
    assert_eq!(
        resp.headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
        Some(expected)
    );
    let body =
        w.rt.block_on(resp.into_body().collect())
            .unwrap()
            .to_bytes();
    let body = String::from_utf8_lossy(&body);
    if !body.is_empty() && !metrics {
        serde_json::from_str::<serde_json::Value>(&body).expect("body is JSON");
    }
    assert!(!body.contains("SECRETPROD") || status == 200, "{body}");
    if status == 200 && path != "/healthz" && !metrics {
        assert!(method == Method::GET || method == Method::HEAD);
        assert!(!browser);
        assert_eq!(hosts.len(), 1);
        assert_eq!(auths.len(), 1, "exactly one Authorization header");
        let presented = auths[0].to_str().unwrap();
        if path == "/v1/credentials/P/dev" {
            assert_eq!(presented, w.dev);
            assert!(!body.contains("PROD"), "dev scope got prod's keys: {body}");
        } else if path == "/v1/credentials/P/prod" {
            assert_eq!(presented, w.prod);
        } else {
            panic!("200 on {path:?}");
        }
    }
});
