//! The daemon's plain-text log line, written without the general formatter's overhead.
//!
//! The line is the one `tracing-subscriber`'s full format writes without colours:
//! `2026-11-30T08:00:00.123456Z  INFO credport::server::audit: credentials issued
//! project=orders stage=dev user_agent="boto3/1.40"`. String values (`&str` fields) are
//! quoted and escaped (so client-supplied text cannot forge a field); `%` values are
//! written as they display. The date and time up to the second are rendered once per
//! second per thread, and fields go straight into the line, with no styling pass. The
//! daemon uses no spans, so none are written.
//!
//! Two writers share these rules: [`DaemonText`], `tracing`'s event format for every line
//! the daemon logs, and [`Line`], which writes one line without `tracing` at all, for the
//! one line per credentials issuance ([`crate::server::audit`]) through a [`LineSink`].

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The daemon's text line format (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct DaemonText;

thread_local! {
    /// The unix second last rendered on this thread, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

impl<S, N> FormatEvent<S, N> for DaemonText
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write_head(&mut writer, *meta.level(), meta.target())?;
        let mut fields = Fields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str("\n")
    }
}

/// Writes `2026-11-30T08:00:00.123456Z  INFO target:` for now.
fn write_head(w: &mut impl Write, level: tracing::Level, target: &str) -> fmt::Result {
    write_timestamp(w, std::time::SystemTime::now())?;
    let level = match level {
        tracing::Level::ERROR => "ERROR",
        tracing::Level::WARN => " WARN",
        tracing::Level::INFO => " INFO",
        tracing::Level::DEBUG => "DEBUG",
        tracing::Level::TRACE => "TRACE",
    };
    w.write_str(" ")?;
    w.write_str(level)?;
    w.write_str(" ")?;
    w.write_str(target)?;
    w.write_str(":")
}

/// Writes a string value as `{:?}` does: quoted, with quotes, backslashes, control and
/// non-ASCII characters escaped (the common printable-ASCII case without the formatter).
fn write_quoted(w: &mut impl Write, value: &str) -> fmt::Result {
    if value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        w.write_str("\"")?;
        w.write_str(value)?;
        w.write_str("\"")
    } else {
        write!(w, "{value:?}")
    }
}

/// Writes `2026-11-30T08:00:00.123456Z` for `now`.
fn write_timestamp(w: &mut impl Write, now: std::time::SystemTime) -> fmt::Result {
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs() as i64;
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let t = time::OffsetDateTime::from_unix_timestamp(secs)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            // The served `Expiration`'s form, whose `Z` comes after the fraction here.
            cached.1 = crate::credentials::format_expiration(t);
            cached.1.pop();
            cached.0 = secs;
        }
        w.write_str(&cached.1)
    })?;
    let micros = since.subsec_micros();
    let mut digits = [b'0'; 6];
    let mut n = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    w.write_str(".")?;
    w.write_str(std::str::from_utf8(&digits).unwrap_or("000000"))?;
    w.write_str("Z")
}

/// Writes each field as ` name=value`, the message bare.
struct Fields<'a, W: Write> {
    out: &'a mut W,
    result: fmt::Result,
}

impl<W: Write> Fields<'_, W> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        self.out.write_str(" ")?;
        if field.name() != "message" {
            self.out.write_str(field.name())?;
            self.out.write_str("=")?;
        }
        Ok(())
    }
}

impl<W: Write> Visit for Fields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        self.result = self.key(field).and_then(|()| {
            if field.name() == "message" {
                self.out.write_str(value)
            } else {
                write_quoted(self.out, value)
            }
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.result.is_err() {
            return;
        }
        self.result = self.key(field).and_then(|()| write!(self.out, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.result.is_err() {
            return;
        }
        self.result = self.key(field).and_then(|()| write!(self.out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.result.is_err() {
            return;
        }
        self.result = self.key(field).and_then(|()| write!(self.out, "{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        self.result = self.key(field).and_then(|()| write!(self.out, "{value:?}"));
    }
}

/// Where [`Line`]s go: the daemon's log writer (the same queue `tracing`'s lines go
/// through, so the order of lines is kept). Cheap to clone.
#[derive(Clone)]
pub struct LineSink(Arc<WriteLine>);

/// What a [`LineSink`] calls with each whole line.
type WriteLine = dyn Fn(&[u8]) + Send + Sync;

impl LineSink {
    /// A sink that hands each whole line, newline included, to `write`.
    pub fn new(write: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        LineSink(Arc::new(write))
    }

    /// Renders one line into this thread's buffer with `fill` and writes it. `target` is
    /// what `tracing` would name (the calling module's path).
    pub fn info(&self, target: &str, message: &str, fill: impl FnOnce(&mut Line<'_>)) {
        thread_local! {
            static BUF: RefCell<String> = RefCell::new(String::with_capacity(512));
        }
        BUF.with(|cell| {
            // A sink that logs re-enters only through `tracing`, never here; still, a
            // nested call gets its own buffer rather than a panic.
            let mut own = String::new();
            let mut guard = cell.try_borrow_mut();
            let buf = match guard.as_deref_mut() {
                Ok(b) => b,
                Err(_) => &mut own,
            };
            buf.clear();
            let _ = write_head(buf, tracing::Level::INFO, target);
            buf.push(' ');
            buf.push_str(message);
            fill(&mut Line { out: buf });
            buf.push('\n');
            (self.0)(buf.as_bytes());
            if buf.capacity() > 64 * 1024 {
                *buf = String::with_capacity(512);
            }
        });
    }
}

impl fmt::Debug for LineSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LineSink")
    }
}

/// One line's fields, written as [`DaemonText`] writes an event's.
pub struct Line<'a> {
    out: &'a mut String,
}

impl Line<'_> {
    /// Text already rendered as fields (` project=orders stage=dev`), kept per scope.
    pub fn raw(&mut self, fields: &str) -> &mut Self {
        self.out.push_str(fields);
        self
    }

    /// ` name=value` as the value displays (a `%` field).
    pub fn display(&mut self, name: &str, value: &dyn fmt::Display) -> &mut Self {
        self.key(name);
        let _ = write!(self.out, "{value}");
        self
    }

    /// ` name="value"`, quoted and escaped (a `&str` field); nothing for `None`.
    pub fn str(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.key(name);
            let _ = write_quoted(self.out, v);
        }
        self
    }

    /// ` name=value` for a number; nothing for `None`.
    pub fn num(&mut self, name: &str, value: Option<u64>) -> &mut Self {
        if let Some(v) = value {
            self.key(name);
            let _ = write!(self.out, "{v}");
        }
        self
    }

    fn key(&mut self, name: &str) {
        self.out.push(' ');
        self.out.push_str(name);
        self.out.push('=');
    }
}

/// ` project=orders stage=dev profile=devAccount`: fields rendered once and written with
/// [`Line::raw`] (names display as they are, as `%` fields do).
pub fn render_fields(fields: &[(&str, &dyn fmt::Display)]) -> Box<str> {
    let mut s = String::new();
    let mut line = Line { out: &mut s };
    for (name, value) in fields {
        line.display(name, *value);
    }
    s.into()
}

/// What a test's log writer received (a `tracing` writer or a [`LineSink`]'s target).
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl Capture {
    /// Everything written so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[cfg(test)]
impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_764_489_600_000_042);
        let mut s = String::new();
        write_timestamp(&mut s, t).unwrap();
        assert_eq!(s, "2025-11-30T08:00:00.000042Z");
        // The cached second is reused, the fraction is not.
        let mut s = String::new();
        write_timestamp(&mut s, t + std::time::Duration::from_micros(7)).unwrap();
        assert_eq!(s, "2025-11-30T08:00:00.000049Z");
    }

    #[test]
    fn lines_match_the_full_format_without_colours() {
        let buf = Capture::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || w.clone())
            .event_format(DaemonText)
            .finish();
        tracing::subscriber::with_default(sub, || {
            let agent = "evil\" project=x\n";
            tracing::info!(
                project = %"orders",
                status = 403u16,
                user_agent = agent,
                "credentials issued"
            );
        });
        let out = buf.text();
        let (stamp, rest) = out.split_once(' ').unwrap();
        assert!(stamp.ends_with('Z') && stamp.len() == 27, "{out}");
        assert_eq!(
            rest,
            " INFO credport::logline::tests: credentials issued project=orders status=403 user_agent=\"evil\\\" project=x\\n\"\n"
        );
    }
}
