//! `.credport.toml`, `samconfig.{toml,yaml}`, `cdk.json` and `serverless.json`, through
//! `resolve_dir`: never panics, errors name the file, selected stages are kept.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

const FILES: &[&str] = &[
    ".credport.toml",
    "samconfig.toml",
    "samconfig.yaml",
    "cdk.json",
    "serverless.json",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Some((sel, text)) = common::split(rest) else {
        return;
    };
    let name = FILES[pick as usize % FILES.len()];
    let (file, r) = common::resolve_file(name, text, &sel);
    common::check(&file, &sel, &r);
    if name == ".credport.toml" {
        // The parsed file and the resolution agree on the profile of the chosen stage.
        if let (Ok(res), Ok(cfg)) = (&r, credport::projects::credport_toml::parse(&file, text))
            && sel.aws_profile.is_none()
        {
            assert_eq!(cfg.stages.get(&res.stage), Some(&res.profile), "{res:?}");
        }
    }
});
