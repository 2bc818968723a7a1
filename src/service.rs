//! Running credport as a service: systemd and launchd units, socket activation and
//! readiness notification.
//!
//! ## Design
//! A credential daemon is used all day, so it starts at login and restarts when it fails.
//!
//! * **systemd (Linux)**: two *user* units, `credport.socket` and `credport.service` (the
//!   committed references are `systemd/` in the repository; [`render_systemd_service`] and
//!   [`render_systemd_socket`] produce the same text with the real binary path and listen
//!   addresses). The socket unit owns the listen address, so the port exists from login on
//!   and the daemon starts on the first request (socket activation): nothing runs until an
//!   SDK asks, a restart or an upgrade never refuses a connection (the kernel queues them
//!   while the new process starts), and no other program can grab the port while credport
//!   is down. `serve` takes the sockets with [`activated_listeners`] (`LISTEN_FDS`,
//!   `LISTEN_PID`) and reports readiness with [`notify`] (`Type=notify`: `READY=1` once it
//!   serves, `RELOADING=1` around SIGHUP reloads, `STOPPING=1` on shutdown).
//! * **launchd (macOS)**: one LaunchAgent, `dev.credport.agent`
//!   ([`render_launchd_plist`]), with `RunAtLoad` and `KeepAlive` (`SuccessfulExit`
//!   false). It does not use launchd socket activation (`launch_activate_socket`): credport
//!   binds its own address and KeepAlive keeps it running, which gives the same "always
//!   there" behaviour without a macOS-only code path that CI could not exercise.
//!
//! ## What the systemd sandbox allows
//! The service unit confines the daemon to what it needs: it **reads** `~/.aws` and
//! `~/.config/credport`, **writes** only its state directory (`~/.local/share/credport`,
//! the token key), its runtime directory (`$XDG_RUNTIME_DIR/credport`, `daemon.json` and
//! the control socket; `RuntimeDirectory=`) and the SSO token cache (`~/.aws/sso/cache`,
//! when it refreshes an SSO token); it may open `AF_UNIX`, `AF_INET` and `AF_INET6` sockets
//! (STS, SSO, the control socket, `$NOTIFY_SOCKET`). Everything else is off: no new
//! privileges, no capabilities, a read-only `/usr`, `/etc` and home, private `/tmp`,
//! `/dev` and IPC, no W^X memory, no namespaces, realtime, personality changes, kernel
//! tunables/modules/logs, clock or hostname changes, and the `@system-service` system
//! calls only. `systemd-analyze security --offline=yes` rates the unit 1.6 ("OK"; the test
//! `systemd_analyze_security_exposure_is_low` in `tests/service.rs` keeps it at most 2.0).
//!
//! The trade-off: `credential_process` helpers are the user's own programs and run inside
//! this sandbox. A helper that writes its own cache somewhere else in `$HOME`, or that
//! JIT-compiles (Node.js, Java: `MemoryDenyWriteExecute=`), needs a drop-in
//! (`systemctl --user edit credport.service`) that relaxes exactly that; the unit file's
//! header shows one. Filesystem sandboxing in a *user* unit relies on unprivileged user
//! namespaces (`PrivateUsers=yes`).
//!
//! ## Install
//! [`install`] writes the unit files atomically (temporary file, `fsync`, `rename`; mode
//! 0644, since they hold no secret), then runs `systemctl --user` or `launchctl` through a
//! caller-supplied runner, so tests observe every command without running any. It is
//! idempotent: running it again rewrites the files and restarts the daemon. With
//! `dry_run` it prints every file it would write (in full) and every command it would run,
//! and touches nothing. [`uninstall`] undoes it; [`status`] says what is installed and asks
//! the service manager.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

/// The committed reference service unit (binary placeholder [`PLACEHOLDER_BINARY`]).
pub const SYSTEMD_SERVICE_TEMPLATE: &str = include_str!("../systemd/credport.service");
/// The committed reference socket unit (listen placeholder [`PLACEHOLDER_LISTEN`]).
pub const SYSTEMD_SOCKET_TEMPLATE: &str = include_str!("../systemd/credport.socket");
/// The committed reference LaunchAgent (placeholders [`PLACEHOLDER_BINARY`] and
/// [`PLACEHOLDER_HOME`]).
pub const LAUNCHD_PLIST_TEMPLATE: &str = include_str!("../launchd/dev.credport.agent.plist");

/// The binary path written in the committed reference units.
pub const PLACEHOLDER_BINARY: &str = "/usr/local/bin/credport";
/// The home directory written in the committed reference plist.
pub const PLACEHOLDER_HOME: &str = "/Users/you";
/// The listen line of the committed reference socket unit.
pub const PLACEHOLDER_LISTEN: &str = "ListenStream=127.0.0.1:9911\n";

/// The systemd service unit's name.
pub const SYSTEMD_SERVICE: &str = "credport.service";
/// The systemd socket unit's name.
pub const SYSTEMD_SOCKET: &str = "credport.socket";
/// The launchd label (and the plist's file stem).
pub const LAUNCHD_LABEL: &str = "dev.credport.agent";

/// The first file descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;
/// More passed descriptors than this is taken as a malformed `LISTEN_FDS`.
const MAX_LISTEN_FDS: u32 = 1024;

// ---------------------------------------------------------------------------------------
// Socket activation
// ---------------------------------------------------------------------------------------

/// The TCP listening sockets passed by systemd socket activation (`LISTEN_PID`,
/// `LISTEN_FDS`, descriptors from 3 on), in order; empty when none were passed to this
/// process.
///
/// Each descriptor is marked close-on-exec (so `credential_process` helpers do not inherit
/// it), checked to be a listening TCP socket, and switched to non-blocking mode (ready for
/// `tokio::net::TcpListener::from_std`). `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`
/// are then removed from the environment, as `sd_listen_fds(1)` does.
///
/// Call it once, early in `main`, before the process starts other threads: removing an
/// environment variable races with threads that read the environment.
pub fn activated_listeners() -> io::Result<Vec<std::net::TcpListener>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let result = activated_listeners_from(pid.as_deref(), fds.as_deref(), std::process::id());
    if pid.is_some() || fds.is_some() {
        // SAFETY: documented precondition: called while the process is single-threaded
        // (main calls it before building the tokio runtime), so nothing reads the
        // environment concurrently.
        unsafe {
            std::env::remove_var("LISTEN_PID");
            std::env::remove_var("LISTEN_FDS");
            std::env::remove_var("LISTEN_FDNAMES");
        }
    }
    result
}

/// [`activated_listeners`] with the variables and the process id given explicitly, and
/// the environment left alone.
///
/// `None` for either variable, or a `LISTEN_PID` that is not `my_pid` (the variables were
/// meant for another process, e.g. inherited from a parent), yields an empty list. A
/// malformed value, or a passed descriptor that is not a listening TCP socket, is an
/// `InvalidInput` error naming the variable or the descriptor. When it returns `Ok` with
/// listeners, it has taken ownership of descriptors 3..3+`LISTEN_FDS`.
pub fn activated_listeners_from(
    pid: Option<&str>,
    fds: Option<&str>,
    my_pid: u32,
) -> io::Result<Vec<std::net::TcpListener>> {
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(Vec::new());
    };
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| invalid(format!("LISTEN_PID={pid:?} is not a process id")))?;
    if pid != my_pid {
        return Ok(Vec::new());
    }
    let n: u32 = fds
        .trim()
        .parse()
        .map_err(|_| invalid(format!("LISTEN_FDS={fds:?} is not a number")))?;
    if n > MAX_LISTEN_FDS {
        return Err(invalid(format!("LISTEN_FDS={n} is implausibly large")));
    }
    let range = LISTEN_FDS_START..LISTEN_FDS_START + n as RawFd;
    // First mark every passed descriptor close-on-exec, whatever it is, so none leaks into
    // a child even if validation fails below.
    for fd in range.clone() {
        set_cloexec(fd)
            .map_err(|e| io::Error::new(e.kind(), format!("passed descriptor {fd}: {e}")))?;
    }
    // Validate all before taking ownership of any.
    for fd in range.clone() {
        check_tcp_listener(fd).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("passed descriptor {fd} (LISTEN_FDS): {e}"),
            )
        })?;
    }
    let mut listeners = Vec::with_capacity(n as usize);
    for fd in range {
        // SAFETY: systemd handed this descriptor to this process (LISTEN_PID matched), it is
        // an open listening TCP socket (checked above), and nothing else in the process
        // owns it: it is taken exactly once, here.
        let l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        l.set_nonblocking(true)?;
        listeners.push(l);
    }
    Ok(listeners)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an integer descriptor has no memory-safety preconditions; an invalid
    // descriptor yields EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::FD_CLOEXEC == 0
        && unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sockopt_int(fd: RawFd, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len point to live, correctly sized locals.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// Checks that `fd` is a listening TCP (IPv4 or IPv6 stream) socket, without taking it.
pub fn check_tcp_listener(fd: RawFd) -> io::Result<()> {
    // SAFETY: st is a live, zeroed stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(invalid("not a socket".into()));
    }
    if sockopt_int(fd, libc::SO_TYPE)? != libc::SOCK_STREAM {
        return Err(invalid("not a stream socket".into()));
    }
    // SAFETY: storage is a live sockaddr_storage and len its size.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    if unsafe {
        libc::getsockname(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    let family = storage.ss_family as libc::c_int;
    if family != libc::AF_INET && family != libc::AF_INET6 {
        return Err(invalid(format!(
            "not a TCP socket (address family {family}; credport serves TCP only)"
        )));
    }
    if !is_listening(fd)? {
        return Err(invalid("a TCP socket that is not listening".into()));
    }
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn is_listening(fd: RawFd) -> io::Result<bool> {
    Ok(sockopt_int(fd, libc::SO_ACCEPTCONN)? != 0)
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn is_listening(fd: RawFd) -> io::Result<bool> {
    // No SO_ACCEPTCONN here: a listening socket has no peer.
    // SAFETY: storage is a live sockaddr_storage and len its size.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let r = unsafe {
        libc::getpeername(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    Ok(r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOTCONN))
}

/// Listeners handed over by the service manager, waiting for [`bind`] to claim them.
static ADOPTED: std::sync::Mutex<Vec<std::net::TcpListener>> = std::sync::Mutex::new(Vec::new());

/// Hands activated listeners (from [`activated_listeners`]) to [`bind`], and returns their
/// addresses: pass those as the daemon's listen addresses and each [`bind`] of one of them
/// takes the inherited socket instead of binding a new one.
pub fn adopt(listeners: Vec<std::net::TcpListener>) -> io::Result<Vec<SocketAddr>> {
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<io::Result<Vec<_>>>()?;
    ADOPTED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(listeners);
    Ok(addrs)
}

/// A listener on `addr`: the adopted (socket-activated) one with exactly that address if
/// there is one, else a newly bound socket.
pub async fn bind(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let adopted = {
        let mut all = ADOPTED.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .position(|l| l.local_addr().ok() == Some(addr))
            .map(|i| all.remove(i))
    };
    match adopted {
        Some(l) => {
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)
        }
        None => tokio::net::TcpListener::bind(addr).await,
    }
}

// ---------------------------------------------------------------------------------------
// Readiness notification
// ---------------------------------------------------------------------------------------

/// Sends `state` (e.g. `READY=1`, `STOPPING=1`, `STATUS=...`; see [`reloading_message`])
/// to the service manager at `$NOTIFY_SOCKET`. Does nothing without the variable; a
/// failure to send is logged at debug level and otherwise ignored, as `sd_notify` callers
/// do (readiness is best effort; systemd's start timeout reports a daemon that never
/// became ready).
pub fn notify(state: &str) {
    let socket = std::env::var_os("NOTIFY_SOCKET");
    match notify_to(socket.as_deref(), state) {
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "cannot notify the service manager"),
    }
}

/// [`notify`] with the socket address given: `Ok(false)` when `socket` is `None` or empty,
/// `Ok(true)` once sent. An address starting with `@` is a Linux abstract socket; any
/// other must be an absolute path.
pub fn notify_to(socket: Option<&OsStr>, state: &str) -> io::Result<bool> {
    let Some(socket) = socket.filter(|s| !s.is_empty()) else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(socket);
    if let Some(name) = bytes.strip_prefix(b"@") {
        send_abstract(&sock, name, state)?;
    } else if bytes.starts_with(b"/") {
        sock.send_to(state.as_bytes(), Path::new(socket))?;
    } else {
        return Err(invalid(format!(
            "NOTIFY_SOCKET={socket:?}: neither an absolute path nor an abstract name (@...)"
        )));
    }
    Ok(true)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(sock: &UnixDatagram, name: &[u8], state: &str) -> io::Result<()> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets exist on Linux only",
    ))
}

/// The message that announces a reload: `RELOADING=1` plus `MONOTONIC_USEC=` (the
/// `CLOCK_MONOTONIC` time in microseconds, which newer systemd versions require). Send
/// `READY=1` when the reload is done.
pub fn reloading_message() -> String {
    // SAFETY: ts is a live timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let usec = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000;
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

// ---------------------------------------------------------------------------------------
// Units
// ---------------------------------------------------------------------------------------

/// A service manager credport can be installed into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// systemd user units (Linux).
    Systemd,
    /// A launchd LaunchAgent (macOS).
    Launchd,
}

impl Platform {
    /// The platform of the running OS: launchd on macOS, systemd elsewhere.
    pub fn current() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::Launchd
        } else {
            Platform::Systemd
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Platform::Systemd => "systemd",
            Platform::Launchd => "launchd",
        })
    }
}

/// Errors of install, uninstall and status; each names its file or command.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The binary path cannot be written into a unit.
    #[error("{path}: cannot be used as the service binary: {reason}")]
    BadBinary {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// A directory could not be created.
    #[error("cannot create {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A unit file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A unit file could not be removed.
    #[error("cannot remove {path}: {source}")]
    Remove {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A command could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The error.
        source: io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed ({status})")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
    },
    /// Printing the report failed.
    #[error("cannot print: {0}")]
    Output(#[from] io::Error),
}

fn check_binary(binary: &Path) -> Result<&str, ServiceError> {
    let bad = |reason| ServiceError::BadBinary {
        path: binary.to_path_buf(),
        reason,
    };
    let s = binary.to_str().ok_or_else(|| bad("not valid UTF-8"))?;
    if !binary.is_absolute() {
        return Err(bad("not an absolute path"));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(bad("contains a control character"));
    }
    Ok(s)
}

/// Quotes one word for a systemd command line (`ExecStart=`): `%` becomes `%%` (specifier)
/// and `$` becomes `$$` (variable expansion); a word with spaces, quotes or backslashes is
/// double-quoted with C escapes.
fn systemd_word(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    if escaped
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'))
    {
        let mut q = String::from("\"");
        for c in escaped.chars() {
            match c {
                '"' => q.push_str("\\\""),
                '\\' => q.push_str("\\\\"),
                _ => q.push(c),
            }
        }
        q.push('"');
        q
    } else {
        escaped
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The service unit for `binary` (an absolute path): the committed
/// `systemd/credport.service` with `ExecStart=<binary> serve`.
///
/// A path with characters special to systemd is quoted; callers check it with
/// [`install`], which refuses relative or non-UTF-8 paths.
pub fn render_systemd_service(binary: &Path) -> String {
    let word = systemd_word(&binary.to_string_lossy());
    SYSTEMD_SERVICE_TEMPLATE.replace(
        &format!("ExecStart={PLACEHOLDER_BINARY} serve"),
        &format!("ExecStart={word} serve"),
    )
}

/// The socket unit listening on `listen` (one `ListenStream=` each): the committed
/// `systemd/credport.socket` with its address replaced. An empty list keeps the default
/// (`127.0.0.1:9911`).
pub fn render_systemd_socket(listen: &[SocketAddr]) -> String {
    if listen.is_empty() {
        return SYSTEMD_SOCKET_TEMPLATE.to_string();
    }
    let lines: String = listen
        .iter()
        .map(|a| format!("ListenStream={a}\n"))
        .collect();
    SYSTEMD_SOCKET_TEMPLATE.replace(PLACEHOLDER_LISTEN, &lines)
}

/// The LaunchAgent for `binary` and `home`: the committed
/// `launchd/dev.credport.agent.plist` with the binary path and the log paths under
/// `<home>/Library/Logs` made absolute (launchd expands neither `~` nor `$HOME`).
pub fn render_launchd_plist(binary: &Path, home: &Path) -> String {
    let bin = xml_escape(&binary.to_string_lossy());
    let home = xml_escape(&home.to_string_lossy());
    // Only the <string> values, not the explanatory comment that names the placeholders.
    let (head, body) = LAUNCHD_PLIST_TEMPLATE
        .split_once("<plist")
        .unwrap_or(("", LAUNCHD_PLIST_TEMPLATE));
    let body = body
        .replace(
            &format!("<string>{PLACEHOLDER_BINARY}</string>"),
            &format!("<string>{bin}</string>"),
        )
        .replace(
            &format!("<string>{PLACEHOLDER_HOME}/"),
            &format!("<string>{home}/"),
        );
    format!("{head}<plist{body}")
}

/// One file install writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    /// Where it goes.
    pub path: PathBuf,
    /// Its full content.
    pub content: String,
}

/// The unit files for `platform`, rendered for `binary` and `home` and (systemd)
/// listening on `listen` (empty: the default address).
pub fn unit_files(
    platform: Platform,
    binary: &Path,
    home: &Path,
    listen: &[SocketAddr],
) -> Vec<UnitFile> {
    match platform {
        Platform::Systemd => {
            let dir = systemd_unit_dir(home);
            vec![
                UnitFile {
                    path: dir.join(SYSTEMD_SERVICE),
                    content: render_systemd_service(binary),
                },
                UnitFile {
                    path: dir.join(SYSTEMD_SOCKET),
                    content: render_systemd_socket(listen),
                },
            ]
        }
        Platform::Launchd => vec![UnitFile {
            path: launchd_plist_path(home),
            content: render_launchd_plist(binary, home),
        }],
    }
}

/// `~/.config/systemd/user`, where systemd looks for user units.
pub fn systemd_unit_dir(home: &Path) -> PathBuf {
    home.join(".config/systemd/user")
}

/// `~/Library/LaunchAgents/dev.credport.agent.plist`.
pub fn launchd_plist_path(home: &Path) -> PathBuf {
    home.join("Library/LaunchAgents")
        .join(format!("{LAUNCHD_LABEL}.plist"))
}

/// Directories install creates besides the unit directory, with their modes: the state
/// directory (the systemd sandbox can only write it if it exists), the launchd log
/// directory.
fn extra_dirs(platform: Platform, home: &Path) -> Vec<(PathBuf, u32)> {
    match platform {
        Platform::Systemd => vec![(home.join(".local/share/credport"), 0o700)],
        Platform::Launchd => vec![(home.join("Library/Logs"), 0o755)],
    }
}

fn launchd_domain() -> String {
    // SAFETY: getuid cannot fail.
    format!("gui/{}", unsafe { libc::getuid() })
}

/// A command install runs, and whether its failure is expected and ignored.
struct Step {
    argv: Vec<String>,
    may_fail: bool,
}

fn step(argv: &[&str]) -> Step {
    Step {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        may_fail: false,
    }
}

fn tolerant(argv: &[&str]) -> Step {
    Step {
        may_fail: true,
        ..step(argv)
    }
}

fn install_steps(platform: Platform, home: &Path) -> Vec<Step> {
    match platform {
        Platform::Systemd => vec![
            step(&["systemctl", "--user", "daemon-reload"]),
            step(&["systemctl", "--user", "enable", SYSTEMD_SOCKET]),
            // Stop the old daemon first: it holds the old socket, and the new one must run
            // the new binary and unit.
            step(&["systemctl", "--user", "stop", SYSTEMD_SERVICE]),
            step(&["systemctl", "--user", "restart", SYSTEMD_SOCKET]),
            // Start now rather than on the first request, so a broken setup shows here.
            step(&["systemctl", "--user", "start", SYSTEMD_SERVICE]),
        ],
        Platform::Launchd => {
            let domain = launchd_domain();
            let target = format!("{domain}/{LAUNCHD_LABEL}");
            let plist = launchd_plist_path(home).to_string_lossy().into_owned();
            vec![
                // Not loaded yet on a first install: failure is expected then.
                tolerant(&["launchctl", "bootout", &target]),
                step(&["launchctl", "enable", &target]),
                step(&["launchctl", "bootstrap", &domain, &plist]),
            ]
        }
    }
}

fn uninstall_steps(platform: Platform) -> Vec<Step> {
    match platform {
        Platform::Systemd => vec![tolerant(&[
            "systemctl",
            "--user",
            "disable",
            "--now",
            SYSTEMD_SOCKET,
            SYSTEMD_SERVICE,
        ])],
        Platform::Launchd => vec![tolerant(&[
            "launchctl",
            "bootout",
            &format!("{}/{LAUNCHD_LABEL}", launchd_domain()),
        ])],
    }
}

fn status_steps(platform: Platform) -> Vec<Step> {
    match platform {
        Platform::Systemd => vec![tolerant(&[
            "systemctl",
            "--user",
            "--no-pager",
            "status",
            SYSTEMD_SOCKET,
            SYSTEMD_SERVICE,
        ])],
        Platform::Launchd => vec![tolerant(&[
            "launchctl",
            "print",
            &format!("{}/{LAUNCHD_LABEL}", launchd_domain()),
        ])],
    }
}

fn shown(argv: &[String]) -> String {
    shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "))
}

type Runner<'a> = &'a mut dyn FnMut(&[&str]) -> io::Result<ExitStatus>;

fn run_steps(
    steps: &[Step],
    dry_run: bool,
    out: &mut dyn Write,
    runner: Runner<'_>,
) -> Result<(), ServiceError> {
    for s in steps {
        let command = shown(&s.argv);
        let note = if s.may_fail {
            " (a failure is ignored)"
        } else {
            ""
        };
        if dry_run {
            writeln!(out, "would run: {command}{note}")?;
            continue;
        }
        writeln!(out, "running: {command}")?;
        out.flush()?;
        let argv: Vec<&str> = s.argv.iter().map(String::as_str).collect();
        match runner(&argv) {
            Ok(status) if status.success() => {}
            Ok(status) if s.may_fail => writeln!(out, "  ({status}; ignored)")?,
            Ok(status) => return Err(ServiceError::Command { command, status }),
            Err(source) if s.may_fail => writeln!(out, "  (cannot run: {source}; ignored)")?,
            Err(source) => return Err(ServiceError::Spawn { command, source }),
        }
    }
    Ok(())
}

fn create_dir(
    path: &Path,
    mode: u32,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<(), ServiceError> {
    if path.is_dir() {
        return Ok(());
    }
    if dry_run {
        writeln!(
            out,
            "would create directory {} (mode {mode:04o})",
            path.display()
        )?;
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|source| ServiceError::CreateDir {
            path: path.to_path_buf(),
            source,
        })?;
    writeln!(out, "created directory {}", path.display())?;
    Ok(())
}

/// Writes a unit file atomically, mode 0644 (the service manager reads it).
fn write_unit(path: &Path, content: &str) -> io::Result<()> {
    crate::fsutil::write_atomic(path, content.as_bytes(), 0o644)
}

/// Installs credport as a service of `platform` and (re)starts it.
///
/// Writes the unit files ([`unit_files`], systemd listening on `listen`, empty for the
/// default) for `binary` (an absolute path) under `home`, creates the directories the
/// sandbox needs, then runs through `runner` (argv in, exit status out):
/// * systemd: `systemctl --user daemon-reload`, `enable credport.socket`,
///   `stop credport.service`, `restart credport.socket`, `start credport.service`;
/// * launchd: `launchctl bootout gui/$UID/dev.credport.agent` (failure ignored: not
///   loaded), `launchctl enable ...`, `launchctl bootstrap gui/$UID <plist>`.
///
/// Running it again rewrites the files and restarts the daemon. With `dry_run`, prints
/// every file in full and every command, and neither writes nor runs anything. Progress
/// goes to `out`.
#[allow(clippy::too_many_arguments)]
pub fn install(
    platform: Platform,
    binary: &Path,
    home: &Path,
    listen: &[SocketAddr],
    dry_run: bool,
    out: &mut dyn Write,
    runner: Runner<'_>,
) -> Result<(), ServiceError> {
    check_binary(binary)?;
    let files = unit_files(platform, binary, home, listen);
    if dry_run {
        writeln!(
            out,
            "dry run: installing credport as a {platform} service would do the following; nothing was written or run"
        )?;
    }
    for (dir, mode) in extra_dirs(platform, home) {
        create_dir(&dir, mode, dry_run, out)?;
    }
    for f in &files {
        let dir = f.path.parent().unwrap_or(Path::new("/"));
        create_dir(dir, 0o755, dry_run, out)?;
        if dry_run {
            writeln!(out, "would write {} (mode 0644):", f.path.display())?;
            out.write_all(f.content.as_bytes())?;
            if !f.content.ends_with('\n') {
                writeln!(out)?;
            }
            writeln!(out, "(end of {})", f.path.display())?;
        } else {
            write_unit(&f.path, &f.content).map_err(|source| ServiceError::Write {
                path: f.path.clone(),
                source,
            })?;
            writeln!(out, "wrote {}", f.path.display())?;
        }
    }
    run_steps(&install_steps(platform, home), dry_run, out, runner)?;
    if !dry_run {
        writeln!(out, "credport is installed as a {platform} service")?;
    }
    Ok(())
}

/// Stops credport, disables it and removes its unit files (systemd: then
/// `daemon-reload`). Nothing installed is not an error. `dry_run` prints instead of acting.
pub fn uninstall(
    platform: Platform,
    home: &Path,
    dry_run: bool,
    out: &mut dyn Write,
    runner: Runner<'_>,
) -> Result<(), ServiceError> {
    let paths = installed_paths(platform, home);
    let present: Vec<&PathBuf> = paths.iter().filter(|p| p.exists()).collect();
    if dry_run {
        writeln!(
            out,
            "dry run: uninstalling the {platform} service would do the following; nothing was removed or run"
        )?;
    }
    if present.is_empty() {
        writeln!(
            out,
            "credport is not installed as a {platform} service (no unit files)"
        )?;
        return Ok(());
    }
    run_steps(&uninstall_steps(platform), dry_run, out, runner)?;
    for p in present {
        if dry_run {
            writeln!(out, "would remove {}", p.display())?;
        } else {
            fs::remove_file(p).or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(ServiceError::Remove {
                    path: p.clone(),
                    source: e,
                }),
            })?;
            writeln!(out, "removed {}", p.display())?;
        }
    }
    if platform == Platform::Systemd {
        run_steps(
            &[step(&["systemctl", "--user", "daemon-reload"])],
            dry_run,
            out,
            runner,
        )?;
    }
    Ok(())
}

/// The unit file paths of `platform` under `home`.
pub fn installed_paths(platform: Platform, home: &Path) -> Vec<PathBuf> {
    match platform {
        Platform::Systemd => {
            let dir = systemd_unit_dir(home);
            vec![dir.join(SYSTEMD_SERVICE), dir.join(SYSTEMD_SOCKET)]
        }
        Platform::Launchd => vec![launchd_plist_path(home)],
    }
}

/// Reports on `out` whether each unit file is installed and whether it matches what
/// [`install`] would write now (for `binary` and `listen`), then asks the service manager
/// (`systemctl --user status`, `launchctl print`; their output goes wherever `runner`
/// sends it). A service that is not running is reported, not an error.
pub fn status(
    platform: Platform,
    binary: &Path,
    home: &Path,
    listen: &[SocketAddr],
    out: &mut dyn Write,
    runner: Runner<'_>,
) -> Result<(), ServiceError> {
    let mut installed = false;
    for f in unit_files(platform, binary, home, listen) {
        let state = match fs::read_to_string(&f.path) {
            Ok(c) if c == f.content => {
                installed = true;
                "installed, up to date".to_string()
            }
            Ok(_) => {
                installed = true;
                "installed, differs from what `credport service install` would write now (run it again to update)".to_string()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => "not installed".to_string(),
            Err(e) => format!("unreadable: {e}"),
        };
        writeln!(out, "{}: {state}", f.path.display())?;
    }
    if !installed {
        writeln!(out, "install it with: credport service install")?;
        return Ok(());
    }
    let mut report = String::new();
    for s in status_steps(platform) {
        let command = shown(&s.argv);
        out.flush()?;
        let argv: Vec<&str> = s.argv.iter().map(String::as_str).collect();
        let _ = match runner(&argv) {
            Ok(st) if st.success() => writeln!(report, "`{command}`: running"),
            Ok(st) => writeln!(report, "`{command}`: not running ({st})"),
            Err(e) => writeln!(report, "cannot run `{command}`: {e}"),
        };
    }
    out.write_all(report.as_bytes())?;
    Ok(())
}

/// Runs `argv` with inherited stdin, stdout and stderr: the runner the CLI passes to
/// [`install`], [`uninstall`] and [`status`].
pub fn run_command(argv: &[&str]) -> io::Result<ExitStatus> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| invalid("empty command".into()))?;
    std::process::Command::new(program).args(args).status()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn activation_variables() {
        let me = std::process::id();
        let none = |p: Option<&str>, f: Option<&str>| {
            activated_listeners_from(p, f, me).unwrap().is_empty()
        };
        assert!(none(None, None));
        assert!(none(Some(&me.to_string()), None));
        assert!(none(None, Some("1")));
        // Meant for another process (inherited): ignored, descriptors untouched.
        assert!(none(Some(&(me + 1).to_string()), Some("2")));
        assert!(none(Some(&me.to_string()), Some("0")));
        let err = activated_listeners_from(Some("x"), Some("1"), me).unwrap_err();
        assert!(err.to_string().contains("LISTEN_PID"), "{err}");
        let err = activated_listeners_from(Some(&me.to_string()), Some("two"), me).unwrap_err();
        assert!(err.to_string().contains("LISTEN_FDS"), "{err}");
        let err = activated_listeners_from(Some(&me.to_string()), Some("99999"), me).unwrap_err();
        assert!(err.to_string().contains("implausibly"), "{err}");
    }

    #[test]
    fn only_listening_tcp_sockets_pass() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        check_tcp_listener(l.as_raw_fd()).unwrap();
        let l6 = std::net::TcpListener::bind("[::1]:0");
        if let Ok(l6) = l6 {
            check_tcp_listener(l6.as_raw_fd()).unwrap();
        }
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = check_tcp_listener(udp.as_raw_fd()).unwrap_err();
        assert!(e.to_string().contains("not a stream"), "{e}");
        let conn = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let e = check_tcp_listener(conn.as_raw_fd()).unwrap_err();
        assert!(e.to_string().contains("not listening"), "{e}");
        let t = tempfile::tempdir().unwrap();
        let ul = std::os::unix::net::UnixListener::bind(t.path().join("s")).unwrap();
        let e = check_tcp_listener(ul.as_raw_fd()).unwrap_err();
        assert!(e.to_string().contains("address family"), "{e}");
        let f = fs::File::open("/dev/null").unwrap();
        let e = check_tcp_listener(f.as_raw_fd()).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
    }

    #[tokio::test]
    async fn bind_takes_adopted_listeners_first() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addrs = adopt(vec![l]).unwrap();
        let a = bind(addrs[0]).await.unwrap();
        assert_eq!(a.local_addr().unwrap(), addrs[0]);
        // Taken once: a second bind of the same address is a fresh bind, which fails.
        assert!(bind(addrs[0]).await.is_err());
        let fresh = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        assert_ne!(fresh.local_addr().unwrap(), addrs[0]);
    }

    #[test]
    fn cloexec_is_set() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = l.as_raw_fd();
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        set_cloexec(fd).unwrap();
        assert_ne!(
            unsafe { libc::fcntl(fd, libc::F_GETFD) } & libc::FD_CLOEXEC,
            0
        );
    }

    #[test]
    fn notify_paths_and_abstract_names() {
        assert!(!notify_to(None, "READY=1").unwrap());
        assert!(!notify_to(Some(OsStr::new("")), "READY=1").unwrap());
        assert!(notify_to(Some(OsStr::new("relative")), "READY=1").is_err());

        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        assert!(notify_to(Some(path.as_os_str()), "READY=1").unwrap());
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("credport-test-{}", std::process::id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let rx = UnixDatagram::bind_addr(&addr).unwrap();
            let msg = reloading_message();
            assert!(notify_to(Some(OsStr::new(&format!("@{name}"))), &msg).unwrap());
            let n = rx.recv(&mut buf).unwrap();
            let got = std::str::from_utf8(&buf[..n]).unwrap();
            let usec = got.strip_prefix("RELOADING=1\nMONOTONIC_USEC=").unwrap();
            assert!(usec.parse::<u64>().unwrap() > 0, "{got}");
        }
    }

    #[test]
    fn committed_units_are_the_rendering_of_the_placeholders() {
        let bin = Path::new(PLACEHOLDER_BINARY);
        assert_eq!(render_systemd_service(bin), SYSTEMD_SERVICE_TEMPLATE);
        assert_eq!(
            render_systemd_socket(&["127.0.0.1:9911".parse().unwrap()]),
            SYSTEMD_SOCKET_TEMPLATE
        );
        assert_eq!(render_systemd_socket(&[]), SYSTEMD_SOCKET_TEMPLATE);
        assert_eq!(
            render_launchd_plist(bin, Path::new(PLACEHOLDER_HOME)),
            LAUNCHD_PLIST_TEMPLATE
        );
        // The placeholders the renderers replace are really there.
        assert!(
            SYSTEMD_SERVICE_TEMPLATE.contains(&format!("ExecStart={PLACEHOLDER_BINARY} serve\n"))
        );
        assert!(SYSTEMD_SOCKET_TEMPLATE.contains(PLACEHOLDER_LISTEN));
        assert!(LAUNCHD_PLIST_TEMPLATE.contains(&format!("<string>{PLACEHOLDER_BINARY}</string>")));
        assert!(LAUNCHD_PLIST_TEMPLATE.contains(&format!(
            "<string>{PLACEHOLDER_HOME}/Library/Logs/credport.log</string>"
        )));
    }

    #[test]
    fn rendering_substitutes_and_escapes() {
        let s = render_systemd_service(Path::new("/opt/my tools/100%/cred$port"));
        assert!(
            s.contains("ExecStart=\"/opt/my tools/100%%/cred$$port\" serve\n"),
            "{s}"
        );
        assert!(!s.contains(PLACEHOLDER_BINARY));
        let s = render_systemd_socket(&[
            "127.0.0.1:9000".parse().unwrap(),
            "[::1]:9000".parse().unwrap(),
        ]);
        assert!(
            s.contains("ListenStream=127.0.0.1:9000\nListenStream=[::1]:9000\n"),
            "{s}"
        );
        assert!(!s.contains("9911\n"));
        let p = render_launchd_plist(
            Path::new("/Users/a&b/bin/credport"),
            Path::new("/Users/a&b"),
        );
        assert!(
            p.contains("<string>/Users/a&amp;b/bin/credport</string>"),
            "{p}"
        );
        assert!(p.contains("<string>/Users/a&amp;b/Library/Logs/credport.log</string>"));
        assert!(!p.contains("<string>/Users/you"));
    }

    fn ok() -> io::Result<ExitStatus> {
        Ok(ExitStatus::from_raw(0))
    }

    #[test]
    fn install_writes_runs_and_is_idempotent() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path();
        let bin = Path::new("/usr/bin/credport");
        for _ in 0..2 {
            let mut ran = Vec::new();
            let mut out = Vec::new();
            install(
                Platform::Systemd,
                bin,
                home,
                &[],
                false,
                &mut out,
                &mut |a| {
                    ran.push(a.join(" "));
                    ok()
                },
            )
            .unwrap();
            assert_eq!(
                ran,
                [
                    "systemctl --user daemon-reload",
                    "systemctl --user enable credport.socket",
                    "systemctl --user stop credport.service",
                    "systemctl --user restart credport.socket",
                    "systemctl --user start credport.service",
                ]
            );
        }
        let unit = home.join(".config/systemd/user/credport.service");
        let text = fs::read_to_string(&unit).unwrap();
        assert!(text.contains("ExecStart=/usr/bin/credport serve\n"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&unit).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let state = home.join(".local/share/credport");
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let leftovers: Vec<_> = fs::read_dir(unit.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");

        let mut out = Vec::new();
        let mut calls = 0;
        status(Platform::Systemd, bin, home, &[], &mut out, &mut |_| {
            calls += 1;
            Ok(ExitStatus::from_raw(3 << 8))
        })
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("credport.service: installed, up to date"),
            "{text}"
        );
        assert!(text.contains("not running"), "{text}");
        assert_eq!(calls, 1);

        let mut ran = Vec::new();
        uninstall(Platform::Systemd, home, false, &mut Vec::new(), &mut |a| {
            ran.push(a.join(" "));
            ok()
        })
        .unwrap();
        assert!(!unit.exists());
        assert_eq!(ran.last().unwrap(), "systemctl --user daemon-reload");
        // Uninstalling again: nothing to do, nothing run.
        uninstall(Platform::Systemd, home, false, &mut Vec::new(), &mut |_| {
            panic!("ran")
        })
        .unwrap();
    }

    #[test]
    fn failures_name_the_command_and_tolerated_ones_are_ignored() {
        let t = tempfile::tempdir().unwrap();
        let bin = Path::new("/usr/bin/credport");
        let err = install(
            Platform::Systemd,
            bin,
            t.path(),
            &[],
            false,
            &mut Vec::new(),
            &mut |a| {
                Ok(ExitStatus::from_raw(if a.contains(&"enable") {
                    1 << 8
                } else {
                    0
                }))
            },
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("`systemctl --user enable credport.socket` failed"),
            "{err}"
        );
        let err = install(
            Platform::Systemd,
            bin,
            t.path(),
            &[],
            false,
            &mut Vec::new(),
            &mut |_| Err(io::Error::new(io::ErrorKind::NotFound, "no systemctl")),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot run `systemctl --user daemon-reload`"),
            "{err}"
        );
        // launchd: bootout of a service that is not loaded fails, and that is fine.
        let mut ran = Vec::new();
        install(
            Platform::Launchd,
            bin,
            t.path(),
            &[],
            false,
            &mut Vec::new(),
            &mut |a| {
                ran.push(a.join(" "));
                Ok(ExitStatus::from_raw(if a[1] == "bootout" {
                    3 << 8
                } else {
                    0
                }))
            },
        )
        .unwrap();
        assert_eq!(ran.len(), 3);
        assert!(ran[2].starts_with("launchctl bootstrap gui/"), "{ran:?}");
        assert!(ran[2].ends_with("/Library/LaunchAgents/dev.credport.agent.plist"));
        let err = install(
            Platform::Systemd,
            Path::new("credport"),
            t.path(),
            &[],
            true,
            &mut Vec::new(),
            &mut |_| ok(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("not an absolute path"), "{err}");
    }

    #[test]
    fn dry_run_prints_everything_and_touches_nothing() {
        let t = tempfile::tempdir().unwrap();
        let bin = Path::new("/opt/credport/bin/credport");
        let mut out = Vec::new();
        install(
            Platform::Launchd,
            bin,
            t.path(),
            &[],
            true,
            &mut out,
            &mut |_| panic!("ran"),
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let plist = launchd_plist_path(t.path());
        assert!(
            text.contains(&format!("would write {} (mode 0644):\n", plist.display())),
            "{text}"
        );
        assert!(
            text.contains(&render_launchd_plist(bin, t.path())),
            "{text}"
        );
        assert!(
            text.contains("would run: launchctl bootstrap gui/"),
            "{text}"
        );
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 0);
    }
}
