//! Owns the Serverless Framework resolver: reads `serverless.{yml,yaml,json}` and
//! evaluates, offline, just the variables needed for `provider.stage`,
//! `provider.profile`, `provider.region` and `service` (and whatever they
//! reference). Everything else in the file is never looked at, so unrelated
//! unresolvable variables or CloudFormation intrinsics do not cause errors.
//!
//! Semantics follow Serverless **v3** (`lib/configuration/variables/parse.js`,
//! `resolve.js`, `sources/*.js`, `lib/cli/load-dotenv.js`):
//!
//! * Stage: `--stage`, else `provider.stage` (resolved as an ordinary property), else `dev`.
//!   `${sls:stage}` is that stage; `${self:provider.stage}` is the raw property resolved
//!   normally (it ignores `--stage`); `${opt:stage}` is only the flag (aliases such as
//!   `${opt:s}` are never set: Serverless stores options under their full names).
//! * Profile: `--aws-profile`, else `provider.profile`, else (v4) the single `type: aws`
//!   resolver in `stages.<stage>.resolvers` / `stages.default.resolvers`. None → error.
//! * Syntax: `${source:address}`, `${source(param, ...):address}`, comma-separated
//!   fallbacks tried left to right (a source without a value moves on); fallback
//!   literals must be quoted strings, numbers, `true`, `false` or `null`. Variables
//!   nest (innermost first), interpolate inside longer strings (only string/number/bool
//!   values may), and a resolved string containing variables is resolved again.
//!   `${` not followed by `lowercase-word:` or `lowercase-word(` (e.g. `${AWS::Region}`,
//!   `${Foo}` in `Fn::Sub`) and `\${` are left untouched.
//! * Sources: `opt` (every option of the wrapped command by its full name: stage,
//!   aws-profile, param, region, ...), `self`
//!   (dotted path into the document; empty = whole document), `env` (real environment,
//!   then `.env` values when `useDotenv: true`), `sls` (`stage`; `instanceId` is
//!   offline-unresolvable), `file(path)` / `file(path):key.path` (yml/yaml/json/tfstate
//!   parsed, other extensions read as text, relative to the service dir, must stay inside
//!   it; a missing file has no value; `.js`/`.ts` are offline-unresolvable), `param`
//!   (`--param k=v` > `params.<stage>.k` > `params.default.k`; the v4 forms
//!   `stages.<stage>.params.k` / `stages.default.params.k` are consulted after the
//!   matching v3 form) and `strToBool(...)`. `ssm`, `cf`, `s3`, `aws`, and any other
//!   (plugin) source are errors that suggest `.credport.toml`, even with a fallback
//!   (the fallback might silently pick the wrong account).
//! * `useDotenv: true`: after the stage is known, `.env.<stage>` is loaded if it exists,
//!   otherwise `.env` (as v3's `load-dotenv.js`); real environment variables win;
//!   `$VAR`/`${VAR}` references inside values are expanded (dotenv-expand). The stage
//!   itself is resolved before dotenv is loaded, as in Serverless.
//! * Bounds: nesting depth, property-reference cycles and a total step budget are
//!   checked, so cyclic or explosive configurations give an error, never a hang.
//!
//! v4 differences (documented, partly supported): v4 adds `stages.<stage>.params`,
//! `stages.<stage>.resolvers` (AWS-account resolvers carrying `profile`/`region`, read
//! here as a profile fallback), `${aws:...}`/`${vault:...}` style resolvers (offline
//! errors here) and makes stage params override `--param` (v3 order is used here).
//! v4 also loads `.env` unconditionally; here only `useDotenv: true` loads it.

mod document;
mod dotenv;
mod resolver;
mod template;

use std::path::Path;

use yaml_serde::{Mapping, Value};

use document::{child, kind_name, scalar_string};
use resolver::{Evaluator, Lookup, StageState};

use super::error::ProjectError;
use super::files::{folder_name, parse_json, parse_yaml, read_text};
use super::{ProjectKind, Resolution, Selection};

/// Resolves a Serverless project file (`serverless.{yml,yaml,json}`; `.js`/`.ts`
/// configs are rejected with [`ProjectError::Unsupported`]).
pub fn resolve(
    file: &Path,
    sel: &Selection,
    env: &dyn crate::env::Env,
) -> Result<Resolution, ProjectError> {
    let mut r = open(file, sel, env)?;
    let use_dotenv = matches!(child(&r.doc, "useDotenv"), Some(Value::Bool(true)));
    let (stage, stage_rule) = stage_of(&mut r)?;
    // The stage names files (`.env.<stage>`) and URLs: nothing but a plain name will do
    // (serverless itself only accepts letters, digits and dashes).
    if let Err(message) = crate::config::check_name("stage", &stage) {
        return Err(ProjectError::Stage {
            file: file.to_path_buf(),
            message,
            known: "none".into(),
        });
    }
    r.stage = StageState::Known(stage.clone());
    if use_dotenv {
        r.load_dotenv(&stage)?;
    }

    // Profile.
    let mut v4_region = None;
    let profile_rule;
    let profile = if let Some(p) = &sel.aws_profile {
        profile_rule = "--aws-profile (overrides provider.profile)".to_string();
        p.clone()
    } else if let Some(p) = r.resolve_top(&["provider", "profile"])? {
        let raw = r
            .raw_at(&["provider", "profile"])
            .unwrap_or_else(|| p.clone());
        profile_rule = format!("provider.profile = {raw}");
        p
    } else if let Some(acct) = r.v4_resolver(&stage)? {
        profile_rule = format!("{} = {}", acct.path, acct.profile);
        v4_region = acct.region;
        acct.profile
    } else {
        return Err(ProjectError::NoProfile {
            file: file.to_path_buf(),
            stage,
            hint: "provider.profile is not set; pass --aws-profile or map the stages in .credport.toml"
                .into(),
        });
    };

    let region = r
        .resolve_top(&["provider", "region"])
        .ok()
        .flatten()
        .or(v4_region);
    let project = service_name(&mut r).unwrap_or_else(|| folder_name(file));

    Ok(Resolution {
        project,
        stage,
        profile,
        region,
        file: file.to_path_buf(),
        kind: ProjectKind::Serverless,
        rule: format!("{profile_rule} with stage {stage_rule}"),
        policy: None,
    })
}

/// Reads and parses a Serverless file into a resolver.
fn open<'a>(
    file: &Path,
    sel: &'a Selection,
    env: &'a dyn crate::env::Env,
) -> Result<Evaluator<'a>, ProjectError> {
    let ext = file
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if matches!(ext.as_str(), "js" | "ts" | "cjs" | "mjs") {
        return Err(ProjectError::Unsupported {
            file: file.to_path_buf(),
            reason: "JavaScript/TypeScript service files cannot be evaluated offline".into(),
        });
    }
    let text = read_text(file)?.ok_or_else(|| ProjectError::Io {
        file: file.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    let doc = if ext == "json" {
        parse_json(file, &text)?
    } else {
        parse_yaml(file, &text)?
    };
    let doc = match doc {
        Value::Null => Value::Mapping(Mapping::new()),
        m @ Value::Mapping(_) => m,
        other => {
            return Err(ProjectError::Invalid {
                file: file.to_path_buf(),
                message: format!("top level is a {}, expected a mapping", kind_name(&other)),
            });
        }
    };
    Ok(Evaluator::new(file, doc, sel, env))
}

/// The stage serverless runs: `--stage`, else `provider.stage`, else `dev`; with the rule.
fn stage_of(r: &mut Evaluator<'_>) -> Result<(String, String), ProjectError> {
    Ok(match &r.sel.stage {
        Some(s) => (s.clone(), "from --stage".to_string()),
        None => match r.resolve_top(&["provider", "stage"])? {
            Some(s) => {
                let raw = r
                    .raw_at(&["provider", "stage"])
                    .unwrap_or_else(|| s.clone());
                let rule = if raw == s {
                    format!("from provider.stage = {s}")
                } else {
                    format!("from provider.stage = {raw} (= {s})")
                };
                (s, rule)
            }
            None => (
                "dev".to_string(),
                "'dev' (no --stage, no provider.stage)".to_string(),
            ),
        },
    })
}

/// The stage serverless itself runs for `sel` (its `--stage`, else `provider.stage`, else
/// `dev`), with the rule that decided, without resolving a profile.
pub fn stage_for(
    file: &Path,
    sel: &Selection,
    env: &dyn crate::env::Env,
) -> Result<(String, String), ProjectError> {
    let mut r = open(file, sel, env)?;
    stage_of(&mut r)
}

/// Stage names the file itself spells out: `provider.stage`, the keys of `params` and
/// `stages` (v4), and the keys of the map that `provider.profile` looks the stage up in
/// (`${self:custom.myProfile.${sls:stage}}`), found by resolving with a stage no map has.
pub fn declared_stages(file: &Path, sel: &Selection, env: &dyn crate::env::Env) -> Vec<String> {
    let mut out = Vec::new();
    let push = |s: String, out: &mut Vec<String>| {
        if crate::config::check_name("stage", &s).is_ok() && !out.contains(&s) {
            out.push(s);
        }
    };
    if let Ok((s, _)) = stage_for(
        file,
        &Selection {
            stage: None,
            ..sel.clone()
        },
        env,
    ) {
        push(s, &mut out);
    }
    if let Ok(r) = open(file, sel, env) {
        for key in ["params", "stages"] {
            if let Some(Value::Mapping(m)) = child(&r.doc, key) {
                for k in m.keys().filter_map(scalar_string) {
                    if k != "default" {
                        push(k, &mut out);
                    }
                }
            }
        }
    }
    let probe = Selection {
        stage: Some("credport-probe-no-such-stage".into()),
        ..sel.clone()
    };
    if let Err(ProjectError::StageNotInMap { has, .. }) = resolve(file, &probe, env) {
        for k in has.split(", ").filter(|k| !k.is_empty()) {
            push(k.to_string(), &mut out);
        }
    }
    out
}

/// The file's `service` (or `service.name`); `None` when absent, unresolvable offline or
/// blank (an empty scalar, a bare tag), so the caller falls back to the folder's name.
fn service_name(r: &mut Evaluator<'_>) -> Option<String> {
    r.key = "service".into();
    let name = match r.resolve_path(&["service".to_string()], 0).ok()? {
        Lookup::Found(Value::Mapping(_)) => r.resolve_top(&["service", "name"]).ok().flatten(),
        Lookup::Found(v) => scalar_string(&v),
        Lookup::Missing(_) => None,
    };
    name.filter(|n| !n.trim().is_empty())
}

/// Best-effort service name of a Serverless file (used by `.credport.toml` for its
/// default project name); `None` when absent or not resolvable offline.
pub fn service_name_of(file: &Path, sel: &Selection, env: &dyn crate::env::Env) -> Option<String> {
    let ext = file.extension()?.to_string_lossy().to_ascii_lowercase();
    let text = read_text(file).ok()??;
    let doc = match ext.as_str() {
        "json" => parse_json(file, &text).ok()?,
        "yml" | "yaml" => parse_yaml(file, &text).ok()?,
        _ => return None,
    };
    let mut r = Evaluator::new(file, doc, sel, env);
    if let Some(s) = &sel.stage {
        r.stage = StageState::Known(s.clone());
    } else if let Ok(Some(s)) = r.resolve_top(&["provider", "stage"]) {
        r.stage = StageState::Known(s);
    } else {
        r.stage = StageState::Known("dev".into());
    }
    service_name(&mut r)
}

#[cfg(test)]
mod tests {
    use super::dotenv::{expand_dotenv, parse_dotenv};
    use super::template::{Part, has_vars, parse_template};
    use super::*;
    use std::collections::HashMap;
    use std::fs;

    const SEED: &str = r#"service: orders
custom:
  myStage: ${opt:stage, self:provider.stage}
  myProfile:
    prod: prodAccount
    dev: devAccount
provider:
  name: aws
  stage: dev
  profile: ${self:custom.myProfile.${self:custom.myStage}}
"#;

    /// A fixture file written as an indented raw string: drops the one newline right after
    /// the opening quote and the indentation every non-blank line shares, as
    /// `tests/support`'s `fixture` does (unit tests cannot reach it).
    fn fixture(text: &str) -> String {
        let text = text.strip_prefix('\n').unwrap_or(text);
        let blank = |l: &str| l.trim_matches([' ', '\t', '\n']).is_empty();
        let indent = text
            .split_inclusive('\n')
            .filter(|l| !blank(l))
            .map(|l| l.len() - l.trim_start_matches(' ').len())
            .min()
            .unwrap_or(0);
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            if !blank(line) {
                out.push_str(&line[indent..]);
            } else if line.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    struct Fx {
        dir: tempfile::TempDir,
        env: HashMap<String, String>,
    }

    impl Fx {
        fn new(yml: &str) -> Fx {
            Fx::named("serverless.yml", yml)
        }
        fn named(name: &str, text: &str) -> Fx {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(name), text).unwrap();
            Fx {
                dir,
                env: HashMap::new(),
            }
        }
        fn file(&self, name: &str, text: &str) -> &Self {
            let p = self.dir.path().join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
            self
        }
        fn env(mut self, k: &str, v: &str) -> Self {
            self.env.insert(k.into(), v.into());
            self
        }
        fn run(&self, args: &str) -> Result<Resolution, ProjectError> {
            let mut argv = vec!["sls".to_string()];
            argv.extend(args.split_whitespace().map(String::from));
            let sel = crate::projects::parse_wrapped_args(&argv);
            let env = |k: &str| self.env.get(k).cloned();
            let (file, _) = crate::projects::find_project_file(self.dir.path()).unwrap();
            resolve(&file, &sel, &env)
        }
        fn profile(&self, args: &str) -> String {
            match self.run(args) {
                Ok(r) => r.profile,
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        fn err(&self, args: &str) -> String {
            match self.run(args) {
                Ok(r) => panic!("expected an error, got {r:?}"),
                Err(e) => e.to_string(),
            }
        }
    }

    /// What resolving a [`Case`] gives.
    #[derive(Default)]
    enum Want {
        /// Not set: [`check`] refuses the case.
        #[default]
        Unset,
        /// This profile.
        Profile(&'static str),
        /// An error whose text contains each of these (none: any error).
        Err(&'static [&'static str]),
    }

    /// One resolution: a `serverless.yml`, files beside it, the environment, the wrapped
    /// command's arguments, and what comes out.
    #[derive(Default)]
    struct Case {
        name: &'static str,
        yml: String,
        files: &'static [(&'static str, &'static str)],
        env: &'static [(&'static str, &'static str)],
        args: &'static str,
        want: Want,
    }

    /// Resolves every case, naming the case in every failure.
    fn check(cases: &[Case]) {
        for c in cases {
            let name = c.name;
            let mut f = Fx::new(&c.yml);
            for (k, v) in c.env {
                f = f.env(k, v);
            }
            for (path, text) in c.files {
                f.file(path, text);
            }
            match (&c.want, f.run(c.args)) {
                (Want::Unset, _) => panic!("case {name}: no `want`"),
                (Want::Profile(want), Ok(r)) => assert_eq!(r.profile, *want, "case {name}"),
                (Want::Profile(_), Err(e)) => panic!("case {name}: unexpected error: {e}"),
                (Want::Err(says), Err(e)) => {
                    let e = e.to_string();
                    for s in *says {
                        assert!(e.contains(s), "case {name}: {s:?} not in {e}");
                    }
                }
                (Want::Err(_), Ok(r)) => panic!("case {name}: expected an error, got {r:?}"),
            }
        }
    }

    // ---- required cases ------------------------------------------------

    #[test]
    fn case1_seed() {
        let f = Fx::new(SEED);
        let r = f.run("").unwrap();
        assert_eq!(r.profile, "devAccount");
        assert_eq!(r.stage, "dev");
        assert_eq!(r.project, "orders");
        assert_eq!(
            r.rule,
            "provider.profile = ${self:custom.myProfile.${self:custom.myStage}} with stage from provider.stage = dev"
        );
        assert_eq!(f.profile("deploy --stage prod"), "prodAccount");
        assert_eq!(f.profile("deploy -s prod"), "prodAccount");
        assert_eq!(
            f.run("deploy --stage prod").unwrap().rule,
            "provider.profile = ${self:custom.myProfile.${self:custom.myStage}} with stage from --stage"
        );
        let e = f.err("deploy -s qa");
        assert!(e.ends_with("serverless.yml: provider.profile: stage 'qa' is not in custom.myProfile (has: prod, dev) and there is no fallback"), "{e}");
    }

    #[test]
    fn case2_no_provider_stage() {
        let f = Fx::new(&SEED.replace("  stage: dev\n", ""));
        let e = f.err("");
        assert!(e.contains("provider.profile: variable ${opt:stage, self:provider.stage} has no value and no fallback"), "{e}");
        assert!(e.contains("key 'stage' is not in provider"), "{e}");
        // with a flag it works
        assert_eq!(f.profile("-s prod"), "prodAccount");
    }

    const PROFILES: &str = r#"custom:
  profiles:
    dev: devP
    prod: prodP
"#;

    #[test]
    fn case3_sls_stage() {
        let f = Fx::new(&format!(
            "service: s\n{PROFILES}{}",
            fixture(
                r#"
                provider:
                  profile: ${self:custom.profiles.${sls:stage}}
                "#
            )
        ));
        assert_eq!(f.profile(""), "devP");
        assert_eq!(f.profile("-s prod"), "prodP");
    }

    #[test]
    fn case4_self_provider_stage_ignores_flag() {
        let f = Fx::new(&format!(
            "{PROFILES}{}",
            fixture(
                r#"
                provider:
                  stage: dev
                  profile: ${self:custom.profiles.${self:provider.stage}}
                "#
            )
        ));
        let r = f.run("-s prod").unwrap();
        assert_eq!(r.profile, "devP");
        assert_eq!(r.stage, "prod");
    }

    #[test]
    fn case5_env_stage_with_literal_fallback() {
        let yml = format!(
            "{PROFILES}{}",
            fixture(
                r#"
                provider:
                  stage: ${env:STAGE, 'dev'}
                  profile: ${self:custom.profiles.${sls:stage}}
                "#
            )
        );
        // STAGE set: the stage and the rule come from it.
        let f = Fx::new(&yml).env("STAGE", "prod");
        let r = f.run("").unwrap();
        assert_eq!((r.stage.as_str(), r.profile.as_str()), ("prod", "prodP"));
        assert!(
            r.rule
                .ends_with("with stage from provider.stage = ${env:STAGE, 'dev'} (= prod)"),
            "{}",
            r.rule
        );
        // STAGE unset: the literal fallback.
        let f = Fx::new(&yml);
        assert_eq!(f.profile(""), "devP", "STAGE unset");
    }

    #[test]
    fn case6_bare_literal_is_error() {
        let yml = fixture(
            r#"
            provider:
              profile: ${env:SLS_PROFILE, foo}
            "#,
        );
        check(&[
            Case {
                name: "unquoted literal fallback",
                yml: yml.clone(),
                want: Want::Err(&["provider.profile", "invalid literal fallback 'foo'"]),
                ..Default::default()
            },
            Case {
                name: "syntax errors are reported even if the first source has a value",
                yml,
                env: &[("SLS_PROFILE", "x")],
                want: Want::Err(&[]),
                ..Default::default()
            },
        ]);
    }

    #[test]
    fn case7_params() {
        let params = fixture(
            r#"
            params:
              default:
                profile: paramDefault
              prod:
                profile: paramProd
            provider:
              profile: ${param:profile}
            "#,
        );
        check(&[
            Case {
                name: "params.default",
                yml: params.clone(),
                want: Want::Profile("paramDefault"),
                ..Default::default()
            },
            Case {
                name: "params.<stage>",
                yml: params.clone(),
                args: "-s prod",
                want: Want::Profile("paramProd"),
                ..Default::default()
            },
            Case {
                name: "--param k=v beats params.default",
                yml: params.clone(),
                args: "--param profile=cliParam",
                want: Want::Profile("cliParam"),
                ..Default::default()
            },
            Case {
                name: "--param=k=v beats params.<stage>",
                yml: params,
                args: "-s prod --param=profile=cliParam",
                want: Want::Profile("cliParam"),
                ..Default::default()
            },
            Case {
                name: "no params at all",
                yml: fixture(
                    r#"
                    provider:
                      profile: ${param:profile}
                    "#,
                ),
                want: Want::Err(&["${param:profile} has no value"]),
                ..Default::default()
            },
        ]);
    }

    #[test]
    fn case7b_v4_stage_params() {
        let f = Fx::new(&fixture(
            r#"
            stages:
              default:
                params:
                  profile: d4
              prod:
                params:
                  profile: p4
            provider:
              profile: ${param:profile}
            "#,
        ));
        assert_eq!(f.profile(""), "d4");
        assert_eq!(f.profile("-s prod"), "p4");
    }

    #[test]
    fn case8_interpolation() {
        let f = Fx::new(&fixture(
            r#"
            provider:
              profile: ${opt:stage}-account
            "#,
        ));
        let e = f.err("");
        assert!(
            e.contains("${opt:stage} has no value and no fallback"),
            "{e}"
        );
        assert_eq!(f.profile("-s prod"), "prod-account");
    }

    #[test]
    fn case9_aws_profile_flag_wins() {
        let f = Fx::new(SEED);
        let r = f.run("--aws-profile cliProfile").unwrap();
        assert_eq!(r.profile, "cliProfile");
        assert!(r.rule.starts_with("--aws-profile"), "{}", r.rule);
    }

    #[test]
    fn case9_aws_profile_flag_wins_over_an_unresolvable_provider_profile() {
        let f = Fx::new(&fixture(
            r#"
            provider:
              profile: ${ssm:/x}
            "#,
        ));
        assert_eq!(f.profile("--aws-profile cliProfile"), "cliProfile");
    }

    #[test]
    fn case10_cloudformation_tags_and_merge_keys() {
        let f = Fx::new(
            r#"service: cfn
x-base: &base
  name: aws
  runtime: nodejs18.x
  region: us-east-2
custom:
  profiles:
    dev: tagDev
provider:
  <<: *base
  profile: ${self:custom.profiles.${sls:stage}}
  environment:
    TABLE: !Ref OrdersTable
    ARN: !GetAtt OrdersTable.Arn
    COND: !If [IsProd, a, b]
    JOINED: !Join ['', [a, !Ref AWS::Region]]
    SUBBED: !Sub "arn:${AWS::Partition}:s3:::${Bucket}"
    SSM: ${ssm:/not/needed}
resources:
  Conditions:
    IsProd: !Equals [!Ref Stage, prod]
    Not: !Not [!Condition IsProd]
    Both: !And [!Condition IsProd, !Or [!Condition IsProd, !Condition IsProd]]
  Resources:
    OrdersTable:
      Type: AWS::DynamoDB::Table
      Properties:
        AZ: !Select [0, !GetAZs '']
        Imp: !ImportValue shared-vpc
        Map: !FindInMap [M, !Ref AWS::Region, x]
        B64: !Base64 abc
        Cidr: !Cidr [!Ref Block, 6, 5]
        Split: !Split [',', 'a,b']
        Raw: ${cf:other.output}
"#,
        );
        let r = f.run("").unwrap();
        assert_eq!(r.profile, "tagDev");
        assert_eq!(r.region.as_deref(), Some("us-east-2"));
        assert_eq!(r.project, "cfn");
    }

    // ---- sources -------------------------------------------------------

    #[test]
    fn opt_sources() {
        let f = Fx::new(&fixture(
            r#"
            provider:
              profile: ${opt:aws-profile, opt:region, opt:s, 'fallback'}
              region: ${opt:region, 'eu-west-3'}
            "#,
        ));
        let r = f.run("").unwrap();
        assert_eq!(r.profile, "fallback");
        assert_eq!(r.region.as_deref(), Some("eu-west-3"));
    }

    #[test]
    fn opt_sources_interpolated() {
        let stage = fixture(
            r#"
            provider:
              profile: p-${opt:stage, 'none'}
            "#,
        );
        // Every option of the wrapped command counts, by its full name.
        let region = fixture(
            r#"
            provider:
              profile: acct-${opt:region, 'us-east-1'}
            "#,
        );
        check(&[
            Case {
                name: "opt:stage from -s",
                yml: stage.clone(),
                args: "-s prod",
                want: Want::Profile("p-prod"),
                ..Default::default()
            },
            Case {
                name: "opt:stage unset: fallback",
                yml: stage,
                want: Want::Profile("p-none"),
                ..Default::default()
            },
            Case {
                name: "opt:region from --region",
                yml: region.clone(),
                args: "--region eu-west-1",
                want: Want::Profile("acct-eu-west-1"),
                ..Default::default()
            },
            Case {
                name: "opt:region from -r",
                yml: region.clone(),
                args: "-r eu-west-2",
                want: Want::Profile("acct-eu-west-2"),
                ..Default::default()
            },
            Case {
                name: "opt:region unset: fallback",
                yml: region,
                want: Want::Profile("acct-us-east-1"),
                ..Default::default()
            },
        ]);
    }

    #[test]
    fn self_whole_document_and_paths() {
        check(&[
            Case {
                name: "${self:} is the whole document",
                yml: fixture(
                    r#"
                    provider:
                      profile: ${self:}
                    "#,
                ),
                want: Want::Err(&["resolves to a mapping"]),
                ..Default::default()
            },
            Case {
                name: "list index",
                yml: fixture(
                    r#"
                    custom:
                      list: [a, b]
                    provider:
                      profile: ${self:custom.list.1}
                    "#,
                ),
                want: Want::Profile("b"),
                ..Default::default()
            },
            Case {
                name: "number",
                yml: fixture(
                    r#"
                    custom:
                      n: 42
                    provider:
                      profile: ${self:custom.n}
                    "#,
                ),
                want: Want::Profile("42"),
                ..Default::default()
            },
            Case {
                name: "interpolated missing key",
                yml: fixture(
                    r#"
                    custom:
                      n: 42
                    provider:
                      profile: acct-${self:custom.n}-${self:custom.b}
                    custom2: x
                    "#,
                ),
                want: Want::Err(&[]),
                ..Default::default()
            },
            Case {
                name: "interpolated number and bool",
                yml: fixture(
                    r#"
                    custom:
                      n: 42
                      b: true
                    provider:
                      profile: acct-${self:custom.n}-${self:custom.b}
                    "#,
                ),
                want: Want::Profile("acct-42-true"),
                ..Default::default()
            },
        ]);
    }

    #[test]
    fn env_source() {
        let one = fixture(
            r#"
            provider:
              profile: ${env:P}
            "#,
        );
        let two = fixture(
            r#"
            provider:
              profile: ${env:A, env:B, "lit"}
            "#,
        );
        check(&[
            Case {
                name: "set",
                yml: one.clone(),
                env: &[("P", "envP")],
                want: Want::Profile("envP"),
                ..Default::default()
            },
            Case {
                name: "unset, no fallback",
                yml: one,
                want: Want::Err(&["${env:P} has no value and no fallback"]),
                ..Default::default()
            },
            Case {
                name: "second variable",
                yml: two.clone(),
                env: &[("B", "b")],
                want: Want::Profile("b"),
                ..Default::default()
            },
            Case {
                name: "literal fallback",
                yml: two,
                want: Want::Profile("lit"),
                ..Default::default()
            },
        ]);
    }

    #[test]
    fn sls_sources() {
        let stage = fixture(
            r#"
            provider:
              stage: ${sls:stage}
              profile: x
            "#,
        );
        check(&[
            Case {
                name: "sls:instanceId",
                yml: fixture(
                    r#"
                    provider:
                      profile: ${sls:instanceId}
                    "#,
                ),
                want: Want::Err(&[
                    "variable ${sls:instanceId} cannot be resolved offline; map the stages in .credport.toml instead",
                ]),
                ..Default::default()
            },
            Case {
                name: "provider.stage from sls:stage",
                yml: stage.clone(),
                want: Want::Err(&["while resolving the stage itself"]),
                ..Default::default()
            },
            Case {
                name: "with --stage provider.stage is not needed",
                yml: stage,
                args: "-s dev",
                want: Want::Profile("x"),
                ..Default::default()
            },
        ]);
    }

    #[test]
    fn file_source() {
        let f = Fx::new(&fixture(
            r#"
            custom: ${file(./config/custom.yml)}
            provider:
              profile: ${file(./accounts.json):${sls:stage}.profile}
              region: ${self:custom.region}
            "#,
        ));
        f.file(
            "accounts.json",
            r#"{"dev":{"profile":"jsonDev"},"prod":{"profile":"jsonProd"}}"#,
        )
        .file("config/custom.yml", "region: ${opt:region, 'ap-south-1'}\n");
        let r = f.run("").unwrap();
        assert_eq!(r.profile, "jsonDev");
        assert_eq!(r.region.as_deref(), Some("ap-south-1"));
        assert_eq!(f.profile("-s prod"), "jsonProd");
        let e = f.err("-s qa");
        assert!(e.contains("stage 'qa' is not in ./accounts.json:"), "{e}");
    }

    #[test]
    fn file_source_missing_text_and_outside() {
        check(&[
            Case {
                name: "missing file, fallback",
                yml: fixture(
                    r#"
                    provider:
                      profile: ${file(./nope.yml):x, 'fb'}
                    "#,
                ),
                want: Want::Profile("fb"),
                ..Default::default()
            },
            Case {
                name: "missing file, no fallback",
                yml: fixture(
                    r#"
                    provider:
                      profile: ${file(./nope.yml)}
                    "#,
                ),
                want: Want::Err(&["has no value"]),
                ..Default::default()
            },
            Case {
                name: "text file",
                yml: fixture(
                    r#"
                    provider:
                      profile: ${file(profile.txt)}
                    "#,
                ),
                files: &[("profile.txt", "textProfile")],
                want: Want::Profile("textProfile"),
                ..Default::default()
            },
            Case {
                name: "outside the service folder",
                yml: fixture(
                    r#"
                    provider:
                      profile: ${file(../outside.yml)}
                    "#,
                ),
                want: Want::Err(&["outside the service folder"]),
                ..Default::default()
            },
            Case {
                name: ".js file",
                yml: fixture(
                    r#"
                    provider:
                      profile: ${file(./profile.js):name}
                    "#,
                ),
                want: Want::Err(&["cannot be resolved offline"]),
                ..Default::default()
            },
            Case {
                name: "invalid YAML file",
                yml: fixture(
                    r#"
                    provider:
                      profile: ${file(./bad.yml):a}
                    "#,
                ),
                files: &[("bad.yml", "a: [\n")],
                want: Want::Err(&["bad.yml"]),
                ..Default::default()
            },
        ]);
    }

    #[test]
    fn file_content_variables_resolve_against_main_doc() {
        let f = Fx::new(&fixture(
            r#"
            custom:
              who: nested
            provider:
              profile: ${file(p.yml):profile}
            "#,
        ));
        f.file("p.yml", "profile: from-${self:custom.who}\n");
        assert_eq!(f.profile(""), "from-nested");
    }

    #[test]
    fn str_to_bool() {
        check(&[
            Case {
                name: "\"1\" is true",
                yml: fixture(
                    r#"
                    custom:
                      flag: ${strToBool(${env:F})}
                    provider:
                      profile: p-${self:custom.flag}
                    "#,
                ),
                env: &[("F", "1")],
                want: Want::Profile("p-true"),
                ..Default::default()
            },
            Case {
                name: "not a boolean",
                yml: fixture(
                    r#"
                    custom:
                      flag: ${strToBool(nope)}
                    provider:
                      profile: p-${self:custom.flag}
                    "#,
                ),
                want: Want::Err(&["strToBool"]),
                ..Default::default()
            },
        ]);
    }

    #[test]
    fn offline_sources_error() {
        for v in [
            "${ssm:/x}",
            "${cf:stack.out}",
            "${s3:b/k}",
            "${aws:accountId}",
            "${cf.us-east-1:s.o}",
            "${vault:secret}",
        ] {
            let f = Fx::new(&fixture(&format!(
                r#"
                provider:
                  profile: {v}
                "#
            )));
            let e = f.err("");
            assert!(
                e.contains(&format!("provider.profile: variable {v} cannot be resolved offline; map the stages in .credport.toml instead")),
                "case {v}: {e}"
            );
        }
        // even with a fallback
        let f = Fx::new(&fixture(
            r#"
            provider:
              profile: ${ssm:/x, 'dev'}
            "#,
        ));
        let e = f.err("");
        assert!(
            e.contains("cannot be resolved offline"),
            "with a fallback: {e}"
        );
    }

    #[test]
    fn fallbacks_nesting_and_reresolution() {
        check(&[
            Case {
                name: "nested fallbacks",
                yml: fixture(
                    r#"
                    custom:
                      a: ${self:custom.b}
                      b: ${env:X, self:custom.c}
                      c: '${opt:stage, "z"}'
                    provider:
                      profile: ${self:custom.a}-${self:custom.missing, 1}
                    "#,
                ),
                want: Want::Profile("z-1"),
                ..Default::default()
            },
            Case {
                name: "an env value containing a variable is resolved again",
                yml: fixture(
                    r#"
                    provider:
                      profile: ${env:P}
                    "#,
                ),
                env: &[("P", "${opt:stage}-via-env")],
                args: "-s qa",
                want: Want::Profile("qa-via-env"),
                ..Default::default()
            },
            Case {
                name: "number literal fallback",
                yml: fixture(
                    r#"
                    provider:
                      profile: ${env:A, 12.5}
                    "#,
                ),
                want: Want::Profile("12.5"),
                ..Default::default()
            },
            Case {
                name: "null literal fallback",
                yml: fixture(
                    r#"
                    provider:
                      profile: ${env:A, null}
                    "#,
                ),
                want: Want::Err(&["no AWS profile"]),
                ..Default::default()
            },
        ]);
    }

    #[test]
    fn cycles_are_errors() {
        check(&[
            Case {
                name: "two keys",
                yml: fixture(
                    r#"
                    custom:
                      a: ${self:custom.b}
                      b: ${self:custom.a}
                    provider:
                      profile: ${self:custom.a}
                    "#,
                ),
                want: Want::Err(&["cycle"]),
                ..Default::default()
            },
            Case {
                name: "itself",
                yml: fixture(
                    r#"
                    provider:
                      profile: ${self:provider.profile}
                    "#,
                ),
                want: Want::Err(&["cycle"]),
                ..Default::default()
            },
            Case {
                name: "a key inside itself",
                yml: fixture(
                    r#"
                    custom:
                      a: ${self:custom.a.b}
                    provider:
                      profile: ${self:custom.a}
                    "#,
                ),
                want: Want::Err(&["cycle"]),
                ..Default::default()
            },
            Case {
                name: "re-resolution loop through env",
                yml: fixture(
                    r#"
                    provider:
                      profile: ${env:P}
                    "#,
                ),
                env: &[("P", "${env:P}")],
                want: Want::Err(&["deep"]),
                ..Default::default()
            },
        ]);
    }

    #[test]
    fn exponential_fan_out_is_bounded() {
        let mut y = String::from("custom:\n");
        for i in 0..30 {
            y.push_str(&format!(
                "  v{i}: ${{self:custom.v{n}}}${{self:custom.v{n}}}\n",
                n = i + 1
            ));
        }
        y.push_str(&fixture(
            r#"
              v30: x
            provider:
              profile: ${self:custom.v0}
            "#,
        ));
        let e = Fx::new(&y).err("");
        assert!(e.contains("steps") || e.contains("deep"), "{e}");
    }

    #[test]
    fn wide_fan_out_at_shallow_depth_hits_the_step_budget() {
        let mut y = fixture(
            r#"
            custom:
              leaf: x
            "#,
        );
        for i in 0..6 {
            let refs = format!("${{self:custom.l{}}}", i + 1).repeat(8);
            y.push_str(&format!("  l{i}: {refs}\n"));
        }
        y.push_str(&fixture(
            r#"
              l6: ${self:custom.leaf}
            provider:
              profile: ${self:custom.l0}
            "#,
        ));
        let e = Fx::new(&y).err("");
        assert!(e.contains("steps"), "{e}");
    }

    #[test]
    fn escapes_and_foreign_braces_left_alone() {
        let f = Fx::new(&fixture(
            r#"
            provider:
              profile: 'p\${opt:stage}-${AWS::Region}-${Foo}-${foo}'
            "#,
        ));
        assert_eq!(
            f.profile("-s x"),
            r"p\${opt:stage}-${AWS::Region}-${Foo}-${foo}"
        );
    }

    #[test]
    fn syntax_errors() {
        check(&[
            Case {
                name: "missing closing bracket",
                yml: fixture(
                    r#"
                    provider:
                      profile: ${opt:stage
                    "#,
                ),
                want: Want::Err(&["missing closing bracket"]),
                ..Default::default()
            },
            Case {
                name: "unterminated quote",
                yml: fixture(
                    r#"
                    provider:
                      profile: ${opt:stage, 'x}
                    "#,
                ),
                want: Want::Err(&["unterminated"]),
                ..Default::default()
            },
            Case {
                name: "200 levels of nesting",
                yml: fixture(&format!(
                    r#"
                    provider:
                      profile: {}x{}
                    "#,
                    "${env:A, ".repeat(200),
                    "}".repeat(200)
                )),
                want: Want::Err(&[]),
                ..Default::default()
            },
        ]);
    }

    #[test]
    fn unrelated_garbage_is_ignored() {
        let f = Fx::new(&fixture(
            r#"
            service: ok
            functions:
              f:
                handler: ${ssm:/x}
                env: ${bad syntax
                other: ${env:X, foo}
            provider:
              profile: p
            "#,
        ));
        assert_eq!(f.profile(""), "p");
    }

    #[test]
    fn a_broken_region_never_fails_the_resolution() {
        let f = Fx::new(&fixture(
            r#"
            provider:
              profile: p
              region: ${ssm:/region}
            "#,
        ));
        assert_eq!(f.run("").unwrap().region, None);
    }

    #[test]
    fn an_unresolvable_or_blank_service_falls_back_to_the_folder_name() {
        struct Case {
            name: &'static str,
            service: &'static str,
        }
        let cases = [
            Case {
                name: "unresolvable offline",
                service: "service: ${ssm:/svc}",
            },
            Case {
                name: "empty scalar",
                service: "service: ''",
            },
            Case {
                name: "blank",
                service: "service: '  '",
            },
            Case {
                name: "bare tag (no value)",
                service: "service:\n  !!str",
            },
            Case {
                name: "bare key",
                service: "service:",
            },
            Case {
                name: "empty mapping name",
                service: "service:\n  name: ''",
            },
        ];
        for c in cases {
            let f = Fx::new(&format!("{}\nprovider:\n  profile: p\n", c.service));
            let r = f.run("").unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert_eq!(r.project, folder_name(&r.file), "{}", c.name);
        }
    }

    const USE_DOTENV: &str = r#"useDotenv: true
provider:
  profile: ${env:PROFILE}
  region: ${env:REGION, 'none'}
"#;

    #[test]
    fn use_dotenv() {
        let f = Fx::new(USE_DOTENV);
        f.file(
            ".env",
            &fixture(
                r#"
                # comment
                export PROFILE="base profile"
                REGION=eu-north-1 # trailing
                "#,
            ),
        )
        .file(
            ".env.prod",
            &fixture(
                r#"
                PROFILE='prod-$NOT_EXPANDED'
                REGION=${BASE}-x
                BASE=ignored
                "#,
            ),
        );
        let r = f.run("").unwrap();
        assert_eq!(r.profile, "base profile");
        assert_eq!(r.region.as_deref(), Some("eu-north-1"));
        // .env.<stage> replaces .env entirely (v3), expanding ${VAR}
        let r = f.run("-s prod").unwrap();
        assert_eq!(r.profile, "prod-$NOT_EXPANDED");
        assert_eq!(r.region.as_deref(), Some("-x"));
    }

    #[test]
    fn use_dotenv_real_environment_wins() {
        let f = Fx::new(USE_DOTENV).env("PROFILE", "real");
        f.file(".env", "PROFILE=fromfile\n");
        assert_eq!(f.profile(""), "real");
    }

    #[test]
    fn without_use_dotenv_the_file_is_ignored() {
        let f = Fx::new(&fixture(
            r#"
            provider:
              profile: ${env:PROFILE, 'no'}
            "#,
        ));
        f.file(".env", "PROFILE=fromfile\n");
        assert_eq!(f.profile(""), "no");
    }

    #[test]
    fn dotenv_parser() {
        let v = parse_dotenv(&fixture(
            r#"
            A=1
              export B = "x\ny"
            C='lit # not comment'
            #D=no
            E
            F=a # c
            G=`t`
            "#,
        ));
        let m: HashMap<_, _> = v.into_iter().map(|(k, v, _)| (k, v)).collect();
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "x\ny");
        assert_eq!(m["C"], "lit # not comment");
        assert_eq!(m["F"], "a");
        assert_eq!(m["G"], "t");
        assert!(!m.contains_key("D") && !m.contains_key("E"));
        let look = |n: &str| (n == "X").then(|| "1".to_string());
        assert_eq!(expand_dotenv(r"a$X-${X}-${Y:-d}-\$X", &look), "a1-1-d-$X");
    }

    #[test]
    fn serverless_json() {
        let f = Fx::named(
            "serverless.json",
            r#"{"service":"js","custom":{"p":{"dev":"jDev"}},"provider":{"name":"aws","profile":"${self:custom.p.${sls:stage}}","region":"us-west-2"}}"#,
        );
        let r = f.run("").unwrap();
        assert_eq!((r.project.as_str(), r.profile.as_str()), ("js", "jDev"));
        assert_eq!(r.region.as_deref(), Some("us-west-2"));
    }

    #[test]
    fn js_and_ts_configs_unsupported() {
        for n in ["serverless.ts", "serverless.js"] {
            let f = Fx::named(n, "module.exports = {}");
            let e = f.err("");
            assert!(
                e.contains(n) && e.contains(".credport.toml"),
                "case {n}: {e}"
            );
        }
    }

    #[test]
    fn v4_resolvers() {
        let f = Fx::new(&fixture(
            r#"
            stages:
              default:
                resolvers:
                  acct:
                    type: aws
                    profile: v4Profile
                    region: eu-central-1
            "#,
        ));
        let r = f.run("").unwrap();
        assert_eq!(r.profile, "v4Profile");
        assert_eq!(r.region.as_deref(), Some("eu-central-1"));
        assert!(
            r.rule.starts_with("stages.default.resolvers.acct.profile"),
            "{}",
            r.rule
        );
    }

    #[test]
    fn v4_resolvers_stage_first_and_several_are_an_error() {
        let f = Fx::new(&fixture(
            r#"
            stages:
              prod:
                resolvers:
                  a:
                    type: aws
                    profile: pa
              default:
                resolvers:
                  b:
                    type: aws
                    profile: pb
                  c:
                    type: aws
                    profile: pc
            "#,
        ));
        assert_eq!(f.profile("-s prod"), "pa");
        let e = f.err("");
        assert!(e.contains("several aws resolvers"), "{e}");
    }

    #[test]
    fn no_profile_and_bad_documents() {
        check(&[
            Case {
                name: "no profile anywhere",
                yml: fixture(
                    r#"
                    service: x
                    provider:
                      name: aws
                    "#,
                ),
                want: Want::Err(&["no AWS profile for stage 'dev'"]),
                ..Default::default()
            },
            Case {
                name: "a list",
                yml: fixture(
                    r#"
                    - a
                    - b
                    "#,
                ),
                want: Want::Err(&["expected a mapping"]),
                ..Default::default()
            },
            Case {
                name: "invalid YAML",
                yml: "a: [\n".into(),
                want: Want::Err(&["invalid YAML"]),
                ..Default::default()
            },
            Case {
                name: "empty",
                yml: String::new(),
                want: Want::Err(&["no AWS profile"]),
                ..Default::default()
            },
            Case {
                name: "an intrinsic as the profile",
                yml: fixture(
                    r#"
                    provider:
                      profile: !Ref Prof
                    "#,
                ),
                want: Want::Err(&["CloudFormation intrinsic"]),
                ..Default::default()
            },
            Case {
                name: "a merge key that is not a mapping",
                yml: fixture(
                    r#"
                    provider:
                      <<: 5
                      profile: p
                    "#,
                ),
                want: Want::Profile("p"),
                ..Default::default()
            },
        ]);
    }

    #[test]
    fn a_self_referencing_anchor_does_not_panic() {
        let f = Fx::new(&fixture(
            r#"
            a: &a [*a]
            provider:
              profile: p
            "#,
        ));
        let _ = f.run("");
    }

    #[test]
    fn service_mapping_form_and_numeric_stage() {
        let f = Fx::new(&fixture(
            r#"
            service:
              name: old-style
            provider:
              stage: 2024
              profile: p${sls:stage}
            "#,
        ));
        let r = f.run("").unwrap();
        assert_eq!(
            (r.project.as_str(), r.stage.as_str(), r.profile.as_str()),
            ("old-style", "2024", "p2024")
        );
    }

    #[test]
    fn parser_shapes() {
        let t = parse_template("a${opt:stage, self:x.${sls:stage}, 'q,}', 3}b").unwrap();
        assert_eq!(t.len(), 3);
        let Part::Var(v) = &t[1] else { panic!() };
        assert_eq!(v.sources.len(), 4);
        assert_eq!(v.raw, "${opt:stage, self:x.${sls:stage}, 'q,}', 3}");
        assert!(!has_vars("${AWS::Region} ${Foo} \\${opt:x} $$ {}"));
        assert!(has_vars("$${opt:x}"));
        assert!(parse_template("${file(a.yml, b):c}").is_ok());
        assert!(parse_template("${opt:a, ,}").is_err());
        assert!(parse_template("${opt:a, foo bar}").is_err());
    }

    #[test]
    fn random_variable_strings_never_panic() {
        let alphabet: Vec<char> = "${}():,.'\" \\aAs:elfoptnv1-_é".chars().collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let doc: Value = yaml_serde::from_str(&fixture(
            r#"
            custom:
              a: ${self:custom.a}
              b: x
            "#,
        ))
        .unwrap();
        let sel = Selection {
            stage: Some("dev".into()),
            ..Default::default()
        };
        let env = |_: &str| Some("${env:X}".to_string());
        for _ in 0..3000 {
            let len = (seed % 40) as usize;
            let mut text = String::new();
            for _ in 0..len {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                text.push(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            let _ = parse_template(&text);
            let mut r = Evaluator::new(Path::new("/tmp/x/serverless.yml"), doc.clone(), &sel, &env);
            r.stage = StageState::Known("dev".into());
            let _ = r.resolve_string(&text, 0);
        }
    }
}
