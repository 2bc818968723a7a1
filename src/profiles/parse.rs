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
//!
//! [`parse`] reads a whole text. [`Incremental`] gives the same answer for a file that is read
//! again and again (the daemon's reloads): it keeps the previous text split by section with
//! what each section parsed to, and hands rust-ini only the sections whose text changed.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use ini::{Ini, ParseOption};

/// One `[section]` of a parsed file, with its keys lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The section name as written between the brackets, trimmed.
    pub name: String,
    /// 1-based line of the header.
    pub line: usize,
    /// Keys (lowercased) to values (trimmed; continuation lines joined with `\n`). Shared:
    /// a section whose text did not change keeps the same map across reloads.
    pub props: Arc<BTreeMap<String, String>>,
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
    let text = normalise(text);
    let text = text.as_ref();
    check_stand_in(text)?;
    parse_whole(text)
}

/// [`parse`] for a text already normalised and checked for the stand-in character.
fn parse_whole(text: &str) -> Result<Vec<Section>, ParseError> {
    let mut prepared = prescan(text)?;
    prepared.text = prepared.text.replace('\\', BACKSLASH_STAND_IN_STR);
    let restore = |s: &str| s.replace(BACKSLASH_STAND_IN, "\\");
    let ini = Ini::load_from_str_opt(&prepared.text, ini_options()).map_err(|e| ParseError {
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
                    // The name as written (rust-ini's holds the backslash stand-in).
                    reason: format!("key '{key}' repeated in section [{}]", restore(name)),
                });
            }
        }
        sections.push(Section {
            name: restore(name),
            line,
            props: Arc::new(map),
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

/// Strips a byte-order mark and turns every line end into `\n`: configparser reads with
/// universal newlines (`\r\n`, `\n` and a lone `\r` all end a line), so a stray `\r` must
/// split the line for rust-ini and for our line numbers alike (otherwise rust-ini reports
/// lines the file does not have).
fn normalise(text: &str) -> std::borrow::Cow<'_, str> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.contains('\r') {
        text.replace("\r\n", "\n").replace('\r', "\n").into()
    } else {
        text.into()
    }
}

/// rust-ini treats a backslash as an escape even with escapes off (`\]` does not end a
/// section name, `\` at the end of a line continues it); configparser does neither. A
/// stand-in character carries backslashes through rust-ini and is turned back after, so the
/// stand-in itself may not appear in a file.
fn check_stand_in(text: &str) -> Result<(), ParseError> {
    if !text.contains(BACKSLASH_STAND_IN) {
        return Ok(());
    }
    let line = text
        .lines()
        .position(|l| l.contains(BACKSLASH_STAND_IN))
        .unwrap_or(0);
    Err(ParseError {
        line: line + 1,
        reason: "contains the unsupported character U+E000".into(),
    })
}

/// How rust-ini is asked to read: no quotes, no escapes, indented continuation lines.
fn ini_options() -> ParseOption {
    ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        enabled_indented_mutiline_value: true,
        enabled_preserve_key_leading_whitespace: false,
    }
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

/// Parses one file again and again, handing rust-ini only the sections whose text changed
/// since the previous call; the answer is always the one [`parse`] gives for the same text.
///
/// A file is cut at every line that starts with `[` (the lines the pre-scan reads as
/// headers): the lines before the first header, then one piece per header, running to the
/// line before the next one. Nothing a piece parses to depends on the text around it (the
/// pre-scan starts afresh at each header, and after the pre-scan every rust-ini value ends
/// before the next unindented `[`), so a piece whose text is byte for byte the same as one
/// of the previous call's is not parsed again: its result is taken over, with its lines
/// counted from where it now starts. Errors are then reported in the order a whole parse
/// meets them (pre-scan errors, then rust-ini's, then repeated keys, then repeated
/// sections), and a piece rust-ini reads in a way that does not fit this cut (other than
/// exactly one section) sends the whole text to [`parse`].
#[derive(Default)]
pub struct Incremental {
    /// The last text parsed (normalised).
    text: String,
    /// Its pieces, in order.
    pieces: Vec<Piece>,
    /// How many pieces rust-ini read in the last call.
    reparsed: usize,
}

impl Drop for Incremental {
    /// The kept text holds the file's secrets: zeroed when the parser goes.
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.text);
    }
}

/// One piece of the last text: a header line and the lines up to the next header.
struct Piece {
    /// Byte range in `Incremental::text`, without the `\n` that ends its last line.
    range: Range<usize>,
    /// 1-based line of its header in the file.
    line: usize,
    /// What it parsed to on its own.
    outcome: Outcome,
}

/// What one piece parses to on its own. Lines in errors count from its header (line 1).
enum Outcome {
    /// One section; `repeated` is the first key it holds twice (an error for the file).
    Section {
        name: String,
        props: Arc<BTreeMap<String, String>>,
        repeated: Option<String>,
    },
    /// The pre-scan refused a line.
    Prescan(ParseError),
    /// rust-ini refused a line.
    Ini(ParseError),
    /// rust-ini did not read exactly one section out of it.
    Irregular,
}

impl Incremental {
    /// An empty parser: its first call parses every section.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many sections rust-ini parsed in the last call (the others were reused).
    pub fn reparsed(&self) -> usize {
        self.reparsed
    }

    /// Whether `text` is the text of the last call (after the same normalisation).
    pub fn unchanged(&self, text: &str) -> bool {
        normalise(text) == self.text.as_str()
    }

    /// Forgets the kept sections (the file is gone): the next call parses every section.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Parses `text` as [`parse`] does, reusing the sections whose text did not change
    /// since the previous call.
    pub fn parse(&mut self, text: &str) -> Result<Vec<Section>, ParseError> {
        let text = normalise(text);
        let text = text.as_ref();
        if let Err(e) = check_stand_in(text) {
            self.clear();
            return Err(e);
        }
        let (preamble, cuts) = cut(text);
        let old_text = std::mem::take(&mut self.text);
        let (old_ranges, mut old_outcomes): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pieces)
            .into_iter()
            .map(|p| (p.range, Some(p.outcome)))
            .unzip();
        // The previous pieces by header line; pieces sharing a header (a repeated section)
        // are chained through `same_header`.
        let mut by_header: HashMap<&str, usize> = HashMap::with_capacity(old_ranges.len());
        let mut same_header = vec![usize::MAX; old_ranges.len()];
        for (i, r) in old_ranges.iter().enumerate() {
            if let Some(prev) = by_header.insert(first_line(&old_text[r.clone()]), i) {
                same_header[i] = prev;
            }
        }
        let mut reparsed = 0;
        let mut pieces = Vec::with_capacity(cuts.len());
        for (range, line) in cuts {
            let piece = &text[range.clone()];
            let mut at = by_header
                .get(first_line(piece))
                .copied()
                .unwrap_or(usize::MAX);
            let mut reused = None;
            while at != usize::MAX {
                if old_outcomes[at].is_some() && &old_text[old_ranges[at].clone()] == piece {
                    reused = old_outcomes[at].take();
                    break;
                }
                at = same_header[at];
            }
            let outcome = reused.unwrap_or_else(|| {
                reparsed += 1;
                parse_piece(piece)
            });
            pieces.push(Piece {
                range,
                line,
                outcome,
            });
        }
        drop(by_header);
        drop(old_outcomes);
        // The kept text holds the file's secrets: reuse its buffer, and zero one that is
        // given back.
        let mut kept = old_text;
        zeroize::Zeroize::zeroize(&mut kept);
        if kept.capacity() < text.len() {
            kept = String::with_capacity(text.len());
        }
        kept.push_str(text);
        self.text = kept;
        self.pieces = pieces;
        self.reparsed = reparsed;
        self.assemble(preamble)
    }

    /// The result for the kept text: errors in the order a whole parse meets them.
    fn assemble(&self, preamble: &str) -> Result<Vec<Section>, ParseError> {
        prescan(preamble)?;
        let at = |e: &ParseError, line: usize| ParseError {
            line: e.line + line - 1,
            reason: e.reason.clone(),
        };
        for p in &self.pieces {
            if let Outcome::Prescan(e) = &p.outcome {
                return Err(at(e, p.line));
            }
        }
        if self
            .pieces
            .iter()
            .any(|p| matches!(p.outcome, Outcome::Irregular))
        {
            return parse_whole(&self.text);
        }
        for p in &self.pieces {
            if let Outcome::Ini(e) = &p.outcome {
                return Err(at(e, p.line));
            }
        }
        let mut sections = Vec::with_capacity(self.pieces.len());
        for p in &self.pieces {
            let Outcome::Section {
                name,
                props,
                repeated,
            } = &p.outcome
            else {
                continue;
            };
            if let Some(key) = repeated {
                return Err(ParseError {
                    line: key_line(&self.text, p.line, key),
                    reason: format!("key '{key}' repeated in section [{name}]"),
                });
            }
            sections.push(Section {
                name: name.clone(),
                line: p.line,
                props: props.clone(),
            });
        }
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(sections.len());
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
}

/// The first line of `piece` (its header).
fn first_line(piece: &str) -> &str {
    piece.split('\n').next().unwrap_or(piece)
}

/// Cuts `text` at every line that starts with `[`: the text before the first such line,
/// then each piece's byte range (without the `\n` ending its last line) and 1-based line.
fn cut(text: &str) -> (&str, Vec<(Range<usize>, usize)>) {
    let mut starts: Vec<usize> = Vec::new();
    if text.starts_with('[') {
        starts.push(0);
    }
    starts.extend(text.match_indices("\n[").map(|(i, _)| i + 1));
    let Some(&first) = starts.first() else {
        return (text, Vec::new());
    };
    let preamble = if first == 0 { "" } else { &text[..first - 1] };
    let mut line = 1 + count_lines(&text[..first]);
    let mut cuts = Vec::with_capacity(starts.len());
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(text.len(), |next| next - 1);
        cuts.push((start..end, line));
        // The piece's own line ends, plus the `\n` before the next piece.
        line += count_lines(&text[start..end]) + 1;
    }
    (preamble, cuts)
}

fn count_lines(s: &str) -> usize {
    s.bytes().filter(|&b| b == b'\n').count()
}

/// Parses one piece (a header line and the lines up to the next header) on its own.
fn parse_piece(piece: &str) -> Outcome {
    let prepared = match prescan(piece) {
        Ok(p) => p,
        Err(e) => return Outcome::Prescan(e),
    };
    let text = prepared.text.replace('\\', BACKSLASH_STAND_IN_STR);
    let ini = match Ini::load_from_str_opt(&text, ini_options()) {
        Ok(ini) => ini,
        Err(e) => {
            return Outcome::Ini(ParseError {
                line: e.line,
                reason: e.msg.to_string(),
            });
        }
    };
    let restore = |s: &str| s.replace(BACKSLASH_STAND_IN, "\\");
    let mut section = None;
    for (name, props) in ini.iter() {
        match name {
            None if props.is_empty() => {}
            Some(name) if section.is_none() => section = Some((name, props)),
            _ => return Outcome::Irregular,
        }
    }
    let Some((name, props)) = section else {
        return Outcome::Irregular;
    };
    let mut map = BTreeMap::new();
    let mut repeated = None;
    for (key, value) in props.iter() {
        let key = restore(key.trim()).to_ascii_lowercase();
        if map.insert(key.clone(), restore(value.trim())).is_some() {
            repeated = Some(key);
            break;
        }
    }
    Outcome::Section {
        name: restore(name),
        props: Arc::new(map),
        repeated,
    }
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

    /// Parses `before`, then `after`, with one [`Incremental`]; the second answer must be
    /// a whole parse's. Returns how many sections the second call parsed.
    fn incremental_matches(before: &str, after: &str) -> usize {
        let mut inc = Incremental::new();
        assert_eq!(inc.parse(before), parse(before), "first call, {before:?}");
        let got = inc.parse(after);
        assert_eq!(got, parse(after), "{before:?} -> {after:?}");
        inc.reparsed()
    }

    const BASE: &str = r#"# shared credentials
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = s0

[dev]
aws_access_key_id = AKIADEV
aws_secret_access_key = s1
aws_session_token = t1

[prod]
; long-term keys
aws_access_key_id = AKIAPROD
aws_secret_access_key = s2
"#;

    /// (name, text after the edit of [`BASE`], sections rust-ini must parse again, or
    /// `None` when the count does not matter)
    const EDITS: &[(&str, &str, Option<usize>)] = &[
        (
            "change one key",
            r#"# shared credentials
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = s0

[dev]
aws_access_key_id = ASIANEW
aws_secret_access_key = s1
aws_session_token = t2

[prod]
; long-term keys
aws_access_key_id = AKIAPROD
aws_secret_access_key = s2
"#,
            Some(1),
        ),
        (
            "add a section first: the later ones move down",
            r#"# shared credentials
[new]
aws_access_key_id = AKIANEW
aws_secret_access_key = sn

[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = s0

[dev]
aws_access_key_id = AKIADEV
aws_secret_access_key = s1
aws_session_token = t1

[prod]
; long-term keys
aws_access_key_id = AKIAPROD
aws_secret_access_key = s2
"#,
            Some(1),
        ),
        (
            "an earlier section grows",
            r#"# shared credentials
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = s0
region = eu-west-1
output = json

[dev]
aws_access_key_id = AKIADEV
aws_secret_access_key = s1
aws_session_token = t1

[prod]
; long-term keys
aws_access_key_id = AKIAPROD
aws_secret_access_key = s2
"#,
            Some(1),
        ),
        (
            "remove a section",
            r#"# shared credentials
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = s0

[prod]
; long-term keys
aws_access_key_id = AKIAPROD
aws_secret_access_key = s2
"#,
            Some(0),
        ),
        (
            "reorder",
            r#"# shared credentials
[dev]
aws_access_key_id = AKIADEV
aws_secret_access_key = s1
aws_session_token = t1

[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = s0

[prod]
; long-term keys
aws_access_key_id = AKIAPROD
aws_secret_access_key = s2
"#,
            Some(0),
        ),
        (
            "a line the pre-scan refuses",
            r#"# shared credentials
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = s0

[dev]
aws_access_key_id = AKIADEV
half a line
aws_session_token = t1

[prod]
; long-term keys
aws_access_key_id = AKIAPROD
aws_secret_access_key = s2
"#,
            Some(1),
        ),
        (
            "a line rust-ini refuses",
            r#"# shared credentials
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = s0

[dev]
aws_access_key_id = AKIADEV
= no key
aws_session_token = t1

[prod]
; long-term keys
aws_access_key_id = AKIAPROD
aws_secret_access_key = s2
"#,
            Some(1),
        ),
        (
            "duplicate header",
            r#"# shared credentials
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = s0

[dev]
aws_access_key_id = AKIADEV
aws_secret_access_key = s1
aws_session_token = t1

[default]
aws_access_key_id = AKIAOTHER
[prod]
; long-term keys
aws_access_key_id = AKIAPROD
aws_secret_access_key = s2
"#,
            None,
        ),
        (
            "duplicate key",
            r#"# shared credentials
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = s0

[dev]
aws_access_key_id = AKIADEV
aws_secret_access_key = s1
AWS_Access_Key_Id = AKIADEV2
aws_session_token = t1

[prod]
; long-term keys
aws_access_key_id = AKIAPROD
aws_secret_access_key = s2
"#,
            Some(1),
        ),
        (
            "a key before any header",
            r#"region = eu-west-1
# shared credentials
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = s0

[dev]
aws_access_key_id = AKIADEV
aws_secret_access_key = s1
aws_session_token = t1

[prod]
; long-term keys
aws_access_key_id = AKIAPROD
aws_secret_access_key = s2
"#,
            Some(0),
        ),
        (
            "comments added inside and above",
            r#"# shared credentials
# rotated weekly
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = s0

[dev] # the dev account
aws_access_key_id = AKIADEV
# aws_access_key_id = AKIAOLD
aws_secret_access_key = s1
aws_session_token = t1

[prod]
; long-term keys
aws_access_key_id = AKIAPROD
aws_secret_access_key = s2
"#,
            Some(1),
        ),
        (
            "continuation lines and backslashes",
            r#"# shared credentials
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = s0

[dev]
aws_access_key_id = AKIADEV
aws_secret_access_key = s1
aws_session_token = t1
s3 =
  max_concurrent_requests = 20
credential_process = C:\tools\creds.exe \
"#,
            Some(1),
        ),
        (
            "windows line ends",
            "# shared credentials\r\n[default]\r\naws_access_key_id = AKIADEFAULT\r\naws_secret_access_key = s0\r\n\r\n[dev]\r\naws_access_key_id = AKIADEV\r\naws_secret_access_key = s1\r\naws_session_token = t1\r\n\r\n[prod]\r\n; long-term keys\r\naws_access_key_id = AKIAPROD\r\naws_secret_access_key = s2\r\n",
            Some(0),
        ),
        ("emptied", "", Some(0)),
        (
            "the reserved character",
            "[default]\naws_access_key_id = \u{E000}\n",
            None,
        ),
    ];

    #[test]
    fn incremental_equals_whole_parse_for_each_edit() {
        for (name, after, reparsed) in EDITS {
            let n = incremental_matches(BASE, after);
            if let Some(want) = reparsed {
                assert_eq!(n, *want, "{name}: sections parsed again");
            }
            // And back again: the edit undone.
            let mut inc = Incremental::new();
            inc.parse(after).ok();
            assert_eq!(inc.parse(BASE), parse(BASE), "{name}, undone");
        }
    }

    #[test]
    fn incremental_through_a_series_of_saves() {
        // One parser through every edit in turn, as the daemon sees a file over a day.
        let mut inc = Incremental::new();
        for (name, text) in std::iter::once(("base", BASE))
            .chain(EDITS.iter().map(|(n, t, _)| (*n, *t)))
            .chain([("base again", BASE)])
        {
            assert_eq!(inc.parse(text), parse(text), "{name}");
        }
    }

    #[test]
    fn incremental_errors_keep_their_lines_when_sections_move() {
        let broken = r#"[a]
k = v
[b]
k = v
not a key
"#;
        let grown = r#"[new]
k = v
x = y

[a]
k = v
[b]
k = v
not a key
"#;
        let mut inc = Incremental::new();
        assert_eq!(inc.parse(broken).unwrap_err().line, 5);
        let e = inc.parse(grown).unwrap_err();
        assert_eq!(e, parse(grown).unwrap_err());
        assert_eq!(e.line, 9);
        assert_eq!(inc.reparsed(), 1, "only [new] is new");
        let fixed = grown.replace("not a key", "j = w");
        let s = inc.parse(&fixed).unwrap();
        assert_eq!(Ok(s.clone()), parse(&fixed));
        assert_eq!(s.iter().map(|s| s.line).collect::<Vec<_>>(), vec![1, 5, 7]);
    }

    #[test]
    fn incremental_reuses_the_maps_of_unchanged_sections() {
        let mut inc = Incremental::new();
        let first = inc.parse(BASE).unwrap();
        let (_, changed, _) = EDITS[0];
        let second = inc.parse(changed).unwrap();
        assert!(Arc::ptr_eq(&first[0].props, &second[0].props));
        assert!(!Arc::ptr_eq(&first[1].props, &second[1].props));
        assert!(Arc::ptr_eq(&first[2].props, &second[2].props));
    }

    #[test]
    fn incremental_identical_duplicate_sections() {
        let text = "[a]\nk=v\n[a]\nk=v\n[b]\nk=v\n";
        let mut inc = Incremental::new();
        assert_eq!(inc.parse(text), parse(text));
        assert_eq!(inc.parse(text), parse(text));
        let fixed = "[a]\nk=v\n[b]\nk=v\n";
        assert_eq!(inc.parse(fixed), parse(fixed));
    }

    /// Random files from lines that exercise every rule, edited at random: each answer of
    /// one long-lived [`Incremental`] must be a whole parse's.
    #[test]
    fn incremental_equals_whole_parse_on_random_edits() {
        const LINES: &[&str] = &[
            "[a]",
            "[b]",
            "[ c ] # note",
            "[profile a]",
            "[\\]",
            "[",
            "[]",
            "[x]]",
            "k = v",
            "K = w",
            "j: 1",
            "k=",
            "=v",
            "a#b = c",
            "path = C:\\dir\\",
            "  cont",
            "\tmore = x",
            "  [z]",
            "\u{c}ff",
            "# c",
            "; c",
            "  # indented comment",
            "",
            "   ",
            "words",
            "\r",
        ];
        for seed in 0..400u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let pick = |rng: &mut fastrand::Rng| LINES[rng.usize(..LINES.len())].to_string();
            let mut lines: Vec<String> = (0..rng.usize(0..14)).map(|_| pick(&mut rng)).collect();
            let mut inc = Incremental::new();
            for _ in 0..8 {
                let mut text = lines.join("\n");
                if rng.bool() {
                    text.push('\n');
                }
                assert_eq!(inc.parse(&text), parse(&text), "seed {seed}: {text:?}");
                match rng.usize(0..4) {
                    0 if !lines.is_empty() => {
                        let i = rng.usize(..lines.len());
                        lines[i] = pick(&mut rng);
                    }
                    1 => {
                        let i = rng.usize(..=lines.len());
                        lines.insert(i, pick(&mut rng));
                    }
                    2 if !lines.is_empty() => {
                        lines.remove(rng.usize(..lines.len()));
                    }
                    _ if lines.len() > 2 => {
                        let i = rng.usize(1..lines.len());
                        lines.rotate_left(i);
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn repeated_key_names_the_section_as_written() {
        // The section name must not show the backslash stand-in.
        let e = parse("[a\\b]\nk = 1\nk = 2\n").unwrap_err();
        assert_eq!(e.reason, "key 'k' repeated in section [a\\b]");
    }
}
