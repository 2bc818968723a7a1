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
