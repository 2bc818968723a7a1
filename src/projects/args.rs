//! Owns reading stage/profile/param flags out of a wrapped command line
//! (`credport exec -- sls deploy -s prod`).
//!
//! The tool is recognised from the first word that is not a package-runner
//! (`npx`, `pnpx`, `bunx`, `npm exec`, `pnpm exec|dlx`, `yarn [dlx]`, `node`), by its
//! base name without `.cmd`/`.exe` or an `@version` suffix:
//!
//! * `sam` (AWS SAM CLI, click): `--config-env X` / `--config-env=X` → stage,
//!   `--profile X` / `--profile=X` → profile. Click takes the next word as the value
//!   even if it starts with `-`.
//! * `cdk`: `--profile X` / `--profile=X` → profile (CDK has no stage flag).
//! * anything else is read with Serverless v3 rules (`lib/cli/parse-args.js`):
//!   a flag matches `^-(?:-NAME|[a-z]+)(?:=VALUE|$)`; `--stage X`, `--stage=X`,
//!   `-s X`, `-s=X` set the stage; `--aws-profile X` / `=X` the profile;
//!   `--param k=v` / `--param=k=v` (repeatable; value must match `k=v`, trailing
//!   whitespace trimmed) add params. A value is the next word unless that word is
//!   missing, `--` or itself flag-like. `-sprod` is **not** `-s prod`: Serverless
//!   treats `-sprod` as the boolean short flags `-s -p -r -o -d`, so it is ignored.
//!   Serverless rejects a repeated `--stage`; here the last one wins.
//!
//! Parsing stops at a bare `--`. Surrounding quotes that survived (e.g. an argv
//! built without a shell: `--param="a=b"`) are stripped from values.

use super::detect::Selection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Serverless,
    Sam,
    Cdk,
}

const RUNNERS: &[&str] = &[
    "npx", "pnpx", "bunx", "npm", "pnpm", "yarn", "node", "exec", "dlx",
];

fn base_name(word: &str) -> String {
    let base = word.rsplit(['/', '\\']).next().unwrap_or(word);
    let base = base
        .strip_suffix(".cmd")
        .or_else(|| base.strip_suffix(".exe"))
        .unwrap_or(base);
    // `serverless@3`, `@aws-cdk/cli`, `aws-cdk@2`
    let base = base.trim_start_matches('@');
    let base = base.split('@').next().unwrap_or(base);
    base.to_ascii_lowercase()
}

/// Returns the tool and the index of the first argument after the tool name.
fn detect_tool(args: &[String]) -> (Tool, usize) {
    for (i, a) in args.iter().enumerate() {
        if a == "--" {
            break;
        }
        if a.starts_with('-') {
            continue;
        }
        let b = base_name(a);
        if RUNNERS.contains(&b.as_str()) {
            continue;
        }
        let tool = match b.as_str() {
            "sam" => Tool::Sam,
            "cdk" | "aws-cdk" | "aws-cdk/cli" => Tool::Cdk,
            _ => Tool::Serverless,
        };
        return (tool, i + 1);
    }
    (Tool::Serverless, args.len().min(1))
}

fn unquote(v: &str) -> String {
    let b = v.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        v[1..v.len() - 1].to_string()
    } else {
        v.to_string()
    }
}

/// Serverless' `paramRegExp`: `^-(?:-(NAME)|([a-z]+))(?:=(VALUE)|$)`.
/// Returns (name, is_alias, value).
fn sls_flag(arg: &str) -> Option<(&str, bool, Option<&str>)> {
    let rest = arg.strip_prefix('-')?;
    let (name, value) = match rest.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (rest, None),
    };
    if let Some(full) = name.strip_prefix('-') {
        let mut chars = full.chars();
        let first = chars.next()?;
        let ok = first.is_ascii_alphabetic()
            && full.len() >= 2
            && full
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-'));
        ok.then_some((full, false, value))
    } else {
        let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase());
        ok.then_some((name, true, value))
    }
}

fn parse_param(sel: &mut Selection, v: &str) {
    let v = unquote(v);
    if let Some((k, val)) = v.split_once('=')
        && !k.is_empty()
        && !val.is_empty()
    {
        sel.params.push((k.to_string(), val.trim_end().to_string()));
    }
}

fn parse_serverless(args: &[String], sel: &mut Selection) {
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            break;
        }
        let Some((name, alias, value)) = sls_flag(arg) else {
            i += 1;
            continue;
        };
        let key = match (name, alias) {
            ("s", true) | ("stage", false) => "stage",
            ("aws-profile", false) => "aws-profile",
            ("param", false) => "param",
            _ => {
                i += 1;
                continue;
            }
        };
        let value = match value {
            Some(v) => Some(v.to_string()),
            None => match args.get(i + 1) {
                Some(next) if next != "--" && sls_flag(next).is_none() && !next.is_empty() => {
                    i += 1;
                    Some(next.clone())
                }
                _ => None,
            },
        };
        i += 1;
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            continue;
        };
        match key {
            "stage" => sel.stage = Some(unquote(&value)),
            "aws-profile" => sel.aws_profile = Some(unquote(&value)),
            _ => parse_param(sel, &value),
        }
    }
}

fn parse_click_like(args: &[String], sel: &mut Selection, stage_flag: Option<&str>) {
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            break;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let is_stage = stage_flag == Some(name);
        let is_profile = name == "--profile";
        if !is_stage && !is_profile {
            i += 1;
            continue;
        }
        let value = match inline {
            Some(v) => Some(v),
            None => {
                i += 1;
                args.get(i).filter(|n| n.as_str() != "--").cloned()
            }
        };
        i += 1;
        if let Some(v) = value.map(|v| unquote(&v)).filter(|v| !v.is_empty()) {
            if is_stage {
                sel.stage = Some(v);
            } else {
                sel.aws_profile = Some(v);
            }
        }
    }
}

/// Reads --stage/-s/--aws-profile/--param (serverless) and --config-env/--profile (sam)
/// from a wrapped command's argv (argv[0] is the program, e.g. "serverless" or "sls" or
/// "npx"...). Handles `--stage prod`, `--stage=prod`, `-s prod`, `-s=prod` (not
/// `-sprod`, which Serverless v3 reads as boolean short flags), and stops at a bare `--`.
pub fn parse_wrapped_args(args: &[String]) -> Selection {
    let mut sel = Selection::default();
    let (tool, start) = detect_tool(args);
    let rest = &args[start.min(args.len())..];
    match tool {
        Tool::Serverless => parse_serverless(rest, &mut sel),
        Tool::Sam => parse_click_like(rest, &mut sel, Some("--config-env")),
        Tool::Cdk => parse_click_like(rest, &mut sel, None),
    }
    sel
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Selection {
        let v: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse_wrapped_args(&v)
    }

    fn stage(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn serverless_invoke_local_short_stage() {
        let s = p("serverless invoke local -f hello -s prod");
        assert_eq!(s.stage, stage("prod"));
        assert_eq!(s.aws_profile, None);
    }

    #[test]
    fn sls_long_forms_and_param() {
        let s = p(r#"sls deploy --stage=prod --aws-profile x --param="a=b""#);
        assert_eq!(s.stage, stage("prod"));
        assert_eq!(s.aws_profile, stage("x"));
        assert_eq!(s.params, vec![("a".into(), "b".into())]);
    }

    #[test]
    fn npx_serverless() {
        let s = p("npx serverless deploy --verbose -s prod");
        assert_eq!(s.stage, stage("prod"));
        let s = p("npx -y serverless@3 deploy -s prod");
        assert_eq!(s.stage, stage("prod"));
        let s = p("/usr/local/bin/sls.cmd deploy --stage prod");
        assert_eq!(s.stage, stage("prod"));
        let s = p("./node_modules/.bin/serverless deploy -s=qa");
        assert_eq!(s.stage, stage("qa"));
    }

    #[test]
    fn sam_flags() {
        let s = p("sam local invoke --config-env prod --profile x");
        assert_eq!(s.stage, stage("prod"));
        assert_eq!(s.aws_profile, stage("x"));
        let s = p("sam deploy --config-env=staging --profile=y -s ignored");
        assert_eq!(s.stage, stage("staging"));
        assert_eq!(s.aws_profile, stage("y"));
        // sam has no --aws-profile / --stage
        let s = p("sam deploy --stage prod --aws-profile z");
        assert_eq!(s, Selection::default());
    }

    #[test]
    fn cdk_profile() {
        let s = p("npx cdk deploy --profile acct -s prod");
        assert_eq!(s.aws_profile, stage("acct"));
        assert_eq!(s.stage, None);
    }

    #[test]
    fn stops_at_double_dash() {
        let s = p("sls invoke local -f x -- -s prod");
        assert_eq!(s.stage, None);
        let s = p("sls deploy --stage -- prod");
        assert_eq!(s.stage, None);
        let s = p("sam local invoke -- --config-env prod");
        assert_eq!(s.stage, None);
    }

    #[test]
    fn glued_short_flag_is_not_stage() {
        assert_eq!(p("sls deploy -sprod").stage, None);
    }

    #[test]
    fn missing_values_and_flag_like_values() {
        assert_eq!(p("sls deploy -s").stage, None);
        assert_eq!(p("sls deploy --stage --verbose").stage, None);
        assert_eq!(p("sls deploy --stage=").stage, None);
        // a negative-looking value that is not flag-like is taken
        assert_eq!(p("sls deploy -s -1").stage, stage("-1"));
    }

    #[test]
    fn params_repeat_and_validate() {
        let s = p("sls deploy --param a=1 --param=b=2=3 --param bad --param=c= --param \"d=4\"");
        assert_eq!(
            s.params,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "2=3".into()),
                ("d".into(), "4".into())
            ]
        );
    }

    #[test]
    fn last_stage_wins_and_empty_argv() {
        assert_eq!(p("sls deploy -s a --stage b").stage, stage("b"));
        assert_eq!(parse_wrapped_args(&[]), Selection::default());
        assert_eq!(p("sls"), Selection::default());
    }

    #[test]
    fn unknown_flag_values_are_not_confused() {
        let s = p("sls invoke -f s -d prod --stage real");
        assert_eq!(s.stage, stage("real"));
    }
}
