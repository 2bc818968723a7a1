//! `useDotenv`: serverless v3's `.env` reading (dotenv's syntax) and dotenv-expand's
//! `$VAR` / `${VAR}` / `${VAR:-default}` expansion.

/// Parses dotenv text: `KEY=VALUE`, optional `export `, `#` comments, quoted values.
/// Returns (key, value, expandable) triples in order.
pub(super) fn parse_dotenv(text: &str) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let key = k.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            continue;
        }
        let v = v.trim_start();
        let (value, expand) = match v.chars().next() {
            Some(q @ ('"' | '\'' | '`')) => {
                let body = &v[1..];
                let end = body.rfind(q).unwrap_or(body.len());
                let inner = &body[..end];
                if q == '"' {
                    (inner.replace("\\n", "\n").replace("\\\"", "\""), true)
                } else {
                    (inner.to_string(), q == '`')
                }
            }
            _ => {
                let cut = v.find(" #").unwrap_or(v.len());
                (v[..cut].trim_end().to_string(), true)
            }
        };
        out.push((key.to_string(), value, expand));
    }
    out
}

/// dotenv-expand: replaces `$NAME` / `${NAME}` (and `${NAME:-default}`) using `lookup`.
pub(super) fn expand_dotenv(value: &str, lookup: &dyn crate::env::Env) -> String {
    let b = value.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if b[i] == b'$' {
            if b.get(i + 1) == Some(&b'{')
                && let Some(end) = value[i + 2..].find('}')
            {
                let inner = &value[i + 2..i + 2 + end];
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n, d),
                    None => (inner, ""),
                };
                out.push_str(&lookup(name).unwrap_or_else(|| default.to_string()));
                i += 3 + end;
                continue;
            }
            let mut j = i + 1;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            if j > i + 1 {
                out.push_str(&lookup(&value[i + 1..j]).unwrap_or_default());
                i = j;
                continue;
            }
        }
        let ch = value[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}
