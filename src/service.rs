//! Running credport as a service: systemd and launchd units, socket activation and readiness
//! notification. (Being written.)
