//! A Serverless project in a hostile shell, shared by the tests that run serverless@3: the
//! seed's `serverless.yml` (a per-stage profile map read through `provider.profile`), dev
//! and prod roles in `~/.aws/config` (accounts 111111111111 and 222222222222, plus
//! `prodOther` in 333333333333 for remapping), `[default]` long-term keys (moto reports them
//! as account 123456789012) and `AWS_PROFILE=default`, `AWS_PROD_PROFILE=default` and
//! `AWS_DEV_PROFILE=default` in the environment, so any client
//! that misses credport shows the wrong account.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::moto::Moto;
use super::{BIN, TestHome, repo_root, venv_python};

/// The seed's service file, with a Node (`hello`) and a Python (`pyhello`) function.
pub const SEED: &str = r#"service: orders
frameworkVersion: '3'
custom:
  myStage: ${opt:stage, self:provider.stage}
  myProfile:
    prod: prodAccount
    dev: devAccount
provider:
  name: aws
  runtime: nodejs20.x
  region: us-east-1
  stage: dev
  profile: ${self:custom.myProfile.${self:custom.myStage}}
functions:
  hello:
    handler: handler.hello
  pyhello:
    handler: handler.hello
    runtime: python3.11
"#;

/// The seed's service file with the Node function only (for tests that count functions).
pub const SEED_ONE_FUNCTION: &str = r#"service: orders
frameworkVersion: '3'
custom:
  myStage: ${opt:stage, self:provider.stage}
  myProfile:
    prod: prodAccount
    dev: devAccount
provider:
  name: aws
  runtime: nodejs20.x
  region: us-east-1
  stage: dev
  profile: ${self:custom.myProfile.${self:custom.myStage}}
functions:
  hello:
    handler: handler.hello
"#;

/// The seed's role profiles: `devAccount` (111111111111) and `prodAccount` (222222222222),
/// both from `base`.
pub const SEED_ROLES: &str = r#"[profile devAccount]
role_arn = arn:aws:iam::111111111111:role/Dev
source_profile = base

[profile prodAccount]
role_arn = arn:aws:iam::222222222222:role/Prod
source_profile = base
"#;

/// `[default]` keys that must never be used, and the long-term keys behind every role.
pub const CREDENTIALS: &str = r#"[default]
aws_access_key_id = AKIADEFAULT00001
aws_secret_access_key = SECRETDEFAULT

[base]
aws_access_key_id = AKIABASE00000001
aws_secret_access_key = SECRETBASEKEY
"#;

/// One role per account.
pub const ROLES: &str = r#"[profile devAccount]
role_arn = arn:aws:iam::111111111111:role/Dev
source_profile = base

[profile prodAccount]
role_arn = arn:aws:iam::222222222222:role/Prod
source_profile = base

[profile prodOther]
role_arn = arn:aws:iam::333333333333:role/ProdOther
source_profile = base
"#;

/// package.json scripts, as teams write them.
pub const PACKAGE_JSON: &str = r#"{
  "name": "orders",
  "private": true,
  "scripts": {
    "invoke": "serverless invoke local -f hello",
    "invoke:prod": "serverless invoke local -f hello -s prod",
    "invoke:py:prod": "serverless invoke local -f pyhello --stage=prod"
  }
}
"#;

/// A temporary HOME with moto as STS and the seed project in `<home>/orders`.
pub struct World {
    pub home: TestHome,
    pub moto: Moto,
    pub project: PathBuf,
}

impl World {
    pub fn new() -> World {
        let moto = Moto::start();
        let mut home = TestHome::new();
        home.write_credentials(CREDENTIALS);
        home.write_aws_config(ROLES);
        // These suites are about serverless, not trust or the guard (tests/trust.rs and
        // tests/guard.rs write their own config).
        home.write_config(&format!("{}{}", super::TRUST_ALL, super::GUARD_OFF));
        home.extra_env
            .insert("AWS_ENDPOINT_URL_STS".into(), moto.url());
        home.extra_env
            .insert("AWS_REGION".into(), "us-east-1".into());
        let project = home.path().join("orders");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::write(project.join("serverless.yml"), SEED).unwrap();
        World {
            home,
            moto,
            project,
        }
    }

    /// Adds the Node and Python handlers, `node_modules` (serverless@3) and package.json.
    pub fn with_handlers(self) -> World {
        for (from, to) in [
            ("tests/clients/node/handler.js", "handler.js"),
            ("tests/clients/python/handler.py", "handler.py"),
        ] {
            std::fs::copy(repo_root().join(from), self.project.join(to)).unwrap();
        }
        std::os::unix::fs::symlink(
            repo_root().join("tests/clients/node/node_modules"),
            self.project.join("node_modules"),
        )
        .unwrap();
        std::fs::write(self.project.join("package.json"), PACKAGE_JSON).unwrap();
        self
    }

    /// The hostile environment every command of these tests runs in.
    fn hostile(&self, c: &mut Command) {
        c.current_dir(&self.project)
            .env("AWS_PROFILE", "default")
            .env("AWS_PROD_PROFILE", "default")
            .env("AWS_DEV_PROFILE", "default")
            .env("SLS_TELEMETRY_DISABLED", "1")
            .env("SLS_NOTIFICATIONS_MODE", "off")
            .env("SLS_DEPRECATION_DISABLE", "*")
            .env("npm_config_update_notifier", "false")
            .env("PATH", client_path());
    }

    /// `credport ARGS` run in the project directory.
    pub fn credport(&self, args: &[&str]) -> Output {
        let mut c = self.home.command();
        self.hostile(&mut c);
        c.args(args);
        c.output().expect("run credport")
    }

    /// `bash -c SCRIPT` in the project directory, with `credport` on PATH and the same
    /// environment credport's own commands get.
    pub fn sh(&self, script: &str) -> Output {
        let mut c = self.sh_command();
        c.arg("-c").arg(script);
        c.output().expect("run bash")
    }

    /// `bash` with the environment of [`sh`](Self::sh), in the project directory.
    pub fn sh_command(&self) -> Command {
        let template = self.home.command();
        let mut c = Command::new("bash");
        c.env_clear();
        for (k, v) in template.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        self.hostile(&mut c);
        let bin = Path::new(BIN).parent().unwrap();
        c.env("PATH", format!("{}:{}", bin.display(), client_path()));
        c
    }
}

/// PATH with the test virtualenv's `bin` first (serverless runs Python handlers as
/// `python3`, which must be the venv's, found by its own path so that it finds its
/// `pyvenv.cfg` and boto3) and serverless's own bin directory.
pub fn client_path() -> String {
    let venv_bin = venv_python().parent().unwrap().to_path_buf();
    let node_bin = repo_root().join("tests/clients/node/node_modules/.bin");
    assert!(
        node_bin.join("serverless").exists(),
        "{} is missing: run `bash scripts/test-deps`",
        node_bin.display()
    );
    format!(
        "{}:{}:{}",
        venv_bin.display(),
        node_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// The last JSON object line of stdout.
pub fn last_json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l.trim())
                .ok()
                .filter(|v| v.is_object())
        })
        .unwrap_or_else(|| {
            panic!(
                "no JSON line; status {}\nstdout:\n{stdout}\nstderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// Asserts that the client's JSON line names `account`.
pub fn assert_account(out: &Output, account: &str, what: &str) {
    let v = last_json(out);
    assert_eq!(
        v["account"],
        account,
        "{what}: {v}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
