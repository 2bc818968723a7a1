//! The audit of every credentials request: who asked (the connection's process or address,
//! see [`crate::peer`]) and what they got or why not, written to three places: the
//! daemon's log (`credentials issued` / `credentials refused`, with `pid`, `exe`, `cmd`),
//! the journal that `credport log` reads ([`crate::journal`]), and the scope's last
//! issuance that `credport status` shows.
//!
//! The connection's process lookup starts when its first credentials request arrives
//! ([`begin`]) and runs once per connection, beside the request. Before answering, a
//! request waits at most [`WAIT_IN_REQUEST`] for it: the client still holds its connection
//! then, so even a process that exits right after its fetch is named. A slower lookup
//! finishes in the background and the audit is written once it is known.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use axum::response::Response;
use time::OffsetDateTime;

use super::AppState;
use super::error::ApiError;
use super::scopes::Hot;
use crate::journal::{Event, What};
use crate::peer::{Client, Identity, Peer, RELAY_CLIENT_HEADER};

/// How long a request waits for its connection's process lookup before it is answered.
pub const WAIT_IN_REQUEST: Duration = Duration::from_millis(100);

/// How long the audit of a request waits for the lookup in the background at most.
const WAIT_AT_MOST: Duration = Duration::from_secs(5);

/// What `issue` served, handed to the audit as an extension of its response. Its text is
/// shared with the scope's cache entry, so an issuance copies no string.
#[derive(Clone)]
pub struct Issuance {
    /// The scope's cache entry: binding (project, stage, profile) and counters.
    pub hot: Arc<Hot>,
    /// The served key's hint (`...ABCD`, never the key).
    pub key: Arc<str>,
    /// The `Expiration` served, as the body writes it.
    pub expires: Arc<str>,
    /// When it was served.
    pub at: OffsetDateTime,
}

/// Starts the lookup of the connection's process (once per connection), so it runs
/// while the request is served.
pub fn begin(peer: Option<&Arc<Peer>>) {
    if let Some(p) = peer {
        p.start();
    }
}

/// Audits one credentials request: `result` is what it is about to answer (an
/// [`Issuance`] extension of a success is taken out of it), `scope` the scope its token
/// was valid for. Waits at most [`WAIT_IN_REQUEST`] for the process.
pub async fn record(
    state: &Arc<AppState>,
    peer: Option<Arc<Peer>>,
    headers: &HeaderMap,
    path: &str,
    scope: Option<(&str, &str)>,
    result: &mut Result<Response, ApiError>,
) {
    let agent = headers
        .get(header::USER_AGENT)
        .map_or(&b""[..], |v| v.as_bytes());
    let relay_for = headers
        .get(RELAY_CLIENT_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let pending = match result {
        Ok(resp) => {
            let Some(i) = resp.extensions_mut().remove::<Issuance>() else {
                return;
            };
            // The escaped User-Agent is kept per scope while the client's stays the same.
            let user_agent = i.hot.stats.issued(agent, i.at);
            Pending::Issued(i, user_agent)
        }
        Err(e) => Pending::Refused {
            at: OffsetDateTime::now_utc(),
            scope: scope.map(|(p, s)| (p.to_string(), s.to_string())),
            status: e.status.as_u16(),
            code: e.code,
            message: e.message.clone(),
            path: crate::peer::escape_cut(path, 200),
            user_agent: crate::peer::escape_cut(&String::from_utf8_lossy(agent), 200),
        },
    };
    let Some(peer) = peer else {
        pending.finish(state, None);
        return;
    };
    match peer.client(WAIT_IN_REQUEST, relay_for.as_deref()).await {
        Some(client) => pending.finish(state, Some(client)),
        None => {
            let state = state.clone();
            tokio::spawn(async move {
                let client = match peer.client(WAIT_AT_MOST, relay_for.as_deref()).await {
                    Some(c) => c,
                    None => Arc::new(Client::new(
                        peer.conn().peer,
                        &Identity::Unknown(crate::peer::unknown::TIMED_OUT),
                        relay_for.as_deref(),
                    )),
                };
                pending.finish(&state, Some(client));
            });
        }
    }
}

/// A request's audit, waiting for its client.
enum Pending {
    Issued(Issuance, Arc<str>),
    Refused {
        at: OffsetDateTime,
        scope: Option<(String, String)>,
        status: u16,
        code: &'static str,
        message: String,
        path: String,
        user_agent: String,
    },
}

impl Pending {
    /// Writes the log line, the journal event and the scope's last client.
    fn finish(self, state: &AppState, client: Option<Arc<Client>>) {
        let none = Client::default();
        let c: &Client = client.as_deref().unwrap_or(&none);
        let peer = client.as_ref().map(|c| c.address.as_str());
        match self {
            Pending::Issued(i, user_agent) => {
                let b = &i.hot.binding;
                // `&str` values: quoted and escaped by the text format, JSON strings in JSON logs.
                tracing::info!(
                    project = %b.project,
                    stage = %b.stage,
                    profile = %b.profile,
                    key = %i.key,
                    expires = %i.expires,
                    user_agent = &*user_agent,
                    pid = c.pid,
                    exe = c.exe.as_deref(),
                    cmd = c.cmd.as_deref(),
                    peer,
                    process_unknown = c.unknown.as_deref(),
                    relay_for = c.relay_for.as_deref(),
                    "credentials issued"
                );
                if let Some(client) = &client {
                    i.hot.stats.set_client(i.at, client.clone());
                }
                let n = &i.hot.names;
                let mut e = Event::at(
                    What::Issued {
                        profile: n.profile.clone(),
                        expires: i.expires.clone(),
                        user_agent,
                    },
                    i.at,
                )
                .scope_shared(&n.project, &n.stage);
                e.client = client;
                state.journal.record(e);
            }
            Pending::Refused {
                at,
                scope,
                status,
                code,
                message,
                path,
                user_agent,
            } => {
                tracing::info!(
                    status,
                    code,
                    path = path.as_str(),
                    user_agent = user_agent.as_str(),
                    pid = c.pid,
                    exe = c.exe.as_deref(),
                    cmd = c.cmd.as_deref(),
                    peer,
                    process_unknown = c.unknown.as_deref(),
                    relay_for = c.relay_for.as_deref(),
                    "credentials refused"
                );
                let mut e = Event::at(
                    What::Refused {
                        status,
                        code: code.to_string(),
                        message,
                        path,
                        user_agent,
                    },
                    at,
                );
                if let Some((p, s)) = &scope {
                    e = e.scope(p, s);
                }
                e.client = client;
                state.journal.record(e);
            }
        }
    }
}
