//! Inputs the fuzzers (fuzz/, scripts/fuzz) found, fed to the same public functions with
//! the invariant that failed. One test per crash; the name says which target found it.

use credport::profiles::parse::parse;

/// `profiles_parse` crash-e897592c: a lone CR inside a value. configparser (universal
/// newlines) ends the line there, so the next text is a line without `=`; credport must
/// report that line (3), not rust-ini's "line 4" of a 3-line file with rust-ini's message.
#[test]
fn profiles_parse_lone_cr_reports_a_real_line() {
    let input = "[profile \"with space\"]\nregion=us\reen_file/6v/run/token\n";
    let e = parse(input).unwrap_err();
    let lines = input.split(['\n', '\r']).count();
    assert!(e.line >= 1 && e.line < lines, "{e}");
    assert_eq!(e.line, 3, "{e}");
    assert_eq!(e.reason, "expected 'key = value'", "{e}");
    // CRLF files keep parsing (the crlf_and_bom unit test covers values).
    assert!(parse("[a]\r\nk = v\r\n").is_ok());
}

/// `profiles_parse` crash-819cc78b: an indented line right after a section header, with no
/// key to continue. configparser refuses it; credport used to hand it to rust-ini, which made
/// it part of a key name containing a newline (the rendered file then failed to re-parse).
#[test]
fn profiles_parse_continuation_without_a_key_is_an_error() {
    let input = "[profile \"with0spacesso_session \"wit=h spacofil]\n eebwacofil]\n eebwrole_arn=arn:aws:iam::3:role/x\nweb_identity_tor/run/=oken\n";
    let e = parse(input).unwrap_err();
    assert_eq!(e.line, 2, "{e}");
    assert!(e.reason.contains("no key before it"), "{e}");
    // A real continuation still works.
    let s = parse("[services x]\nsts =\n  endpoint_url = http://127.0.0.1:1\n").unwrap();
    assert!(s[0].props["sts"].contains("endpoint_url"));
}

/// `serverless_resolve` crash-9f65da28: a stage containing NUL bytes (and, by the same path,
/// `/` or `..`) reached `.env.<stage>` and produced an error about that file instead of the
/// project file. The stage must be a plain name, checked before it names any file.
#[test]
fn serverless_stage_must_be_a_plain_name_before_it_names_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("serverless.yml"),
        "service: svc\nuseDotenv: true\nprovider:\n  name: aws\n  profile: p\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("secret.txt"), "X=1\n").unwrap();
    for stage in ["de\0v", "../secret.txt", "a/b", "dev stage"] {
        let sel = credport::projects::Selection {
            stage: Some(stage.into()),
            ..Default::default()
        };
        let e = credport::projects::resolve_dir(dir.path(), &sel, &|_| None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("serverless.yml") && e.contains("not allowed"),
            "{stage:?}: {e}"
        );
    }
}

/// `profiles_parse` crash-f01d40f3 (second CI run): `[\]` is a section named `\` for
/// configparser, but rust-ini alone reads `\]` as an escaped bracket and runs off the end
/// of the file ("line 6 of 5"). Backslashes are plain characters in names, keys and values.
#[test]
fn profiles_parse_backslash_is_a_plain_character() {
    let s = parse("[a]\nk=v\n[\\]\nk=w\n").unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s[1].name, "\\");
    assert_eq!(s[1].props["k"], "w");
}

/// `profiles_parse` crash-6df6ddb0 (a 60 s local run): a line indented with a form feed
/// continues the previous value for configparser but was a new key for rust-ini. Any
/// whitespace indents.
#[test]
fn profiles_parse_form_feed_indents() {
    let s = parse("[saml]\naws_access_key_id = A\n\u{c}aws_security_token = x\n").unwrap();
    assert_eq!(s[0].props.len(), 1);
    assert_eq!(s[0].props["aws_access_key_id"], "A\naws_security_token = x");
}

/// `serverless_resolve` crash-1b785d78: `service:` followed by a bare YAML tag (`!!!…w`, no
/// value) resolved to an empty project name. A blank service name falls back to the
/// folder's name, as an absent or unresolvable one does.
#[test]
fn serverless_blank_service_falls_back_to_the_folder_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("serverless.yml"),
        "service:\n !!!!!!!!!!!!!!!!!!!!!!!!w\nbase: &base\n  profiool(true)}\nstages:\n  dev:\n    resolvers:\n      acct:\n        type: aws\n        profile: devV2\n",
    )
    .unwrap();
    let sel = credport::projects::Selection {
        stage: Some("dev".into()),
        params: [("profile".to_string(), "fromFlag".to_string())].into(),
        ..Default::default()
    };
    match credport::projects::resolve_dir(dir.path(), &sel, &|_| None) {
        Ok(r) => {
            let folder = dir.path().file_name().unwrap().to_string_lossy();
            assert_eq!(r.project, folder, "{r:?}");
        }
        Err(e) => assert!(e.to_string().contains("serverless.yml"), "{e}"),
    }
}

/// `config_parse` crash-483da426: `served_lifetime = 4` was accepted and silently served
/// as 5 s. A value outside the allowed range is an error naming the key, the value and its
/// line (a huge one used to be accepted too, and overflowed the served `Expiration`), as is
/// a `process_timeout` outside 1..=3600; the bounds themselves still load.
#[test]
fn config_parse_out_of_range_server_values_are_errors() {
    use credport::config::{SERVED_LIFETIME_RANGE, parse};
    let input = "[server]\nlisten = [\"127.0.0.1:9911\"]\nserved_lifetime = 4";
    let e = parse(input).unwrap_err();
    assert_eq!(e.line, 3, "{e}");
    assert!(
        e.reason.contains("served_lifetime = 4") && e.reason.contains("must be 5 to 129600"),
        "{e}"
    );
    let e = parse("[server]\nserved_lifetime = 9223372036854775807\n").unwrap_err();
    assert_eq!(e.line, 2, "{e}");
    assert!(e.reason.contains("9223372036854775807"), "{e}");
    let c = parse("[server]\nserved_lifetime = 129600\n").unwrap();
    assert_eq!(c.server.served_lifetime(), *SERVED_LIFETIME_RANGE.end());
    let e = parse("[server]\nprocess_timeout = 0\n").unwrap_err();
    assert_eq!(e.line, 2, "{e}");
    assert!(e.reason.contains("process_timeout = 0"), "{e}");
    let e = parse("[server]\n\nprocess_timeout = 3601\n").unwrap_err();
    assert_eq!(e.line, 3, "{e}");
    let c = parse("[server]\nserved_lifetime = 5\nprocess_timeout = 3600\n").unwrap();
    assert_eq!(c.server.served_lifetime(), *SERVED_LIFETIME_RANGE.start());
    assert_eq!(c.server.process_timeout().as_secs(), 3600);
}
