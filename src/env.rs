//! Environment variables as an injected dependency.
//!
//! Every function that needs a variable takes an [`Env`] (a lookup), so tests pass a map
//! and nothing reads the process environment behind the caller's back. The CLI edge passes
//! [`process`]; the daemon takes one [`Snapshot`] at start (a process's environment does not
//! change after it starts) and reads only that, so the request path never calls `std::env`.

use std::collections::HashMap;
use std::sync::Arc;

/// Looks a variable up: `None` when it is unset (or not UTF-8). Any
/// `Fn(&str) -> Option<String>` is one; functions take `&dyn Env`.
pub trait Env: Fn(&str) -> Option<String> {}

impl<F: Fn(&str) -> Option<String>> Env for F {}

/// The process environment, read now.
pub fn process(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// An immutable copy of an environment, cheap to clone and share.
#[derive(Clone, Default)]
pub struct Snapshot(Arc<HashMap<String, String>>);

impl Snapshot {
    /// This process's environment, now (its UTF-8 variables).
    pub fn of_process() -> Self {
        Snapshot(Arc::new(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        ))
    }

    /// A snapshot holding exactly `pairs`.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Snapshot(Arc::new(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        ))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        LOOKUPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.get(key).cloned()
    }
}

/// Lookups in any [`Snapshot`] since the process started (`credport_env_lookups_total` in
/// the daemon's `/metrics`): a cached scope is served without one.
static LOOKUPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many lookups [`Snapshot::get`] has answered in this process.
pub fn lookups() -> u64 {
    LOOKUPS.load(std::sync::atomic::Ordering::Relaxed)
}

impl std::fmt::Debug for Snapshot {
    /// Names the variables, never their values (some hold secrets).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<&String> = self.0.keys().collect();
        keys.sort();
        f.debug_tuple("Snapshot").field(&keys).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_its_pairs_and_hides_values() {
        let s = Snapshot::from_pairs([("A", "secret")]);
        assert_eq!(s.get("A").as_deref(), Some("secret"));
        assert_eq!(s.get("B"), None);
        assert!(!format!("{s:?}").contains("secret"));
    }
}
