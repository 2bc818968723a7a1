//! Owns `.credport.toml`, credport's own committed project file, which wins over any
//! other project file in the same directory:
//!
//! ```toml
//! project = "orders-api"   # optional; default: serverless `service` in the same dir, else folder name
//! default_stage = "dev"    # optional
//! region = "eu-west-1"     # optional
//! policy = "policies/dev.json"   # optional session policy for every stage (file or inline JSON)
//! policy_arns = []               # optional managed policy ARNs for every stage
//! protected = ["live"]     # optional; stages that need `credport unlock` besides prod
//! [stages]
//! dev = "devAccount"
//! prod = "prodAccount"
//! [policies.prod]                # optional: one stage's own, replacing the two above
//! policy = "policies/prod.json"
//! ```
//!
//! Policy files are relative to this file; they are read and checked with the mapping (see
//! `session_policy`), so an edit counts on the next fetch.
//!
//! Stage: `--stage`, else `default_stage`, else the stage the framework file beside it
//! would run (serverless: `provider.stage` or `dev`; SAM: `default`), else the only stage
//! if there is exactly one, else an error listing the stages. An unknown stage is an error listing the known
//! ones. `--aws-profile` overrides the mapped profile (the stage must still be known).
//! Unknown keys are rejected, naming the key.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::error::ProjectError;
use super::files::{folder_name, read_text};
use super::{ProjectKind, Resolution, Selection, Sibling};
use crate::session_policy::{PolicySpec, SessionPolicy, spec_for};

/// The parsed contents of `.credport.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredportToml {
    /// Project name override.
    pub project: Option<String>,
    /// Stage used when none is selected.
    pub default_stage: Option<String>,
    /// Region reported in the resolution.
    pub region: Option<String>,
    /// Stage → AWS profile.
    #[serde(default)]
    pub stages: BTreeMap<String, String>,
    /// Session policy for every stage: a file (relative to this one) or inline JSON.
    pub policy: Option<String>,
    /// Managed policy ARNs for every stage.
    #[serde(default)]
    pub policy_arns: Vec<String>,
    /// `[policies.STAGE]`: one stage's session policy, replacing the two above.
    #[serde(default)]
    pub policies: BTreeMap<String, PolicySpec>,
    /// Stages this project protects besides `[guard] stages` (see `guard`; a project file
    /// can add protection, never remove it).
    #[serde(default)]
    pub protected: Vec<String>,
}

/// Parses `.credport.toml` text; `file` is only used in error messages.
pub fn parse(file: &Path, text: &str) -> Result<CredportToml, ProjectError> {
    toml::from_str(text).map_err(|e| ProjectError::Invalid {
        file: file.to_path_buf(),
        message: e.message().to_string(),
    })
}

/// Resolves a `.credport.toml` file; `sibling` is what the framework file beside it says.
pub fn resolve(
    file: &Path,
    sel: &Selection,
    sibling: &Sibling,
) -> Result<Resolution, ProjectError> {
    let text = read_text(file)?.ok_or_else(|| ProjectError::Io {
        file: file.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    let cfg = parse(file, &text)?;
    let known = if cfg.stages.is_empty() {
        "none".to_string()
    } else {
        cfg.stages.keys().cloned().collect::<Vec<_>>().join(", ")
    };
    let stage_err = |message: String| ProjectError::Stage {
        file: file.to_path_buf(),
        message,
        known: known.clone(),
    };
    let Some((stage, stage_rule)) = super::pick_stage(
        sel.stage.as_deref(),
        cfg.default_stage.as_deref(),
        sibling.stage.clone(),
        cfg.stages.keys(),
    ) else {
        return Err(stage_err(
            "no stage selected and no default_stage; pass --stage".into(),
        ));
    };
    let Some(mapped) = cfg.stages.get(&stage) else {
        return Err(stage_err(format!("stage '{stage}' is not in [stages]")));
    };
    let (profile, profile_rule) = match &sel.aws_profile {
        Some(p) => (p.clone(), "--aws-profile (overrides [stages])".to_string()),
        None => (mapped.clone(), format!("[stages] {stage} = \"{mapped}\"")),
    };
    if cfg.project.as_deref().is_some_and(|p| p.trim().is_empty()) {
        return Err(ProjectError::Invalid {
            file: file.to_path_buf(),
            message: "project is empty; remove the key to use the service or folder name".into(),
        });
    }
    if let Some(message) = crate::session_policy::misplaced_policy_key(cfg.stages.keys()) {
        return Err(ProjectError::Invalid {
            file: file.to_path_buf(),
            message,
        });
    }
    if let Some(s) = cfg.policies.keys().find(|s| !cfg.stages.contains_key(*s)) {
        return Err(stage_err(format!(
            "[policies.{s}] names a stage that is not in [stages]"
        )));
    }
    let policy = match spec_for(&cfg.policy, &cfg.policy_arns, &cfg.policies, &stage) {
        None => None,
        Some(spec) => {
            let dir = file.parent().unwrap_or(Path::new("."));
            SessionPolicy::load_with(
                &spec,
                dir,
                &file.display().to_string(),
                &super::files::read_policy_file,
            )?
            .map(std::sync::Arc::new)
        }
    };
    let project = cfg
        .project
        .clone()
        .or_else(|| sibling.service.clone())
        .unwrap_or_else(|| folder_name(file));
    Ok(Resolution {
        project,
        stage,
        profile,
        region: cfg.region.clone(),
        file: file.to_path_buf(),
        kind: ProjectKind::Credport,
        rule: format!("{profile_rule} with stage {stage_rule}"),
        policy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn setup(toml: &str) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join(".credport.toml"), toml).unwrap();
        t
    }

    fn run(t: &tempfile::TempDir, sel: &Selection) -> Result<Resolution, ProjectError> {
        let file = t.path().join(".credport.toml");
        resolve(
            &file,
            sel,
            &super::super::detect::sibling(&file, sel, &no_env),
        )
    }

    fn stage(s: &str) -> Selection {
        Selection {
            stage: Some(s.into()),
            ..Default::default()
        }
    }

    const FULL: &str = "project = \"orders-api\"\ndefault_stage = \"dev\"\nregion = \"eu-west-1\"\n[stages]\ndev = \"devAccount\"\nprod = \"prodAccount\"\n";

    #[test]
    fn default_stage_and_flag() {
        let t = setup(FULL);
        let r = run(&t, &Selection::default()).unwrap();
        assert_eq!(
            (r.project.as_str(), r.stage.as_str(), r.profile.as_str()),
            ("orders-api", "dev", "devAccount")
        );
        assert_eq!(r.region.as_deref(), Some("eu-west-1"));
        assert_eq!(r.kind, ProjectKind::Credport);
        assert_eq!(
            r.rule,
            "[stages] dev = \"devAccount\" with stage from default_stage"
        );
        let r = run(&t, &stage("prod")).unwrap();
        assert_eq!(r.profile, "prodAccount");
        assert_eq!(
            r.rule,
            "[stages] prod = \"prodAccount\" with stage from --stage"
        );
    }

    #[test]
    fn unknown_stage_lists_known() {
        let t = setup(FULL);
        let e = run(&t, &stage("qa")).unwrap_err().to_string();
        assert!(e.contains("stage 'qa' is not in [stages]"), "{e}");
        assert!(e.contains("known stages: dev, prod"), "{e}");
    }

    #[test]
    fn single_stage_is_default() {
        let t = setup("[stages]\nonly = \"p\"\n");
        let r = run(&t, &Selection::default()).unwrap();
        assert_eq!((r.stage.as_str(), r.profile.as_str()), ("only", "p"));
        assert_eq!(r.region, None);
    }

    #[test]
    fn ambiguous_stage_errors() {
        let t = setup("[stages]\na = \"1\"\nb = \"2\"\n");
        let e = run(&t, &Selection::default()).unwrap_err().to_string();
        assert!(e.contains("no stage selected"), "{e}");
        assert!(e.contains("known stages: a, b"), "{e}");
        let t = setup("");
        let e = run(&t, &Selection::default()).unwrap_err().to_string();
        assert!(e.contains("known stages: none"), "{e}");
    }

    #[test]
    fn aws_profile_overrides() {
        let t = setup(FULL);
        let sel = Selection {
            aws_profile: Some("cli".into()),
            ..Default::default()
        };
        let r = run(&t, &sel).unwrap();
        assert_eq!(r.profile, "cli");
        assert!(r.rule.starts_with("--aws-profile (overrides [stages])"));
    }

    #[test]
    fn stage_defaults_to_the_framework_beside_it() {
        let t = setup("[stages]\ndev = \"d\"\nprod = \"p\"\n");
        fs::write(
            t.path().join("serverless.yml"),
            "service: s\nprovider:\n  stage: prod\n",
        )
        .unwrap();
        let r = run(&t, &Selection::default()).unwrap();
        assert_eq!((r.stage.as_str(), r.profile.as_str()), ("prod", "p"));
        assert!(r.rule.contains("as serverless runs it"), "{}", r.rule);
        fs::write(t.path().join("serverless.yml"), "service: s\n").unwrap();
        assert_eq!(run(&t, &Selection::default()).unwrap().stage, "dev");
        fs::remove_file(t.path().join("serverless.yml")).unwrap();
        fs::write(t.path().join("samconfig.toml"), "version = 0.1\n").unwrap();
        let e = run(&t, &Selection::default()).unwrap_err().to_string();
        assert!(e.contains("stage 'default' is not in [stages]"), "{e}");
    }

    #[test]
    fn unknown_key_rejected() {
        let t = setup("projet = \"x\"\n[stages]\ndev = \"d\"\n");
        let e = run(&t, &Selection::default()).unwrap_err().to_string();
        assert!(e.contains("projet"), "{e}");
        assert!(e.contains(".credport.toml"), "{e}");
        let t = setup("[stages]\ndev = 3\n");
        assert!(run(&t, &Selection::default()).is_err());
        let t = setup("[stages\n");
        assert!(run(&t, &Selection::default()).is_err());
    }

    #[test]
    fn policies_per_stage_and_for_all_stages() {
        let t = setup(
            "policy = \"pol/all.json\"\n[stages]\ndev = \"d\"\nprod = \"p\"\nqa = \"q\"\n[policies.prod]\npolicy = '{\"Statement\": []}'\npolicy_arns = [\"arn:aws:iam::aws:policy/ReadOnlyAccess\"]\n[policies.qa]\n",
        );
        fs::create_dir(t.path().join("pol")).unwrap();
        fs::write(
            t.path().join("pol/all.json"),
            "{\n  \"Statement\": [1]\n}\n",
        )
        .unwrap();
        let dev = run(&t, &stage("dev")).unwrap().policy.unwrap();
        assert_eq!(dev.document.as_deref(), Some("{\"Statement\":[1]}"));
        assert_eq!(
            dev.origin.as_deref(),
            Some(t.path().join("pol/all.json").display().to_string().as_str())
        );
        let prod = run(&t, &stage("prod")).unwrap().policy.unwrap();
        assert_eq!(prod.document.as_deref(), Some("{\"Statement\":[]}"));
        assert_eq!(prod.arns, vec!["arn:aws:iam::aws:policy/ReadOnlyAccess"]);
        assert_eq!(
            run(&t, &stage("qa")).unwrap().policy,
            None,
            "an empty table: none"
        );

        // A broken policy file is an error naming it; so is a table for an unknown stage.
        fs::write(t.path().join("pol/all.json"), "{\"Statement\": ").unwrap();
        let e = run(&t, &stage("dev")).unwrap_err().to_string();
        assert!(
            e.contains("pol/all.json") && e.contains("not valid JSON"),
            "{e}"
        );
        assert!(
            run(&t, &stage("prod")).is_ok(),
            "prod does not use the file"
        );
        let t = setup("[stages]\ndev = \"d\"\n[policies.dve]\npolicy_arns = []\n");
        let e = run(&t, &stage("dev")).unwrap_err().to_string();
        assert!(e.contains("[policies.dve]"), "{e}");
        let t = setup("[stages]\ndev = \"d\"\npolicy = \"p.json\"\n");
        let e = run(&t, &stage("dev")).unwrap_err().to_string();
        assert!(e.contains("move `policy = ...` above"), "{e}");
        let t = setup("[stages]\ndev = \"d\"\n[policies.dev]\npolicy_arn = []\n");
        let e = run(&t, &stage("dev")).unwrap_err().to_string();
        assert!(e.contains("policy_arn"), "{e}");
    }

    #[test]
    fn an_empty_project_is_an_error_naming_the_file() {
        for text in [
            "project = \"\"\n[stages]\ndev = \"d\"\n",
            "project = \" \"\n[stages]\ndev = \"d\"\n",
        ] {
            let t = setup(text);
            let e = run(&t, &stage("dev")).unwrap_err().to_string();
            assert!(
                e.contains(".credport.toml") && e.contains("project is empty"),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn project_defaults_to_service_then_folder() {
        let t = setup("[stages]\ndev = \"d\"\n");
        fs::write(
            t.path().join("serverless.yml"),
            "service: ${self:custom.name}\ncustom:\n  name: from-sls\nprovider:\n  profile: ${ssm:/nope}\n",
        )
        .unwrap();
        assert_eq!(run(&t, &Selection::default()).unwrap().project, "from-sls");
        fs::remove_file(t.path().join("serverless.yml")).unwrap();
        let r = run(&t, &Selection::default()).unwrap();
        assert_eq!(r.project, folder_name(&t.path().join(".credport.toml")));
    }
}
