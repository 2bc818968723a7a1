//! Prometheus metrics: what `GET /metrics` answers, in the text exposition format.
//!
//! Requests are counted by scope and outcome (the scope labels only for requests whose
//! token was valid, so an unauthenticated caller cannot grow the label set), latency goes
//! into a fixed-bucket histogram, and reloads, STS calls and session expiries come from the
//! stores. Nothing secret is ever a label or a value.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Histogram bucket upper bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// Request counters and the latency histogram.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, &'static str), u64>>,
    issued: Mutex<BTreeMap<(String, String), Issued>>,
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
    pub client: Option<crate::peer::Client>,
}

impl Metrics {
    /// Records that `project`/`stage` was issued to a client with `user_agent` at `at`.
    pub fn issued(&self, project: &str, stage: &str, user_agent: &str, at: time::OffsetDateTime) {
        let mut map = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        let e = map
            .entry((project.to_string(), stage.to_string()))
            .or_insert_with(|| Issued {
                at,
                user_agent: String::new(),
                count: 0,
                client: None,
            });
        e.at = at;
        e.user_agent = user_agent.to_string();
        e.client = None;
        e.count += 1;
    }

    /// Records who asked for the issuance of `project`/`stage` at `at` (known after the
    /// issuance; ignored when a later issuance was recorded since).
    pub fn set_client(
        &self,
        project: &str,
        stage: &str,
        at: time::OffsetDateTime,
        client: crate::peer::Client,
    ) {
        let mut map = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(&(project.to_string(), stage.to_string()))
            && e.at == at
        {
            e.client = Some(client);
        }
    }

    /// The last issuance of every scope issued since the daemon started.
    pub fn last_issued(&self) -> BTreeMap<(String, String), Issued> {
        self.issued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records one credentials request. `scope` is `None` unless the token was valid.
    pub fn record(&self, scope: Option<(&str, &str)>, outcome: &'static str, took: Duration) {
        let (p, s) = scope.unwrap_or(("", ""));
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((p.to_string(), s.to_string(), outcome))
            .or_default() += 1;
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
        for ((p, s, o), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
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
        m.record(Some(("orders", "dev")), "ok", Duration::from_micros(300));
        m.record(None, "InvalidToken", Duration::from_millis(3));
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
}
