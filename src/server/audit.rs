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

/// What `issue` served, handed to the audit beside its response. Its text is shared with
/// the scope's cache entry, so an issuance copies no string.
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

/// Why a credentials request was refused, as its audit records it (its text copied out of
/// the request, which the audit may outlive).
pub struct Refusal {
    at: OffsetDateTime,
    scope: Option<(String, String)>,
    status: u16,
    code: &'static str,
    message: String,
    path: String,
}

impl Refusal {
    /// The refusal `e` of the request for `path`; `scope` is the scope its token was valid
    /// for, if it was.
    pub fn of(e: &ApiError, path: &str, scope: Option<(&str, &str)>) -> Refusal {
        Refusal {
            at: OffsetDateTime::now_utc(),
            scope: scope.map(|(p, s)| (p.to_string(), s.to_string())),
            status: e.status.as_u16(),
            code: e.code,
            message: e.message.clone(),
            path: crate::peer::escape_cut(path, 200),
        }
    }
}

/// Audits one credentials request: what it served, or why it was refused. Waits at most
/// [`WAIT_IN_REQUEST`] for the process.
pub async fn record(
    state: &Arc<AppState>,
    peer: Option<Arc<Peer>>,
    headers: &HeaderMap,
    outcome: Result<Issuance, Refusal>,
) {
    let agent = headers
        .get(header::USER_AGENT)
        .map_or(&b""[..], |v| v.as_bytes());
    let relay_for = headers
        .get(RELAY_CLIENT_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let pending = match outcome {
        Ok(i) => {
            // The escaped User-Agent is kept per scope while the client's stays the same.
            let user_agent = i.hot.stats.issued(agent, i.at);
            Pending::Issued(i, user_agent)
        }
        Err(r) => Pending::Refused(
            r,
            crate::peer::escape_cut(&String::from_utf8_lossy(agent), 200),
        ),
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

/// The message of the audit line of an issuance.
const ISSUED: &str = "credentials issued";

/// An issuance's audit line, written either way (see [`crate::logline`]).
struct Issued<'a> {
    names: &'a super::scopes::Names,
    key: &'a str,
    expires: &'a str,
    user_agent: &'a str,
    client: &'a Client,
    peer: Option<&'a str>,
}

impl Issued<'_> {
    /// As a `tracing` event (JSON logs, a terminal). `&str` values: quoted and escaped by
    /// the text format, JSON strings in JSON logs.
    fn trace(&self) {
        let (n, c) = (self.names, self.client);
        tracing::info!(
            project = %n.project,
            stage = %n.stage,
            profile = %n.profile,
            key = %self.key,
            expires = %self.expires,
            user_agent = self.user_agent,
            pid = c.pid,
            exe = c.exe.as_deref(),
            cmd = c.cmd.as_deref(),
            peer = self.peer,
            process_unknown = c.unknown.as_deref(),
            relay_for = c.relay_for.as_deref(),
            "credentials issued"
        );
    }

    /// The same line, fields in the same order, written straight to `sink`; the names
    /// come pre-rendered with the scope.
    fn write_to(&self, sink: &crate::logline::LineSink) {
        sink.info(module_path!(), ISSUED, |l| self.write(l));
    }

    fn write(&self, l: &mut crate::logline::Line<'_>) {
        let c = self.client;
        l.raw(&self.names.fields)
            .display("key", &self.key)
            .display("expires", &self.expires)
            .str("user_agent", Some(self.user_agent))
            .num("pid", c.pid.map(u64::from))
            .str("exe", c.exe.as_deref())
            .str("cmd", c.cmd.as_deref())
            .str("peer", self.peer)
            .str("process_unknown", c.unknown.as_deref())
            .str("relay_for", c.relay_for.as_deref());
    }
}

/// A request's audit, waiting for its client: what was issued and the escaped
/// User-Agent, or the refusal and the escaped User-Agent.
enum Pending {
    Issued(Issuance, Arc<str>),
    Refused(Refusal, String),
}

impl Pending {
    /// Writes the log line, the journal event and the scope's last client.
    fn finish(self, state: &AppState, client: Option<Arc<Client>>) {
        let none = Client::default();
        let c: &Client = client.as_deref().unwrap_or(&none);
        let peer = client.as_ref().map(|c| c.address.as_str());
        match self {
            Pending::Issued(i, user_agent) => {
                let n = &i.hot.names;
                let line = Issued {
                    names: n,
                    key: &i.key,
                    expires: &i.expires,
                    user_agent: &user_agent,
                    client: c,
                    peer,
                };
                match state.audit_text.get() {
                    Some(sink) if tracing::enabled!(tracing::Level::INFO) => {
                        line.write_to(sink);
                    }
                    _ => line.trace(),
                }
                if let Some(client) = &client {
                    i.hot.stats.set_client(i.at, client.clone());
                }
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
            Pending::Refused(
                Refusal {
                    at,
                    scope,
                    status,
                    code,
                    message,
                    path,
                },
                user_agent,
            ) => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logline::{Capture, DaemonText, LineSink};
    use crate::projects::registry::Binding;
    use std::sync::Mutex;

    /// The one line `buf` received, without its timestamp.
    fn written(buf: &Capture) -> String {
        let out = buf.text();
        assert_eq!(out.matches('\n').count(), 1, "{out:?}");
        let (stamp, rest) = out.split_once(' ').unwrap();
        assert!(stamp.ends_with('Z') && stamp.len() == 27, "{out:?}");
        rest.to_string()
    }

    /// The line written without `tracing` is the line `tracing` writes with [`DaemonText`],
    /// byte for byte after the timestamp, for every shape of client.
    #[test]
    fn the_direct_line_is_the_daemon_text_line() {
        struct Case {
            name: &'static str,
            user_agent: &'static str,
            client: Client,
            peer: Option<&'static str>,
        }
        let process = Client {
            address: "127.0.0.1:51234".into(),
            pid: Some(4242),
            name: Some("python3".into()),
            exe: Some("/usr/bin/python3.11".into()),
            cmd: Some("python3 job.py --name \"x\"".into()),
            ..Client::default()
        };
        let cases = [
            Case {
                name: "a local process",
                user_agent: "Boto3/1.40.0 md/Botocore#1.40.0",
                client: process.clone(),
                peer: Some("127.0.0.1:51234"),
            },
            Case {
                name: "a forged and a non-ASCII agent",
                user_agent: "x\" project=evil\n café",
                client: process,
                peer: Some("127.0.0.1:51234"),
            },
            Case {
                name: "a container through the relay",
                user_agent: "aws-sdk-js/3",
                client: Client {
                    address: "127.0.0.1:40000".into(),
                    unknown: Some(crate::peer::unknown::ELSEWHERE.into()),
                    relay_for: Some("172.18.0.5:40112".into()),
                    ..Client::default()
                },
                peer: Some("127.0.0.1:40000"),
            },
            Case {
                name: "no peer at all",
                user_agent: "",
                client: Client::default(),
                peer: None,
            },
        ];
        let names = super::super::scopes::Names::of(&Binding {
            project: "orders api".into(),
            stage: "dev".into(),
            profile: "devAccount".into(),
            region: None,
            rule: String::new(),
            policy: None,
            file: None,
        });
        for c in cases {
            let line = Issued {
                names: &names,
                key: "...ABCD",
                expires: "2026-11-30T09:00:00Z",
                user_agent: c.user_agent,
                client: &c.client,
                peer: c.peer,
            };
            let traced = Capture::default();
            let w = traced.clone();
            let sub = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || w.clone())
                .event_format(DaemonText)
                .finish();
            tracing::subscriber::with_default(sub, || line.trace());
            let direct = Capture::default();
            let w = Mutex::new(direct.clone());
            let sink = LineSink::new(move |b| {
                std::io::Write::write_all(&mut *w.lock().unwrap(), b).unwrap();
            });
            line.write_to(&sink);
            assert_eq!(written(&direct), written(&traced), "{}", c.name);
            assert!(
                written(&traced).starts_with(
                    " INFO credport::server::audit: credentials issued project=orders api stage=dev profile=devAccount key=...ABCD"
                ),
                "{}: {}",
                c.name,
                written(&traced)
            );
        }
    }
}
