//! The audit journal: the daemon's recent security-relevant events, in memory, for
//! `credport log`.
//!
//! A bounded ring ([`CAPACITY`] events; the oldest is dropped first) of typed [`Event`]s:
//! credentials issued and refused (each naming the client process, see [`crate::peer`]),
//! and room for unlocks, locks and trust decisions. Nothing is written to disk and nothing
//! secret is recorded: an event holds names, times, codes, and the client's pid, executable
//! and shortened command line. Events get a sequence number when recorded; followers
//! ([`Journal::follow`]) get every later event through a broadcast channel.
//!
//! Anything that acts on credentials records with one call:
//! `state.journal.record(Event::new(What::Unlocked { until }).scope(project, stage))`.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use std::sync::Arc;

use crate::peer::Client;

/// Events kept at most.
pub const CAPACITY: usize = 1000;

/// Events a slow follower may fall behind by before it is told it missed some.
const FOLLOW_BACKLOG: usize = 256;

/// One audited event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its number since the daemon started (1, 2, ...), set by [`Journal::record`].
    pub seq: u64,
    /// When it happened (RFC 3339, UTC).
    pub at: Arc<str>,
    /// The project it concerns, when it concerns one (refusals of requests whose token
    /// was not valid name none: their path is any caller's text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Arc<str>>,
    /// The stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Arc<str>>,
    /// What happened, with its details (`"event": "issued"`, ...).
    #[serde(flatten)]
    pub what: What,
    /// Who asked, for requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<std::sync::Arc<Client>>,
}

thread_local! {
    /// The unix second last written on this thread, and its text.
    static STAMP: std::cell::RefCell<(i64, Option<Arc<str>>)> = const { std::cell::RefCell::new((i64::MIN, None)) };
}

/// `at` as RFC 3339 seconds, formatted once per second per thread (an issuance records one
/// event, so the audit formats no date per request).
fn stamp(at: OffsetDateTime) -> Arc<str> {
    let secs = at.unix_timestamp();
    STAMP.with(|c| {
        let mut c = c.borrow_mut();
        match &c.1 {
            Some(text) if c.0 == secs => text.clone(),
            _ => {
                let text: Arc<str> = crate::credentials::format_expiration(at).into();
                *c = (secs, Some(text.clone()));
                text
            }
        }
    })
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum What {
    /// Credentials were served.
    Issued {
        /// The profile that served them.
        profile: Arc<str>,
        /// The `Expiration` served (RFC 3339).
        expires: Arc<str>,
        /// The client's User-Agent (escaped, cut).
        user_agent: Arc<str>,
    },
    /// A credentials request was refused.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The error `Code` (`InvalidToken`, `Locked`, `Untrusted`, ...).
        code: String,
        /// The error message the client got.
        message: String,
        /// The requested path (escaped, cut): any caller's text.
        path: String,
        /// The client's User-Agent (escaped, cut).
        user_agent: String,
    },
    /// A protected scope was unlocked.
    Unlocked {
        /// Until when (RFC 3339).
        until: String,
    },
    /// A protected scope was locked again.
    Locked {
        /// Why: `credport lock`, or the unlock window ended.
        reason: String,
    },
    /// A project file's mapping was trusted (`credport allow`, or yes at the prompt).
    Allowed {
        /// The project directory.
        dir: String,
        /// The profile the stage maps to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
    },
    /// Trust in a project file's mapping was withdrawn (`credport deny`).
    Denied {
        /// The project directory.
        dir: String,
    },
}

impl What {
    /// The event's name as in JSON (`issued`, `refused`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            What::Issued { .. } => "issued",
            What::Refused { .. } => "refused",
            What::Unlocked { .. } => "unlocked",
            What::Locked { .. } => "locked",
            What::Allowed { .. } => "allowed",
            What::Denied { .. } => "denied",
        }
    }
}

impl Event {
    /// An event that happens now, about no scope and no client yet.
    pub fn new(what: What) -> Event {
        Event::at(what, OffsetDateTime::now_utc())
    }

    /// An event that happened at `at`.
    pub fn at(what: What, at: OffsetDateTime) -> Event {
        Event {
            seq: 0,
            at: stamp(at),
            project: None,
            stage: None,
            what,
            client: None,
        }
    }

    /// The same event about `project`/`stage`.
    pub fn scope(mut self, project: &str, stage: &str) -> Event {
        self.project = Some(project.into());
        self.stage = Some(stage.into());
        self
    }

    /// The same event about `project`/`stage`, sharing the names the caller holds (the
    /// audit of an issuance allocates no copy of them).
    pub fn scope_shared(mut self, project: &Arc<str>, stage: &Arc<str>) -> Event {
        self.project = Some(project.clone());
        self.stage = Some(stage.clone());
        self
    }

    /// The same event with who asked.
    pub fn client(mut self, client: Client) -> Event {
        self.client = Some(std::sync::Arc::new(client));
        self
    }

    /// One line for people: `AT EVENT PROJECT/STAGE details [client]`.
    pub fn line(&self) -> String {
        let scope = match (&self.project, &self.stage) {
            (Some(p), Some(s)) => format!("{p}/{s}"),
            (Some(p), None) => p.to_string(),
            _ => "-".into(),
        };
        let detail = match &self.what {
            What::Issued { profile, .. } => format!("profile {profile}"),
            What::Refused {
                status, code, path, ..
            } => {
                if self.project.is_some() {
                    format!("{status} {code}")
                } else {
                    format!("{status} {code} {path}")
                }
            }
            What::Unlocked { until } => format!("until {until}"),
            What::Locked { reason } => reason.clone(),
            What::Allowed { dir, profile } => match profile {
                Some(p) => format!("{dir} -> {p}"),
                None => dir.clone(),
            },
            What::Denied { dir } => dir.clone(),
        };
        let mut line = format!("{} {:<8} {scope} {detail}", self.at, self.what.name());
        if let Some(c) = &self.client {
            line.push_str(" by ");
            line.push_str(&c.summary());
            if let Some(exe) = &c.exe {
                line.push(' ');
                line.push_str(exe);
            }
            if let Some(cmd) = &c.cmd {
                line.push_str(": ");
                line.push_str(cmd);
            }
        }
        line
    }
}

/// Which events a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Only this project's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Only this stage's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
}

impl Filter {
    /// Whether `e` passes.
    pub fn matches(&self, e: &Event) -> bool {
        let ok = |want: &Option<String>, have: &Option<Arc<str>>| {
            want.as_deref().is_none_or(|w| have.as_deref() == Some(w))
        };
        ok(&self.project, &e.project) && ok(&self.stage, &e.stage)
    }
}

/// A reader's request (`credport log`, over the control socket).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Which events.
    #[serde(flatten)]
    pub filter: Filter,
    /// Only the last this many of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Keep the answer open and pass on every later event that passes the filter.
    #[serde(default)]
    pub follow: bool,
}

/// The ring of recent events, and the channel to followers.
pub struct Journal {
    ring: Mutex<Ring>,
    followers: tokio::sync::broadcast::Sender<Event>,
}

struct Ring {
    events: VecDeque<Event>,
    capacity: usize,
    next: u64,
}

impl Default for Journal {
    fn default() -> Self {
        Journal::with_capacity(CAPACITY)
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Journal")
            .field("events", &ring.events.len())
            .field("capacity", &ring.capacity)
            .finish()
    }
}

impl Journal {
    /// A journal keeping `capacity` events at most (at least one).
    pub fn with_capacity(capacity: usize) -> Journal {
        let (followers, _) = tokio::sync::broadcast::channel(FOLLOW_BACKLOG);
        Journal {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(capacity.clamp(1, CAPACITY)),
                capacity: capacity.max(1),
                next: 1,
            }),
            followers,
        }
    }

    /// Records `event` (its `seq` is assigned here), dropping the oldest at capacity, and
    /// passes it to followers. Returns its sequence number.
    pub fn record(&self, mut event: Event) -> u64 {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        event.seq = ring.next;
        ring.next += 1;
        if ring.events.len() >= ring.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(event.clone());
        // Sent under the lock, so `follow` sees each event exactly once.
        let _ = self.followers.send(event);
        ring.next - 1
    }

    /// The last `limit` events that pass `filter` (all kept ones without a limit), oldest
    /// first.
    pub fn recent(&self, filter: &Filter, limit: Option<usize>) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Event> = ring
            .events
            .iter()
            .rev()
            .filter(|e| filter.matches(e))
            .take(limit.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// [`recent`](Self::recent) and a receiver of every event recorded after them, taken
    /// together so none is missed or seen twice.
    pub fn follow(
        &self,
        filter: &Filter,
        limit: Option<usize>,
    ) -> (Vec<Event>, tokio::sync::broadcast::Receiver<Event>) {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let rx = self.followers.subscribe();
        let mut out: Vec<Event> = ring
            .events
            .iter()
            .rev()
            .filter(|e| filter.matches(e))
            .take(limit.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        drop(ring);
        out.reverse();
        (out, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(p: &str, s: &str) -> Event {
        Event::new(What::Issued {
            profile: "dev".into(),
            expires: "2030-01-01T00:00:00Z".into(),
            user_agent: "ua".into(),
        })
        .scope(p, s)
    }

    #[test]
    fn the_ring_is_bounded_and_drops_the_oldest() {
        let j = Journal::with_capacity(3);
        for i in 0..5 {
            assert_eq!(j.record(issued("p", &format!("s{i}"))), i + 1);
        }
        let all = j.recent(&Filter::default(), None);
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(all[0].stage.as_deref(), Some("s2"));
        let last = j.recent(&Filter::default(), Some(1));
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].seq, 5);
        // The default journal keeps CAPACITY events.
        let j = Journal::default();
        for _ in 0..CAPACITY + 10 {
            j.record(issued("p", "dev"));
        }
        let all = j.recent(&Filter::default(), None);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].seq, 11);
    }

    #[test]
    fn filters_by_project_and_stage() {
        let j = Journal::default();
        j.record(issued("orders", "dev"));
        j.record(issued("orders", "prod"));
        j.record(issued("billing", "dev"));
        j.record(Event::new(What::Refused {
            status: 401,
            code: "InvalidToken".into(),
            message: "m".into(),
            path: "/v1/credentials/orders/dev".into(),
            user_agent: String::new(),
        }));
        let f = |p: Option<&str>, s: Option<&str>| Filter {
            project: p.map(String::from),
            stage: s.map(String::from),
        };
        assert_eq!(j.recent(&f(Some("orders"), None), None).len(), 2);
        assert_eq!(j.recent(&f(None, Some("dev")), None).len(), 2);
        assert_eq!(j.recent(&f(Some("orders"), Some("prod")), None).len(), 1);
        assert_eq!(j.recent(&f(None, None), None).len(), 4);
    }

    #[test]
    fn followers_get_later_events_once() {
        let j = Journal::default();
        j.record(issued("orders", "dev"));
        let (backlog, mut rx) = j.follow(&Filter::default(), None);
        assert_eq!(backlog.len(), 1);
        j.record(issued("orders", "prod"));
        let next = rx.try_recv().unwrap();
        assert_eq!(next.seq, 2);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn events_serialize_flat_and_back() {
        let e = issued("orders", "dev").client(crate::peer::Client {
            address: "127.0.0.1:5000".into(),
            pid: Some(7),
            cmd: Some("python3 x.py".into()),
            ..Default::default()
        });
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "issued");
        assert_eq!(v["project"], "orders");
        assert_eq!(v["profile"], "dev");
        assert_eq!(v["client"]["pid"], 7);
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        let line = e.line();
        assert!(
            line.contains("issued") && line.contains("orders/dev") && line.contains("python3 x.py"),
            "{line}"
        );
    }
}
