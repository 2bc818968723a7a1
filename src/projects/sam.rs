//! Owns AWS SAM's `samconfig.toml` / `samconfig.yaml` / `samconfig.yml`.
//!
//! Config environments (top-level tables such as `[default]`, `[prod]`; `version` is
//! ignored) are the stages; the stage is `--config-env`/`--stage` or `default`. Within
//! the environment, `profile`, `region` and `stack_name` are taken from the first of
//! `local_invoke.parameters`, `global.parameters`, `deploy.parameters` that has them.
//! `--profile`/`--aws-profile` overrides the profile. The project name is that
//! `stack_name` when present, else the folder name (stack names are what a SAM team
//! recognises; note they may differ per environment).

use std::path::Path;

use serde_json::Value;

use super::error::ProjectError;
use super::files::{folder_name, parse_yaml, read_text};
use super::{ProjectKind, Resolution, Selection};

const SECTIONS: &[&str] = &["local_invoke", "global", "deploy"];

fn load(file: &Path) -> Result<Value, ProjectError> {
    let text = read_text(file)?.ok_or_else(|| ProjectError::Io {
        file: file.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    let invalid = |message: String| ProjectError::Invalid {
        file: file.to_path_buf(),
        message,
    };
    let is_toml = file.extension().is_some_and(|e| e == "toml");
    let v = if is_toml {
        let t: toml::Table = toml::from_str(&text).map_err(|e| invalid(e.message().to_string()))?;
        serde_json::to_value(t).map_err(|e| invalid(e.to_string()))?
    } else {
        let y = parse_yaml(file, &text)?;
        serde_json::to_value(y).map_err(|e| invalid(e.to_string()))?
    };
    match v {
        Value::Object(_) => Ok(v),
        Value::Null => Ok(Value::Object(Default::default())),
        _ => Err(invalid("top level is not a table".into())),
    }
}

fn lookup(env: &Value, key: &str) -> Option<(String, String)> {
    SECTIONS.iter().find_map(|s| {
        let v = env.get(s)?.get("parameters")?.get(key)?;
        let s2 = match v {
            Value::String(x) => x.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        Some((s2, format!("{s}.parameters.{key}")))
    })
}

/// Resolves a SAM config file.
pub fn resolve(file: &Path, sel: &Selection) -> Result<Resolution, ProjectError> {
    let doc = load(file)?;
    let envs: Vec<String> = doc
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, v)| k.as_str() != "version" && v.is_object())
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let (stage, stage_rule) = match &sel.stage {
        Some(s) => (s.clone(), "from --config-env"),
        None => ("default".to_string(), "'default' (no --config-env)"),
    };
    let Some(env) = doc.get(&stage).filter(|v| v.is_object()) else {
        return Err(ProjectError::Stage {
            file: file.to_path_buf(),
            message: format!("config environment '{stage}' is not in the file"),
            known: if envs.is_empty() {
                "none".into()
            } else {
                envs.join(", ")
            },
        });
    };
    let (profile, profile_rule) = match &sel.aws_profile {
        Some(p) => (p.clone(), "--profile (overrides samconfig)".to_string()),
        None => match lookup(env, "profile") {
            Some((p, at)) => (p.clone(), format!("{stage}.{at} = {p}")),
            None => {
                return Err(ProjectError::NoProfile {
                    file: file.to_path_buf(),
                    stage,
                    hint: "no profile in local_invoke/global/deploy parameters; pass --profile or map the stages in .credport.toml".into(),
                });
            }
        },
    };
    let region = lookup(env, "region").map(|(r, _)| r);
    let project = lookup(env, "stack_name")
        .map(|(s, _)| s)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| folder_name(file));
    Ok(Resolution {
        project,
        stage,
        profile,
        region,
        file: file.to_path_buf(),
        kind: ProjectKind::Sam,
        rule: format!("{profile_rule} with config environment {stage_rule}"),
        policy: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const TOML: &str = r#"version = 0.1
[default.global.parameters]
region = "us-east-1"
[default.deploy.parameters]
stack_name = "orders"
profile = "deployProfile"
region = "eu-west-1"
[default.local_invoke.parameters]
profile = "localProfile"
[prod.deploy.parameters]
stack_name = "orders-prod"
profile = "prodProfile"
"#;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join(name);
        fs::write(&p, text).unwrap();
        (t, p)
    }

    #[test]
    fn default_env_precedence() {
        let (_t, p) = write("samconfig.toml", TOML);
        let r = resolve(&p, &Selection::default()).unwrap();
        assert_eq!(r.stage, "default");
        assert_eq!(r.profile, "localProfile");
        assert_eq!(r.region.as_deref(), Some("us-east-1"));
        assert_eq!(r.project, "orders");
        assert_eq!(r.kind, ProjectKind::Sam);
        assert_eq!(
            r.rule,
            "default.local_invoke.parameters.profile = localProfile with config environment 'default' (no --config-env)"
        );
    }

    #[test]
    fn config_env_and_override() {
        let (_t, p) = write("samconfig.toml", TOML);
        let sel = Selection {
            stage: Some("prod".into()),
            ..Default::default()
        };
        let r = resolve(&p, &sel).unwrap();
        assert_eq!(
            (r.profile.as_str(), r.project.as_str()),
            ("prodProfile", "orders-prod")
        );
        assert_eq!(r.region, None);
        let sel = Selection {
            stage: Some("prod".into()),
            aws_profile: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(resolve(&p, &sel).unwrap().profile, "x");
    }

    #[test]
    fn unknown_env_and_missing_profile() {
        let (_t, p) = write("samconfig.toml", TOML);
        let sel = Selection {
            stage: Some("qa".into()),
            ..Default::default()
        };
        let e = resolve(&p, &sel).unwrap_err().to_string();
        assert!(
            e.contains("'qa'") && e.contains("known stages: default, prod"),
            "{e}"
        );
        let (_t, p) = write(
            "samconfig.toml",
            "version = 0.1\n[default.deploy.parameters]\nstack_name = \"s\"\n",
        );
        let e = resolve(&p, &Selection::default()).unwrap_err().to_string();
        assert!(e.contains("no AWS profile for stage 'default'"), "{e}");
    }

    #[test]
    fn yaml_variant_and_folder_name() {
        let (_t, p) = write(
            "samconfig.yaml",
            "version: 0.1\ndefault:\n  global:\n    parameters:\n      profile: yp\n",
        );
        let r = resolve(&p, &Selection::default()).unwrap();
        assert_eq!(r.profile, "yp");
        assert_eq!(r.project, folder_name(&p));
    }

    #[test]
    fn an_empty_stack_name_falls_back_to_the_folder_name() {
        let (_t, p) = write(
            "samconfig.toml",
            "version = 0.1\n[default.global.parameters]\nprofile = \"p\"\nstack_name = \"\"\n",
        );
        let r = resolve(&p, &Selection::default()).unwrap();
        assert_eq!(
            (r.profile.as_str(), r.project.clone()),
            ("p", folder_name(&p))
        );
    }

    #[test]
    fn invalid_files() {
        let (_t, p) = write("samconfig.toml", "[default\n");
        assert!(resolve(&p, &Selection::default()).is_err());
        let (_t, p) = write("samconfig.yml", "- a\n");
        assert!(resolve(&p, &Selection::default()).is_err());
    }
}
