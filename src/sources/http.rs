//! HTTP plumbing shared by the STS and SSO clients: one `reqwest::Client` with bounded
//! timeouts, bounded retries with exponential backoff and full jitter, bounded response bodies,
//! and error descriptions that never carry request or response content.

use std::time::Duration;

use zeroize::Zeroizing;

/// Timeouts and retry policy for the clients that call AWS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// How long to wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// How long one request may take from start to the end of the response body.
    pub request_timeout: Duration,
    /// Attempts per call, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubled for each further attempt, then jittered.
    pub base_backoff: Duration,
    /// Upper bound of one backoff sleep.
    pub max_backoff: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_attempts: 3,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Largest response body read from STS, the SSO portal or SSO OIDC.
pub(crate) const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A reqwest client builder with rustls on the `ring` provider (chosen over aws-lc-rs: the
/// same TLS, without a C library that takes minutes to build). Every HTTP client in
/// credport starts here.
pub fn client_builder() -> reqwest::ClientBuilder {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        // Fails only if a provider is installed already, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}

/// A source's HTTP client, built on first use: building one loads the TLS root store
/// (about 19 million instructions), which a daemon serving only file credentials never needs
/// and which would otherwise delay start-up. Clones share the client.
#[derive(Clone, Debug)]
pub(crate) struct LazyClient {
    config: HttpConfig,
    cell: std::sync::Arc<std::sync::OnceLock<Result<reqwest::Client, String>>>,
}

impl LazyClient {
    pub(crate) fn new(config: &HttpConfig) -> Self {
        LazyClient {
            config: config.clone(),
            cell: Default::default(),
        }
    }

    /// The client, building it on the first call.
    pub(crate) fn get(&self) -> Result<&reqwest::Client, String> {
        self.cell
            .get_or_init(|| build_client(&self.config))
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Builds the one client a source uses. Redirects are not followed: a redirect from a
/// credential endpoint is an error, not something to chase with a signed request.
pub(crate) fn build_client(cfg: &HttpConfig) -> Result<reqwest::Client, String> {
    client_builder()
        .connect_timeout(cfg.connect_timeout)
        .timeout(cfg.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("credport/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", root_cause(&e)))
}

/// How one failed attempt should be treated.
pub(crate) enum Failure<E> {
    /// Worth another attempt (throttling, 5xx, connection failure).
    Retry(E),
    /// Final (4xx, malformed response, timeout).
    Fatal(E),
}

/// How a retried call ended without success.
pub(crate) enum GaveUp<E> {
    /// An attempt failed for good.
    Fatal(E),
    /// Every attempt failed with a retryable error: the last one, and how many were made.
    Exhausted(E, u32),
}

/// The one retry loop: runs `attempt(n)` (n is 1-based) until it succeeds, fails for good,
/// or the policy's attempts are used up, sleeping a jittered exponential backoff between
/// retryable failures. `attempt` is a plain closure returning a future (not an async
/// closure), so the loop's future is `Send` whenever the attempt's is.
pub(crate) async fn with_retries<T, E, F, Fut>(
    cfg: &HttpConfig,
    mut attempt: F,
) -> Result<T, GaveUp<E>>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure<E>>>,
{
    let mut retry = Retry::new(cfg);
    loop {
        match attempt(retry.next_attempt()).await {
            Ok(v) => return Ok(v),
            Err(Failure::Fatal(e)) => return Err(GaveUp::Fatal(e)),
            Err(Failure::Retry(e)) => {
                if !retry.backoff().await {
                    return Err(GaveUp::Exhausted(e, retry.attempts()));
                }
            }
        }
    }
}

/// Attempt counter and backoff for one call (what [`with_retries`] runs on).
struct Retry<'c> {
    cfg: &'c HttpConfig,
    attempt: u32,
}

impl<'c> Retry<'c> {
    fn new(cfg: &'c HttpConfig) -> Self {
        Retry { cfg, attempt: 0 }
    }

    /// Starts the next attempt and returns its 1-based number.
    fn next_attempt(&mut self) -> u32 {
        self.attempt += 1;
        self.attempt
    }

    /// After a retryable failure: `false` when the attempts are used up, otherwise sleeps a
    /// jittered exponential backoff and returns `true`.
    async fn backoff(&self) -> bool {
        if self.attempt >= self.cfg.max_attempts.max(1) {
            return false;
        }
        let delay = backoff(self.cfg, self.attempt);
        tracing::debug!(
            attempt = self.attempt,
            ?delay,
            "retrying after a retryable failure"
        );
        tokio::time::sleep(delay).await;
        true
    }

    /// Attempts made so far.
    fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// Full-jitter backoff after failed attempt `n` (1-based): uniform in
/// `[0, min(max_backoff, base_backoff * 2^(n-1))]`.
fn backoff(cfg: &HttpConfig, n: u32) -> Duration {
    let factor = 1u32 << (n.saturating_sub(1)).min(16);
    let ceiling = cfg.base_backoff.saturating_mul(factor).min(cfg.max_backoff);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=millis))
}

/// A transport failure (no HTTP response), described without any request content.
pub(crate) struct TransportFailure {
    /// Human-readable reason, e.g. `connection failed: Connection refused (os error 111)`.
    pub reason: String,
    /// Whether another attempt may help. Timeouts are not retried, so a hung endpoint costs
    /// the caller at most the configured timeout.
    pub retryable: bool,
}

/// Classifies a `reqwest` error from sending a request or reading its body.
pub(crate) fn describe_transport_error(e: &reqwest::Error, cfg: &HttpConfig) -> TransportFailure {
    if e.is_timeout() {
        let reason = if e.is_connect() {
            format!("no connection within {:?}", cfg.connect_timeout)
        } else {
            format!("no response within {:?}", cfg.request_timeout)
        };
        return TransportFailure {
            reason,
            retryable: false,
        };
    }
    if e.is_connect() {
        return TransportFailure {
            reason: format!("connection failed: {}", root_cause(e)),
            retryable: true,
        };
    }
    TransportFailure {
        reason: format!("request failed: {}", root_cause(e)),
        retryable: true,
    }
}

/// The innermost error in a chain: for `reqwest` that is the OS or TLS error, which names
/// neither the URL nor any content.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Why a response body could not be read.
pub(crate) enum BodyError {
    /// The body was larger than the limit.
    TooLarge,
    /// The transport failed mid-body.
    Transport(reqwest::Error),
}

/// Reads a response body up to `limit` bytes into memory that is zeroed on drop.
pub(crate) async fn read_body(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>, BodyError> {
    let mut buf = Zeroizing::new(Vec::new());
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if buf.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Whether an HTTP status is worth retrying regardless of the error code in the body.
pub(crate) fn retryable_status(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

/// Makes a server-supplied message safe to show: removes any of `secrets` that it echoes,
/// replaces control characters, and caps it at 512 characters.
pub(crate) fn sanitize_message(msg: &str, secrets: &[&str]) -> String {
    let mut out = msg.to_string();
    for s in secrets {
        if s.len() >= 4 {
            out = out.replace(s, "<redacted>");
        }
    }
    let out: String = out
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let out = out.trim();
    if out.chars().count() > 512 {
        let cut: String = out.chars().take(512).collect();
        format!("{cut}...")
    } else {
        out.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_bounds() {
        let cfg = HttpConfig::default();
        for n in 1..10 {
            let d = backoff(&cfg, n);
            assert!(d <= cfg.max_backoff, "{d:?}");
            assert!(d <= cfg.base_backoff * (1 << (n - 1)), "{n} {d:?}");
        }
    }

    #[test]
    fn sanitize_redacts_and_caps() {
        let m = sanitize_message(
            "bad key SECRETVALUE\nagain SECRETVALUE",
            &["SECRETVALUE", ""],
        );
        assert_eq!(m, "bad key <redacted> again <redacted>");
        let long = "x".repeat(2000);
        assert_eq!(sanitize_message(&long, &[]).len(), 515);
    }

    #[tokio::test]
    async fn retries_stop_at_max_attempts() {
        let cfg = HttpConfig {
            base_backoff: Duration::from_millis(1),
            ..HttpConfig::default()
        };
        let mut retry = Retry::new(&cfg);
        let mut calls = 0;
        loop {
            retry.next_attempt();
            calls += 1;
            if !retry.backoff().await {
                break;
            }
        }
        assert_eq!((calls, retry.attempts()), (3, 3));
        let one = HttpConfig {
            max_attempts: 0,
            ..cfg
        };
        let mut retry = Retry::new(&one);
        retry.next_attempt();
        assert!(!retry.backoff().await, "at least one attempt, and no more");
    }
}
