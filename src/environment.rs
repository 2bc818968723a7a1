//! The environment a process gets so that its AWS SDK uses credport's endpoint.
//!
//! Every SDK's default chain consults environment keys, `AWS_PROFILE` and the shared
//! files before the container provider (docs/PROTOCOL.md), so [`ChildEnv::for_scope`] unsets
//! the variables that would win ([`UNSET`], plus serverless's stage-specific
//! `AWS_<STAGE>_PROFILE` and friends), points the shared files at credport's isolated
//! copies (so `[default]` keys cannot shadow the endpoint), and sets exactly one of the two
//! token variables. The result renders as `sh`, `fish`, `dotenv`, `json` for the host, and
//! for containers as an env file without host paths (`docker-env`), a compose override and
//! a `devcontainer.json` fragment that name that env file and hold no secret.

use std::path::PathBuf;

/// Variables that would make an SDK pick other credentials than the endpoint's.
pub const UNSET: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CREDENTIAL_EXPIRATION",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CREDENTIAL_FILE",
    "BOTO_CONFIG",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
];

/// How the token reaches the SDK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRef {
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`: re-read on every fetch by every SDK that
    /// supports it, so a rotation reaches running processes.
    File(PathBuf),
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN`: for SDKs without file support.
    Value(String),
}

/// Variables to set and to unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChildEnv {
    /// Set, in order.
    pub set: Vec<(String, String)>,
    /// Unset.
    pub unset: Vec<String>,
}

impl ChildEnv {
    /// The environment for one scope served at `credentials_url`.
    pub fn for_scope(
        credentials_url: &str,
        token: &TokenRef,
        region: Option<&str>,
        isolated_files: Option<(PathBuf, PathBuf)>,
    ) -> Self {
        let mut env = ChildEnv::default();
        env.unset.extend(UNSET.iter().map(|s| s.to_string()));
        let mut set = |k: &str, v: String| env.set.push((k.to_string(), v));
        set(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            credentials_url.to_string(),
        );
        match token {
            TokenRef::File(p) => {
                set(
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    p.display().to_string(),
                );
                env.unset.push("AWS_CONTAINER_AUTHORIZATION_TOKEN".into());
            }
            TokenRef::Value(v) => {
                set("AWS_CONTAINER_AUTHORIZATION_TOKEN", v.clone());
                env.unset
                    .push("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE".into());
            }
        }
        if let Some(r) = region {
            set("AWS_REGION", r.to_string());
            set("AWS_DEFAULT_REGION", r.to_string());
        }
        if let Some((credentials, config)) = isolated_files {
            set(
                "AWS_SHARED_CREDENTIALS_FILE",
                credentials.display().to_string(),
            );
            set("AWS_CONFIG_FILE", config.display().to_string());
            // aws-sdk (JS v2) honours AWS_SHARED_CREDENTIALS_FILE only when
            // AWS_SDK_LOAD_CONFIG is set (util.getProfilesFromSharedConfig); without it, it
            // reads ~/.aws/credentials and its [default] keys shadow the endpoint.
            set("AWS_SDK_LOAD_CONFIG", "1".to_string());
        }
        env
    }

    /// Adds to `unset` the serverless-style stage variables present in `current`
    /// (`AWS_PROD_PROFILE`, `AWS_PROD_ACCESS_KEY_ID`, ...), which serverless reads too.
    pub fn unset_stage_variables<'a>(&mut self, current: impl Iterator<Item = &'a str>) {
        for k in current {
            let stagey = k.starts_with("AWS_")
                && [
                    "_PROFILE",
                    "_ACCESS_KEY_ID",
                    "_SECRET_ACCESS_KEY",
                    "_SESSION_TOKEN",
                ]
                .iter()
                .any(|s| k.ends_with(s));
            let ours = self.set.iter().any(|(s, _)| s == k);
            if stagey && !ours && !self.unset.iter().any(|u| u == k) {
                self.unset.push(k.to_string());
            }
        }
    }

    /// POSIX shell: `unset ...` then `export K='v'`.
    pub fn to_sh(&self) -> String {
        let mut out = format!("unset {}\n", self.unset.join(" "));
        for (k, v) in &self.set {
            out.push_str(&format!("export {k}={}\n", sh_quote(v)));
        }
        out
    }

    /// fish: `set -e ...` then `set -gx K 'v'`.
    pub fn to_fish(&self) -> String {
        let mut out = String::new();
        for k in &self.unset {
            out.push_str(&format!("set -e {k}\n"));
        }
        for (k, v) in &self.set {
            out.push_str(&format!("set -gx {k} {}\n", sh_quote(v)));
        }
        out
    }

    /// dotenv (`K=v` lines), for editors' `envFile` and docker's `--env-file`. A dotenv file
    /// cannot unset, so the unset list is a comment.
    pub fn to_dotenv(&self) -> String {
        let mut out = format!(
            "# generated by credport; also make sure these are unset: {}\n",
            self.unset.join(" ")
        );
        for (k, v) in &self.set {
            out.push_str(&format!("{k}={v}\n"));
        }
        out
    }

    /// JSON: `{"set": {...}, "unset": [...]}`.
    pub fn to_json(&self) -> String {
        let set: serde_json::Map<String, serde_json::Value> = self
            .set
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::json!({"set": set, "unset": self.unset}).to_string()
    }
}

/// The credentials URL base inside a container network: the relay (or a daemon) at the
/// one non-loopback http address every SDK accepts.
pub const CONTAINER_BASE_URL: &str = "http://169.254.170.2";

/// The external network the relay serves (README "Dev containers").
pub const CONTAINER_NETWORK: &str = "credport";

/// The env file the compose override names, next to the compose files.
pub const COMPOSE_ENV_FILE: &str = "credport.env";

/// The env file the devcontainer fragment names, in the workspace.
pub const DEVCONTAINER_ENV_FILE: &str = ".devcontainer/credport.env";

impl ChildEnv {
    /// An env file for a container (`docker run --env-file`, compose `env_file`, a
    /// devcontainer's `--env-file`): only what is set, minus host paths (a container has
    /// none of them), so the token is its value. It is a secret of one scope: keep the file
    /// out of version control. A container starts with a clean environment, so nothing
    /// needs unsetting.
    pub fn to_docker_env(&self) -> String {
        let mut out = String::from(
            "# generated by credport for a container (docker --env-file, compose env_file).\n\
             # Holds the scope's token: keep this file out of version control.\n",
        );
        for (k, v) in self.set.iter().filter(|(k, _)| !is_host_path_var(k)) {
            out.push_str(&format!("{k}={v}\n"));
        }
        out
    }

    /// A compose override file for `service` (use with `-f docker-compose.yml -f THIS`): the
    /// service reads the scope's variables from [`COMPOSE_ENV_FILE`] (written by
    /// `--format docker-env`), stays on the project's `default` network and joins the
    /// external [`CONTAINER_NETWORK`] where the relay answers. It holds no secret and no
    /// host path, so it can be committed.
    pub fn to_compose(&self, service: &str) -> String {
        format!(
            "# Compose override generated by credport; holds no secret, can be committed.\n\
             # Use: docker-compose -f docker-compose.yml -f docker-compose.credport.yml up\n\
             # The token is in {env}: credport env --format docker-env > {env} (keep it out of git).\n\
             # Needs the {net} network and its relay at 169.254.170.2 (README \"Dev containers\").\n\
             # If your docker-compose.yml has a `version:` line, put the same line here.\n\
             services:\n  {service}:\n    env_file:\n      - {env}\n    networks:\n      default: {{}}\n      {net}: {{}}\n\
             networks:\n  {net}:\n    external: true\n",
            env = COMPOSE_ENV_FILE,
            net = CONTAINER_NETWORK,
        )
    }

    /// A `devcontainer.json` fragment: the container joins [`CONTAINER_NETWORK`] (the relay
    /// at 169.254.170.2) and reads the scope's variables from [`DEVCONTAINER_ENV_FILE`]
    /// (written by `--format docker-env`). Nothing goes into `containerEnv`, which the
    /// devcontainer CLI copies into the image's `devcontainer.metadata` label.
    pub fn to_devcontainer(&self) -> String {
        let v = serde_json::json!({
            "runArgs": [
                format!("--network={CONTAINER_NETWORK}"),
                "--env-file",
                format!("${{localWorkspaceFolder}}/{DEVCONTAINER_ENV_FILE}"),
            ],
        });
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
    }
}

/// Variables that name host paths, which mean nothing inside a container.
fn is_host_path_var(k: &str) -> bool {
    matches!(
        k,
        "AWS_SHARED_CREDENTIALS_FILE"
            | "AWS_CONFIG_FILE"
            | "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
    )
}

/// Quotes for POSIX shells and fish: single quotes, with `'` written as `'\''`.
pub fn sh_quote(v: &str) -> String {
    if !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/:._-=@,+".contains(&b))
    {
        return v.to_string();
    }
    format!("'{}'", v.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChildEnv {
        ChildEnv::for_scope(
            "http://127.0.0.1:9911/v1/credentials/orders/dev",
            &TokenRef::File("/run/x/orders.dev.token".into()),
            Some("eu-west-1"),
            Some(("/s/credentials".into(), "/s/config".into())),
        )
    }

    #[test]
    fn sets_exactly_one_token_variable() {
        let e = sample();
        assert!(
            e.set
                .iter()
                .any(|(k, _)| k == "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
        );
        assert!(
            !e.set
                .iter()
                .any(|(k, _)| k == "AWS_CONTAINER_AUTHORIZATION_TOKEN")
        );
        assert!(
            e.unset
                .contains(&"AWS_CONTAINER_AUTHORIZATION_TOKEN".to_string())
        );
        for k in UNSET {
            assert!(e.unset.contains(&k.to_string()), "{k}");
        }
        let v = ChildEnv::for_scope("u", &TokenRef::Value("t".into()), None, None);
        assert!(
            v.unset
                .contains(&"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE".to_string())
        );
    }

    #[test]
    fn stage_variables() {
        let mut e = sample();
        e.unset_stage_variables(
            [
                "AWS_PROD_PROFILE",
                "AWS_REGION",
                "HOME",
                "AWS_DEV_ACCESS_KEY_ID",
            ]
            .into_iter(),
        );
        assert!(e.unset.contains(&"AWS_PROD_PROFILE".to_string()));
        assert!(e.unset.contains(&"AWS_DEV_ACCESS_KEY_ID".to_string()));
        assert!(!e.unset.contains(&"AWS_REGION".to_string()));
    }

    #[test]
    fn renderings() {
        let e = sample();
        let sh = e.to_sh();
        assert!(sh.starts_with("unset AWS_ACCESS_KEY_ID "));
        assert!(sh.contains("export AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:9911/v1/credentials/orders/dev\n"));
        assert!(e.to_fish().contains("set -gx AWS_REGION eu-west-1\n"));
        assert!(
            e.to_dotenv()
                .contains("\nAWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=/run/x/orders.dev.token\n")
        );
        let c = ChildEnv::for_scope(
            "http://169.254.170.2/v1/credentials/o/dev",
            &TokenRef::Value("cpt1.x".into()),
            Some("eu-west-1"),
            None,
        );
        let docker_env = c.to_docker_env();
        assert!(
            docker_env.contains("\nAWS_CONTAINER_AUTHORIZATION_TOKEN=cpt1.x\n"),
            "{docker_env}"
        );
        let host_side = e.to_docker_env();
        assert!(!host_side.contains("/s/"), "no host path: {host_side}");
        assert!(!host_side.contains("/run/x"), "no host path: {host_side}");
        let compose = c.to_compose("app");
        assert!(!compose.contains("cpt1.x"), "no token: {compose}");
        let y: serde_json::Value = yaml_serde::from_str(&compose).unwrap();
        assert_eq!(y["services"]["app"]["env_file"][0], COMPOSE_ENV_FILE);
        assert!(y["services"]["app"]["networks"].get("default").is_some());
        assert_eq!(y["networks"]["credport"]["external"], true);
        let dc: serde_json::Value = serde_json::from_str(&e.to_devcontainer()).unwrap();
        assert_eq!(dc["runArgs"][0], "--network=credport");
        assert!(
            dc.get("containerEnv").is_none(),
            "the token stays out of labels"
        );
        let j: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(j["set"]["AWS_DEFAULT_REGION"], "eu-west-1");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }
}
