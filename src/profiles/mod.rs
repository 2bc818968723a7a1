//! The profile store: the merged view of `~/.aws/credentials` and `~/.aws/config`.
//!
//! [`parse`] reads one file, [`merge`] combines the two by the AWS rules into an immutable
//! [`Snapshot`], and [`store`] keeps the current snapshot, reloads it when [`watch`] sees a
//! change, and remembers the last good parse of each file so a broken save never takes
//! profiles away.
//!
//! Merging follows botocore (`botocore/configloader.py` and `Session.full_config`):
//! `[profile x]` in config is profile `x`, `[default]` (or `[profile default]`) is
//! `default`, sections of the credentials file are profile names as written, and for a
//! profile present in both files the credentials file's value wins key by key.
//! `[sso-session x]` and `[services x]` sections are kept for the credential sources.
//! A blank value (`aws_session_token =`) counts as absent, as it does for every SDK.

pub mod parse;
pub mod store;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::credentials::parse_timestamp;
pub use parse::{ParseError, Section};

/// Keys that tools write next to session credentials to say when they expire, in the order
/// they are looked up: saml2aws and gimme-aws-creds (`x_security_token_expires`),
/// aws-sso-util and others (`aws_expiration`), and the spellings some scripts use.
pub const EXPIRY_KEYS: &[&str] = &[
    "x_security_token_expires",
    "aws_expiration",
    "aws_session_expiration",
    "aws_credential_expiration",
    "expiration",
];

/// Which of the two shared files a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// The shared credentials file (`~/.aws/credentials`).
    Credentials,
    /// The shared config file (`~/.aws/config`).
    Config,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Credentials => "credentials",
            FileKind::Config => "config",
        })
    }
}

/// How a profile obtains credentials, decided the way botocore's credential chain would for
/// that profile: roles first, then web identity, SSO, keys, and `credential_process` last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// `aws_access_key_id` + `aws_secret_access_key`, no session token: long-term keys.
    StaticKeys,
    /// Keys with `aws_session_token` (or legacy `aws_security_token`).
    SessionKeys,
    /// `role_arn` with `source_profile` or `credential_source`.
    Role,
    /// `role_arn` with `web_identity_token_file`.
    WebIdentity,
    /// `sso_session` or `sso_start_url`.
    Sso,
    /// `credential_process`.
    Process,
    /// Nothing that yields credentials (for example a config-only profile with a region).
    None,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::StaticKeys => "static keys",
            SourceKind::SessionKeys => "session keys",
            SourceKind::Role => "role",
            SourceKind::WebIdentity => "web identity",
            SourceKind::Sso => "SSO",
            SourceKind::Process => "credential_process",
            SourceKind::None => "no credentials",
        })
    }
}

/// One merged profile. Values may be secrets: never log `props` as a whole; the `Debug`
/// impl prints key names only.
#[derive(Clone, PartialEq, Eq)]
pub struct Profile {
    /// The profile name (`dev`, not `profile dev`).
    pub name: String,
    /// Lowercased keys to non-blank values, credentials file over config file. A profile
    /// defined by one section with no blank value shares that section's map, so a reload
    /// copies no value of the sections that did not change.
    pub props: Arc<BTreeMap<String, String>>,
    /// Where the profile is defined: file and header line, credentials file first.
    pub defined_in: Vec<(FileKind, usize)>,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("name", &self.name)
            .field("keys", &self.props.keys().collect::<Vec<_>>())
            .field("defined_in", &self.defined_in)
            .finish()
    }
}

impl Profile {
    /// A non-blank value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props.get(key).map(String::as_str)
    }

    /// The session token, under its current or legacy name.
    pub fn session_token(&self) -> Option<&str> {
        self.get("aws_session_token")
            .or_else(|| self.get("aws_security_token"))
    }

    /// Classifies the profile's credential source.
    pub fn kind(&self) -> SourceKind {
        let has = |k: &str| self.props.contains_key(k);
        if has("role_arn") {
            if has("source_profile") || has("credential_source") {
                return SourceKind::Role;
            }
            if has("web_identity_token_file") {
                return SourceKind::WebIdentity;
            }
            return SourceKind::Role; // incomplete; the role source reports what is missing
        }
        if has("sso_session") || has("sso_start_url") {
            return SourceKind::Sso;
        }
        if has("aws_access_key_id") || has("aws_secret_access_key") {
            return if self.session_token().is_some() {
                SourceKind::SessionKeys
            } else {
                SourceKind::StaticKeys
            };
        }
        if has("credential_process") {
            return SourceKind::Process;
        }
        SourceKind::None
    }

    /// The expiry written next to session keys, if any of [`EXPIRY_KEYS`] holds one.
    /// `Err(key)` when the key is present but not a timestamp.
    pub fn written_expiry(&self) -> Result<Option<OffsetDateTime>, &'static str> {
        for key in EXPIRY_KEYS {
            if let Some(v) = self.get(key) {
                return parse_timestamp(v).map(Some).ok_or(key);
            }
        }
        Ok(None)
    }

    /// The profile's region, if set.
    pub fn region(&self) -> Option<&str> {
        self.get("region")
    }
}

/// An immutable, merged view of both files at one moment. Shared behind an `Arc` and
/// swapped whole, so a reader never sees half of a reload.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Profiles by name.
    pub profiles: BTreeMap<String, Profile>,
    /// `[sso-session name]` sections of the config file.
    pub sso_sessions: BTreeMap<String, BTreeMap<String, String>>,
    /// `[services name]` sections of the config file (values may be nested text).
    pub services: BTreeMap<String, BTreeMap<String, String>>,
    /// Increments with every reload that changed anything.
    pub generation: u64,
}

impl Snapshot {
    /// A profile by name.
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }
}

/// The profile name a config-file section names, if it names one: `default`,
/// `profile x`, `profile "x y"`.
fn config_profile_name(section: &str) -> Option<String> {
    if section == "default" {
        return Some(section.to_string());
    }
    let rest = section.strip_prefix("profile")?;
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let rest = rest.trim();
    // botocore splits the header with shlex and takes exactly two words.
    let quoted = rest
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .or_else(|| rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')));
    let name = match quoted {
        Some(q) => q,
        None if rest.contains(char::is_whitespace) => return None,
        None => rest,
    };
    (!name.is_empty()).then(|| name.to_string())
}

fn prefixed_name(section: &str, prefix: &str) -> Option<String> {
    let rest = section.strip_prefix(prefix)?;
    rest.starts_with([' ', '\t'])
        .then(|| rest.trim().to_string())
        .filter(|n| !n.is_empty())
}

fn non_blank(props: &BTreeMap<String, String>) -> impl Iterator<Item = (String, String)> + '_ {
    props
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
}

/// A section's non-blank values: its own map when it has no blank value, else a copy.
fn non_blank_shared(props: &Arc<BTreeMap<String, String>>) -> Arc<BTreeMap<String, String>> {
    if props.values().any(String::is_empty) {
        Arc::new(non_blank(props).collect())
    } else {
        props.clone()
    }
}

/// Merges the parsed credentials and config files into a snapshot (generation 0).
pub fn merge(credentials: &[Section], config: &[Section]) -> Snapshot {
    let mut snap = Snapshot::default();
    for s in config {
        if let Some(name) = config_profile_name(&s.name) {
            // A later section replaces an earlier one whole, as in botocore's dict.
            snap.profiles.insert(
                name.clone(),
                Profile {
                    name,
                    props: non_blank_shared(&s.props),
                    defined_in: vec![(FileKind::Config, s.line)],
                },
            );
        } else if let Some(name) = prefixed_name(&s.name, "sso-session") {
            snap.sso_sessions
                .insert(name, non_blank(&s.props).collect());
        } else if let Some(name) = prefixed_name(&s.name, "services") {
            snap.services.insert(name, non_blank(&s.props).collect());
        }
    }
    for s in credentials {
        let entry = snap
            .profiles
            .entry(s.name.clone())
            .or_insert_with(|| Profile {
                name: s.name.clone(),
                props: Arc::default(),
                defined_in: Vec::new(),
            });
        // Credentials-file values win; a blank one there hides nothing.
        if entry.props.is_empty() {
            entry.props = non_blank_shared(&s.props);
        } else {
            Arc::make_mut(&mut entry.props).extend(non_blank(&s.props));
        }
        entry.defined_in.insert(0, (FileKind::Credentials, s.line));
    }
    snap
}

/// Paths of the two shared files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsPaths {
    /// The shared credentials file.
    pub credentials: PathBuf,
    /// The shared config file.
    pub config: PathBuf,
}

impl AwsPaths {
    /// Paths from the environment: `AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`, else
    /// `~/.aws/credentials` and `~/.aws/config` under `home`.
    pub fn from_env(env: &dyn crate::env::Env, home: Option<PathBuf>) -> Option<Self> {
        let expand = |v: String| -> PathBuf {
            match (v.strip_prefix("~/"), &home) {
                (Some(rest), Some(h)) => h.join(rest),
                _ => PathBuf::from(v),
            }
        };
        let aws = home.as_ref().map(|h| h.join(".aws"));
        let credentials = env("AWS_SHARED_CREDENTIALS_FILE")
            .filter(|v| !v.is_empty())
            .map(expand)
            .or_else(|| aws.as_ref().map(|a| a.join("credentials")))?;
        let config = env("AWS_CONFIG_FILE")
            .filter(|v| !v.is_empty())
            .map(expand)
            .or_else(|| aws.as_ref().map(|a| a.join("config")))?;
        Some(AwsPaths {
            credentials,
            config,
        })
    }

    /// The path of one file.
    pub fn get(&self, kind: FileKind) -> &PathBuf {
        match kind {
            FileKind::Credentials => &self.credentials,
            FileKind::Config => &self.config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn snap(creds: &str, config: &str) -> Snapshot {
        merge(
            &parse::parse(creds).unwrap(),
            &parse::parse(config).unwrap(),
        )
    }

    #[test]
    fn config_prefix_rules() {
        let s = snap(
            "",
            "[default]\nregion=us-east-1\n[profile dev]\nregion=eu-west-1\n[profile \"my app\"]\nregion=x\n[profilefoo]\nregion=y\n[dev2]\nregion=z\n[plugins]\na=b\n",
        );
        let names: Vec<_> = s.profiles.keys().cloned().collect();
        assert_eq!(names, vec!["default", "dev", "my app"]);
    }

    #[test]
    fn credentials_sections_are_names_as_written() {
        let s = snap(
            "[profile odd]\naws_access_key_id=A\n[dev]\naws_access_key_id=B\n",
            "",
        );
        assert!(s.profile("profile odd").is_some());
        assert!(s.profile("dev").is_some());
    }

    #[test]
    fn credentials_file_wins_per_key() {
        let s = snap(
            "[dev]\naws_access_key_id = FROMCREDS\naws_secret_access_key = s\n",
            "[profile dev]\naws_access_key_id = FROMCONFIG\nregion = eu-west-1\n",
        );
        let p = s.profile("dev").unwrap();
        assert_eq!(p.get("aws_access_key_id"), Some("FROMCREDS"));
        assert_eq!(p.region(), Some("eu-west-1"));
        assert_eq!(
            p.defined_in,
            vec![(FileKind::Credentials, 1), (FileKind::Config, 1)]
        );
    }

    #[test]
    fn default_in_both_files_and_profile_default() {
        let s = snap(
            "[default]\naws_access_key_id = K\n",
            "[default]\nregion = us-west-2\n[profile default]\nregion = eu-north-1\n",
        );
        let p = s.profile("default").unwrap();
        // The later `[profile default]` replaces `[default]` whole, as botocore does.
        assert_eq!(p.region(), Some("eu-north-1"));
        assert_eq!(p.get("aws_access_key_id"), Some("K"));
    }

    #[test]
    fn blank_values_are_absent_and_do_not_hide_config() {
        let s = snap(
            "[dev]\naws_access_key_id=A\naws_secret_access_key=S\naws_session_token =\nregion =\n",
            "[profile dev]\nregion = eu-west-1\n",
        );
        let p = s.profile("dev").unwrap();
        assert_eq!(p.kind(), SourceKind::StaticKeys);
        assert_eq!(p.region(), Some("eu-west-1"));
    }

    #[test]
    fn classification() {
        let s = snap(
            "[k]\naws_access_key_id=A\naws_secret_access_key=S\n[sk]\naws_access_key_id=A\naws_secret_access_key=S\naws_security_token=T\n",
            "[profile r]\nrole_arn=arn\nsource_profile=k\n[profile w]\nrole_arn=arn\nweb_identity_token_file=/t\n[profile s]\nsso_session=corp\n[profile p]\ncredential_process=/bin/x\n[profile n]\nregion=x\n[profile rk]\nrole_arn=arn\nsource_profile=k\naws_access_key_id=A\n[sso-session corp]\nsso_region=eu-west-1\n[services local]\nsts =\n  endpoint_url = http://x\n",
        );
        let k = |n: &str| s.profile(n).unwrap().kind();
        assert_eq!(k("k"), SourceKind::StaticKeys);
        assert_eq!(k("sk"), SourceKind::SessionKeys);
        assert_eq!(k("r"), SourceKind::Role);
        assert_eq!(k("rk"), SourceKind::Role);
        assert_eq!(k("w"), SourceKind::WebIdentity);
        assert_eq!(k("s"), SourceKind::Sso);
        assert_eq!(k("p"), SourceKind::Process);
        assert_eq!(k("n"), SourceKind::None);
        assert_eq!(s.sso_sessions["corp"]["sso_region"], "eu-west-1");
        assert!(s.services["local"]["sts"].contains("http://x"));
    }

    #[test]
    fn written_expiry_keys() {
        let s = snap(
            "[a]\nx_security_token_expires = 2030-01-02T00:47:31+02:00\n[b]\naws_expiration = 2030-01-01T00:00:00Z\n[c]\nexpiration = soon\n[d]\nk=v\n",
            "",
        );
        let e = |n: &str| s.profile(n).unwrap().written_expiry();
        assert_eq!(e("a"), Ok(Some(datetime!(2030-01-01 22:47:31 UTC))));
        assert_eq!(e("b"), Ok(Some(datetime!(2030-01-01 00:00:00 UTC))));
        assert_eq!(e("c"), Err("expiration"));
        assert_eq!(e("d"), Ok(None));
    }

    #[test]
    fn debug_prints_no_values() {
        let s = snap("[a]\naws_secret_access_key = SUPERSECRET\n", "");
        let d = format!("{:?}", s);
        assert!(!d.contains("SUPERSECRET"), "{d}");
    }

    #[test]
    fn paths_from_env() {
        let home = Some(PathBuf::from("/home/u"));
        let none = |_: &str| None;
        let p = AwsPaths::from_env(&none, home.clone()).unwrap();
        assert_eq!(p.credentials, PathBuf::from("/home/u/.aws/credentials"));
        let env = |k: &str| match k {
            "AWS_SHARED_CREDENTIALS_FILE" => Some("~/creds".to_string()),
            "AWS_CONFIG_FILE" => Some("/etc/awsconf".to_string()),
            _ => None,
        };
        let p = AwsPaths::from_env(&env, home).unwrap();
        assert_eq!(p.credentials, PathBuf::from("/home/u/creds"));
        assert_eq!(p.config, PathBuf::from("/etc/awsconf"));
        assert!(AwsPaths::from_env(&none, None).is_none());
    }
}
