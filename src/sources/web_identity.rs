//! Web identity token files (`web_identity_token_file`, `AWS_WEB_IDENTITY_TOKEN_FILE`): read
//! the token, bounded in size and trimmed, as a [`Secret`] for
//! [`StsClient::assume_role_with_web_identity`](crate::sources::sts::StsClient::assume_role_with_web_identity).
//!
//! The file is read anew for every call: Kubernetes and other issuers rotate it in place.

use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;
use zeroize::Zeroizing;

use crate::credentials::Secret;

/// Largest token file accepted (OIDC JWTs are a few KiB at most).
pub const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// Why the token file gave no token. Every message names the file; none contains the token.
#[derive(Debug, thiserror::Error)]
pub enum WebIdentityError {
    /// The file cannot be opened or read.
    #[error("cannot read web identity token file {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The file is larger than [`MAX_TOKEN_BYTES`].
    #[error("web identity token file {} is larger than {MAX_TOKEN_BYTES} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is empty (after trimming whitespace) or not UTF-8.
    #[error("web identity token file {} {what}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// `is empty` or `is not UTF-8 text`.
        what: &'static str,
    },
}

/// Reads the token in `path`, trimmed of surrounding whitespace.
pub async fn read_token_file(path: &Path) -> Result<Secret, WebIdentityError> {
    let read_err = |e: std::io::Error| WebIdentityError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = tokio::fs::File::open(path).await.map_err(read_err)?;
    let mut buf = Zeroizing::new(Vec::new());
    // One byte past the limit tells "exactly at the limit" from "over it".
    file.take(MAX_TOKEN_BYTES + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(read_err)?;
    if buf.len() as u64 > MAX_TOKEN_BYTES {
        return Err(WebIdentityError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let text = std::str::from_utf8(&buf).map_err(|_| WebIdentityError::Invalid {
        path: path.to_path_buf(),
        what: "is not UTF-8 text",
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(WebIdentityError::Invalid {
            path: path.to_path_buf(),
            what: "is empty",
        });
    }
    Ok(Secret::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_and_trims() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "\n  eyJhbGciOi.payload.sig \n").unwrap();
        assert_eq!(
            read_token_file(&p).await.unwrap().expose(),
            "eyJhbGciOi.payload.sig"
        );
    }

    #[tokio::test]
    async fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = read_token_file(&missing).await.unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "cannot read web identity token file {}: ",
                missing.display()
            )),
            "{e}"
        );

        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let e = read_token_file(&empty).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("web identity token file {} is empty", empty.display())
        );

        let big = dir.path().join("big");
        std::fs::write(&big, "a".repeat(MAX_TOKEN_BYTES as usize + 1)).unwrap();
        let e = read_token_file(&big).await.unwrap_err();
        assert!(matches!(e, WebIdentityError::TooLarge { .. }), "{e}");
        let exact = dir.path().join("exact");
        std::fs::write(&exact, "a".repeat(MAX_TOKEN_BYTES as usize)).unwrap();
        assert!(read_token_file(&exact).await.is_ok());

        let bin = dir.path().join("bin");
        std::fs::write(&bin, [0xff, 0xfe, 0x41]).unwrap();
        let e = read_token_file(&bin).await.unwrap_err();
        assert!(e.to_string().ends_with("is not UTF-8 text"), "{e}");
    }
}
