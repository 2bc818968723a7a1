//! Session policies: the `policy` / `policy_arns` a project asks its sessions to be scoped
//! down with, as written in `.credport.toml` or credport's `config.toml`, read and checked.
//!
//! ```toml
//! policy = "policies/readonly.json"   # every stage: a file (relative to this file) ...
//! policy_arns = ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
//!
//! [policies.prod]                     # one stage: replaces the keys above for that stage
//! policy = '{"Version": "2012-10-17", "Statement": [...]}'   # ... or inline JSON
//! ```
//!
//! A [`PolicySpec`] is what a file says; [`SessionPolicy::load`] turns it into the value a
//! binding carries to the plan: the document already read, parsed and packed (whitespace
//! removed), the ARNs checked. Everything STS would refuse is refused here first, naming the
//! file: JSON that does not parse or is not a policy object, characters STS does not accept
//! (it takes tab, line feed, carriage return and `U+0020`..`U+00FF`), more than 10 ARNs, an ARN
//! that is not an IAM policy ARN, and a packed policy plus ARNs over STS's 2,048-character
//! plain-text limit. STS's separate limit on the compressed size (`PackedPolicyTooLarge`)
//! can only be checked by STS.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// STS's limit on the plain text of the inline policy and the policy ARNs together.
pub const MAX_PLAINTEXT: usize = 2048;

/// STS's limit on the number of managed policy ARNs.
pub const MAX_ARNS: usize = 10;

/// `policy` and `policy_arns` as written for one stage (a `[policies.STAGE]` table) or for
/// every stage (the keys at the top of a project's table).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// A policy file (relative to the file that names it), or inline JSON (starts with `{`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Managed policy ARNs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_arns: Vec<String>,
}

impl PolicySpec {
    /// Whether it asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.policy.is_none() && self.policy_arns.is_empty()
    }
}

/// The spec that applies to `stage`: its own `[policies.STAGE]` table when there is one
/// (even an empty one, which means "no policy for this stage"), else the project-wide
/// `policy` / `policy_arns`. `None` when nothing applies.
pub fn spec_for(
    policy: &Option<String>,
    policy_arns: &[String],
    per_stage: &BTreeMap<String, PolicySpec>,
    stage: &str,
) -> Option<PolicySpec> {
    let spec = match per_stage.get(stage) {
        Some(s) => s.clone(),
        None => PolicySpec {
            policy: policy.clone(),
            policy_arns: policy_arns.to_vec(),
        },
    };
    (!spec.is_empty()).then_some(spec)
}

/// A stage named `policy` is almost surely `policy = ...` written below a `[stages]`
/// header, where TOML makes it a stage mapping and the policy would silently not apply:
/// the message to refuse it with.
pub fn misplaced_policy_key<'a>(mut stages: impl Iterator<Item = &'a String>) -> Option<String> {
    stages.any(|s| s == "policy").then(|| {
        "a stage named 'policy' under [stages]: move `policy = ...` above the first [table], where it applies to every stage".to_string()
    })
}

/// Whether `value` (a `policy` value) is inline JSON rather than a file name.
pub fn is_inline(value: &str) -> bool {
    value.trim_start().starts_with('{')
}

/// Makes a relative policy file name absolute against `dir` (the directory of the file that
/// names it); inline JSON and absolute names are left alone.
pub fn anchor(value: &mut Option<String>, dir: &Path) {
    if let Some(v) = value
        && !is_inline(v)
        && Path::new(v.as_str()).is_relative()
    {
        *v = dir.join(v.as_str()).to_string_lossy().into_owned();
    }
}

/// Why a session policy cannot be used. Messages name the file (or where the inline policy
/// is written) and never quote the document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The policy file cannot be read (or does not exist).
    #[error("session policy file {file} (named in {named_in}): {error}")]
    Read {
        /// The policy file.
        file: PathBuf,
        /// Where it is named.
        named_in: String,
        /// What went wrong.
        error: String,
    },
    /// The document is not JSON, or not a policy object.
    #[error("session policy {origin}: {problem}")]
    Invalid {
        /// The file, or `inline in FILE`.
        origin: String,
        /// What is wrong.
        problem: String,
    },
    /// The packed document and the ARNs are longer than STS accepts.
    #[error(
        "session policy {origin}: {chars} characters (the policy without whitespace plus the policy ARNs); STS accepts at most {MAX_PLAINTEXT}"
    )]
    TooLong {
        /// The file, or `inline in FILE`.
        origin: String,
        /// Their length.
        chars: usize,
    },
    /// More than [`MAX_ARNS`] ARNs.
    #[error("policy_arns in {named_in}: {count} ARNs; STS accepts at most {MAX_ARNS}")]
    TooManyArns {
        /// Where they are written.
        named_in: String,
        /// How many.
        count: usize,
    },
    /// An entry of `policy_arns` is not an IAM policy ARN.
    #[error(
        "policy_arns in {named_in}: '{arn}' is not an IAM policy ARN (expected arn:PARTITION:iam::ACCOUNT:policy/NAME, e.g. arn:aws:iam::aws:policy/ReadOnlyAccess)"
    )]
    BadArn {
        /// Where it is written.
        named_in: String,
        /// The value, shortened.
        arn: String,
    },
}

/// A checked session policy, ready for STS: what a binding carries to the plan.
///
/// Equality and hashing look at what is sent (document and ARNs), not at where it was
/// written, so the session cache shares sessions scoped by the same policy.
#[derive(Debug, Clone, Serialize)]
pub struct SessionPolicy {
    /// Where it comes from: the policy file, or `inline in FILE`; `None` for ARNs only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The inline policy, packed (parsed and written back without whitespace).
    #[serde(skip)]
    pub document: Option<String>,
    /// Managed policy ARNs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub arns: Vec<String>,
}

impl PartialEq for SessionPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.document == other.document && self.arns == other.arns
    }
}

impl Eq for SessionPolicy {}

impl Hash for SessionPolicy {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.document.hash(state);
        self.arns.hash(state);
    }
}

impl SessionPolicy {
    /// Reads and checks `spec`. Relative file names are resolved against `dir`;
    /// `named_in` says where the spec is written (a file, or `config [projects.NAME]`).
    /// `Ok(None)` when the spec asks for nothing.
    pub fn load(
        spec: &PolicySpec,
        dir: &Path,
        named_in: &str,
    ) -> Result<Option<SessionPolicy>, PolicyError> {
        Self::load_with(spec, dir, named_in, &|file| {
            crate::fsutil::read_text(file).map_err(|e| e.to_string())
        })
    }

    /// [`load`](Self::load), reading a policy file with `read` (`Ok(None)`: no such file),
    /// so the project registry can read it as it reads project files (and know it read it).
    pub fn load_with(
        spec: &PolicySpec,
        dir: &Path,
        named_in: &str,
        read: &dyn Fn(&Path) -> Result<Option<String>, String>,
    ) -> Result<Option<SessionPolicy>, PolicyError> {
        if spec.is_empty() {
            return Ok(None);
        }
        let (origin, document) = match &spec.policy {
            None => (None, None),
            Some(v) if v.trim().is_empty() => {
                return Err(PolicyError::Invalid {
                    origin: format!("in {named_in}"),
                    problem: "`policy` is empty: name a policy file or write the JSON inline"
                        .into(),
                });
            }
            Some(v) if is_inline(v) => {
                let origin = format!("inline in {named_in}");
                let doc = pack(v, &origin)?;
                (Some(origin), Some(doc))
            }
            Some(v) => {
                let file = dir.join(v);
                let read_err = |error: String| PolicyError::Read {
                    file: file.clone(),
                    named_in: named_in.to_string(),
                    error,
                };
                let text = read(&file)
                    .map_err(read_err)?
                    .ok_or_else(|| read_err("no such file".into()))?;
                let origin = file.display().to_string();
                let doc = pack(&text, &origin)?;
                (Some(origin), Some(doc))
            }
        };
        check_arns(&spec.policy_arns, named_in)?;
        let chars = document.as_ref().map_or(0, |d| d.chars().count())
            + spec.policy_arns.iter().map(String::len).sum::<usize>();
        if chars > MAX_PLAINTEXT {
            return Err(PolicyError::TooLong {
                origin: origin.unwrap_or_else(|| format!("policy_arns in {named_in}")),
                chars,
            });
        }
        Ok(Some(SessionPolicy {
            origin,
            document,
            arns: spec.policy_arns.clone(),
        }))
    }

    /// The policy as `inline` JSON with its ARNs: a spec that loads to an equal policy
    /// without any file (for a config handed to an embedded server).
    pub fn to_spec(&self) -> PolicySpec {
        PolicySpec {
            policy: self.document.clone(),
            policy_arns: self.arns.clone(),
        }
    }

    /// A short description: where it comes from and how many ARNs.
    pub fn describe(&self) -> String {
        let arns = match self.arns.len() {
            0 => String::new(),
            1 => "1 policy ARN".to_string(),
            n => format!("{n} policy ARNs"),
        };
        match (&self.origin, arns.is_empty()) {
            (Some(o), true) => format!("session policy {o}"),
            (Some(o), false) => format!("session policy {o} and {arns}"),
            (None, _) => format!("session policy of {arns}"),
        }
    }
}

/// Serializes an optional shared policy (for `#[serde(serialize_with)]` on fields of type
/// `Option<Arc<SessionPolicy>>`).
pub fn serialize_shared<S: serde::Serializer>(
    value: &Option<std::sync::Arc<SessionPolicy>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    value.as_deref().serialize(serializer)
}

/// Parses `text` as a policy document and writes it back without whitespace.
fn pack(text: &str, origin: &str) -> Result<String, PolicyError> {
    let invalid = |problem: String| PolicyError::Invalid {
        origin: origin.to_string(),
        problem,
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let Some(obj) = value.as_object() else {
        return Err(invalid("is not a JSON object".into()));
    };
    if !obj.contains_key("Statement") {
        return Err(invalid("has no \"Statement\"".into()));
    }
    let packed = value.to_string();
    if let Some(c) = packed
        .chars()
        .find(|c| !matches!(*c, '\t' | '\n' | '\r' | '\u{20}'..='\u{ff}'))
    {
        return Err(invalid(format!(
            "contains the character U+{:04X}, which STS does not accept (only tab, line feed, carriage return and U+0020..U+00FF)",
            c as u32
        )));
    }
    Ok(packed)
}

fn check_arns(arns: &[String], named_in: &str) -> Result<(), PolicyError> {
    if arns.len() > MAX_ARNS {
        return Err(PolicyError::TooManyArns {
            named_in: named_in.to_string(),
            count: arns.len(),
        });
    }
    for arn in arns {
        if !is_policy_arn(arn) {
            let mut shown: String = arn.chars().take(80).collect();
            if shown.len() < arn.len() {
                shown.push('…');
            }
            return Err(PolicyError::BadArn {
                named_in: named_in.to_string(),
                arn: shown.escape_debug().to_string(),
            });
        }
    }
    Ok(())
}

/// `arn:PARTITION:iam::ACCOUNT:policy/PATH/NAME`, where ACCOUNT is 12 digits or `aws`;
/// 20 to 2048 characters, as STS requires.
fn is_policy_arn(arn: &str) -> bool {
    if !(20..=2048).contains(&arn.len()) || arn.chars().any(|c| c.is_whitespace()) {
        return false;
    }
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [scheme, partition, service, region, account, resource] = parts[..] else {
        return false;
    };
    scheme == "arn"
        && partition.starts_with("aws")
        && service == "iam"
        && region.is_empty()
        && (account == "aws"
            || (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())))
        && resource.len() > "policy/".len()
        && resource.starts_with("policy/")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]
}"#;

    fn inline(doc: &str) -> PolicySpec {
        PolicySpec {
            policy: Some(doc.into()),
            policy_arns: vec![],
        }
    }

    fn load(spec: &PolicySpec) -> Result<Option<SessionPolicy>, PolicyError> {
        SessionPolicy::load(spec, Path::new("/nowhere"), "/p/.credport.toml")
    }

    #[test]
    fn inline_policies_are_packed() {
        let p = load(&inline(DOC)).unwrap().unwrap();
        let doc = p.document.as_deref().unwrap();
        assert!(!doc.contains(' ') && !doc.contains('\n'), "{doc}");
        let back: serde_json::Value = serde_json::from_str(doc).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(DOC).unwrap()
        );
        assert_eq!(p.origin.as_deref(), Some("inline in /p/.credport.toml"));
        assert_eq!(load(&PolicySpec::default()).unwrap(), None);
    }

    #[test]
    fn files_are_read_relative_to_their_directory() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("pol")).unwrap();
        std::fs::write(t.path().join("pol/ro.json"), DOC).unwrap();
        let arns = vec!["arn:aws:iam::aws:policy/ReadOnlyAccess".to_string()];
        let spec = PolicySpec {
            policy: Some("pol/ro.json".into()),
            policy_arns: arns.clone(),
        };
        let p = SessionPolicy::load(&spec, t.path(), "x").unwrap().unwrap();
        let from_inline = load(&inline(DOC)).unwrap().unwrap();
        assert_eq!(p.document, from_inline.document);
        assert_eq!(p.arns, arns);
        assert!(p.origin.as_deref().unwrap().ends_with("pol/ro.json"));
        let missing = PolicySpec {
            policy: Some("missing.json".into()),
            policy_arns: vec![],
        };
        let e = SessionPolicy::load(&missing, t.path(), "CFG")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing.json") && e.contains("named in CFG") && e.contains("no such file"),
            "{e}"
        );
    }

    #[test]
    fn bad_documents_name_the_origin() {
        let e = load(&inline("{\"Statement\": [")).unwrap_err().to_string();
        assert!(
            e.starts_with("session policy inline in /p/.credport.toml: not valid JSON"),
            "{e}"
        );
        let e = load(&inline("{\"Version\": \"2012-10-17\"}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no \"Statement\""), "{e}");
        let e = load(&inline("{\"Statement\": \"\u{2028}\"}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("U+2028"), "{e}");
        let e = load(&inline(" ")).unwrap_err().to_string();
        assert!(
            e.contains("`policy` is empty") && e.contains("/p/.credport.toml"),
            "{e}"
        );
        // Latin-1 is accepted, as STS documents.
        assert!(load(&inline("{\"Statement\": \"caf\u{e9}\"}")).is_ok());
    }

    #[test]
    fn size_limit_counts_packed_text_and_arns() {
        let filler = |n: usize| format!("{{\"Statement\":\"{}\"}}", "x".repeat(n));
        let at_limit = filler(MAX_PLAINTEXT - "{\"Statement\":\"\"}".len());
        assert_eq!(at_limit.len(), MAX_PLAINTEXT);
        assert!(load(&inline(&at_limit)).is_ok());
        // Whitespace does not count: it is not sent.
        let spaced = at_limit.replace(":", " :   ");
        assert!(load(&inline(&spaced)).is_ok());
        let e = load(&inline(&filler(MAX_PLAINTEXT)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2064 characters") && e.contains("at most 2048"),
            "{e}"
        );
        let mut spec = inline(&at_limit);
        spec.policy_arns = vec!["arn:aws:iam::aws:policy/ReadOnlyAccess".into()];
        assert!(matches!(load(&spec), Err(PolicyError::TooLong { .. })));
    }

    #[test]
    fn arns_are_checked() {
        let arns = |v: &[&str]| PolicySpec {
            policy: None,
            policy_arns: v.iter().map(|s| s.to_string()).collect(),
        };
        for ok in [
            "arn:aws:iam::aws:policy/ReadOnlyAccess",
            "arn:aws:iam::123456789012:policy/team/Deploy",
            "arn:aws-cn:iam::aws:policy/ReadOnlyAccess",
        ] {
            let p = load(&arns(&[ok])).unwrap().unwrap();
            assert_eq!(p.arns, vec![ok.to_string()]);
            assert_eq!(p.document, None);
        }
        for bad in [
            "ReadOnlyAccess",
            "arn:aws:iam::aws:role/ReadOnlyAccess",
            "arn:aws:s3:::bucket/policy/x",
            "arn:aws:iam::12:policy/ReadOnlyAccess",
            "arn:aws:iam::aws:policy/",
            "arn:aws:iam:us-east-1:aws:policy/X",
        ] {
            let e = load(&arns(&[bad])).unwrap_err().to_string();
            assert!(
                e.contains("is not an IAM policy ARN") && e.contains("/p/.credport.toml"),
                "{bad}: {e}"
            );
        }
        let eleven = vec!["arn:aws:iam::aws:policy/ReadOnlyAccess"; 11];
        let e = load(&arns(&eleven)).unwrap_err().to_string();
        assert!(e.contains("11 ARNs") && e.contains("at most 10"), "{e}");
    }

    #[test]
    fn stage_tables_replace_the_project_wide_keys() {
        let mut per_stage = BTreeMap::new();
        per_stage.insert("prod".to_string(), inline("{}"));
        per_stage.insert("open".to_string(), PolicySpec::default());
        let all = Some("all.json".to_string());
        let arns = vec!["arn:aws:iam::aws:policy/ReadOnlyAccess".to_string()];
        assert_eq!(
            spec_for(&all, &arns, &per_stage, "prod").unwrap(),
            inline("{}")
        );
        assert_eq!(spec_for(&all, &arns, &per_stage, "open"), None);
        let dev = spec_for(&all, &arns, &per_stage, "dev").unwrap();
        assert_eq!((dev.policy, dev.policy_arns), (all.clone(), arns));
        assert_eq!(spec_for(&None, &[], &per_stage, "dev"), None);
    }

    #[test]
    fn anchoring_and_equality() {
        let mut v = Some("p.json".to_string());
        anchor(&mut v, Path::new("/etc/credport"));
        assert_eq!(v.as_deref(), Some("/etc/credport/p.json"));
        let mut v = Some(" {\"Statement\": []}".to_string());
        anchor(&mut v, Path::new("/etc/credport"));
        assert_eq!(v.as_deref(), Some(" {\"Statement\": []}"));
        // The same document from two places is one policy (one cache slot).
        let a = SessionPolicy::load(&inline(DOC), Path::new("/"), "a").unwrap();
        let b = SessionPolicy::load(&inline(DOC), Path::new("/"), "b").unwrap();
        assert_eq!(a, b);
        let again = SessionPolicy::load(&a.as_ref().unwrap().to_spec(), Path::new("/"), "c");
        assert_eq!(again.unwrap(), a);
    }
}
