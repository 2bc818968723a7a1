//! Readiness notification, the daemon's side: telling the service manager that `serve` is
//! ready, reloading or stopping (`Type=notify`, the `sd_notify(3)` protocol), through the
//! `sd-notify` crate.
//!
//! `serve` sends [`State::Ready`] once it serves, [`State::Reloading`] (with
//! `MONOTONIC_USEC=`, which systemd 253 and newer require) then [`State::Ready`] around a
//! SIGHUP reload, and [`State::Stopping`] on shutdown. Without `$NOTIFY_SOCKET` nothing is
//! sent. The socket must be a path (what systemd has handed services since version 216);
//! the crate does not support the older abstract-namespace names (`@...`).

use sd_notify::NotifyState;

/// A state change `serve` reports to the service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Serving (`READY=1`); also sent when a reload is done.
    Ready,
    /// Reloading every file (`RELOADING=1` and `MONOTONIC_USEC=`); send [`State::Ready`]
    /// when done.
    Reloading,
    /// Shutting down (`STOPPING=1`).
    Stopping,
}

/// The notification fields for `state`. `Reloading` reads `CLOCK_MONOTONIC`, which can
/// fail only on a platform without it.
fn fields(state: State) -> std::io::Result<Vec<NotifyState<'static>>> {
    Ok(match state {
        State::Ready => vec![NotifyState::Ready],
        State::Reloading => vec![NotifyState::Reloading, NotifyState::monotonic_usec_now()?],
        State::Stopping => vec![NotifyState::Stopping],
    })
}

/// The datagram [`notify()`] sends for `state`: one `KEY=VALUE` line per field.
pub fn message(state: State) -> std::io::Result<String> {
    Ok(fields(state)?.iter().map(|f| format!("{f}\n")).collect())
}

/// Sends `state` to the service manager at `$NOTIFY_SOCKET`. Does nothing without the
/// variable; a failure to send is logged at debug level and otherwise ignored, as
/// `sd_notify` callers do (readiness is best effort; systemd's start timeout reports a
/// daemon that never became ready).
pub fn notify(state: State) {
    let sent = fields(state).and_then(|f| sd_notify::notify(&f));
    if let Err(e) = sent {
        tracing::debug!(error = %e, ?state, "cannot notify the service manager");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_protocol_lines() {
        assert_eq!(message(State::Ready).unwrap(), "READY=1\n");
        assert_eq!(message(State::Stopping).unwrap(), "STOPPING=1\n");
        let reloading = message(State::Reloading).unwrap();
        let usec = reloading
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .and_then(|r| r.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("{reloading:?}"));
        assert!(usec.parse::<u64>().unwrap() > 0, "{reloading:?}");
    }
}
