//! Running credport as a service, from both sides (only `install` uses another of them,
//! `units`; nothing is shared through globals):
//!
//! * [`activation`] and [`readiness`] are the daemon's side, used by `credport serve`:
//!   taking the sockets systemd passes (`LISTEN_FDS`) and reporting readiness
//!   (`sd_notify`). `serve` hands the activated listeners to the daemon's start function
//!   as a value.
//! * [`units`] and [`install`](mod@install) are `credport service`'s side: rendering the systemd units
//!   and the launchd plist, and installing, uninstalling and reporting them.
//!
//! ## Design
//! A credential daemon is used all day, so it starts at login and restarts when it fails.
//!
//! * **systemd (Linux)**: two *user* units, `credport.socket` and `credport.service` (the
//!   committed references are `systemd/` in the repository;
//!   [`units::render_systemd_service`] and [`units::render_systemd_socket`] produce the same
//!   text with the real binary path and listen addresses). The socket unit owns the listen
//!   address, so the port exists from login on and the daemon starts on the first request
//!   (socket activation): nothing runs until an SDK asks, a restart or an upgrade never
//!   refuses a connection (the kernel queues them while the new process starts), and no
//!   other program can grab the port while credport is down. `serve` takes the sockets
//!   with [`activation::activated_listeners`] (`LISTEN_FDS`, `LISTEN_PID`) and reports
//!   readiness with [`readiness::notify`] (`Type=notify`: `READY=1` once it serves,
//!   `RELOADING=1` around SIGHUP reloads, `STOPPING=1` on shutdown).
//! * **launchd (macOS)**: one LaunchAgent, `dev.credport.agent`
//!   ([`units::render_launchd_plist`]), with `RunAtLoad` and `KeepAlive` (`SuccessfulExit`
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

pub mod install;
pub mod units;

pub use install::{InstallOptions, Runner, ServiceError, install, run_command, status, uninstall};
pub use units::Platform;
