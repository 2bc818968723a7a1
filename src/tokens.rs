//! Scoped bearer tokens: one per (project, stage), derived from one secret key.
//!
//! A token is `cpt1.<project>.<stage>.<mac>`, where the names are base64url-encoded and
//! `mac` is HMAC-SHA256 of the scope under the key kept in `<state dir>/token-key` (32 random
//! bytes, 0600 in a 0700 directory). Tokens are therefore stable across daemon restarts,
//! need no token database, and all change at once when the key is rotated. Verification
//! recomputes the MAC and compares it in constant time; a token whose MAC is valid for
//! another scope is told apart (403) from a token that is not ours at all (401).

use std::path::Path;

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
}

/// The key tokens are derived from.
#[derive(Clone)]
pub struct TokenKey {
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

impl TokenKey {
    /// Loads the key at `path`, creating it (0600, directory 0700) when missing.
    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        match Self::load(path)? {
            Some(k) => Ok(k),
            None => Self::rotate(path),
        }
    }

    /// Loads the key at `path`; `Ok(None)` when there is none yet.
    pub fn load(path: &Path) -> Result<Option<Self>, TokenError> {
        let Some(text) = fsutil::read_text(path)? else {
            return Ok(None);
        };
        let text = Zeroizing::new(text);
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(text.trim(), &mut key[..]).map_err(|_| TokenError::Malformed {
            path: path.to_path_buf(),
        })?;
        Ok(Some(TokenKey { key }))
    }

    /// Writes a fresh random key to `path` (atomically), invalidating every token.
    pub fn rotate(path: &Path) -> Result<Self, TokenError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(&mut key[..]).map_err(|e| TokenError::Random(e.to_string()))?;
        let hexed = Zeroizing::new(hex::encode(&key[..]));
        fsutil::write_private(path, hexed.as_bytes())?;
        Ok(TokenKey { key })
    }

    fn mac(&self, project: &str, stage: &str) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key[..])
            .expect("HMAC takes keys of any length");
        m.update(PREFIX.as_bytes());
        m.update(&[0]);
        m.update(project.as_bytes());
        m.update(&[0]);
        m.update(stage.as_bytes());
        m.finalize().into_bytes().into()
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
    pub fn verify(&self, presented: &str, project: &str, stage: &str) -> Verdict {
        let Some((tp, ts, mac)) = split(presented) else {
            return Verdict::Invalid;
        };
        let expected = self.mac(&tp, &ts);
        if !bool::from(expected.as_slice().ct_eq(&mac)) {
            return Verdict::Invalid;
        }
        if tp == project && ts == stage {
            Verdict::Valid
        } else {
            Verdict::OtherScope
        }
    }
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
    fn malformed_key_file_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("k");
        std::fs::write(&p, "not hex").unwrap();
        let e = TokenKey::load(&p).unwrap_err();
        assert!(e.to_string().contains("not a credport key"), "{e}");
        assert!(format!("{:?}", TokenKey::rotate(&p).unwrap()).contains("redacted"));
    }
}
