//! `TokenKey::verify`: an arbitrary string is `Valid` only when it is exactly the scope's
//! token; every issued token round-trips for its own scope and only for it.
#![no_main]

use std::sync::OnceLock;

use credport::tokens::{TokenKey, Verdict};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static TokenKey {
    static K: OnceLock<(tempfile::TempDir, TokenKey)> = OnceLock::new();
    &K.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let k = TokenKey::load_or_create(&d.path().join("token-key")).unwrap();
        (d, k)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // presented \0 project \0 stage
    let mut parts = text.splitn(3, '\0');
    let presented = parts.next().unwrap_or("");
    let project = parts.next().unwrap_or("orders");
    let stage = parts.next().unwrap_or("dev");
    let k = key();
    let real = k.token(project, stage);
    let verdict = k.verify(presented, project, stage);
    if verdict == Verdict::Valid {
        assert_eq!(presented, real.expose(), "a forged token was accepted");
    }
    if presented == real.expose() {
        assert_eq!(verdict, Verdict::Valid);
    }
    // Round trip for names the daemon accepts (1-128 of A-Z a-z 0-9 . _ -; the server never
    // verifies a token for any other name): the issued token is valid for its scope, another
    // scope's for nothing here. (Found by this target: a token for a 750-byte stage name
    // exceeds the 1 KiB token bound and is refused, which is fine for an invalid name.)
    let valid_names = credport::config::check_name("project", project).is_ok()
        && credport::config::check_name("stage", stage).is_ok();
    if !valid_names {
        return;
    }
    assert_eq!(k.verify(real.expose(), project, stage), Verdict::Valid);
    let other = k.token(presented, stage);
    if presented != project && credport::config::check_name("project", presented).is_ok() {
        assert_eq!(
            k.verify(other.expose(), project, stage),
            Verdict::OtherScope
        );
    }
    // Anything appended or prepended breaks it.
    let mut longer = real.expose().to_string();
    longer.push_str(presented);
    if !presented.is_empty() {
        assert_ne!(k.verify(&longer, project, stage), Verdict::Valid);
    }
});
