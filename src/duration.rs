//! Human durations as people type them: `15m`, `1h`, `1h30m`, `90s`, `2d` (and a bare
//! number of seconds). Used by `credport unlock --for` and `[guard] max_unlock`.

use std::time::Duration;

/// A duration that could not be read: the text and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not a duration ({reason}; write e.g. 15m, 1h, 1h30m or 90s)")]
pub struct DurationError {
    /// What was given (escaped).
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The longest duration [`parse`] accepts: 366 days (an unlock window longer than a year
/// is a mistake, and far larger ones overflow the clock they are added to).
pub const MAX: Duration = Duration::from_secs(366 * 86_400);

/// Parses `15m`, `1h30m`, `90s`, `2d`, or a bare number of seconds. Zero and anything over
/// [`MAX`] are refused.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        text: text.escape_debug().to_string(),
        reason,
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(err("empty"));
    }
    if t.len() > 32 {
        return Err(err("too long"));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = t.parse().map_err(|_| err("too large"))?;
        return checked(secs).map_err(err);
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(err("units are s, m, h and d")),
        };
        if number.is_empty() {
            return Err(err("a unit without a number"));
        }
        let n: u64 = number.parse().map_err(|_| err("too large"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| err("too large"))?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(err("a number without a unit"));
    }
    checked(total).map_err(err)
}

fn checked(secs: u64) -> Result<Duration, &'static str> {
    match Duration::from_secs(secs) {
        _ if secs == 0 => Err("it must be more than zero"),
        d if d > MAX => Err("too large: at most 366d"),
        d => Ok(d),
    }
}

/// Formats a duration the way [`parse`] reads it, largest units first, whole seconds
/// (`1h30m`, `15m`, `45s`, `0s`).
pub fn format(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_people_type() {
        for (text, secs) in [
            ("15m", 900),
            ("1h", 3600),
            ("1h30m", 5400),
            ("90s", 90),
            ("2d", 172_800),
            ("120", 120),
            (" 5m ", 300),
        ] {
            assert_eq!(parse(text).unwrap(), Duration::from_secs(secs), "{text}");
        }
    }

    #[test]
    fn refuses_the_rest_naming_the_input() {
        for bad in [
            "",
            "0",
            "0m",
            "m",
            "15x",
            "1.5h",
            "-5m",
            "h1",
            "99999999999999999999s",
            "99999999999d",
            "367d",
            "31708800",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.to_string().contains(&format!("'{}'", bad.escape_debug())),
                "{e}"
            );
        }
        assert!(parse("15m5").is_err());
        assert!(
            parse("367d")
                .unwrap_err()
                .to_string()
                .contains("at most 366d")
        );
        assert_eq!(parse("366d").unwrap(), MAX);
    }

    #[test]
    fn formats_round_trip() {
        for secs in [1, 59, 60, 61, 900, 3600, 5400, 90_061] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse(&format(d)).unwrap(), d, "{}", format(d));
        }
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format(Duration::ZERO), "0s");
    }
}
