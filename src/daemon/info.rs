//! What a running daemon publishes about itself: `<runtime dir>/daemon.json` (0600), written
//! by `serve` and read by `status`, `env`, `exec` and the instance lock, and the URL form of
//! its listen addresses.

use std::net::SocketAddr;
use std::path::Path;

use crate::fsutil;

/// What a running daemon publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DaemonInfo {
    /// Base URL of the first listener, e.g. `http://127.0.0.1:9911`.
    pub url: String,
    /// Every listen address.
    pub listen: Vec<SocketAddr>,
    /// The daemon's process id.
    pub pid: u32,
    /// The daemon's random instance id; `/healthz` answers the same one, which is how
    /// clients know the URL is this daemon and not a stale file's.
    #[serde(default)]
    pub instance: String,
}

impl DaemonInfo {
    /// Reads `daemon.json`; `None` when absent or unreadable.
    pub fn read(path: &Path) -> Option<Self> {
        let text = fsutil::read_text(path).ok()??;
        serde_json::from_str(&text).ok()
    }
}

/// The URL form of a socket address (`http://127.0.0.1:9911`, `http://[::1]:9911`,
/// `http://169.254.170.2` for port 80).
pub fn base_url(addr: SocketAddr) -> String {
    let host = match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    if addr.port() == 80 {
        format!("http://{host}")
    } else {
        format!("http://{host}:{}", addr.port())
    }
}
