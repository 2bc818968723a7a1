//! Scoped bearer tokens: one per (project, stage), derived from one secret key.
//!
//! A token is `cpt1.<project>.<stage>.<mac>`, where the names are base64url-encoded and
//! `mac` is HMAC-SHA256 of the scope under the key kept in `<state dir>/token-key` (32 random
//! bytes, 0600 in a 0700 directory). Tokens are therefore stable across daemon restarts,
//! need no token database, and all change at once when the key is rotated. Verification
//! recomputes the MAC and compares it in constant time; a token whose MAC is valid for
//! another scope is told apart (403) from a token that is not ours at all (401).
//!
//! ## Rotation grace
//! [`TokenKey::rotate_with_grace`] keeps the replaced key in `token-key.previous` (same
//! directory, 0600) with a deadline; until then tokens of either key verify, so a client
//! between reading its token file and the file's rewrite is not refused. The deadline is
//! absolute, so a daemon restart does not extend it; `--now` (a grace of zero) removes the
//! previous key at once.
//!
//! ## Permissions
//! A key file that group or others can read is refused ([`TokenError::Exposed`]): whoever
//! read it can mint every token, so the fix is `chmod 600` and a rotation. The directory
//! is made 0700 (with a warning when it was not) before the key is read or written.

use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::credentials::Secret;
use crate::fsutil::{self, FsError};

const PREFIX: &str = "cpt1";
const KEY_LEN: usize = 32;

/// The outcome of checking a presented token against a requested scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The token is for exactly this scope.
    Valid,
    /// The token is genuine but for another (project, stage).
    OtherScope,
    /// Not a token of this key (malformed, forged, or from before a rotation).
    Invalid,
}

/// Errors loading or creating the key.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Reading or writing the key file failed.
    #[error("token key: {0}")]
    Fs(#[from] FsError),
    /// The key file exists but does not hold a key.
    #[error(
        "token key {path}: not a credport key (expected {KEY_LEN} bytes, hex-encoded); remove it or run `credport token --rotate`"
    )]
    Malformed {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The system random generator failed.
    #[error("token key: no randomness available: {0}")]
    Random(String),
    /// The key file is readable by group or others.
    #[error(
        "token key {path} is readable by other users (mode {mode:o}), so anyone who read it can mint tokens; fix: chmod 600 {path} && credport token --rotate --now",
        path = .path.display()
    )]
    Exposed {
        /// The file.
        path: std::path::PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// The key a rotation replaced, valid until a deadline.
#[derive(Clone)]
struct Previous {
    key: Zeroizing<[u8; KEY_LEN]>,
    /// Unix seconds after which it no longer verifies.
    until: i64,
}

/// The key tokens are derived from.
pub struct TokenKey {
    key: Zeroizing<[u8; KEY_LEN]>,
    previous: Option<Previous>,
    /// The last token that verified for each scope (project, then stage), so the hot
    /// path compares bytes in constant time instead of recomputing an HMAC.
    verified: RwLock<VerifiedTokens>,
}

/// Verified tokens by project, then stage.
type VerifiedTokens = HashMap<Box<str>, HashMap<Box<str>, Verified>>;

/// A token that verified, and until when it may (a previous key's grace end).
struct Verified {
    token: Zeroizing<Box<[u8]>>,
    until: Option<i64>,
}

/// Scopes remembered at most in [`TokenKey`]'s verified tokens (then forgotten at once).
const MAX_VERIFIED: usize = 4096;

impl Clone for TokenKey {
    /// The same key; the copy remembers no verified token yet.
    fn clone(&self) -> Self {
        TokenKey {
            key: self.key.clone(),
            previous: self.previous.clone(),
            verified: Default::default(),
        }
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

/// The file that holds the key a rotation replaced: `<key file>.previous`.
pub fn previous_path(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".previous");
    p.into()
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn decode_key(text: &str) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    hex::decode_to_slice(text.trim(), &mut key[..]).ok()?;
    Some(key)
}

/// Reads `<key>.previous` (`HEX UNIX_SECONDS`); `None` when absent, malformed or past.
fn read_previous(path: &Path) -> Option<Previous> {
    let text = Zeroizing::new(fsutil::read_text(&previous_path(path)).ok()??);
    let (hexed, until) = text.trim().split_once(' ')?;
    let until: i64 = until.trim().parse().ok()?;
    let key = decode_key(hexed)?;
    (until > now_unix()).then_some(Previous { key, until })
}

impl TokenKey {
    /// Loads the key at `path`, creating it (0600, directory 0700) when missing.
    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        if let Some(dir) = path.parent() {
            fsutil::ensure_private_dir(dir)?;
        }
        match Self::load(path)? {
            Some(k) => Ok(k),
            None => Self::rotate(path),
        }
    }

    /// Loads the key at `path` (and a rotation's previous key still in its grace);
    /// `Ok(None)` when there is none yet. A key file readable by others is refused.
    pub fn load(path: &Path) -> Result<Option<Self>, TokenError> {
        let Some(text) = fsutil::read_text(path)? else {
            return Ok(None);
        };
        if let Some(mode) = fsutil::exposed_mode(path) {
            return Err(TokenError::Exposed {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = Zeroizing::new(text);
        let key = decode_key(&text).ok_or_else(|| TokenError::Malformed {
            path: path.to_path_buf(),
        })?;
        Ok(Some(TokenKey {
            key,
            previous: read_previous(path),
            verified: Default::default(),
        }))
    }

    /// Writes a fresh random key to `path` (atomically), invalidating every token at once
    /// (any previous key is dropped).
    pub fn rotate(path: &Path) -> Result<Self, TokenError> {
        Self::rotate_with_grace(path, std::time::Duration::ZERO).map(|(k, _)| k)
    }

    /// Replaces the key at `path` with a fresh one. The replaced key keeps verifying for
    /// `grace` (written first to `<path>.previous`, so a crash never loses it while its
    /// tokens are still in files); a zero grace removes any previous key. Returns the new
    /// key and the replaced one (`None` when there was none or it was refused).
    pub fn rotate_with_grace(
        path: &Path,
        grace: std::time::Duration,
    ) -> Result<(Self, Option<Self>), TokenError> {
        if let Some(dir) = path.parent() {
            fsutil::ensure_private_dir(dir)?;
        }
        let old = match Self::load(path) {
            Ok(k) => k,
            // An exposed or malformed key is replaced without grace.
            Err(TokenError::Exposed { .. } | TokenError::Malformed { .. }) => None,
            Err(e) => return Err(e),
        };
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(&mut key[..]).map_err(|e| TokenError::Random(e.to_string()))?;
        let previous = match (&old, grace.is_zero()) {
            (Some(o), false) => {
                let until = now_unix() + grace.as_secs().max(1) as i64;
                let line = Zeroizing::new(format!("{} {until}", hex::encode(&o.key[..])));
                fsutil::write_private(&previous_path(path), line.as_bytes())?;
                Some(Previous {
                    key: o.key.clone(),
                    until,
                })
            }
            _ => {
                match std::fs::remove_file(previous_path(path)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(TokenError::Fs(fsutil::FsError::Io {
                            path: previous_path(path),
                            source: e,
                        }));
                    }
                }
                None
            }
        };
        let hexed = Zeroizing::new(hex::encode(&key[..]));
        fsutil::write_private(path, hexed.as_bytes())?;
        Ok((
            TokenKey {
                key,
                previous,
                verified: Default::default(),
            },
            old,
        ))
    }

    /// Until when (unix seconds) a rotation's previous key still verifies, if it does.
    pub fn grace_until(&self) -> Option<i64> {
        self.previous
            .as_ref()
            .map(|p| p.until)
            .filter(|u| *u > now_unix())
    }

    /// The (project, stage) of a token genuinely made by this key (not its previous one).
    pub fn scope_of(&self, token: &str) -> Option<(String, String)> {
        let (tp, ts, mac) = split(token)?;
        let expected = mac_with(&self.key, &tp, &ts);
        bool::from(expected.as_slice().ct_eq(&mac)).then_some((tp, ts))
    }

    fn mac(&self, project: &str, stage: &str) -> [u8; 32] {
        mac_with(&self.key, project, stage)
    }

    /// The token for one scope.
    pub fn token(&self, project: &str, stage: &str) -> Secret {
        Secret::new(format!(
            "{PREFIX}.{}.{}.{}",
            B64.encode(project),
            B64.encode(stage),
            B64.encode(self.mac(project, stage))
        ))
    }

    /// Checks `presented` for the scope (`project`, `stage`).
    ///
    /// The token that last verified for the scope is remembered: the same token again
    /// is compared in constant time against it (as the MAC would be), with no HMAC. Any
    /// other token is checked in full.
    pub fn verify(&self, presented: &str, project: &str, stage: &str) -> Verdict {
        if self.remembered(presented, project, stage) {
            return Verdict::Valid;
        }
        let Some((tp, ts, mac)) = split(presented) else {
            return Verdict::Invalid;
        };
        let expected = self.mac(&tp, &ts);
        let current = bool::from(expected.as_slice().ct_eq(&mac));
        let previous = self.previous.as_ref().is_some_and(|p| {
            p.until > now_unix() && bool::from(mac_with(&p.key, &tp, &ts).as_slice().ct_eq(&mac))
        });
        if !current && !previous {
            return Verdict::Invalid;
        }
        if tp == project && ts == stage {
            let until = (!current).then(|| self.previous.as_ref().map_or(0, |p| p.until));
            self.remember(presented, project, stage, until);
            Verdict::Valid
        } else {
            Verdict::OtherScope
        }
    }

    fn remembered(&self, presented: &str, project: &str, stage: &str) -> bool {
        let map = self.verified.read().unwrap_or_else(|e| e.into_inner());
        let Some(v) = map.get(project).and_then(|m| m.get(stage)) else {
            return false;
        };
        v.token.len() == presented.len()
            && bool::from(v.token.ct_eq(presented.as_bytes()))
            && v.until.is_none_or(|t| t > now_unix())
    }

    fn remember(&self, presented: &str, project: &str, stage: &str, until: Option<i64>) {
        let mut map = self.verified.write().unwrap_or_else(|e| e.into_inner());
        if map.values().map(HashMap::len).sum::<usize>() >= MAX_VERIFIED {
            map.clear();
        }
        map.entry(project.into()).or_default().insert(
            stage.into(),
            Verified {
                token: Zeroizing::new(presented.as_bytes().into()),
                until,
            },
        );
    }
}

fn mac_with(key: &[u8; KEY_LEN], project: &str, stage: &str) -> [u8; 32] {
    let mut m =
        <Hmac<Sha256> as KeyInit>::new_from_slice(&key[..]).expect("HMAC takes keys of any length");
    m.update(PREFIX.as_bytes());
    m.update(&[0]);
    m.update(project.as_bytes());
    m.update(&[0]);
    m.update(stage.as_bytes());
    m.finalize().into_bytes().into()
}

fn split(token: &str) -> Option<(String, String, Vec<u8>)> {
    if token.len() > 1024 {
        return None;
    }
    let mut parts = token.split('.');
    if parts.next()? != PREFIX {
        return None;
    }
    let decode = |s: &str| B64.decode(s).ok();
    let project = String::from_utf8(decode(parts.next()?)?).ok()?;
    let stage = String::from_utf8(decode(parts.next()?)?).ok()?;
    let mac = decode(parts.next()?)?;
    if parts.next().is_some() || mac.len() != 32 {
        return None;
    }
    Some((project, stage, mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_scoped_and_rotatable() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("state").join("token-key");
        let k1 = TokenKey::load_or_create(&path).unwrap();
        let k1b = TokenKey::load_or_create(&path).unwrap();
        let tok = k1.token("orders", "dev");
        assert_eq!(tok, k1b.token("orders", "dev"), "stable across loads");
        assert_eq!(k1.verify(tok.expose(), "orders", "dev"), Verdict::Valid);
        assert_eq!(
            k1.verify(tok.expose(), "orders", "prod"),
            Verdict::OtherScope
        );
        assert_eq!(
            k1.verify(tok.expose(), "Orders", "dev"),
            Verdict::OtherScope
        );
        assert_eq!(k1.verify(tok.expose(), "other", "dev"), Verdict::OtherScope);
        let k2 = TokenKey::rotate(&path).unwrap();
        assert_eq!(k2.verify(tok.expose(), "orders", "dev"), Verdict::Invalid);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn malformed_tokens_are_invalid() {
        let t = tempfile::tempdir().unwrap();
        let k = TokenKey::load_or_create(&t.path().join("k")).unwrap();
        let good = k.token("p", "s");
        let g = good.expose();
        let mut flipped = g.to_string();
        let last = flipped.pop().unwrap();
        flipped.push(if last == 'A' { 'B' } else { 'A' });
        for bad in [
            "",
            "cpt1",
            "cpt1...",
            "Bearer x",
            &flipped,
            &format!("{g}.extra"),
            &format!(" {g}"),
            &"x".repeat(5000),
            "cpt1.\u{0}.\u{0}.\u{0}",
        ] {
            assert_eq!(k.verify(bad, "p", "s"), Verdict::Invalid, "{bad:?}");
        }
    }

    #[test]
    fn grace_keeps_the_previous_key_and_now_cuts_it() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("token-key");
        let k1 = TokenKey::load_or_create(&path).unwrap();
        let old = k1.token("p", "s");
        let (k2, replaced) =
            TokenKey::rotate_with_grace(&path, std::time::Duration::from_secs(60)).unwrap();
        assert!(replaced.is_some());
        assert_eq!(k2.verify(old.expose(), "p", "s"), Verdict::Valid);
        assert_eq!(k2.verify(old.expose(), "p", "x"), Verdict::OtherScope);
        assert!(k2.grace_until().is_some());
        let reloaded = TokenKey::load(&path).unwrap().unwrap();
        assert_eq!(reloaded.verify(old.expose(), "p", "s"), Verdict::Valid);
        assert_eq!(
            reloaded.scope_of(old.expose()),
            None,
            "not the current key's"
        );
        assert_eq!(
            k1.scope_of(old.expose()),
            Some(("p".to_string(), "s".to_string()))
        );
        let k3 = TokenKey::rotate(&path).unwrap();
        assert_eq!(k3.verify(old.expose(), "p", "s"), Verdict::Invalid);
        assert!(!previous_path(&path).exists());
    }

    #[test]
    fn exposed_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("token-key");
        TokenKey::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = TokenKey::load(&path).unwrap_err().to_string();
        assert!(e.contains("mode 644") && e.contains("chmod 600"), "{e}");
        TokenKey::rotate(&path).unwrap();
        assert!(TokenKey::load(&path).unwrap().is_some());
    }

    #[test]
    fn malformed_key_file_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("k");
        std::fs::write(&p, "not hex").unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let e = TokenKey::load(&p).unwrap_err();
        assert!(e.to_string().contains("not a credport key"), "{e}");
        assert!(format!("{:?}", TokenKey::rotate(&p).unwrap()).contains("redacted"));
    }
}
