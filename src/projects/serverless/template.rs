//! Serverless variable syntax: a string split into literal text and `${source:address,
//! fallback}` variables (nesting, parameters, quoted and numeric fallbacks), as serverless
//! v3's `lib/configuration/variables/parse.js` reads it.

use yaml_serde::Value;

/// A string split into literal text and variables.
pub(super) type Tmpl = Vec<Part>;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Part {
    Text(String),
    Var(Var),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Var {
    pub(super) raw: String,
    pub(super) sources: Vec<Source>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Source {
    Typed {
        ty: String,
        params: Vec<Tmpl>,
        address: Option<Tmpl>,
    },
    Literal(Value),
}

pub(super) struct Parser<'a> {
    pub(super) s: &'a str,
    pub(super) b: &'a [u8],
    pub(super) pos: usize,
}

pub(super) fn parse_template(s: &str) -> Result<Tmpl, String> {
    let mut p = Parser {
        s,
        b: s.as_bytes(),
        pos: 0,
    };
    p.template(0, &[])
}

/// True when `s` has at least one variable (or malformed variable syntax).
pub(super) fn has_vars(s: &str) -> bool {
    if !s.contains("${") {
        return false;
    }
    match parse_template(s) {
        Ok(t) => t.iter().any(|p| matches!(p, Part::Var(_))),
        Err(_) => true,
    }
}

fn parse_literal(word: &str) -> Option<Value> {
    match word {
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        "null" => Some(Value::Null),
        _ => {
            if let Ok(i) = word.parse::<i64>() {
                return Some(Value::Number(i.into()));
            }
            let numeric = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E'))
                && word.chars().any(|c| c.is_ascii_digit());
            match word.parse::<f64>() {
                Ok(f) if numeric && f.is_finite() => Some(Value::Number(f.into())),
                _ => None,
            }
        }
    }
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    /// Is there a variable (not a foreign `${...}`) starting at `i` (just after `${`)?
    fn is_var_start(&self, i: usize) -> bool {
        if !self.b.get(i).is_some_and(|c| c.is_ascii_lowercase()) {
            return false;
        }
        let mut j = i + 1;
        while self
            .b
            .get(j)
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-'))
        {
            j += 1;
        }
        matches!(self.b.get(j), Some(b':' | b'('))
    }

    /// End (exclusive) of a foreign `${...}` whose body starts at `i`.
    fn foreign_end(&self, i: usize) -> usize {
        let mut depth = 1usize;
        let mut j = i;
        while j < self.b.len() {
            match self.b[j] {
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return j + 1;
                    }
                }
                b'$' if self.b.get(j + 1) == Some(&b'{') => {
                    depth += 1;
                    j += 1;
                }
                _ => {}
            }
            j += 1;
        }
        self.b.len()
    }

    /// Reads text and variables up to (not including) a top-level byte in `stop`.
    fn template(&mut self, nest: usize, stop: &[u8]) -> Result<Tmpl, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let start_text = |text: &mut String, parts: &mut Tmpl| {
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(text)));
            }
        };
        while let Some(c) = self.peek() {
            if stop.contains(&c) {
                break;
            }
            if c == b'\\' {
                // Escape: keep the backslash and the next character verbatim.
                let ch_len = self.s[self.pos + 1..]
                    .chars()
                    .next()
                    .map_or(0, char::len_utf8);
                text.push_str(&self.s[self.pos..self.pos + 1 + ch_len]);
                self.pos += 1 + ch_len;
                continue;
            }
            if c == b'$' && self.b.get(self.pos + 1) == Some(&b'{') {
                if self.is_var_start(self.pos + 2) {
                    start_text(&mut text, &mut parts);
                    let v = self.var(nest + 1)?;
                    parts.push(Part::Var(v));
                } else {
                    let end = self.foreign_end(self.pos + 2);
                    text.push_str(&self.s[self.pos..end]);
                    self.pos = end;
                }
                continue;
            }
            let ch = self.s[self.pos..].chars().next().unwrap_or('\u{fffd}');
            text.push(ch);
            self.pos += ch.len_utf8().max(1);
        }
        start_text(&mut text, &mut parts);
        Ok(parts)
    }

    /// Parses `${...}` with `pos` at the `$`.
    fn var(&mut self, nest: usize) -> Result<Var, String> {
        if nest > 32 {
            return Err("variables are nested too deeply".into());
        }
        let start = self.pos;
        self.pos += 2;
        let mut sources = Vec::new();
        loop {
            self.skip_spaces();
            let src = self.source(nest, sources.is_empty())?;
            sources.push(src);
            self.skip_spaces();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                None => {
                    return Err(format!(
                        "missing closing bracket in variable {}",
                        &self.s[start..]
                    ));
                }
                Some(_) => {
                    return Err(format!(
                        "invalid variable syntax at index {} in \"{}\"",
                        self.pos, self.s
                    ));
                }
            }
        }
        Ok(Var {
            raw: self.s[start..self.pos].to_string(),
            sources,
        })
    }

    fn quoted(&mut self) -> Result<String, String> {
        let q = self.b[self.pos];
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(ch) = self.s[self.pos..].chars().next() else {
                return Err(format!(
                    "unterminated string literal at index {start} in \"{}\"",
                    self.s
                ));
            };
            self.pos += ch.len_utf8();
            if ch as u32 == q as u32 {
                return Ok(out);
            }
            if q == b'"' && ch == '\\' {
                let Some(e) = self.s[self.pos..].chars().next() else {
                    continue;
                };
                self.pos += e.len_utf8();
                out.push(match e {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    other => other,
                });
                continue;
            }
            out.push(ch);
        }
    }

    fn source(&mut self, nest: usize, first: bool) -> Result<Source, String> {
        match self.peek() {
            Some(b'\'' | b'"') if !first => {
                return Ok(Source::Literal(Value::String(self.quoted()?)));
            }
            _ => {}
        }
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
        {
            self.pos += 1;
        }
        let word = &self.s[start..self.pos];
        let is_type = word.bytes().next().is_some_and(|c| c.is_ascii_lowercase());
        match self.peek() {
            Some(b':') if is_type => {
                self.pos += 1;
                let address = self.address(nest)?;
                Ok(Source::Typed {
                    ty: word.to_string(),
                    params: Vec::new(),
                    address,
                })
            }
            Some(b'(') if is_type => {
                self.pos += 1;
                let params = self.params(nest)?;
                self.skip_spaces();
                let address = if self.peek() == Some(b':') {
                    self.pos += 1;
                    self.address(nest)?
                } else {
                    None
                };
                Ok(Source::Typed {
                    ty: word.to_string(),
                    params,
                    address,
                })
            }
            Some(b',' | b'}' | b' ') | None if !word.is_empty() => match parse_literal(word) {
                Some(v) => Ok(Source::Literal(v)),
                None => Err(format!(
                    "invalid literal fallback '{word}' in \"{}\": literals must be quoted strings, numbers, true, false or null",
                    self.s
                )),
            },
            _ => Err(format!(
                "invalid variable source at index {start} in \"{}\"",
                self.s
            )),
        }
    }

    fn address(&mut self, nest: usize) -> Result<Option<Tmpl>, String> {
        self.skip_spaces();
        if matches!(self.peek(), Some(b'\'' | b'"')) {
            let s = self.quoted()?;
            return Ok(Some(vec![Part::Text(s)]));
        }
        let t = trim_tmpl(self.template(nest, b",}")?);
        Ok((!t.is_empty()).then_some(t))
    }

    fn params(&mut self, nest: usize) -> Result<Vec<Tmpl>, String> {
        let mut params = Vec::new();
        loop {
            self.skip_spaces();
            match self.peek() {
                Some(b')') => {
                    self.pos += 1;
                    return Ok(params);
                }
                Some(b'\'' | b'"') => params.push(vec![Part::Text(self.quoted()?)]),
                Some(_) => params.push(trim_tmpl(self.template(nest, b",)}")?)),
                None => return Err(format!("unterminated parameters in \"{}\"", self.s)),
            }
            self.skip_spaces();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b')') => {}
                _ => return Err(format!("invalid variable parameter in \"{}\"", self.s)),
            }
        }
    }
}

fn trim_tmpl(mut t: Tmpl) -> Tmpl {
    if let Some(Part::Text(s)) = t.first_mut() {
        *s = s.trim_start().to_string();
    }
    if let Some(Part::Text(s)) = t.last_mut() {
        *s = s.trim_end().to_string();
    }
    t.retain(|p| !matches!(p, Part::Text(s) if s.is_empty()));
    t
}
