//! Every command-line type, in one place. Doc comments here are the `--help` text.

use std::net::SocketAddr;

use clap::{Parser, Subcommand, ValueEnum};

/// Per-project, per-stage AWS credentials for every SDK, from one local daemon.
///
/// credport watches ~/.aws/credentials and ~/.aws/config and serves each project's stage
/// on the container-credentials endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI), so local
/// code picks up the right AWS account with no AWS_PROFILE juggling.
#[derive(Debug, Parser)]
#[command(name = "credport", version, propagate_version = true)]
#[command(
    after_help = "Examples:\n  credport serve\n  credport token --project orders-api --stage dev\n  curl -H \"Authorization: $(credport token --project orders-api --stage dev)\" \\\n       http://127.0.0.1:9911/v1/credentials/orders-api/dev"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (journald, log collectors).
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon until SIGINT or SIGTERM (SIGHUP reloads every file).
    ///
    /// Prints `listening on http://HOST:PORT` on stderr once ready. Without --listen it uses
    /// `[server] listen` from the config, else 127.0.0.1:9911.
    #[command(
        after_help = "Examples:\n  credport serve\n  credport serve --listen 127.0.0.1:0\n  credport serve --listen 169.254.170.2:80 --allow-non-loopback"
    )]
    Serve(ServeArgs),
    /// Print the token for one project and stage, or rotate every token.
    #[command(
        after_help = "Examples:\n  credport token --project orders-api --stage dev\n  credport token --rotate"
    )]
    Token(TokenArgs),
    /// Open an MFA session in the running daemon for a profile that needs one.
    ///
    /// One code unlocks every role behind the same keys and MFA device, until the session
    /// expires (12 hours).
    #[command(after_help = "Examples:\n  credport login prod\n  credport login prod --code 123456")]
    Login(LoginArgs),
}

/// `credport login`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The profile whose role chain names the `mfa_serial`.
    pub profile: String,
    /// The one-time code (asked on the terminal when omitted).
    #[arg(long)]
    pub code: Option<String>,
}

/// `credport serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (repeatable). Port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// Allow listen addresses that are not loopback (for a container network).
    #[arg(long)]
    pub allow_non_loopback: bool,
}

/// `credport token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The project.
    #[arg(long, required_unless_present = "rotate")]
    pub project: Option<String>,
    /// The stage.
    #[arg(long, required_unless_present = "rotate")]
    pub stage: Option<String>,
    /// Replace the token key: every token changes, old ones stop working at once.
    #[arg(long, conflicts_with_all = ["project", "stage"])]
    pub rotate: bool,
}
