//! Owns AWS CDK's `cdk.json`. CDK has no stages: the stage is `--stage` or `default`;
//! any explicit stage is accepted but the profile is the same (`cdk.json` `profile`),
//! and the rule text says so. `--profile`/`--aws-profile` overrides. The project name is
//! the folder name; the region is not known from `cdk.json`.

use std::path::Path;

use super::error::ProjectError;
use super::files::{folder_name, read_text};
use super::{ProjectKind, Resolution, Selection};

/// Resolves a `cdk.json` file.
pub fn resolve(file: &Path, sel: &Selection) -> Result<Resolution, ProjectError> {
    let text = read_text(file)?.ok_or_else(|| ProjectError::Io {
        file: file.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ProjectError::Invalid {
            file: file.to_path_buf(),
            message: format!("invalid JSON: {e}"),
        })?;
    let (stage, stage_rule) = match &sel.stage {
        Some(s) => (
            s.clone(),
            format!("'{s}' from --stage (cdk.json has no stages: same profile for every stage)"),
        ),
        None => (
            "default".to_string(),
            "'default' (cdk.json has no stages)".to_string(),
        ),
    };
    let (profile, profile_rule) = match (&sel.aws_profile, doc.get("profile")) {
        (Some(p), _) => (p.clone(), "--profile (overrides cdk.json)".to_string()),
        (None, Some(serde_json::Value::String(p))) if !p.is_empty() => {
            (p.clone(), format!("cdk.json profile = {p}"))
        }
        _ => {
            return Err(ProjectError::NoProfile {
                file: file.to_path_buf(),
                stage,
                hint: "cdk.json has no \"profile\" string; pass --profile or map the stages in .credport.toml".into(),
            });
        }
    };
    Ok(Resolution {
        project: folder_name(file),
        stage,
        profile,
        region: None,
        file: file.to_path_buf(),
        kind: ProjectKind::Cdk,
        rule: format!("{profile_rule} with stage {stage_rule}"),
        policy: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("cdk.json");
        fs::write(&p, text).unwrap();
        (t, p)
    }

    #[test]
    fn profile_and_default_stage() {
        let (_t, p) = write(r#"{"app":"npx ts-node bin/app.ts","profile":"cdkProfile"}"#);
        let r = resolve(&p, &Selection::default()).unwrap();
        assert_eq!(
            (r.stage.as_str(), r.profile.as_str()),
            ("default", "cdkProfile")
        );
        assert_eq!(r.project, folder_name(&p));
        assert_eq!(r.kind, ProjectKind::Cdk);
        assert_eq!(
            r.rule,
            "cdk.json profile = cdkProfile with stage 'default' (cdk.json has no stages)"
        );
    }

    #[test]
    fn explicit_stage_same_profile() {
        let (_t, p) = write(r#"{"profile":"cdkProfile"}"#);
        let sel = Selection {
            stage: Some("prod".into()),
            ..Default::default()
        };
        let r = resolve(&p, &sel).unwrap();
        assert_eq!(
            (r.stage.as_str(), r.profile.as_str()),
            ("prod", "cdkProfile")
        );
        assert!(r.rule.contains("same profile for every stage"));
    }

    #[test]
    fn override_missing_and_invalid() {
        let (_t, p) = write(r#"{"app":"x"}"#);
        let e = resolve(&p, &Selection::default()).unwrap_err().to_string();
        assert!(
            e.contains("cdk.json") && e.contains("no AWS profile"),
            "{e}"
        );
        let sel = Selection {
            aws_profile: Some("cli".into()),
            ..Default::default()
        };
        assert_eq!(resolve(&p, &sel).unwrap().profile, "cli");
        let (_t, p) = write("{");
        assert!(resolve(&p, &Selection::default()).is_err());
    }
}
