//! credport's own config: never panics, errors name a real line, accepted configs hold
//! only valid names and consistent defaults.
#![no_main]

use credport::config::{PROCESS_TIMEOUT_RANGE, SERVED_LIFETIME_RANGE, check_name, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.split('\n').count();
    match parse(text) {
        Err(e) => {
            assert!(
                e.line >= 1 && e.line <= lines,
                "error line {} of {lines}: {e}",
                e.line
            );
            assert!(!e.reason.is_empty());
        }
        Ok(c) => {
            // Accepted values are used as written: nothing is clamped silently.
            if let Some(s) = c.server.served_lifetime {
                assert!(SERVED_LIFETIME_RANGE.contains(&s), "served_lifetime {s}");
                assert_eq!(c.server.served_lifetime(), s);
            }
            if let Some(t) = c.server.process_timeout {
                assert!(PROCESS_TIMEOUT_RANGE.contains(&t), "process_timeout {t}");
                assert_eq!(c.server.process_timeout().as_secs(), t);
            }
            for (name, p) in &c.projects {
                assert!(check_name("project", name).is_ok(), "{name:?}");
                for (stage, profile) in &p.stages {
                    assert!(check_name("stage", stage).is_ok(), "{stage:?}");
                    assert!(!profile.trim().is_empty());
                }
                if let Some(d) = &p.default_stage
                    && p.path.is_none()
                {
                    assert!(p.stages.contains_key(d));
                }
            }
        }
    }
});
