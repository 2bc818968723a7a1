//! `credential_process`: runs the configured command and parses its JSON output.
//!
//! The command line is split like botocore does on Unix (`compat_shell_split`, which is
//! `shlex.split`): POSIX shell quoting rules, no shell, no variable expansion. The output
//! format is botocore's `ProcessProvider`: `Version` must be `1`; `AccessKeyId` and
//! `SecretAccessKey` are required; `SessionToken`, `Expiration` (RFC 3339) and `AccountId` are
//! optional.
//!
//! Errors name the program (argv\[0\], never its arguments, which might hold secrets) and may
//! include the program's stderr (trimmed, at most 1 KiB); they never include its stdout, which
//! is where the secrets are.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};
use zeroize::Zeroizing;

use crate::credentials::{Credentials, Secret, parse_timestamp};

/// Most stdout read from the process; more is an error.
pub const MAX_STDOUT_BYTES: usize = 64 * 1024;
/// Most stderr shown in an error.
pub const MAX_STDERR_SHOWN: usize = 1024;
/// Most stderr kept in memory (the rest is drained and dropped so the child never blocks).
const MAX_STDERR_KEPT: usize = 16 * 1024;

/// Why `credential_process` produced no credentials.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The command line is empty or its quoting is unbalanced.
    #[error("credential_process command is invalid: {reason}")]
    InvalidCommand {
        /// What is wrong with it.
        reason: String,
    },
    /// The program could not be started.
    #[error("credential_process `{program}` could not be started: {reason}")]
    Spawn {
        /// argv\[0\].
        program: String,
        /// The OS error.
        reason: String,
    },
    /// The program exited unsuccessfully.
    #[error("credential_process `{program}` failed ({status}){}", stderr_suffix(.stderr))]
    Failed {
        /// argv\[0\].
        program: String,
        /// The exit status, e.g. `exit status: 1`.
        status: String,
        /// Its stderr, trimmed and truncated to about 1 KiB.
        stderr: String,
    },
    /// The program did not finish in time and was killed.
    #[error("credential_process `{program}` did not finish within {after:?} and was killed")]
    Timeout {
        /// argv\[0\].
        program: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The program wrote more than [`MAX_STDOUT_BYTES`] to stdout.
    #[error("credential_process `{program}` wrote more than {limit} bytes to stdout")]
    OutputTooLarge {
        /// argv\[0\].
        program: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The output is not the expected JSON document. The reason names keys and positions,
    /// never values.
    #[error("credential_process `{program}` printed invalid output: {reason}")]
    BadOutput {
        /// argv\[0\].
        program: String,
        /// What is wrong.
        reason: String,
    },
    /// `Version` is missing or not `1`.
    #[error(
        "credential_process `{program}` printed unsupported Version {found}; supported versions: 1"
    )]
    UnsupportedVersion {
        /// argv\[0\].
        program: String,
        /// The version found (a number, or a description such as `missing`).
        found: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// Splits a `credential_process` value into argv, as botocore does on Unix.
pub fn split_command(command: &str) -> Result<Vec<String>, ProcessError> {
    let argv = shlex::split(command).ok_or_else(|| ProcessError::InvalidCommand {
        reason: "unbalanced quotes or a trailing backslash".to_string(),
    })?;
    if argv.is_empty() {
        return Err(ProcessError::InvalidCommand {
            reason: "it is empty".to_string(),
        });
    }
    Ok(argv)
}

/// Runs `command` (no shell), waits at most `timeout`, and parses its stdout.
///
/// Stdin is closed. On timeout the child is killed. The child inherits the environment.
pub async fn run_credential_process(
    command: &str,
    timeout: Duration,
) -> Result<Credentials, ProcessError> {
    let argv = split_command(command)?;
    let program = argv[0].clone();
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ProcessError::Spawn {
            program: program.clone(),
            reason: e.to_string(),
        })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");

    let run = async {
        let (out, err, status) = tokio::join!(
            read_limited(stdout, MAX_STDOUT_BYTES, true),
            read_limited(stderr, MAX_STDERR_KEPT, false),
            child.wait(),
        );
        (out, err, status)
    };
    let (out, err, status) = match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => {
            kill(&mut child).await;
            return Err(ProcessError::Timeout {
                program,
                after: timeout,
            });
        }
    };
    let stdout = match out {
        Ok(Some(buf)) => buf,
        Ok(None) => {
            kill(&mut child).await;
            return Err(ProcessError::OutputTooLarge {
                program,
                limit: MAX_STDOUT_BYTES,
            });
        }
        Err(e) => {
            return Err(ProcessError::Spawn {
                program,
                reason: format!("reading its stdout: {e}"),
            });
        }
    };
    let status: ExitStatus = status.map_err(|e| ProcessError::Spawn {
        program: program.clone(),
        reason: format!("waiting for it: {e}"),
    })?;
    if !status.success() {
        let stderr = err
            .ok()
            .flatten()
            .map(|b| shown_stderr(&b))
            .unwrap_or_default();
        return Err(ProcessError::Failed {
            program,
            status: status.to_string(),
            stderr,
        });
    }
    parse_output(&stdout).map_err(|e| match e {
        OutputError::Version(found) => ProcessError::UnsupportedVersion { program, found },
        OutputError::Bad(reason) => ProcessError::BadOutput { program, reason },
    })
}

async fn kill(child: &mut tokio::process::Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Reads `r` to the end. Returns `Ok(None)` when more than `limit` bytes arrive and `stop`
/// is set; otherwise keeps the first `limit` bytes and drains the rest.
async fn read_limited(
    mut r: impl AsyncRead + Unpin,
    limit: usize,
    stop: bool,
) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(4096));
    let mut chunk = Zeroizing::new([0u8; 8192]);
    loop {
        let n = r.read(&mut chunk[..]).await?;
        if n == 0 {
            return Ok(Some(buf));
        }
        let room = limit.saturating_sub(buf.len());
        if n > room && stop {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n.min(room)]);
    }
}

/// Stderr as shown in errors: lossy UTF-8, trimmed, at most [`MAX_STDERR_SHOWN`] bytes.
fn shown_stderr(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.len() <= MAX_STDERR_SHOWN {
        return text.to_string();
    }
    let mut end = MAX_STDERR_SHOWN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... (truncated)", text[..end].trim_end())
}

enum OutputError {
    Version(String),
    Bad(String),
}

/// The fields of the output document, kept as raw JSON values so that a wrong type never
/// produces a serde message quoting the value.
#[derive(Deserialize)]
struct Output {
    #[serde(rename = "Version")]
    version: Option<Value>,
    #[serde(rename = "AccessKeyId")]
    access_key_id: Option<Value>,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: Option<Value>,
    #[serde(rename = "SessionToken")]
    session_token: Option<Value>,
    #[serde(rename = "Expiration")]
    expiration: Option<Value>,
    #[serde(rename = "AccountId")]
    account_id: Option<Value>,
}

fn parse_output(stdout: &[u8]) -> Result<Credentials, OutputError> {
    if stdout.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(OutputError::Bad("stdout is empty".to_string()));
    }
    let out: Output = serde_json::from_slice(stdout).map_err(|e| {
        // Syntax errors carry only a position; a top-level non-object is a "data" error whose
        // message may quote the value, so it is described by category only.
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!("not valid JSON (line {}, column {})", e.line(), e.column())
            }
            _ => "not a JSON object".to_string(),
        };
        OutputError::Bad(format!("stdout is {what}"))
    })?;
    match &out.version {
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
        Some(Value::Number(n)) => return Err(OutputError::Version(n.to_string())),
        Some(Value::String(_)) => return Err(OutputError::Version("(a string)".to_string())),
        Some(_) => return Err(OutputError::Version("(not a number)".to_string())),
        None => return Err(OutputError::Version("(missing)".to_string())),
    }
    let access_key_id = required_string(out.access_key_id, "AccessKeyId")?;
    let secret = Secret::new(required_string(out.secret_access_key, "SecretAccessKey")?);
    let session_token = optional_string(out.session_token, "SessionToken")?.map(Secret::new);
    let expiration = match optional_string(out.expiration, "Expiration")? {
        Some(s) => Some(parse_timestamp(&s).ok_or_else(|| {
            OutputError::Bad("Expiration is not an RFC 3339 timestamp".to_string())
        })?),
        None => None,
    };
    let account_id = optional_string(out.account_id, "AccountId")?;
    Ok(Credentials {
        access_key_id,
        secret_access_key: secret,
        session_token,
        expiration,
        account_id,
    })
}

fn required_string(v: Option<Value>, key: &str) -> Result<String, OutputError> {
    optional_string(v, key)?.ok_or_else(|| OutputError::Bad(format!("missing required key {key}")))
}

/// A string value, `None` for a missing key, `null` or `""`.
fn optional_string(v: Option<Value>, key: &str) -> Result<Option<String>, OutputError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(OutputError::Bad(format!("{key} is not a string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Instant;

    /// Writes an executable shell script and returns its path (kept alive by the TempDir).
    fn script(dir: &tempfile::TempDir, name: &str, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(f, "#!/bin/sh\n{body}").unwrap();
        drop(f);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_str().unwrap().to_string()
    }

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn splits_like_shlex() {
        assert_eq!(
            split_command(r#"aws-vault exec "my profile" --json 'a b' c\ d"#).unwrap(),
            ["aws-vault", "exec", "my profile", "--json", "a b", "c d"]
        );
        assert!(matches!(
            split_command("  "),
            Err(ProcessError::InvalidCommand { .. })
        ));
        assert!(matches!(
            split_command("echo 'unterminated"),
            Err(ProcessError::InvalidCommand { .. })
        ));
    }

    #[tokio::test]
    async fn success_with_all_fields() {
        let dir = tempfile::tempdir().unwrap();
        let s = script(
            &dir,
            "ok",
            r#"printf '%s' '{"Version": 1, "AccessKeyId": "ASIAPROC", "SecretAccessKey": "sk", "SessionToken": "st", "Expiration": "2026-11-27T10:00:00Z", "AccountId": "222222222222"}'"#,
        );
        let c = run_credential_process(&s, T).await.unwrap();
        assert_eq!(c.access_key_id, "ASIAPROC");
        assert_eq!(c.secret_access_key.expose(), "sk");
        assert_eq!(c.session_token.unwrap().expose(), "st");
        assert_eq!(
            c.expiration,
            Some(time::macros::datetime!(2026-11-27 10:00:00 UTC))
        );
        assert_eq!(c.account_id.as_deref(), Some("222222222222"));
    }

    #[tokio::test]
    async fn arguments_are_passed_without_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let s = script(
            &dir,
            "args",
            r#"printf '{"Version":1,"AccessKeyId":"%s","SecretAccessKey":"x"}' "$1""#,
        );
        let c = run_credential_process(&format!("{s} 'AK $HOME;x'"), T)
            .await
            .unwrap();
        assert_eq!(c.access_key_id, "AK $HOME;x");
        assert!(c.session_token.is_none() && c.expiration.is_none());
    }

    #[tokio::test]
    async fn bad_json_never_echoes_stdout() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "trunc",
                r#"printf '{"Version":1,"SecretAccessKey":"TOPSECRETVALUE"'"#,
                "not valid JSON",
            ),
            (
                "array",
                r#"printf '["TOPSECRETVALUE"]'"#,
                "not a JSON object",
            ),
            (
                "type",
                r#"printf '{"Version":1,"AccessKeyId":"A","SecretAccessKey":["TOPSECRETVALUE"]}'"#,
                "SecretAccessKey is not a string",
            ),
            (
                "missing",
                r#"printf '{"Version":1,"AccessKeyId":"TOPSECRETVALUE"}'"#,
                "missing required key SecretAccessKey",
            ),
            (
                "exp",
                r#"printf '{"Version":1,"AccessKeyId":"A","SecretAccessKey":"B","Expiration":"TOPSECRETVALUE"}'"#,
                "Expiration is not an RFC 3339",
            ),
            ("empty", "true", "stdout is empty"),
        ];
        for (name, body, want) in cases {
            let s = script(&dir, name, body);
            let e = run_credential_process(&s, T).await.unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, ProcessError::BadOutput { .. }), "{name}: {msg}");
            assert!(msg.contains(want), "{name}: {msg}");
            assert!(!msg.contains("TOPSECRETVALUE"), "{name}: {msg}");
            assert!(
                !format!("{e:?}").contains("TOPSECRETVALUE"),
                "{name}: {e:?}"
            );
        }
    }

    #[tokio::test]
    async fn wrong_version() {
        let dir = tempfile::tempdir().unwrap();
        for (name, v, want) in [("v2", "2", "Version 2;"), ("vs", "\"1\"", "(a string)")] {
            let s = script(
                &dir,
                name,
                &format!(r#"printf '{{"Version":{v},"AccessKeyId":"A","SecretAccessKey":"B"}}'"#),
            );
            let e = run_credential_process(&s, T).await.unwrap_err();
            assert!(matches!(e, ProcessError::UnsupportedVersion { .. }), "{e}");
            assert!(e.to_string().contains(want), "{e}");
        }
        let s = script(
            &dir,
            "nov",
            r#"printf '{"AccessKeyId":"A","SecretAccessKey":"B"}'"#,
        );
        let e = run_credential_process(&s, T).await.unwrap_err();
        assert!(e.to_string().contains("Version (missing)"), "{e}");
    }

    #[tokio::test]
    async fn non_zero_exit_shows_stderr_but_never_stdout() {
        let dir = tempfile::tempdir().unwrap();
        let s = script(
            &dir,
            "fail",
            r#"printf '{"Version":1,"AccessKeyId":"A","SecretAccessKey":"STDOUTSECRET"}'
echo '  token expired, run login  ' >&2
exit 3"#,
        );
        let e = run_credential_process(&format!("{s} --password hunter2"), T)
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ProcessError::Failed { .. }), "{msg}");
        assert!(
            msg.ends_with("failed (exit status: 3): token expired, run login"),
            "{msg}"
        );
        assert!(!msg.contains("STDOUTSECRET"), "{msg}");
        assert!(!msg.contains("hunter2"), "arguments are not shown: {msg}");
    }

    #[tokio::test]
    async fn long_stderr_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let s = script(
            &dir,
            "noisy",
            "head -c 100000 /dev/zero | tr '\\0' 'e' >&2; exit 1",
        );
        let e = run_credential_process(&s, T).await.unwrap_err();
        let ProcessError::Failed { stderr, .. } = e else {
            panic!("{e}")
        };
        assert!(stderr.len() <= MAX_STDERR_SHOWN + 20, "{}", stderr.len());
        assert!(stderr.ends_with("... (truncated)"));
    }

    #[tokio::test]
    async fn oversized_stdout_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let s = script(&dir, "big", "head -c 200000 /dev/zero | tr '\\0' 'x'");
        let e = run_credential_process(&s, T).await.unwrap_err();
        assert!(matches!(e, ProcessError::OutputTooLarge { .. }), "{e}");
    }

    #[tokio::test]
    async fn timeout_kills_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("still-running");
        let s = script(
            &dir,
            "slow",
            &format!("sleep 1\ntouch '{}'", marker.display()),
        );
        let start = Instant::now();
        let e = run_credential_process(&s, Duration::from_millis(300))
            .await
            .unwrap_err();
        let took = start.elapsed();
        assert!(matches!(e, ProcessError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("did not finish within 300ms"), "{e}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        // The shell was killed, so it never gets to touch the marker.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "the child was not killed");
    }

    #[tokio::test]
    async fn spawn_failure_names_the_program() {
        let e = run_credential_process("/nonexistent/credential-helper --flag", T)
            .await
            .unwrap_err();
        assert!(matches!(e, ProcessError::Spawn { .. }), "{e}");
        assert!(
            e.to_string().starts_with(
                "credential_process `/nonexistent/credential-helper` could not be started"
            ),
            "{e}"
        );
    }
}
