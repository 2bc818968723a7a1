//! The Serverless workflow in every form people type it, with the real serverless@3 from
//! npm: `credport exec` around serverless directly, through npx, `sh -c`, npm scripts and
//! make, with credport's `--stage` or the command's own, credport's config or
//! `.credport.toml` remapping a stage, `--aws-profile`, and `eval "$(credport env)"` in a
//! shell that runs serverless later. Each case runs a Node or Python handler that prints
//! the account STS (moto) reports for the credentials it got, with the daemon running or
//! with exec's embedded server, in a hostile shell (`[default]` keys, `AWS_PROFILE=default`,
//! `AWS_PROD_PROFILE=default`); or checks credport's own refusal, which never is
//! serverless's "doesn't seem to be configured".
//!
//! Accounts: dev 111111111111, prod 222222222222, `prodOther` 333333333333, `[default]`
//! 123456789012.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use support::sls::{World, assert_account, last_json};
use support::{GUARD_OFF, TRUST_ALL, fixture};

/// Whether the case runs with `credport serve` or with exec's embedded server.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Daemon,
    Embedded,
}

/// What a case must show.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// The handler prints this account.
    Account(&'static str),
    /// credport refuses before running, with this text.
    Refused(&'static str),
}

/// Extra files a case needs.
#[derive(Clone, Copy, Debug)]
enum Setup {
    None,
    /// config.toml maps orders/prod to prodOther.
    ConfigRemap,
    /// `.credport.toml` beside serverless.yml maps prod to prodOther.
    CredportTomlRemap,
    /// A Makefile whose target runs serverless for prod.
    Makefile,
}

fn setup(w: &World, s: Setup) {
    match s {
        Setup::None => {}
        Setup::ConfigRemap => {
            w.home.write_config(&format!(
                "{TRUST_ALL}{GUARD_OFF}{}",
                fixture(
                    r#"
                    [projects.orders]
                    stages = { prod = "prodOther" }
                    "#
                )
            ));
        }
        Setup::CredportTomlRemap => std::fs::write(
            w.project.join(".credport.toml"),
            fixture(
                r#"
                [stages]
                dev = "devAccount"
                prod = "prodOther"
                "#,
            ),
        )
        .unwrap(),
        Setup::Makefile => std::fs::write(
            w.project.join("Makefile"),
            "invoke-prod:\n\tserverless invoke local -f pyhello -s prod\n",
        )
        .unwrap(),
    }
}

/// Runs `shell` (a bash script in the project directory, `credport` on PATH) and checks it.
fn case(mode: Mode, s: Setup, shell: &str, expect: Expect) {
    let w = World::new().with_handlers();
    setup(&w, s);
    let _daemon = match mode {
        Mode::Daemon => Some(w.home.serve()),
        Mode::Embedded => None,
    };
    let out = w.sh(shell);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let what = format!("{mode:?} {s:?}: {shell}");
    assert!(
        !stderr.contains("doesn't seem to be configured"),
        "{what}: serverless's own abort\n{stderr}"
    );
    match expect {
        Expect::Account(account) => {
            assert!(
                out.status.success(),
                "{what}: exit {}\nstdout:\n{}\nstderr:\n{stderr}",
                out.status,
                String::from_utf8_lossy(&out.stdout)
            );
            assert_account(&out, account, &what);
        }
        Expect::Refused(text) => {
            assert!(!out.status.success(), "{what}: should be refused\n{stderr}");
            assert!(
                stderr.contains("credport: error:") && stderr.contains(text),
                "{what}: expected credport's refusal containing {text:?}\n{stderr}"
            );
            assert!(
                !String::from_utf8_lossy(&out.stdout).contains("\"account\""),
                "{what}: nothing ran"
            );
        }
    }
}

macro_rules! forms {
    ($($name:ident: $mode:ident, $setup:ident, $shell:expr => $expect:expr;)*) => {
        $(
            #[test]
            fn $name() {
                case(Mode::$mode, Setup::$setup, $shell, $expect);
            }
        )*
    };
}

use Expect::{Account, Refused};

forms! {
    stage_flag_added_to_serverless_node: Daemon, None,
        "credport exec --stage prod -- serverless invoke local -f hello" => Account("222222222222");
    stage_flag_added_to_serverless_python: Embedded, None,
        "credport exec --stage prod -- serverless invoke local -f pyhello" => Account("222222222222");
    command_short_stage_flag: Daemon, None,
        "credport exec -- serverless invoke local -f pyhello -s prod" => Account("222222222222");
    command_long_stage_flag: Embedded, None,
        "credport exec -- serverless invoke local -f hello --stage=prod" => Account("222222222222");
    serverless_default_stage: Daemon, None,
        "credport exec -- serverless invoke local -f hello" => Account("111111111111");
    through_npx: Daemon, None,
        "credport exec -- npx serverless invoke local -f hello -s prod" => Account("222222222222");
    through_sh_c: Embedded, None,
        "credport exec -- sh -c 'serverless invoke local -f pyhello -s prod'" => Account("222222222222");
    through_npm_script: Daemon, None,
        "credport exec -- npm run invoke:prod" => Account("222222222222");
    through_npm_script_python: Embedded, None,
        "credport exec -- npm run invoke:py:prod" => Account("222222222222");
    npm_script_agrees_with_stage_flag: Embedded, None,
        "credport exec --stage prod -- npm run invoke:prod" => Account("222222222222");
    npm_script_that_runs_another_stage_is_refused: Daemon, None,
        "credport exec --stage prod -- npm run invoke" => Refused("credport cannot add the flag there");
    conflicting_stages_are_refused: Daemon, None,
        "credport exec --stage dev -- serverless invoke local -f hello -s prod" => Refused("--stage dev but the command runs");
    through_make: Daemon, Makefile,
        "credport exec -- make -s invoke-prod" => Account("222222222222");
    config_remaps_the_stage: Daemon, ConfigRemap,
        "credport exec -- serverless invoke local -f hello -s prod" => Account("333333333333");
    config_remaps_the_stage_embedded_python: Embedded, ConfigRemap,
        "credport exec -- serverless invoke local -f pyhello -s prod" => Account("333333333333");
    credport_toml_remaps_the_stage: Daemon, CredportTomlRemap,
        "credport exec -- serverless invoke local -f pyhello -s prod" => Account("333333333333");
    aws_profile_flag: Embedded, None,
        "credport exec -- serverless invoke local -f hello -s prod --aws-profile prodOther" => Account("333333333333");
    env_then_serverless: Daemon, None,
        "eval \"$(credport env --stage prod)\" && serverless invoke local -f hello -s prod" => Account("222222222222");
    env_then_serverless_of_another_stage: Daemon, None,
        "eval \"$(credport env)\" && serverless invoke local -f pyhello -s prod" => Account("222222222222");
    env_remapped_by_config: Daemon, ConfigRemap,
        "eval \"$(credport env --stage dev)\" && serverless invoke local -f hello -s prod" => Account("333333333333");
}

/// `resolve` and the profile checks, without running serverless.
#[test]
fn stages_and_profiles_are_read_only_where_they_belong() {
    let w = World::new();
    let resolve = |args: &[&str]| {
        let mut a = vec!["resolve"];
        a.extend(args);
        w.credport(&a)
    };
    struct Case {
        name: &'static str,
        /// The command line after `resolve`.
        args: &'static [&'static str],
        stage: &'static str,
        profile: &'static str,
    }
    let cases = [
        Case {
            name: "pytest's -s is not a stage",
            args: &["--", "pytest", "-s", "tests/test_x.py"],
            stage: "dev",
            profile: "devAccount",
        },
        Case {
            name: "grep's -s is not a stage",
            args: &["--", "grep", "-s", "prod", "file"],
            stage: "dev",
            profile: "devAccount",
        },
        Case {
            name: "tar's -s is not a stage",
            args: &["--", "tar", "-s", "prod", "-cf", "x.tar", "y"],
            stage: "dev",
            profile: "devAccount",
        },
        Case {
            name: "sls's -s is the stage",
            args: &["--", "sls", "deploy", "-s", "prod"],
            stage: "prod",
            profile: "prodAccount",
        },
        Case {
            name: "--stage names the stage whatever the command",
            args: &["--stage", "prod", "--", "pytest", "-s"],
            stage: "prod",
            profile: "prodAccount",
        },
    ];
    for case in &cases {
        let out = resolve(case.args);
        let v = last_json(&out);
        assert_eq!(
            (v["stage"].as_str(), v["profile"].as_str()),
            (Some(case.stage), Some(case.profile)),
            "case {}: resolve {:?}: {v}\n{}",
            case.name,
            case.args,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A profile in neither AWS file: refused before anything runs, with a suggestion.
#[test]
fn a_profile_in_neither_aws_file_is_refused_before_anything_runs() {
    let w = World::new();
    std::fs::write(
        w.project.join("serverless.yml"),
        support::sls::SEED.replace("prod: prodAccount", "prod: prodAcount"),
    )
    .unwrap();
    for args in [
        &["resolve", "--stage", "prod"][..],
        &["exec", "--stage", "prod", "--", "touch", "ran"],
        &["env", "--stage", "prod"],
    ] {
        let out = w.credport(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail\n{stderr}");
        assert!(
            stderr.contains("profile 'prodAcount' (provider.profile = ")
                && stderr.contains("serverless.yml) is in neither")
                && stderr.contains("did you mean 'prodAccount'?"),
            "{args:?}: {stderr}"
        );
    }
    assert!(!w.project.join("ran").exists(), "exec ran nothing");
}

/// `env`'s stand-in file: private, session credentials only, every stage, kept fresh by the
/// daemon after a profile edit and across a restart.
#[test]
fn env_keeps_serverless_profiles_fresh_across_edits_and_restarts() {
    let w = World::new().with_handlers();
    let mut d = w.home.serve_with(&["--listen", "127.0.0.1:0"]);
    let out = w.credport(&["env", "--stage", "dev", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let file = std::path::PathBuf::from(v["set"]["AWS_SHARED_CREDENTIALS_FILE"].as_str().unwrap());
    assert!(
        v["unset"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == "AWS_PROD_PROFILE"),
        "env unsets the stage variables exec unsets: {v}"
    );
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    let text = read();
    assert!(
        text.contains("[devAccount]") && text.contains("[prodAccount]"),
        "{text}"
    );
    for secret in ["AKIABASE", "SECRETBASEKEY", "AKIADEFAULT", "SECRETDEFAULT"] {
        assert!(
            !text.contains(secret),
            "a long-term key was written: {secret}"
        );
    }
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);

    let invoke =
        "eval \"$(credport env --stage dev)\" && serverless invoke local -f pyhello -s prod";
    assert_account(&w.sh(invoke), "222222222222", "before the edit");

    // The prod role moves to another account: the daemon rewrites the file by itself.
    w.home.write_aws_config(
        &support::sls::ROLES.replace("222222222222:role/Prod", "444444444444:role/Prod"),
    );
    let before = text;
    let deadline = Instant::now() + Duration::from_secs(10);
    while read() == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(read(), before, "stand-in file not rewritten after the edit");
    assert_account(&w.sh(invoke), "444444444444", "after the edit");

    // A restart on the same address rewrites it at start, and the same shell line works.
    let addr = d.addr.to_string();
    assert!(d.terminate().success());
    std::fs::write(&file, "").unwrap();
    let _d2 = w.home.serve_with(&["--listen", &addr]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !read().contains("[prodAccount]") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_account(&w.sh(invoke), "444444444444", "after a restart");
}
