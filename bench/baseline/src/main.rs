//! The baseline credport is compared with: an idiomatic axum server doing the minimum the
//! hot credential fetch needs and nothing more.
//!
//! `GET /v1/credentials/{project}/{stage}` checks `Authorization` in constant time against
//! `cpt1.<b64 project>.<b64 stage>.<b64 HMAC-SHA256(key, "cpt1\0project\0stage")>` (the
//! token is re-derived per request, as credport does) and answers a fixed JSON body with the
//! same headers credport sends. No Host check, no logging, no metrics, no file watching.
//!
//! Usage: baseline --body-file FILE [--key-hex HEX] [--listen 127.0.0.1:0]
//! Prints `token <token for bench/dev>` and `listening on http://ADDR` on stderr.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

struct AppState {
    key: [u8; 32],
    body: String,
}

fn token(key: &[u8; 32], project: &str, stage: &str) -> String {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    m.update(b"cpt1\0");
    m.update(project.as_bytes());
    m.update(&[0]);
    m.update(stage.as_bytes());
    let mac: [u8; 32] = m.finalize().into_bytes().into();
    format!("cpt1.{}.{}.{}", B64.encode(project), B64.encode(stage), B64.encode(mac))
}

async fn credentials(
    State(state): State<Arc<AppState>>,
    Path((project, stage)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(presented) = headers.get(header::AUTHORIZATION) else {
        return (StatusCode::UNAUTHORIZED, "{\"code\":\"MissingToken\"}").into_response();
    };
    let expected = token(&state.key, &project, &stage);
    let ok = presented.as_bytes().len() == expected.len()
        && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()));
    if !ok {
        return (StatusCode::UNAUTHORIZED, "{\"code\":\"InvalidToken\"}").into_response();
    }
    let mut resp = (StatusCode::OK, state.body.clone()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut body_file = None;
    let mut key_hex = None;
    let mut listen = "127.0.0.1:0".to_string();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--body-file" => body_file = args.next(),
            "--key-hex" => key_hex = args.next(),
            "--listen" => listen = args.next().expect("--listen ADDR"),
            other => {
                eprintln!("baseline: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let body = match body_file {
        Some(f) => std::fs::read_to_string(f).expect("reading --body-file"),
        None => "{}".to_string(),
    };
    let mut key = [0u8; 32];
    if let Some(h) = key_hex {
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).expect("--key-hex: 64 hex digits");
        }
    } else {
        // Not secret: the baseline only needs a fixed key per run.
        let seed = std::process::id().to_le_bytes();
        for (i, b) in key.iter_mut().enumerate() {
            *b = seed[i % 4] ^ (i as u8).wrapping_mul(151);
        }
    }
    let state = Arc::new(AppState { key, body });
    eprintln!("token {}", token(&state.key, "bench", "dev"));
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async move {
            let app = Router::new()
                .route("/v1/credentials/{project}/{stage}", get(credentials))
                .with_state(state);
            let listener = tokio::net::TcpListener::bind(&listen).await.expect("bind");
            eprintln!("listening on http://{}", listener.local_addr().expect("addr"));
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app).await.expect("serve");
        });
}
