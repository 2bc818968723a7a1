//! The shared-file parser and merger: never panics, errors name a real line, every parsed
//! section round-trips through a re-serialisation, every merged profile classifies, and a
//! profile's `Debug` output never shows a value; and the incremental parser, fed the first
//! file and then the second as an edit of it, answers exactly what a whole parse does.
#![no_main]

use credport::profiles::parse::{Incremental, parse};
use credport::profiles::{Section, merge};
use libfuzzer_sys::fuzz_target;

/// Writes sections back the way `aws configure` does.
fn render(sections: &[Section]) -> Option<String> {
    let mut out = String::new();
    for s in sections {
        out.push_str(&format!("[{}]\n", s.name));
        for (k, v) in s.props.iter() {
            // Multi-line values (nested `s3 =` blocks) have no single canonical form.
            if v.contains('\n') || v.contains('\r') {
                return None;
            }
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    Some(out)
}

fn check_one(text: &str) -> Vec<Section> {
    // Lines as configparser counts them: `\r\n`, `\n` and a lone `\r` end one.
    let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count();
    match parse(text) {
        Err(e) => {
            assert!(
                e.line >= 1 && e.line <= lines,
                "error line {} of {lines}: {e}",
                e.line
            );
            assert!(e.to_string().starts_with(&format!("line {}:", e.line)));
            Vec::new()
        }
        Ok(sections) => {
            for s in &sections {
                assert!(s.line >= 1 && s.line <= lines, "section line {}", s.line);
                assert!(!s.name.is_empty());
                for k in s.props.keys() {
                    assert_eq!(*k, k.to_ascii_lowercase(), "keys are lowercased");
                }
            }
            if let Some(again) = render(&sections) {
                let reparsed = parse(&again).unwrap_or_else(|e| {
                    panic!("re-parse of rendered sections failed: {e}\n{again}")
                });
                assert_eq!(reparsed.len(), sections.len(), "{again}");
                for (a, b) in sections.iter().zip(&reparsed) {
                    assert_eq!(a.name, b.name);
                    assert_eq!(a.props, b.props, "{again}");
                }
            }
            sections
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The input holds both files: credentials, then config after the first NUL.
    let (c, f) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let (Ok(c), Ok(f)) = (std::str::from_utf8(c), std::str::from_utf8(f)) else {
        return;
    };
    let creds = check_one(c);
    let config = check_one(f);
    // The second file as an edit of the first, and back.
    let mut inc = Incremental::new();
    for text in [c, f, c] {
        assert_eq!(inc.parse(text), parse(text), "incremental parse differs");
    }
    let snap = merge(&creds, &config);
    for (name, p) in &snap.profiles {
        assert_eq!(name, &p.name);
        assert!(!p.defined_in.is_empty());
        let _ = p.kind();
        let _ = p.written_expiry();
        let _ = p.region();
        assert!(
            p.props.values().all(|v| !v.is_empty()),
            "blank values are dropped"
        );
        let shown = format!("{p:?}");
        for v in p.props.values() {
            // A value that is not also a name or key shown legitimately must not appear.
            if v.len() >= 8
                && !p.name.contains(v.as_str())
                && !p.props.keys().any(|k| k.contains(v.as_str()))
                && !"Profile name keys defined_in Credentials Config".contains(v.as_str())
            {
                assert!(!shown.contains(v.as_str()), "Debug leaks a value: {shown}");
            }
        }
    }
});
