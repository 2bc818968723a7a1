//! The `credport` binary: parse arguments, set up logging, dispatch. Nothing else.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use credport::cli::args::{Cli, Command, LogFormat};
use credport::cli::{login, serve, token};
use credport::paths::Paths;
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("credport=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("credport: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let paths = Paths::from_env()?;
    match cli.command {
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve::run(&paths, &args)),
        Command::Token(args) => token::run(&paths, &args, &mut std::io::stdout().lock()),
        Command::Login(args) => {
            runtime()?.block_on(login::run(&paths, &args, &mut std::io::stdin().lock()))
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
