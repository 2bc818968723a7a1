//! Parsing one AWS shared file (`credentials` or `config`) into sections, the way botocore
//! does.
//!
//! botocore reads both files with Python's `configparser.RawConfigParser`, and this module
//! follows it where it matters for which credentials a process ends up with:
//!
//! - whole-line comments start with `#` or `;`; there are **no inline comments** in values
//!   (`aws_access_key_id = AKIA # old` keeps `# old`), but text after a section header's
//!   closing `]` is ignored;
//! - `key = value` and `key: value` both work; keys are case-insensitive (lowercased), section
//!   names are case-sensitive and trimmed;
//! - indented lines continue the previous value (how `[services]` and `s3 =` sub-sections
//!   are written);
//! - a section or key repeated in one file is an error (botocore raises `ConfigParseError`
//!   for the whole file), reported with its line.
//!
//! Lines are pre-scanned here (for line numbers and header comments); rust-ini does the
//! actual parsing.

use std::collections::BTreeMap;

use ini::{Ini, ParseOption};

/// One `[section]` of a parsed file, with its keys lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The section name as written between the brackets, trimmed.
    pub name: String,
    /// 1-based line of the header.
    pub line: usize,
    /// Keys (lowercased) to values (trimmed; continuation lines joined with `\n`).
    pub props: BTreeMap<String, String>,
}

/// Why a file could not be parsed: the line (1-based) and a reason without any value in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong there.
    pub reason: String,
}

/// Parses the text of a shared credentials or config file.
pub fn parse(text: &str) -> Result<Vec<Section>, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // configparser reads with universal newlines: `\r\n`, `\n` and a lone `\r` all end a
    // line. Normalise first, so a stray `\r` splits the line for rust-ini and for our line
    // numbers alike (otherwise rust-ini reports lines the file does not have).
    let normalised;
    let text = if text.contains('\r') {
        normalised = text.replace("\r\n", "\n").replace('\r', "\n");
        normalised.as_str()
    } else {
        text
    };
    // rust-ini treats a backslash as an escape even with escapes off (`\]` does not end a
    // section name, `\` at the end of a line continues it); configparser does neither. A
    // stand-in character carries backslashes through rust-ini and is turned back after.
    if let Some(line) = text.lines().position(|l| l.contains(BACKSLASH_STAND_IN)) {
        return Err(ParseError {
            line: line + 1,
            reason: "contains the unsupported character U+E000".into(),
        });
    }
    let mut prepared = prescan(text)?;
    prepared.text = prepared.text.replace('\\', BACKSLASH_STAND_IN_STR);
    let restore = |s: &str| s.replace(BACKSLASH_STAND_IN, "\\");
    let opts = ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        enabled_indented_mutiline_value: true,
        enabled_preserve_key_leading_whitespace: false,
    };
    let ini = Ini::load_from_str_opt(&prepared.text, opts).map_err(|e| ParseError {
        line: e.line,
        reason: e.msg.to_string(),
    })?;

    let mut sections = Vec::new();
    let mut headers = prepared.headers.iter();
    for (name, props) in ini.iter() {
        let Some(name) = name else {
            // Keys before any section: configparser's MissingSectionHeaderError. The pre-scan
            // reports it with a line already, so an entry here is only the empty general
            // section rust-ini always has.
            if props.is_empty() {
                continue;
            }
            return Err(ParseError {
                line: 1,
                reason: "key outside of any [section]".into(),
            });
        };
        let line = headers.next().map(|h| h.1).unwrap_or(0);
        let mut map = BTreeMap::new();
        for (key, value) in props.iter() {
            let key = restore(key.trim()).to_ascii_lowercase();
            if map.insert(key.clone(), restore(value.trim())).is_some() {
                return Err(ParseError {
                    line: key_line(text, line, &key),
                    reason: format!("key '{key}' repeated in section [{name}]"),
                });
            }
        }
        sections.push(Section {
            name: restore(name),
            line,
            props: map,
        });
    }

    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &sections {
        if let Some(first) = seen.insert(&s.name, s.line) {
            return Err(ParseError {
                line: s.line,
                reason: format!("section [{}] repeated (first at line {first})", s.name),
            });
        }
    }
    Ok(sections)
}

/// Carries backslashes through rust-ini (a private-use character).
const BACKSLASH_STAND_IN: char = '\u{E000}';
const BACKSLASH_STAND_IN_STR: &str = "\u{E000}";

struct Prepared {
    text: String,
    /// (section name, 1-based line) for each header, in order.
    headers: Vec<(String, usize)>,
}

/// Normalises what rust-ini would misread and records header lines: drops text after a
/// header's `]`, blanks comment lines (keeping line numbers), and rejects keys before the
/// first section.
fn prescan(text: &str) -> Result<Prepared, ParseError> {
    let mut out = String::with_capacity(text.len() + 16);
    let mut headers = Vec::new();
    // Whether the current section has a key yet: an indented line continues the previous
    // key's value, and with no key to continue it is an error (as in configparser).
    let mut have_key = false;
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim_start();
        let indented = trimmed.len() != line.len();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            // configparser skips comment lines everywhere, even inside a continuation.
            out.push('\n');
            continue;
        }
        if !indented && trimmed.starts_with('[') {
            let Some(end) = trimmed.rfind(']') else {
                return Err(ParseError {
                    line: line_no,
                    reason: "section header without closing ']'".into(),
                });
            };
            let name = trimmed[1..end].trim();
            if name.is_empty() {
                return Err(ParseError {
                    line: line_no,
                    reason: "empty section name".into(),
                });
            }
            if name.contains(['[', ']']) {
                return Err(ParseError {
                    line: line_no,
                    reason: "section name contains '[' or ']'".into(),
                });
            }
            headers.push((name.to_string(), line_no));
            have_key = false;
            out.push('[');
            out.push_str(name);
            out.push_str("]\n");
            continue;
        }
        if headers.is_empty() {
            return Err(ParseError {
                line: line_no,
                reason: "key outside of any [section]".into(),
            });
        }
        if indented && !have_key {
            return Err(ParseError {
                line: line_no,
                reason: "indented line with no key before it to continue".into(),
            });
        }
        if !indented && !trimmed.contains(['=', ':']) {
            return Err(ParseError {
                line: line_no,
                reason: "expected 'key = value'".into(),
            });
        }
        if !indented {
            have_key = true;
            out.push_str(line);
        } else {
            // configparser counts any whitespace as indentation (form feeds too); rust-ini
            // only spaces and tabs. Normalise so both read the same continuation.
            out.push_str("  ");
            out.push_str(trimmed);
        }
        out.push('\n');
    }
    Ok(Prepared { text: out, headers })
}

/// Best-effort line of the second occurrence of `key` in the section starting at `start`.
fn key_line(text: &str, start: usize, key: &str) -> usize {
    let mut count = 0;
    for (i, line) in text.lines().enumerate().skip(start) {
        let t = line.trim_start();
        if t.starts_with('[') && t.len() == line.len() {
            break;
        }
        let k = t.split(['=', ':']).next().unwrap_or("").trim();
        if k.eq_ignore_ascii_case(key) {
            count += 1;
            if count == 2 {
                return i + 1;
            }
        }
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(s: &Section) -> Vec<(&str, &str)> {
        s.props
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn basic_sections_and_lines() {
        let s = parse(
            "# top\n[default]\naws_access_key_id = AKIA1\n\n[profile dev]\nregion: eu-west-1\n",
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].name.as_str(), s[0].line), ("default", 2));
        assert_eq!(props(&s[0]), vec![("aws_access_key_id", "AKIA1")]);
        assert_eq!((s[1].name.as_str(), s[1].line), ("profile dev", 5));
        assert_eq!(props(&s[1]), vec![("region", "eu-west-1")]);
    }

    #[test]
    fn comments_whole_line_only() {
        let s = parse(
            "[a]\n; semi\n# hash\n  # indented comment\nk = v # not a comment\nj = v ; nor this\n",
        )
        .unwrap();
        assert_eq!(
            props(&s[0]),
            vec![("j", "v ; nor this"), ("k", "v # not a comment")]
        );
    }

    #[test]
    fn header_trailing_text_ignored_and_trimmed() {
        let s = parse("[ default ] # main account\nk=v\n").unwrap();
        assert_eq!(s[0].name, "default");
    }

    #[test]
    fn keys_lowercased_values_trimmed_blank_kept() {
        let s = parse("[a]\nAWS_Access_Key_ID =   AKIA  \nempty =\n").unwrap();
        assert_eq!(
            props(&s[0]),
            vec![("aws_access_key_id", "AKIA"), ("empty", "")]
        );
    }

    #[test]
    fn crlf_and_bom() {
        let s = parse("\u{feff}[a]\r\nk = v\r\n").unwrap();
        assert_eq!(props(&s[0]), vec![("k", "v")]);
    }

    #[test]
    fn nested_values_continue() {
        let s =
            parse("[services local]\nsts =\n  endpoint_url = http://127.0.0.1:5000\n[b]\nk=v\n")
                .unwrap();
        assert_eq!(s[0].props["sts"], "endpoint_url = http://127.0.0.1:5000");
        assert_eq!(s[1].line, 4);
    }

    #[test]
    fn duplicate_section_is_error_with_line() {
        let e = parse("[a]\nk=v\n[b]\n[a]\nk=w\n").unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.reason.contains("[a] repeated"), "{e}");
    }

    #[test]
    fn duplicate_key_is_error_with_line_without_value() {
        let e = parse("[a]\nK=secret1\nk=secret2\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn any_whitespace_indents() {
        // Found by fuzzing: a form feed indents for configparser, not for rust-ini.
        let s = parse("[a]\nk = v\n\u{c}more\nj = w\n").unwrap();
        assert_eq!(s[0].props["k"], "v\nmore");
        assert_eq!(s[0].props["j"], "w");
    }

    #[test]
    fn backslashes_are_plain_characters() {
        // Found by fuzzing: rust-ini alone reads `\]` as an escaped bracket.
        let s = parse("[a]\nk=v\n[\\]\nk=w\n[p]\npath = C:\\dir\\\nnext = 1\n").unwrap();
        assert_eq!(s[1].name, "\\");
        assert_eq!(s[2].props["path"], "C:\\dir\\");
        assert_eq!(s[2].props["next"], "1");
        assert!(parse("[a]\nk=\u{E000}\n").is_err());
    }

    #[test]
    fn garbage_is_error_not_panic() {
        for bad in [
            "k=v\n[a]\n",
            "[a\n",
            "[]\n",
            "[a]\njust words\n",
            "[a]]\n",
            "[a]\n  continued = nothing\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse("").unwrap().is_empty());
    }
}
