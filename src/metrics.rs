//! Prometheus metrics: what `GET /metrics` answers, in the text exposition format.
//!
//! Requests are counted by scope and outcome (the scope labels only for requests whose
//! token was valid, so an unauthenticated caller cannot grow the label set), latency goes
//! into a fixed-bucket histogram, and reloads, STS calls and session expiries come from the
//! stores. Nothing secret is ever a label or a value.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Histogram bucket upper bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// Request counters and the latency histogram.
#[derive(Default)]
pub struct Metrics {
    /// Refusals and errors, by scope (empty when the token was not valid) and outcome.
    requests: Mutex<BTreeMap<(String, String, &'static str), u64>>,
    /// Each issued scope's counters; the server keeps its scope's handle, so an issuance
    /// touches no map.
    scopes: Mutex<BTreeMap<(String, String), Arc<ScopeStats>>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// The last issuance of one scope (for `credport status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// When.
    pub at: time::OffsetDateTime,
    /// The client's User-Agent (escaped), which names the SDK and often the tool.
    pub user_agent: String,
    /// How many times this scope was issued since the daemon started.
    pub count: u64,
    /// Who asked last, once its connection's lookup is done (see [`crate::peer`]).
    pub client: Option<Arc<crate::peer::Client>>,
}

/// One scope's issuances: a handle the server keeps with the scope.
#[derive(Default)]
pub struct ScopeStats {
    last: Mutex<Last>,
}

#[derive(Default)]
struct Last {
    at: Option<time::OffsetDateTime>,
    /// The raw User-Agent of the last issuance, and its escaped form.
    agent_raw: Vec<u8>,
    agent: Arc<str>,
    count: u64,
    client: Option<Arc<crate::peer::Client>>,
}

impl ScopeStats {
    /// Records an issuance at `at` to a client whose User-Agent header was `agent` (raw
    /// bytes); returns the escaped User-Agent for the audit line, reused while the
    /// client's header stays the same.
    pub fn issued(&self, agent: &[u8], at: time::OffsetDateTime) -> Arc<str> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.at = Some(at);
        last.count += 1;
        last.client = None;
        if last.count == 1 || last.agent_raw != agent {
            last.agent_raw = agent.to_vec();
            last.agent = escape(&String::from_utf8_lossy(agent)).into();
        }
        last.agent.clone()
    }

    /// Records who asked for the issuance at `at` (known after the issuance; ignored
    /// when a later issuance was recorded since).
    pub fn set_client(&self, at: time::OffsetDateTime, client: Arc<crate::peer::Client>) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.at == Some(at) {
            last.client = Some(client);
        }
    }

    fn snapshot(&self) -> Option<Issued> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        Some(Issued {
            at: last.at?,
            user_agent: last.agent.to_string(),
            count: last.count,
            client: last.client.clone(),
        })
    }
}

/// Request-supplied text for a log field: control characters escaped, at most 200
/// characters. Logged as a `&str` field, so the formatter quotes it.
pub fn escape(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == 200 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl Metrics {
    /// The counters of `project`/`stage`, created on first use.
    pub fn scope(&self, project: &str, stage: &str) -> Arc<ScopeStats> {
        self.scopes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((project.to_string(), stage.to_string()))
            .or_default()
            .clone()
    }

    /// The last issuance of every scope issued since the daemon started.
    pub fn last_issued(&self) -> BTreeMap<(String, String), Issued> {
        self.scopes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.snapshot()?)))
            .collect()
    }

    /// Records one credentials request that got no credentials. `scope` is `None` unless
    /// the token was valid.
    pub fn refused(&self, scope: Option<(&str, &str)>, outcome: &'static str, took: Duration) {
        let (p, s) = scope.unwrap_or(("", ""));
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((p.to_string(), s.to_string(), outcome))
            .or_default() += 1;
        self.took(took);
    }

    /// Records how long one credentials request took (issuances are counted by their
    /// scope's [`ScopeStats::issued`]).
    pub fn took(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Renders the request metrics.
    pub fn render_requests(&self, out: &mut String) {
        out.push_str("# HELP credport_requests_total Credential requests by scope and outcome.\n# TYPE credport_requests_total counter\n");
        let mut counts = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for ((p, s), issued) in self.last_issued() {
            counts.insert((p, s, "ok"), issued.count);
        }
        for ((p, s, o), n) in &counts {
            let _ = writeln!(
                out,
                "credport_requests_total{{project=\"{}\",stage=\"{}\",outcome=\"{o}\"}} {n}",
                label(p),
                label(s)
            );
        }
        out.push_str("# HELP credport_request_duration_seconds Credential request latency.\n# TYPE credport_request_duration_seconds histogram\n");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "credport_request_duration_seconds_bucket{{le=\"{b}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "credport_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "credport_request_duration_seconds_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "credport_request_duration_seconds_count {count}");
    }
}

/// The daemon's readings that `/metrics` exposes besides the request counters: everything
/// [`Metrics::render`] needs, gathered by the route, so all of the text lives here.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    /// Reloads of the AWS shared files.
    pub reloads: u64,
    /// Reloads in which a file failed.
    pub reload_errors: u64,
    /// Calls to STS, SSO and credential processes.
    pub upstream_calls: u64,
    /// Of those, the failed ones.
    pub upstream_errors: u64,
    /// Profiles in the current snapshot.
    pub profiles: usize,
    /// Files read or probed by the daemon since it started.
    pub file_reads: u64,
    /// Environment lookups since it started (in its startup snapshot).
    pub env_lookups: u64,
    /// Changes seen in the project files that cached bindings came from.
    pub project_file_changes: u64,
    /// Seconds until each (project, stage)'s cached session expires.
    pub session_expiry: Vec<(String, String, i64)>,
}

impl Metrics {
    /// The whole Prometheus text exposition: request counters and latency, then `r`.
    pub fn render(&self, r: &Readings) -> String {
        let mut out = String::new();
        self.render_requests(&mut out);
        for (name, kind, help, value) in [
            (
                "credport_reloads_total",
                "counter",
                "Reloads of the AWS shared files.",
                r.reloads as f64,
            ),
            (
                "credport_reload_errors_total",
                "counter",
                "Reloads in which a shared file failed to read or parse.",
                r.reload_errors as f64,
            ),
            (
                "credport_upstream_calls_total",
                "counter",
                "Calls to STS, SSO and credential processes.",
                r.upstream_calls as f64,
            ),
            (
                "credport_upstream_errors_total",
                "counter",
                "Failed calls to STS, SSO and credential processes.",
                r.upstream_errors as f64,
            ),
            (
                "credport_profiles",
                "gauge",
                "Profiles in the current snapshot.",
                r.profiles as f64,
            ),
            (
                "credport_file_reads_total",
                "counter",
                "Files read or probed (AWS files, config, project files); a cached scope is served without one.",
                r.file_reads as f64,
            ),
            (
                "credport_env_lookups_total",
                "counter",
                "Environment lookups (in the daemon's startup snapshot); a cached scope is served without one.",
                r.env_lookups as f64,
            ),
            (
                "credport_project_file_changes_total",
                "counter",
                "Changes seen in watched project files (each makes the scopes read from them resolve again).",
                r.project_file_changes as f64,
            ),
        ] {
            single(&mut out, name, kind, help, value);
        }
        out.push_str(
            "# HELP credport_session_expiry_seconds Seconds until each scope's cached session expires.\n\
             # TYPE credport_session_expiry_seconds gauge\n",
        );
        for (project, stage, secs) in &r.session_expiry {
            out.push_str(&format!(
                "credport_session_expiry_seconds{{project=\"{}\",stage=\"{}\"}} {secs}\n",
                label(project),
                label(stage),
            ));
        }
        out
    }
}

/// Escapes a label value.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends one metric family with a single unlabelled sample.
pub fn single(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        let agent = m
            .scope("orders", "dev")
            .issued(b"boto3\x07", time::OffsetDateTime::UNIX_EPOCH);
        assert_eq!(&*agent, "boto3\\u{7}", "control characters are escaped");
        m.took(Duration::from_micros(300));
        m.refused(None, "InvalidToken", Duration::from_millis(3));
        let mut s = String::new();
        m.render_requests(&mut s);
        assert!(s.contains(
            "credport_requests_total{project=\"orders\",stage=\"dev\",outcome=\"ok\"} 1"
        ));
        assert!(s.contains(
            "credport_requests_total{project=\"\",stage=\"\",outcome=\"InvalidToken\"} 1"
        ));
        assert!(s.contains("credport_request_duration_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(s.contains("credport_request_duration_seconds_bucket{le=\"+Inf\"} 2"));
        assert_eq!(label("a\"b"), "a\\\"b");
    }

    #[test]
    fn a_scope_reuses_the_escaped_agent_until_it_changes() {
        let m = Metrics::default();
        let st = m.scope("orders", "dev");
        let a = st.issued(b"ua/1", time::OffsetDateTime::UNIX_EPOCH);
        let b = st.issued(b"ua/1", time::OffsetDateTime::UNIX_EPOCH);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(
            &*st.issued(b"ua/2", time::OffsetDateTime::UNIX_EPOCH),
            "ua/2"
        );
        let last = &m.last_issued()[&("orders".to_string(), "dev".to_string())];
        assert_eq!((last.count, last.user_agent.as_str()), (3, "ua/2"));
        assert!(m.scope("orders", "qa").snapshot().is_none(), "never issued");
    }
}
