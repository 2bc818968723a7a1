//! The Serverless YAML and variable resolver, through `resolve_dir` on a real file: never
//! panics or hangs (the resolver's step budget), `--stage`/`--aws-profile` always win,
//! and errors name the file.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((sel, text)) = common::split(data) else {
        return;
    };
    let (file, r) = common::resolve_file("serverless.yml", text, &sel);
    common::check(&file, &sel, &r);
    if let (Ok(res), Some(p)) = (&r, &sel.aws_profile) {
        assert_eq!(&res.profile, p, "--aws-profile overrides provider.profile");
    }
    if let Ok(res) = &r {
        assert!(
            !res.profile.is_empty() || sel.aws_profile.is_some(),
            "empty profile resolved: {res:?}"
        );
    }
});
