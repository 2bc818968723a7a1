//! What an SSO profile says ([`SsoConfig`], resolved from the config file by
//! `sources::plan`) and the `aws sso login` command that signs it in again.

/// What an SSO profile says, as resolved by the caller from the config file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SsoConfig {
    /// The profile name (used in the `aws sso login --profile` hint for legacy profiles).
    pub profile: String,
    /// The `sso_session` name, for `[sso-session X]` profiles; `None` for legacy profiles.
    pub session_name: Option<String>,
    /// `sso_start_url`.
    pub start_url: String,
    /// `sso_region`.
    pub sso_region: String,
    /// `sso_account_id`.
    pub account_id: String,
    /// `sso_role_name`.
    pub role_name: String,
}

impl SsoConfig {
    /// The command that signs in again for this profile: `aws sso login --sso-session X` for
    /// session profiles, `aws sso login --profile P` for legacy ones (names shell-quoted when
    /// needed).
    pub fn login_command(&self) -> String {
        let quote = |s: &str| {
            shlex::try_quote(s)
                .map(|q| q.into_owned())
                .unwrap_or_else(|_| s.to_string())
        };
        match &self.session_name {
            Some(s) => format!("aws sso login --sso-session {}", quote(s)),
            None => format!("aws sso login --profile {}", quote(&self.profile)),
        }
    }
}

/// The profiles the tests of `sources::sso` share.
#[cfg(test)]
pub(super) mod examples {
    use super::SsoConfig;

    /// An `[sso-session my-sso]` profile.
    pub(in crate::sources::sso) fn session_cfg() -> SsoConfig {
        SsoConfig {
            profile: "dev".into(),
            session_name: Some("my-sso".into()),
            start_url: "https://d-123.awsapps.com/start".into(),
            sso_region: "eu-west-1".into(),
            account_id: "111111111111".into(),
            role_name: "ReadOnly".into(),
        }
    }

    /// A legacy profile (`sso_start_url` in the profile itself).
    pub(in crate::sources::sso) fn legacy_cfg() -> SsoConfig {
        SsoConfig {
            session_name: None,
            profile: "legacy".into(),
            ..session_cfg()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::examples::{legacy_cfg, session_cfg};
    use super::*;

    #[test]
    fn login_commands() {
        assert_eq!(
            session_cfg().login_command(),
            "aws sso login --sso-session my-sso"
        );
        assert_eq!(
            legacy_cfg().login_command(),
            "aws sso login --profile legacy"
        );
        let odd = SsoConfig {
            profile: "my profile".into(),
            ..legacy_cfg()
        };
        assert_eq!(odd.login_command(), "aws sso login --profile 'my profile'");
    }
}
