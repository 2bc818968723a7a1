//! Socket activation, the daemon's side: taking the listening sockets a service manager
//! passes (`LISTEN_PID`, `LISTEN_FDS`, descriptors from 3 on; `sd_listen_fds(3)`).
//!
//! `credport serve` calls [`activated_listeners`] once, before the tokio runtime starts,
//! and hands the listeners it returns to the daemon's start function as a value
//! (`Daemon::start_with_poll`), which serves them instead of binding addresses. Nothing
//! here is kept in a global: the listeners are owned by whoever holds the returned `Vec`.
//!
//! The systemd units that pass the sockets are rendered by [`crate::service::units`].

use std::io;
use std::os::fd::{FromRawFd, RawFd};

/// The first file descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;
/// More passed descriptors than this is taken as a malformed `LISTEN_FDS`.
const MAX_LISTEN_FDS: u32 = 1024;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

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
        let f = std::fs::File::open("/dev/null").unwrap();
        let e = check_tcp_listener(f.as_raw_fd()).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
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
}
