//! The `credport` binary: parse arguments, set up logging, dispatch. Nothing else.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use credport::cli::args::{Cli, Command, LogFormat};
use credport::cli::{
    completions, doctor, env, exec, init, log, login, man, project, relay, resolve, serve, service,
    status, token, trust, unlock,
};
use credport::logline::LineSink;
use credport::paths::Paths;
use std::io::Write as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Sets up the log subscriber. The daemon writes through a background thread
/// ([`credport::logqueue`]), so a request never waits on stderr for its audit line (nothing
/// is dropped: a line waits only when 1 MiB is queued), in batches under load; the
/// returned guard flushes it at exit. A daemon that logs plain text also gets a
/// [`LineSink`] into the same queue, for the audit line it writes without `tracing`'s
/// formatter.
fn init_logging(format: LogFormat, daemon: bool) -> Logging {
    // The daemon logs what it does; a one-shot command only what went wrong.
    let default = if daemon {
        "credport=info"
    } else {
        "credport=warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let mut sink = None;
    let (writer, guard) = if daemon {
        // The queue hands stderr whole batches: no buffer of its own is needed.
        let (queue, flush) = credport::logqueue::LogQueue::start(std::io::stderr(), |line| {
            let _ = std::io::stderr().write_all(line);
        });
        let direct = queue.clone();
        sink = Some(LineSink::new(move |line| direct.push(line)));
        (
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(queue),
            Some(flush),
        )
    } else {
        (
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
            None,
        )
    };
    let terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .with_writer(writer);
    let audit_text = match (format, daemon) {
        // Coloured for a person watching; the same line, written cheaply, for a log.
        (LogFormat::Text, true) if terminal => {
            builder.init();
            None
        }
        (LogFormat::Text, true) => {
            builder.event_format(credport::logline::DaemonText).init();
            sink
        }
        // A one-shot command talks to a person: `credport: warning: ...`, no timestamp.
        (LogFormat::Text, false) => {
            builder.with_ansi(false).event_format(Plain).init();
            None
        }
        (LogFormat::Json, _) => {
            builder.json().init();
            None
        }
    };
    Logging {
        _guard: guard,
        audit_text,
    }
}

/// What [`init_logging`] set up: the daemon's writer (flushed when this drops) and, for
/// plain-text daemon logs, the sink for lines written without `tracing`.
struct Logging {
    _guard: Option<credport::logqueue::Flush>,
    audit_text: Option<LineSink>,
}

/// The line format of one-shot commands: `credport: LEVEL: message key=value ...`.
struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "note",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        let _ = ctx;
        let mut f = PlainFields::default();
        event.record(&mut f);
        write!(writer, "credport: {level}: ")?;
        // A file problem reads like a compiler's: `FILE: line N: REASON (what happens)`.
        match (f.take("file"), f.take("reason")) {
            (Some(file), Some(reason)) => {
                let line = f
                    .take("line")
                    .map(|l| format!(" line {l}:"))
                    .unwrap_or_default();
                write!(writer, "{file}:{line} {reason} ({})", f.message)?;
            }
            (file, reason) => {
                write!(writer, "{}", f.message)?;
                for (k, v) in [("file", file), ("reason", reason)] {
                    if let Some(v) = v {
                        write!(writer, " {k}={v}")?;
                    }
                }
            }
        }
        for (k, v) in &f.rest {
            write!(writer, " {k}={v}")?;
        }
        writeln!(writer)
    }
}

/// An event's fields for [`Plain`]: the message, and the others in order.
#[derive(Default)]
struct PlainFields {
    message: String,
    rest: Vec<(&'static str, String)>,
}

impl PlainFields {
    fn take(&mut self, name: &str) -> Option<String> {
        let i = self.rest.iter().position(|(k, _)| *k == name)?;
        Some(self.rest.remove(i).1)
    }
}

impl tracing::field::Visit for PlainFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.rest.push((field.name(), format!("{value:?}")));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.rest.push((field.name(), format!("{value:?}")));
        }
    }
}

/// An error and its causes joined by `: `, skipping a cause whose text the message
/// already contains (an I/O error quoted by its wrapper is printed once, not twice).
fn chain_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logging = init_logging(
        cli.log_format,
        matches!(cli.command, Command::Serve(_) | Command::Relay(_)),
    );
    match run(cli, logging.audit_text.clone()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("credport: error: {}", chain_text(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, audit_text: Option<LineSink>) -> anyhow::Result<()> {
    // Generated from the argument definitions alone: no HOME needed (packaging runs them).
    match &cli.command {
        Command::Completions(args) => {
            return completions::run(args, &mut std::io::stdout().lock());
        }
        Command::Man(args) => return man::run(args, &mut std::io::stdout().lock()),
        _ => {}
    }
    let paths = Paths::from_env()?;
    match cli.command {
        Command::Completions(_) | Command::Man(_) => Ok(()),
        Command::Serve(args) => {
            // Before any thread exists: this also removes the LISTEN_* variables.
            let activated = credport::daemon::activation::activated_listeners()
                .map_err(|e| anyhow::anyhow!("socket activation: {e}"))?;
            daemon_runtime()?.block_on(serve::run(&paths, &args, activated, audit_text))
        }
        Command::Service(args) => service::run(&paths, &args, &mut std::io::stdout().lock()),
        Command::Token(args) => token::run(&paths, &args, &mut std::io::stdout().lock()),
        Command::Resolve(args) => {
            resolve::run(&paths, &args, &getenv, &mut std::io::stdout().lock())
        }
        Command::Relay(args) => runtime()?.block_on(relay::run(&args)),
        Command::Env(args) => env::run(&paths, &args, &getenv, &mut std::io::stdout().lock()),
        Command::Project(cmd) => project::run(&paths, &cmd, &getenv, &mut std::io::stdout().lock()),
        Command::Exec(args) => {
            let status = runtime()?.block_on(exec::run(&paths, &args, &getenv))?;
            exec::exit_like(status)
        }
        Command::Status { json } => {
            if !runtime()?.block_on(status::run(
                &paths,
                &getenv,
                json,
                &mut std::io::stdout().lock(),
            ))? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Doctor { json } => {
            let findings = runtime()?.block_on(doctor::run(
                &paths,
                &getenv,
                json,
                &mut std::io::stdout().lock(),
            ))?;
            if findings > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Log(args) => runtime()?.block_on(log::run(&paths, &args, &mut std::io::stdout())),
        Command::Init(args) => init::run(&paths, &args, &getenv, &mut std::io::stdout().lock()),
        Command::Allow(args) => trust::allow(&paths, &args, &getenv, &mut std::io::stdout().lock()),
        Command::Deny(args) => trust::deny(&paths, &args, &mut std::io::stdout().lock()),
        Command::Login(args) => {
            runtime()?.block_on(login::run(&paths, &args, &mut std::io::stdin().lock()))
        }
        Command::Unlock(args) => {
            runtime()?.block_on(unlock::unlock(&paths, &args, &mut std::io::stdout().lock()))
        }
        Command::Lock(args) => {
            runtime()?.block_on(unlock::lock(&paths, &args, &mut std::io::stdout().lock()))
        }
    }
}

/// The daemon's runtime. Its blocking threads (process lookups, scope builds, reloads) wait
/// for work without a timeout: tokio's default lets one exit after 10 s without work, and
/// that exit is a timer firing in an otherwise idle daemon. So a thread, once started, is
/// kept (parked on a futex, a few KiB of stack), and at most 32 are ever started; blocking
/// work beyond that queues until one is free. Everything the daemon runs there is short.
fn daemon_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(std::time::Duration::MAX)
        .max_blocking_threads(32)
        .build()
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn getenv(key: &str) -> Option<String> {
    std::env::var(key).ok()
}
