//! Every command-line type, in one place. Doc comments here are the `--help` text.

use std::net::SocketAddr;

use clap::{Parser, Subcommand, ValueEnum, ValueHint};

/// What `credport --version` prints after the name: the package version and, when built
/// from a git checkout (or a crates.io tarball), the commit (see `build.rs`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), env!("CREDPORT_VERSION_SUFFIX"));

/// Per-project, per-stage AWS credentials for every SDK, from one local daemon.
///
/// credport watches ~/.aws/credentials and ~/.aws/config and serves each project's stage
/// on the container-credentials endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI), so local
/// code picks up the right AWS account with no AWS_PROFILE juggling.
#[derive(Debug, Parser)]
#[command(name = "credport", version = VERSION, propagate_version = true)]
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
    /// `[server] listen` from the config, else 127.0.0.1:9911. One daemon runs per user
    /// (runtime directory): a second `serve` refuses and names the running one, unless
    /// --replace. A non-loopback address that does not exist yet (a container bridge) is
    /// waited for.
    #[command(
        after_help = "Examples:\n  credport serve\n  credport serve --listen 127.0.0.1:0\n  credport serve --replace\n  credport serve --listen 169.254.170.2:80 --allow-non-loopback"
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
    /// Open a protected stage (prod, production) in the running daemon for a while.
    ///
    /// Until then its requests answer 403 Locked. The window lasts 15 minutes unless --for
    /// says otherwise (at most `[guard] max_unlock`, 1h unless set); `credport lock` ends
    /// it early. Sessions already handed out are not revoked.
    #[command(
        after_help = "Examples:\n  credport unlock orders-api prod\n  credport unlock orders-api prod --for 45m"
    )]
    Unlock(UnlockArgs),
    /// Close a protected stage's unlock window now (or every window with --all).
    #[command(after_help = "Examples:\n  credport lock orders-api prod\n  credport lock --all")]
    Lock(LockArgs),
    /// Run credport at login: install, remove or inspect the systemd user units (Linux) or
    /// the launchd agent (macOS).
    ///
    /// `install` writes the units with this binary's path (systemd: credport.socket and
    /// credport.service in ~/.config/systemd/user, socket-activated on the `[server] listen`
    /// addresses; launchd: ~/Library/LaunchAgents/dev.credport.agent.plist), then enables
    /// and (re)starts the service. Running it again updates and restarts it.
    #[command(
        after_help = "Examples:\n  credport service install --dry-run\n  credport service install\n  credport service status\n  credport service uninstall\n  credport service install --platform launchd --dry-run"
    )]
    Service(ServiceArgs),
    /// Print which project, stage and profile a directory (and a wrapped command) means.
    ///
    /// Prints one JSON object: project, stage, profile, region, file, kind, rule. Exits
    /// non-zero with a message naming the file and rule when the profile cannot be
    /// determined.
    #[command(
        after_help = "Examples:\n  credport resolve\n  credport resolve --stage prod\n  credport resolve -- serverless invoke local -f hello -s prod"
    )]
    Resolve(ResolveArgs),
    /// Run a command with the scope's credentials served to its AWS SDK.
    ///
    /// Sets AWS_CONTAINER_CREDENTIALS_FULL_URI and a token file, unsets what would make an
    /// SDK pick other credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, ...), and isolates the
    /// shared files so [default] keys cannot win. Uses the running daemon, or an embedded
    /// server for the command's lifetime. Exit code, signals and stdio pass through.
    #[command(
        after_help = "Examples:\n  credport exec --stage prod -- serverless invoke local -f hello\n  credport exec -- serverless invoke local -f hello -s prod\n  credport exec --project billing --stage dev -- python job.py"
    )]
    Exec(ExecArgs),
    /// Print the variables `exec` would set (and unset), for direnv, shells and editors.
    ///
    /// The token is a file under credport's state directory, rewritten on rotation, so the
    /// output keeps working across daemon restarts and key rotations.
    #[command(
        after_help = "Examples:\n  eval \"$(credport env --stage dev)\"\n  credport env --stage dev --format dotenv > .env.local\n  credport env --project billing --stage prod --format json"
    )]
    Env(EnvArgs),
    /// Show whether the daemon answers, its addresses, watched files (with the last reload
    /// error, file and line), and every scope with its profile, source and session expiry.
    #[command(after_help = "Examples:\n  credport status\n  credport status --json")]
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the daemon's recent audit events: credentials issued and refused (each with
    /// the process that asked: pid, executable, command line), unlocks, locks and trust
    /// decisions.
    ///
    /// Events live in memory in the running daemon (the last 1000); a restart empties
    /// them. A peer in a container is named by its address; a request through
    /// `credport relay` names the container client the relay forwarded for.
    #[command(
        after_help = "Examples:\n  credport log\n  credport log --project orders --stage prod\n  credport log --follow\n  credport log --json | jq 'select(.event == \"refused\")'"
    )]
    Log(LogArgs),
    /// Find what would make a process use the wrong account or fail, each with its fix.
    #[command(after_help = "Examples:\n  credport doctor\n  credport doctor --json")]
    Doctor {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Register, list or forget project directories the daemon resolves stages from.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Forward container credential requests to the daemon on the host (run in a container).
    ///
    /// Listens at 169.254.170.2:80 in a container network, the one http address besides
    /// loopback that every SDK accepts, and forwards each GET of /v1/credentials/... and
    /// /healthz, with its Authorization header, to the daemon at --upstream. Tokens, scopes,
    /// trust and guard are checked by the daemon; the relay holds no secret.
    #[command(
        after_help = "Examples:\n  credport relay --upstream http://host.docker.internal:9911\n  docker run -d --name credport-relay --network credport --ip 169.254.170.2 \\\n    --add-host host.docker.internal:host-gateway --read-only credport \\\n    relay --upstream http://host.docker.internal:9911"
    )]
    Relay(RelayArgs),
    /// Set a project up: detect its stage -> profile mapping and write a `.credport.toml`
    /// to commit (and, with --editor, the editor's run configurations).
    ///
    /// Detects what `credport resolve` would use (credport's config, `.credport.toml`,
    /// serverless.yml, samconfig.toml, cdk.json), tries every stage the project file names,
    /// shows the mapping and the profiles in your AWS files, and writes a commented
    /// `.credport.toml` next to the project file. `--editor vscode` writes
    /// .vscode/launch.json and .vscode/tasks.json, `--editor jetbrains` .run/*.run.xml; both
    /// point at per-stage env files in .credport/ (git-ignored, written now, refreshed by a
    /// task). No file ever holds a token. Existing files are left alone without --force.
    #[command(
        after_help = "Examples:\n  credport init\n  credport init --dry-run\n  credport init --stage qa --editor vscode\n  credport init --dir services/orders --editor jetbrains --force"
    )]
    Init(InitArgs),
    /// Trust what a directory's project files map: show each stage -> profile (and the role
    /// or account the AWS config names) and record it.
    ///
    /// Project files (serverless.yml, samconfig.toml, cdk.json, .credport.toml) come with
    /// the repository, so their stage -> profile mappings are used only once trusted, as
    /// direnv's `allow`. A record keeps (directory, stage, profile): an edit that points a
    /// stage at another profile needs a new allow; other edits need nothing. Mappings in
    /// credport's own config.toml need no trust; `[trust] project_files = "all"` turns the
    /// check off.
    #[command(
        after_help = "Examples:\n  credport allow\n  credport allow --stage dev\n  credport allow --dir ~/src/orders --stage prod"
    )]
    Allow(TrustArgs),
    /// Forget what `credport allow` recorded for a directory (or one stage of it).
    #[command(
        after_help = "Examples:\n  credport deny\n  credport deny --dir ~/src/orders --stage prod"
    )]
    Deny(TrustArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    ///
    /// Completes commands, flags and fixed values (formats, shells, editors, paths).
    /// Project, stage and profile names are not completed (static scripts).
    #[command(
        after_help = "Examples:\n  credport completions bash > ~/.local/share/bash-completion/completions/credport\n  credport completions zsh > ~/.zfunc/_credport     # with fpath+=(~/.zfunc) before compinit\n  credport completions fish > ~/.config/fish/completions/credport.fish"
    )]
    Completions(CompletionsArgs),
    /// Print the credport(1) man page, or write one page per command into a directory.
    #[command(
        after_help = "Examples:\n  credport man | man -l -\n  credport man --out ~/.local/share/man/man1"
    )]
    Man(ManArgs),
}

fn parse_poll(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.05..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "'{s}' is not a poll interval: seconds between 0.05 and 3600"
        )),
    }
}

/// `credport allow` and `credport deny`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrustArgs {
    /// The project directory (default: the current directory).
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub dir: Option<std::path::PathBuf>,
    /// Only this stage (default: every stage the project files name).
    #[arg(long, short = 's', value_name = "STAGE")]
    pub stage: Option<String>,
}

/// `credport relay`.
#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    /// Where containers reach the relay.
    #[arg(long, value_name = "ADDR", default_value = "169.254.170.2:80")]
    pub listen: SocketAddr,
    /// The daemon's URL as the relay's container sees it.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://host.docker.internal:9911"
    )]
    pub upstream: String,
    /// Seconds one forwarded request may take (1 to 3600).
    #[arg(long, value_name = "SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

/// `credport init`.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// The project directory (default: the current directory).
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub dir: Option<std::path::PathBuf>,
    /// Also map this stage (repeatable); the stages the project file names are tried anyway.
    #[arg(long = "stage", short = 's', value_name = "STAGE")]
    pub stages: Vec<String>,
    /// Also write run configurations for this editor (repeatable).
    #[arg(long, value_enum, value_name = "EDITOR")]
    pub editor: Vec<Editor>,
    /// Replace an existing .credport.toml and run configurations (launch.json and
    /// tasks.json keep their other entries).
    #[arg(long)]
    pub force: bool,
    /// Print what it would write; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Editors `credport init --editor` writes run configurations for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Editor {
    /// Visual Studio Code: .vscode/launch.json (envFile) and .vscode/tasks.json.
    Vscode,
    /// IntelliJ IDEA, PyCharm, WebStorm: shared run configurations in .run/.
    Jetbrains,
}

/// `credport completions`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `credport man`.
#[derive(Debug, Clone, clap::Args)]
pub struct ManArgs {
    /// Write credport.1 and one page per command (credport-serve.1, ...) into DIR
    /// (created if missing) instead of printing credport.1.
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub out: Option<std::path::PathBuf>,
}

/// How `resolve`, `exec` and `env` pick the scope.
#[derive(Debug, Clone, clap::Args)]
pub struct ScopeArgs {
    /// The project (default: from the project file above the directory).
    #[arg(long)]
    pub project: Option<String>,
    /// The stage (default: the wrapped command's --stage/-s, then the project's default).
    #[arg(long, short = 's')]
    pub stage: Option<String>,
    /// Use this profile, as serverless's --aws-profile does.
    #[arg(long)]
    pub aws_profile: Option<String>,
    /// A serverless parameter `k=v` (repeatable).
    #[arg(long, value_name = "K=V", value_parser = parse_param)]
    pub param: Vec<(String, String)>,
    /// Where to look for the project file (default: the current directory).
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub dir: Option<std::path::PathBuf>,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("'{s}' is not k=v"))
}

/// `credport resolve`.
#[derive(Debug, clap::Args)]
pub struct ResolveArgs {
    /// The scope.
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// A command whose own flags (--stage, -s, --aws-profile, --param, --config-env) count.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `credport exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The scope.
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Serve this profile instead of the scope's (uses an embedded server).
    #[arg(long)]
    pub profile: Option<String>,
    /// Don't print the chosen project, stage and profile.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Put the token itself in AWS_CONTAINER_AUTHORIZATION_TOKEN instead of writing a token
    /// file (AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE), for SDKs that cannot read one.
    #[arg(long)]
    pub env_token: bool,
    /// Leave AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE alone (their [default] keys
    /// may then shadow the endpoint).
    #[arg(long)]
    pub keep_aws_files: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `credport env`.
#[derive(Debug, clap::Args)]
pub struct EnvArgs {
    /// The scope.
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = EnvFormat::Sh)]
    pub format: EnvFormat,
    /// Put the token itself in AWS_CONTAINER_AUTHORIZATION_TOKEN instead of a token file
    /// (always so for docker-env).
    #[arg(long)]
    pub env_token: bool,
    /// The daemon's base URL as the process will see it (default: the running or
    /// configured daemon's; for docker-env `http://169.254.170.2`, the relay; with
    /// `docker run --network=host` on a Linux engine, the daemon's loopback URL).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// The compose service name (for --format compose).
    #[arg(long, default_value = "app")]
    pub service: String,
}

/// `credport env --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EnvFormat {
    /// `export`/`unset` lines for sh, bash, zsh (and direnv).
    Sh,
    /// `set -gx`/`set -e` lines for fish.
    Fish,
    /// `K=V` lines for editors' envFile on the host (names host paths).
    Dotenv,
    /// `{"set": {...}, "unset": [...]}`.
    Json,
    /// A compose override file: the service reads credport.env and joins the `credport`
    /// network of the relay (no secret in it).
    Compose,
    /// A devcontainer.json fragment: the `credport` network and an --env-file (no secret).
    Devcontainer,
    /// `K=V` lines for a container (docker --env-file, compose env_file): the token's
    /// value, no host path; the URL is the relay's unless --url is given.
    DockerEnv,
}

/// `credport project ...`.
#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Register the project in DIR (default: the current directory) with the daemon.
    Add {
        /// The directory.
        dir: Option<std::path::PathBuf>,
    },
    /// List declared and registered projects.
    List,
    /// Forget a registered project.
    Remove {
        /// The project name.
        name: String,
    },
}

/// `credport log`.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Only this project's events.
    #[arg(long, short = 'p', value_name = "PROJECT")]
    pub project: Option<String>,
    /// Only this stage's events.
    #[arg(long, short = 's', value_name = "STAGE")]
    pub stage: Option<String>,
    /// Only the last N events.
    #[arg(long, short = 'n', value_name = "N")]
    pub lines: Option<usize>,
    /// Keep running and show new events as they happen (Ctrl-C ends).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// One JSON object per event and line (JSON Lines).
    #[arg(long)]
    pub json: bool,
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

/// `credport unlock`.
#[derive(Debug, clap::Args)]
pub struct UnlockArgs {
    /// The project.
    pub project: String,
    /// The protected stage.
    pub stage: String,
    /// How long: 15m, 1h, 90s, ... (default 15m, at most `[guard] max_unlock`).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub length: Option<std::time::Duration>,
}

/// `credport lock`.
#[derive(Debug, clap::Args)]
pub struct LockArgs {
    /// The project.
    #[arg(requires = "stage", required_unless_present = "all")]
    pub project: Option<String>,
    /// The stage.
    pub stage: Option<String>,
    /// Close every open window.
    #[arg(long, conflicts_with = "project")]
    pub all: bool,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

/// `credport serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (repeatable). Port 0 picks a free port. Ignored when the
    /// service manager passes listening sockets (systemd socket activation, LISTEN_FDS).
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// Allow listen addresses that are not loopback (for a container network).
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// Take over from the daemon already running for this user (SIGTERM, then serve once
    /// it has stopped), e.g. after an upgrade.
    #[arg(long)]
    pub replace: bool,
    /// Watch the files by checking them every SECONDS instead of by kernel events, for
    /// mounts that deliver none (some Docker Desktop file sharing, network file systems).
    #[arg(long, value_name = "SECONDS", value_parser = parse_poll)]
    pub poll: Option<f64>,
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
    /// Replace the token key: every token changes; token files are rewritten, and the old
    /// tokens keep working for the grace period (see --grace, --now).
    #[arg(long, conflicts_with_all = ["project", "stage"])]
    pub rotate: bool,
    /// With --rotate: how long the old tokens keep working, in seconds (default 60, at most
    /// 30 days), so a process between reading its token file and the rewrite is not refused.
    #[arg(
        long,
        value_name = "SECONDS",
        requires = "rotate",
        conflicts_with = "now",
        value_parser = clap::value_parser!(u64).range(0..=2_592_000)
    )]
    pub grace: Option<u64>,
    /// With --rotate: old tokens stop working at once (after a leak).
    #[arg(long, requires = "rotate")]
    pub now: bool,
}

/// `credport service`.
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: ServiceAction,
    /// The service manager (default: launchd on macOS, systemd elsewhere).
    #[arg(long, value_enum, global = true)]
    pub platform: Option<ServicePlatform>,
}

/// `credport service` actions.
#[derive(Debug, Subcommand)]
pub enum ServiceAction {
    /// Write the unit files, enable the service and (re)start it.
    #[command(
        after_help = "Examples:\n  credport service install --dry-run\n  credport service install"
    )]
    Install {
        /// Print every file it would write (in full) and every command it would run; do
        /// nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Stop and disable the service and remove its unit files.
    #[command(
        after_help = "Examples:\n  credport service uninstall --dry-run\n  credport service uninstall"
    )]
    Uninstall {
        /// Print what it would remove and run; do nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Say whether the unit files are installed and up to date, and ask the service
    /// manager whether credport runs.
    Status,
}

/// Service managers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServicePlatform {
    /// systemd user units (Linux).
    Systemd,
    /// A launchd LaunchAgent (macOS).
    Launchd,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers that are added to a clock are bounded where they are read: a huge one is a
    /// usage error naming the option, not an overflow later.
    #[test]
    fn clock_bound_numbers_are_refused_out_of_range() {
        for (args, option) in [
            (&["credport", "relay", "--timeout", "0"][..], "--timeout"),
            (
                &["credport", "relay", "--timeout", "99999999999"][..],
                "--timeout",
            ),
            (
                &["credport", "token", "--rotate", "--grace", "99999999999"][..],
                "--grace",
            ),
        ] {
            let e = Cli::try_parse_from(args).unwrap_err().to_string();
            assert!(e.contains(option), "{args:?}: {e}");
        }
        for args in [
            &["credport", "relay", "--timeout", "3600"][..],
            &["credport", "token", "--rotate", "--grace", "2592000"][..],
        ] {
            assert!(Cli::try_parse_from(args).is_ok(), "{args:?}");
        }
    }
}
