//! The token cache file that `aws sso login` writes: where it is
//! (`<cache_dir>/<sha1 hex>.json`, as botocore's `SSOTokenLoader`), reading it into a
//! [`CachedToken`], its timestamps, and rewriting it through the one atomic write in
//! `crate::fsutil`, keeping keys credport does not know.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha1::{Digest, Sha1};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::error::SsoError;
use super::profile::SsoConfig;
use crate::credentials::{Secret, parse_timestamp};

/// Largest token cache file read.
const MAX_CACHE_BYTES: u64 = 256 * 1024;

/// The token cache file name: sha1 hex of the session name, or of the start URL for legacy
/// profiles, plus `.json`.
pub fn cache_file_name(cfg: &SsoConfig) -> String {
    let key = cfg.session_name.as_deref().unwrap_or(&cfg.start_url);
    format!("{}.json", hex::encode(Sha1::digest(key.as_bytes())))
}

/// The AWS CLI's token cache directory under a home directory: `<home>/.aws/sso/cache`.
pub fn default_cache_dir(home: &Path) -> PathBuf {
    home.join(".aws").join("sso").join("cache")
}

/// A loaded token cache file.
pub(super) struct CachedToken {
    /// Every key of the file, so a rewrite keeps the ones we do not use.
    pub(super) doc: Map<String, Value>,
    /// `accessToken`.
    pub(super) access_token: Secret,
    /// `expiresAt`.
    pub(super) expires_at: OffsetDateTime,
}

/// Reads the cache file. The outer error is a file we cannot read; the inner one (a reason
/// for [`SsoError::LoginRequired`]) is a missing or unusable token.
pub(super) async fn load_cache(path: &Path) -> Result<Result<CachedToken, String>, SsoError> {
    use tokio::io::AsyncReadExt;
    let cache_err = |reason: String| SsoError::Cache {
        path: path.to_path_buf(),
        reason,
    };
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err("there is no cached SSO token".to_string()));
        }
        Err(e) => return Err(cache_err(e.to_string())),
    };
    let mut buf = Zeroizing::new(Vec::new());
    file.take(MAX_CACHE_BYTES + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| cache_err(e.to_string()))?;
    if buf.len() as u64 > MAX_CACHE_BYTES {
        return Err(cache_err(format!("larger than {MAX_CACHE_BYTES} bytes")));
    }
    let doc: Map<String, Value> = match serde_json::from_slice(&buf) {
        Ok(d) => d,
        Err(_) => {
            return Ok(Err(
                "the cached SSO token file is not a JSON object".to_string()
            ));
        }
    };
    let access_token = match doc.get("accessToken") {
        Some(Value::String(s)) if !s.is_empty() => Secret::new(s.as_str()),
        _ => return Ok(Err("the cached SSO token has no accessToken".to_string())),
    };
    let expires_at = match doc
        .get("expiresAt")
        .and_then(Value::as_str)
        .and_then(parse_cache_time)
    {
        Some(t) => t,
        None => {
            return Ok(Err(
                "the cached SSO token has no valid expiresAt".to_string()
            ));
        }
    };
    Ok(Ok(CachedToken {
        doc,
        access_token,
        expires_at,
    }))
}

/// Parses a cache timestamp: RFC 3339, or the `2019-11-14T04:05:45UTC` form that early
/// AWS CLI v2 releases wrote.
pub(super) fn parse_cache_time(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    match s.strip_suffix("UTC") {
        Some(head) => parse_timestamp(&format!("{head}Z")),
        None => parse_timestamp(s),
    }
}

/// Writes `doc` to `path` through the one atomic private write ([`crate::fsutil::write_atomic`]:
/// a 0600 temporary file in the same directory, synced, renamed over the old file, the
/// directory synced), off the async runtime.
pub(super) async fn write_cache(path: &Path, doc: &Map<String, Value>) -> Result<(), SsoError> {
    let cache_err = |reason: String| SsoError::Cache {
        path: path.to_path_buf(),
        reason,
    };
    let contents = Zeroizing::new(
        serde_json::to_vec(doc).map_err(|_| cache_err("cannot serialize".to_string()))?,
    );
    let target = path.to_path_buf();
    tokio::task::spawn_blocking(move || crate::fsutil::write_atomic(&target, &contents, 0o600))
        .await
        .map_err(|e| cache_err(format!("cannot rewrite it: {e}")))?
        .map_err(|e| cache_err(format!("cannot rewrite it: {e}")))
}

#[cfg(test)]
mod tests {
    use super::super::profile::examples::{legacy_cfg, session_cfg};
    use super::*;

    #[test]
    fn cache_file_names_match_botocore() {
        // python3 -c "import hashlib; print(hashlib.sha1(b'my-sso').hexdigest())"
        assert_eq!(
            cache_file_name(&session_cfg()),
            "0ad374308c5a4e22f723adf10145eafad7c4031c.json"
        );
        assert_eq!(
            cache_file_name(&legacy_cfg()),
            "2b829a45f04c9828cb45b7d092d8e4aa30818393.json"
        );
        assert_eq!(
            default_cache_dir(Path::new("/home/u")),
            Path::new("/home/u/.aws/sso/cache")
        );
    }

    #[test]
    fn cache_times() {
        let want = time::macros::datetime!(2019-11-14 04:05:45 UTC);
        assert_eq!(parse_cache_time("2019-11-14T04:05:45UTC"), Some(want));
        assert_eq!(parse_cache_time("2019-11-14T04:05:45Z"), Some(want));
        assert_eq!(parse_cache_time("2019-11-14T04:05:45+00:00"), Some(want));
        assert_eq!(parse_cache_time("nope"), None);
    }

    #[tokio::test]
    async fn rewrite_keeps_unknown_keys_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(cache_file_name(&session_cfg()));
        let missing = load_cache(&path).await.unwrap().err().unwrap();
        assert_eq!(missing, "there is no cached SSO token");

        let doc = serde_json::json!({
            "accessToken": "tok",
            "expiresAt": "2030-01-01T00:00:00Z",
            "someFutureKey": {"kept": true},
        });
        write_cache(&path, doc.as_object().unwrap()).await.unwrap();
        let token = load_cache(&path).await.unwrap().ok().unwrap();
        assert_eq!(token.access_token.expose(), "tok");
        assert_eq!(
            token.expires_at,
            time::macros::datetime!(2030-01-01 0:00 UTC)
        );
        assert_eq!(Value::Object(token.doc), doc);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
