//! Who is at the other end of a connection to the endpoint: the local process (pid,
//! executable, shortened command line) or, for a peer in a container, its address. This is
//! what the audit of every issuance and refusal names (`credport log`, `credport status`,
//! the daemon's `credentials issued` line).
//!
//! Linux: the kernel is asked for the client's socket by its exact address pair (sock_diag
//! netlink, as `ss` does; `/proc/net/tcp*` when that is unavailable), then its inode is
//! found among the open files of the processes this user may inspect (`/proc/<pid>/fd`,
//! recent clients and the newest processes first); the process's short name (`comm`),
//! executable (`exe`) and command line (`cmdline`, joined, secret-looking values masked,
//! cut at [`CMD_MAX`] characters) are read, never its environment. A peer whose socket is
//! not in this network namespace is a container (or another host) and is named by its
//! address. A client that closed before the lookup, or another user's process, stays
//! unknown. Every value read is treated as untrusted text: control characters are escaped.
//!
//! Other platforms (macOS: libproc's `proc_pidfdinfo`) are not implemented yet: the peer is
//! named by its address and says so.
//!
//! The lookup runs once per TCP connection ([`Peer`], created by the accept loop), never
//! per request of a keep-alive connection, on a blocking thread, one at a time per server
//! ([`Lookups`]): connections that open meanwhile are looked up together, with one walk
//! of `/proc` for all of them.
//!
//! A relay (see `credport relay`) forwards requests from containers over its own
//! connections; it names the container client it forwards for in [`RELAY_CLIENT_HEADER`],
//! which the audit records as what the relay says, next to the relay's own process.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The header in which a relay names the client it forwards a request for
/// (`IP:PORT` as the relay saw it). Only the relay sets it; it forwards no client header.
pub const RELAY_CLIENT_HEADER: &str = "x-credport-relay-client";

/// Longest command line recorded, in characters (longer ones end with `…`).
pub const CMD_MAX: usize = 120;

/// How long one lookup may take before the peer is recorded as unknown.
const LOOKUP_DEADLINE: Duration = Duration::from_secs(3);

/// The two ends of an accepted connection, as the accept loop saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    /// The client's address.
    pub peer: SocketAddr,
    /// The daemon's address of this connection.
    pub local: SocketAddr,
}

/// The local process found at the client end of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// Its process id.
    pub pid: u32,
    /// Its short name (`comm`, at most 15 characters on Linux).
    pub name: String,
    /// Its executable, when readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Its command line: arguments joined by spaces (quoted when they hold spaces),
    /// secret-looking values masked, control characters escaped, at most [`CMD_MAX`]
    /// characters.
    pub cmd: String,
}

/// What one connection's lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A local process of this user.
    Process(Process),
    /// No process could be named, and why.
    Unknown(&'static str),
}

/// Why a peer's process is not named.
pub mod unknown {
    /// The socket is not in this host's network namespace.
    pub const ELSEWHERE: &str = "not a process of this host's network namespace (a container or another host): named by its address";
    /// The socket is here but no inspectable process holds it.
    pub const NOT_FOUND: &str =
        "no process of this user holds the connection (it closed, or belongs to another user)";
    /// The lookup took too long.
    pub const TIMED_OUT: &str = "the process lookup timed out";
    /// The platform has no lookup.
    pub const UNSUPPORTED: &str = "naming the process is not supported on this platform yet";
}

/// Who asked: the connection's peer address, the process when found, and the client a
/// relay says it forwards for. Flat, so `credport log --json` reads well with `jq`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// The connection's peer address (`IP:PORT`).
    pub address: String,
    /// The local process's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Its short name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its executable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Its shortened command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Why no process is named (a container peer, a closed connection, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
    /// The request came through a relay: the address of the client the relay says it
    /// forwards for (the relay itself is the process or address above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_for: Option<String>,
}

impl Client {
    /// Who asked, from the connection's address, its lookup's result and the relay's
    /// header value (untrusted text, escaped and cut here).
    pub fn new(address: SocketAddr, identity: &Identity, relay_for: Option<&str>) -> Client {
        let mut c = Client {
            address: address.to_string(),
            relay_for: relay_for.map(|r| escape_cut(r, 64)),
            ..Client::default()
        };
        match identity {
            Identity::Process(p) => {
                c.pid = Some(p.pid);
                c.name = Some(p.name.clone());
                c.exe = p.exe.clone();
                c.cmd = Some(p.cmd.clone());
            }
            Identity::Unknown(why) => c.unknown = Some((*why).to_string()),
        }
        c
    }

    /// One short phrase: `pid 4242 (python3)`, `172.18.0.5:40112 (not local)`, with
    /// `container 172.18.0.9:5000 via relay ...` in front for a relayed request.
    pub fn summary(&self) -> String {
        let me = match (self.pid, &self.name) {
            (Some(pid), Some(name)) => format!("pid {pid} ({name})"),
            (Some(pid), None) => format!("pid {pid}"),
            _ if self.unknown.as_deref() == Some(unknown::ELSEWHERE) => {
                format!("{} (not local)", self.address)
            }
            _ => format!("{} (process unknown)", self.address),
        };
        match &self.relay_for {
            Some(r) => format!("container {r} via relay {me}"),
            None => me,
        }
    }
}

/// One connection's peer, looked up at most once, lazily (on the first credentials
/// request), off the request path. Shared by the connection's requests.
#[derive(Debug)]
pub struct Peer {
    conn: Conn,
    lookups: Arc<Lookups>,
    started: AtomicBool,
    found: tokio::sync::watch::Sender<Option<Identity>>,
    /// The connection's [`Client`] once known (for requests not sent through a relay,
    /// whose client is the same for every request of the connection).
    client: std::sync::OnceLock<Arc<Client>>,
}

/// One server's process lookups: the connections waiting for one, looked up together.
///
/// Connections that open while a lookup runs (a load generator's 64, an SDK's pool) are
/// all looked up by the next one: the kernel is asked for each socket, and then a single
/// walk of `/proc` finds every holder, reading each process's open files once, instead
/// of one walk per connection.
#[derive(Debug, Default)]
pub struct Lookups {
    waiting: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    peers: Vec<Arc<Peer>>,
    /// A task is looking up (it takes every waiting peer before it ends).
    running: bool,
}

impl Lookups {
    /// A server's lookups; none is waiting.
    pub fn new() -> Arc<Lookups> {
        Arc::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `peer`; starts the lookup task unless one is running. Needs a tokio runtime.
    fn queue(self: &Arc<Self>, peer: Arc<Peer>) {
        let start = {
            let mut w = self.lock();
            w.peers.push(peer);
            !std::mem::replace(&mut w.running, true)
        };
        if start {
            let me = self.clone();
            tokio::spawn(async move { me.run().await });
        }
    }

    /// Looks up every waiting peer, a batch at a time, until none is left.
    async fn run(self: Arc<Self>) {
        /// However the task ends (its runtime shutting down included), the next peer
        /// queued starts a new one.
        struct Ended<'a>(&'a Lookups);
        impl Drop for Ended<'_> {
            fn drop(&mut self) {
                self.0.lock().running = false;
            }
        }
        let ended = Ended(&self);
        loop {
            let batch = {
                let mut w = self.lock();
                if w.peers.is_empty() {
                    w.running = false;
                    drop(w);
                    // Ended here: a task started from now on is the next one's.
                    std::mem::forget(ended);
                    return;
                }
                std::mem::take(&mut w.peers)
            };
            let conns: Vec<Conn> = batch.iter().map(|p| p.conn).collect();
            let started = std::time::Instant::now();
            let lookup = tokio::task::spawn_blocking(move || identify_all(&conns));
            let found = match tokio::time::timeout(LOOKUP_DEADLINE, lookup).await {
                Ok(Ok(found)) if found.len() == batch.len() => found,
                _ => vec![Identity::Unknown(unknown::TIMED_OUT); batch.len()],
            };
            let took_us = started.elapsed().as_micros() as u64;
            for (peer, identity) in batch.iter().zip(found) {
                tracing::debug!(
                    peer = %peer.conn.peer,
                    found = matches!(identity, Identity::Process(_)),
                    took_us,
                    batch = batch.len(),
                    "client process lookup"
                );
                peer.found.send_replace(Some(identity));
            }
        }
    }
}

impl Peer {
    /// The peer of a connection with these ends, looked up (when asked) by `lookups`;
    /// nothing is looked up yet.
    pub fn new(conn: Conn, lookups: &Arc<Lookups>) -> Arc<Peer> {
        Arc::new(Peer {
            conn,
            lookups: lookups.clone(),
            started: AtomicBool::new(false),
            found: tokio::sync::watch::Sender::new(None),
            client: std::sync::OnceLock::new(),
        })
    }

    /// The connection's ends.
    pub fn conn(&self) -> Conn {
        self.conn
    }

    /// Queues the lookup unless it was queued already; returns at once. Needs a tokio
    /// runtime.
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        self.lookups.queue(self.clone());
    }

    /// The lookup's result, waiting for it at most `within` (`None` if not known by then).
    /// Starts the lookup if needed.
    pub async fn identity(self: &Arc<Self>, within: Duration) -> Option<Identity> {
        self.start();
        let mut rx = self.found.subscribe();
        let found = tokio::time::timeout(within, rx.wait_for(Option::is_some))
            .await
            .ok()?
            .ok()?;
        found.clone()
    }
}

impl Peer {
    /// Who asked, waiting for the lookup at most `within` (`None` if not known by then).
    /// A request without `relay_for` gets the connection's one shared [`Client`], built
    /// once: later requests of a keep-alive connection copy nothing.
    pub async fn client(
        self: &Arc<Self>,
        within: Duration,
        relay_for: Option<&str>,
    ) -> Option<Arc<Client>> {
        if relay_for.is_none()
            && let Some(c) = self.client.get()
        {
            return Some(c.clone());
        }
        let id = self.identity(within).await?;
        let c = Arc::new(Client::new(self.conn.peer, &id, relay_for));
        if relay_for.is_none() {
            let _ = self.client.set(c.clone());
        }
        Some(c)
    }
}

/// Names the processes at the client ends of `conns`, in their order, with one walk of
/// `/proc` for all of them (blocking).
pub fn identify_all(conns: &[Conn]) -> Vec<Identity> {
    #[cfg(target_os = "linux")]
    {
        linux::identify_all(conns)
    }
    #[cfg(not(target_os = "linux"))]
    {
        vec![Identity::Unknown(unknown::UNSUPPORTED); conns.len()]
    }
}

pub fn escape_cut(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut n = 0;
    for c in text.chars() {
        let piece: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        let len = piece.chars().count();
        if n + len > max {
            out.push('…');
            return out;
        }
        out.push_str(&piece);
        n += len;
    }
    out
}

/// Words that make a flag's or a variable's value a secret to mask.
const SECRET_WORDS: [&str; 7] = [
    "password", "passwd", "secret", "token", "apikey", "api-key", "api_key",
];

fn names_a_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| n.contains(w))
}

/// A command line for the audit: arguments (raw `argv` bytes, lossily decoded) joined by
/// spaces, each quoted when it holds whitespace or quotes or is empty; the value of a
/// flag or `NAME=VALUE` whose name contains password, secret, token or api-key, the
/// password of a URL, `Authorization:`/`Cookie:` header values and credport tokens masked
/// as `***`; control characters escaped; cut at `max`
/// characters with `…`. Argument values come from the process and are untrusted.
pub fn shorten_cmd<'a>(argv: impl IntoIterator<Item = &'a [u8]>, max: usize) -> String {
    let mut words = Vec::new();
    let mut mask_next = false;
    for raw in argv {
        let arg = String::from_utf8_lossy(raw);
        if mask_next && !arg.starts_with('-') {
            mask_next = false;
            words.push("***".to_string());
            continue;
        }
        mask_next = false;
        let arg = if let Some((name, _)) = arg.split_once('=')
            && names_a_secret(name)
        {
            format!("{name}=***")
        } else if arg.starts_with('-') && names_a_secret(&arg) {
            mask_next = true;
            arg.into_owned()
        } else {
            mask_inline(&mask_url_password(&arg))
        };
        let needs_quotes = arg.is_empty()
            || arg
                .chars()
                .any(|c| c.is_whitespace() || c == '\'' || c == '"');
        words.push(if needs_quotes {
            format!("'{}'", arg.replace('\'', r"'\''"))
        } else {
            arg
        });
    }
    escape_cut(&words.join(" "), max)
}

/// Header values that are credentials (`Authorization: ...`, `Cookie: ...`, as in
/// `curl -H`) and credport tokens (`cpt1.…`) anywhere in an argument, masked.
fn mask_inline(arg: &str) -> String {
    let lower = arg.to_ascii_lowercase();
    for header in ["authorization:", "cookie:"] {
        if let Some(i) = lower.find(header) {
            return format!("{} ***", &arg[..i + header.len()]);
        }
    }
    let mut out = String::new();
    let mut rest = arg;
    while let Some(i) = rest.find("cpt1.") {
        out.push_str(&rest[..i]);
        out.push_str("cpt1.***");
        let tail = &rest[i + 5..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.=".contains(c)))
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// `scheme://user:PASSWORD@host...` with the password masked.
fn mask_url_password(arg: &str) -> String {
    if let Some(i) = arg.find("://") {
        let rest = &arg[i + 3..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            return format!("{}://{}:***{}", &arg[..i], &rest[..colon], &rest[at..]);
        }
    }
    arg.to_string()
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::{HashMap, HashSet, VecDeque};
    use std::io::Read;
    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::Mutex;

    use super::{CMD_MAX, Conn, Identity, Process, escape_cut, shorten_cmd, unknown};

    /// Longest `cmdline` read, in bytes.
    const CMDLINE_READ: u64 = 8 * 1024;

    /// `/proc/net/tcp*`'s hex form of an address: 32-bit words in host (little-endian) order.
    pub(super) fn proc_hex(addr: SocketAddr) -> String {
        let words: Vec<String> = match addr {
            SocketAddr::V4(a) => vec![format!("{:08X}", u32::from_le_bytes(a.ip().octets()))],
            SocketAddr::V6(a) => a
                .ip()
                .octets()
                .chunks(4)
                .map(|c| format!("{:08X}", u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        };
        format!("{}:{:04X}", words.concat(), addr.port())
    }

    /// The inode of the client's socket of `conn` in a `/proc/net/tcp*` table: `None` when
    /// the connection is not in it, `Some(0)` for a socket without an owner (closed).
    pub(super) fn socket_inode(table: &str, conn: Conn) -> Option<u64> {
        let (local, remote) = (proc_hex(conn.peer), proc_hex(conn.local));
        table.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 9 && f[1].eq_ignore_ascii_case(&local) && f[2].eq_ignore_ascii_case(&remote))
                .then(|| f[9].parse().ok())
                .flatten()
        })
    }

    pub(super) fn identify_all(conns: &[Conn]) -> Vec<Identity> {
        // The socket of each connection's client end: its inode, or why there is none.
        let inodes: Vec<Result<u64, Identity>> = conns.iter().map(|c| inode(*c)).collect();
        let wanted: HashSet<u64> = inodes.iter().filter_map(|i| i.clone().ok()).collect();
        let held = holders(&wanted);
        let mut described: HashMap<u32, Process> = HashMap::new();
        inodes
            .into_iter()
            .map(|found| -> Result<Identity, Identity> {
                let inode = found?;
                let pid = *held
                    .get(&inode)
                    .ok_or(Identity::Unknown(unknown::NOT_FOUND))?;
                let p = described
                    .entry(pid)
                    .or_insert_with(|| describe(pid, &Path::new("/proc").join(pid.to_string())));
                Ok(Identity::Process(p.clone()))
            })
            .map(|r| r.unwrap_or_else(|why| why))
            .collect()
    }

    /// The inode of the client's socket of `conn`, or why it has none (not in this network
    /// namespace, closed, no way to ask).
    fn inode(conn: Conn) -> Result<u64, Identity> {
        // A v4 client of a dual-stack listener is an IPv4 socket on its side.
        let canonical = |a: SocketAddr| match a {
            SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(v4.into(), v6.port()),
                None => a,
            },
            v4 => v4,
        };
        let conn = Conn {
            peer: canonical(conn.peer),
            local: canonical(conn.local),
        };
        let inode = match diag_inode(conn) {
            Ok(found) => found,
            // No sock_diag (a kernel without inet_diag): the text table, slower.
            Err(_) => {
                let table = match conn.peer {
                    SocketAddr::V4(_) => "/proc/net/tcp",
                    SocketAddr::V6(_) => "/proc/net/tcp6",
                };
                let Ok(table) = std::fs::read_to_string(table) else {
                    return Err(Identity::Unknown(unknown::UNSUPPORTED));
                };
                socket_inode(&table, conn)
            }
        };
        match inode {
            None => Err(Identity::Unknown(unknown::ELSEWHERE)),
            Some(0) => Err(Identity::Unknown(unknown::NOT_FOUND)),
            Some(inode) => Ok(inode),
        }
    }

    /// `SOCK_DIAG_BY_FAMILY`, `NLM_F_REQUEST`, `NLMSG_ERROR`, `NETLINK_SOCK_DIAG` (the
    /// kernel's ABI, linux/sock_diag.h and linux/netlink.h).
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 1;
    const NLMSG_ERROR: u16 = 2;
    const NETLINK_SOCK_DIAG: libc::c_int = 4;

    /// The inode of the client's socket of `conn`, asked of the kernel by its exact address
    /// pair (sock_diag netlink, as `ss` does; one socket, not a walk of every socket as
    /// reading `/proc/net/tcp` is): `Ok(None)` when this network namespace has no such
    /// socket, `Ok(Some(0))` for one without an owner, an error when sock_diag is not
    /// available.
    pub(super) fn diag_inode(conn: Conn) -> std::io::Result<Option<u64>> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let (family, src, dst) = match (conn.peer, conn.local) {
            (SocketAddr::V4(p), SocketAddr::V4(l)) => {
                let pad = |o: [u8; 4]| {
                    let mut a = [0u8; 16];
                    a[..4].copy_from_slice(&o);
                    a
                };
                (libc::AF_INET, pad(p.ip().octets()), pad(l.ip().octets()))
            }
            (SocketAddr::V6(p), SocketAddr::V6(l)) => {
                (libc::AF_INET6, p.ip().octets(), l.ip().octets())
            }
            _ => return Err(std::io::Error::other("mixed address families")),
        };
        // nlmsghdr (16 bytes) + inet_diag_req_v2 (56 bytes).
        let mut req = Vec::with_capacity(72);
        req.extend_from_slice(&72u32.to_ne_bytes());
        req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        req.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        req.extend_from_slice(&[family as u8, libc::IPPROTO_TCP as u8, 0, 0]);
        req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every TCP state
        req.extend_from_slice(&conn.peer.port().to_be_bytes());
        req.extend_from_slice(&conn.local.port().to_be_bytes());
        req.extend_from_slice(&src);
        req.extend_from_slice(&dst);
        req.extend_from_slice(&0u32.to_ne_bytes()); // any interface
        req.extend_from_slice(&u32::MAX.to_ne_bytes()); // INET_DIAG_NOCOOKIE
        req.extend_from_slice(&u32::MAX.to_ne_bytes());
        debug_assert_eq!(req.len(), 72);

        // SAFETY: plain syscalls on a socket this function owns; every buffer passed is
        // valid for the length given.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let timeout = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: as above.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        // SAFETY: an all-zero sockaddr_nl is valid (the kernel's address).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: as above.
        let sent = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = [0u8; 8192];
        // SAFETY: as above.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        parse_diag_answer(&buf[..n as usize])
    }

    /// The inode in a sock_diag answer: an `inet_diag_msg` (inode at byte 68 of it), or
    /// an error message (`ENOENT`: no such socket).
    pub(super) fn parse_diag_answer(msg: &[u8]) -> std::io::Result<Option<u64>> {
        let u32_at = |i: usize| {
            msg.get(i..i + 4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        let short = || std::io::Error::other("short sock_diag answer");
        let kind = msg
            .get(4..6)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]))
            .ok_or_else(short)?;
        match kind {
            SOCK_DIAG_BY_FAMILY => Ok(Some(u64::from(u32_at(16 + 68).ok_or_else(short)?))),
            NLMSG_ERROR => {
                let errno = -(u32_at(16).ok_or_else(short)? as i32);
                if errno == libc::ENOENT {
                    Ok(None)
                } else {
                    Err(std::io::Error::from_raw_os_error(errno))
                }
            }
            other => Err(std::io::Error::other(format!(
                "unexpected sock_diag answer type {other}"
            ))),
        }
    }

    /// Processes that held a client socket lately, most recent first: a client that
    /// connects again (a polling tool, an SDK opening a new connection) is found by
    /// reading one `fd` directory instead of all of them.
    static RECENT: Mutex<VecDeque<u32>> = Mutex::new(VecDeque::new());

    /// How many recent client processes are checked first.
    const RECENT_KEPT: usize = 8;

    /// The process (other than this one) holding each socket of `wanted`, by inode: recent
    /// clients first, then the newest processes first (highest pids, until the pids wrap),
    /// since a client is usually a process started moments ago. Each process's open files
    /// are read once, and the walk stops when every socket is found.
    fn holders(wanted: &HashSet<u64>) -> HashMap<u64, u32> {
        let mut held = HashMap::new();
        if wanted.is_empty() {
            return held;
        }
        let scan = |pid: u32, held: &mut HashMap<u64, u32>| {
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                return;
            };
            for fd in fds.flatten() {
                if let Ok(target) = std::fs::read_link(fd.path())
                    && let Some(inode) = socket_of(target.as_os_str())
                    && wanted.contains(&inode)
                {
                    held.insert(inode, pid);
                    if held.len() == wanted.len() {
                        return;
                    }
                }
            }
        };
        let recent: Vec<u32> = RECENT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        for pid in &recent {
            if held.len() == wanted.len() {
                break;
            }
            scan(*pid, &mut held);
        }
        if held.len() < wanted.len() {
            let me = std::process::id();
            let mut pids: Vec<u32> = std::fs::read_dir("/proc")
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                        .filter(|pid| *pid != me && !recent.contains(pid))
                        .collect()
                })
                .unwrap_or_default();
            pids.sort_unstable_by(|a, b| b.cmp(a));
            for pid in pids {
                if held.len() == wanted.len() {
                    break;
                }
                scan(pid, &mut held);
            }
        }
        let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
        for pid in held.values() {
            if !recent.contains(pid) {
                recent.push_front(*pid);
            }
        }
        recent.truncate(RECENT_KEPT);
        held
    }

    /// The inode of a `socket:[N]` link target.
    pub(super) fn socket_of(target: &std::ffi::OsStr) -> Option<u64> {
        target
            .to_str()?
            .strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    }

    /// Name, executable and command line of process `pid` (its `/proc` directory `dir`).
    pub(super) fn describe(pid: u32, dir: &Path) -> Process {
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let exe = std::fs::read_link(dir.join("exe"))
            .ok()
            .map(|p| escape_cut(&p.to_string_lossy(), 200));
        let mut raw = Vec::new();
        if let Ok(f) = std::fs::File::open(dir.join("cmdline")) {
            let _ = f.take(CMDLINE_READ).read_to_end(&mut raw);
        }
        let argv = raw
            .strip_suffix(b"\0")
            .unwrap_or(&raw)
            .split(|b| *b == 0)
            .filter(|_| !raw.is_empty());
        Process {
            pid,
            name: escape_cut(comm.trim_end_matches('\n'), 32),
            exe,
            cmd: shorten_cmd(argv, CMD_MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_joined_quoted_masked_and_cut() {
        let argv: Vec<&[u8]> = vec![
            b"python3",
            b"-c",
            b"print('hi there')",
            b"--password",
            b"hunter2",
            b"--api-key=abc",
            b"DB_TOKEN=xyz",
            b"https://me:pw@example.com/x",
            b"",
            b"bell\x07",
        ];
        assert_eq!(
            shorten_cmd(argv, 500),
            r#"python3 -c 'print('\''hi there'\'')' --password *** --api-key=*** DB_TOKEN=*** https://me:***@example.com/x '' bell\u{7}"#
        );
        // curl's header and a credport token anywhere.
        assert_eq!(
            shorten_cmd(
                [
                    &b"curl"[..],
                    b"-H",
                    b"Authorization: cpt1.b3Jk.ZGV2.abc",
                    b"--header=authorization:x",
                    b"http://h/?t=cpt1.b3Jk.ZGV2.mac_-x&y=1",
                ],
                500
            ),
            "curl -H 'Authorization: ***' '--header=authorization: ***' http://h/?t=cpt1.***&y=1"
        );
        // A flag after a secret flag is not its value.
        assert_eq!(
            shorten_cmd([&b"x"[..], b"--token", b"--verbose"], 500),
            "x --token --verbose"
        );
        let long = "a".repeat(300);
        let cut = shorten_cmd([long.as_bytes()], CMD_MAX);
        assert_eq!(cut.chars().count(), CMD_MAX + 1, "{cut}");
        assert!(cut.ends_with('…'));
        // Not valid UTF-8: decoded lossily, never a panic.
        assert_eq!(shorten_cmd([&b"\xff\xfe"[..]], 10), "\u{fffd}\u{fffd}");
        // An escape is never cut in half.
        assert_eq!(escape_cut("ab\n", 3), "ab…");
    }

    #[test]
    fn summaries() {
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let p = Identity::Process(Process {
            pid: 42,
            name: "python3".into(),
            exe: Some("/usr/bin/python3.11".into()),
            cmd: "python3 x.py".into(),
        });
        assert_eq!(Client::new(addr, &p, None).summary(), "pid 42 (python3)");
        let far: SocketAddr = "172.18.0.5:40112".parse().unwrap();
        let c = Client::new(far, &Identity::Unknown(unknown::ELSEWHERE), None);
        assert_eq!(c.summary(), "172.18.0.5:40112 (not local)");
        let relayed = Client::new(addr, &p, Some("172.18.0.9:5000\n"));
        assert_eq!(
            relayed.summary(),
            r"container 172.18.0.9:5000\n via relay pid 42 (python3)"
        );
        let json = serde_json::to_value(&relayed).unwrap();
        assert_eq!(json["pid"], 42);
        assert_eq!(json["exe"], "/usr/bin/python3.11");
        assert!(json.get("unknown").is_none());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn diag_answers_parse_without_panics() {
        let mut ok = vec![0u8; 16 + 72];
        ok[4..6].copy_from_slice(&20u16.to_ne_bytes());
        ok[84..88].copy_from_slice(&4242u32.to_ne_bytes());
        assert_eq!(linux::parse_diag_answer(&ok).unwrap(), Some(4242));
        let mut missing = vec![0u8; 36];
        missing[4..6].copy_from_slice(&2u16.to_ne_bytes());
        missing[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        assert_eq!(linux::parse_diag_answer(&missing).unwrap(), None);
        for bad in [&[][..], &ok[..20], &[0u8; 6][..]] {
            assert!(linux::parse_diag_answer(bad).is_err());
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn hex_forms() {
        assert_eq!(
            linux::proc_hex("127.0.0.1:9911".parse().unwrap()),
            "0100007F:26B7"
        );
        assert_eq!(
            linux::proc_hex("[::1]:80".parse().unwrap()),
            "00000000000000000000000001000000:0050"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn one_lookup_names_every_connection_of_a_batch() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        // One child process holding two connections (bash's /dev/tcp), as a load generator
        // or an SDK's connection pool does.
        let mut child = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "exec 3<>/dev/tcp/127.0.0.1/{port} 4<>/dev/tcp/127.0.0.1/{port}; read -t 20 -u 3 x"
            ))
            .spawn()
            .expect("bash");
        let mut conns = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..2 {
            let (s, peer) = l.accept().unwrap();
            conns.push(Conn {
                peer,
                local: l.local_addr().unwrap(),
            });
            servers.push(s);
        }
        // Beside them: a connection within this process (never named: the daemon does not
        // audit itself) and one from another network namespace.
        let own = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_own_server, own_peer) = l.accept().unwrap();
        assert_eq!(own_peer, own.local_addr().unwrap());
        conns.push(Conn {
            peer: own_peer,
            local: l.local_addr().unwrap(),
        });
        conns.push(Conn {
            peer: "10.255.255.1:1".parse().unwrap(),
            local: l.local_addr().unwrap(),
        });
        let mut found = identify_all(&conns);
        // As in the test below: a process another test forks holds this process's
        // connection until it execs.
        for _ in 0..20 {
            if found[2] == Identity::Unknown(unknown::NOT_FOUND) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            found = identify_all(&conns);
        }
        drop(servers);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found.len(), 4, "{found:?}");
        for f in &found[..2] {
            match f {
                Identity::Process(p) => {
                    assert_eq!(p.pid, child.id(), "{found:?}");
                    assert_eq!(p.name, "bash", "{found:?}");
                }
                other => panic!("the child's connection was not named: {other:?}"),
            }
        }
        assert_eq!(found[2], Identity::Unknown(unknown::NOT_FOUND));
        assert_eq!(found[3], Identity::Unknown(unknown::ELSEWHERE));
        assert_eq!(
            linux::socket_of(std::ffi::OsStr::new("socket:[4242]")),
            Some(4242)
        );
        for not in ["pipe:[4242]", "socket:[]", "socket:[42", "/dev/null"] {
            assert_eq!(linux::socket_of(std::ffi::OsStr::new(not)), None, "{not}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn finds_the_connection_and_describes_a_process() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_server, peer) = l.accept().unwrap();
        let conn = Conn {
            peer,
            local: l.local_addr().unwrap(),
        };
        assert_eq!(peer, client.local_addr().unwrap());
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        assert!(
            linux::socket_inode(&table, conn).is_some_and(|i| i > 0),
            "{table}"
        );
        // identify skips this process (the daemon never audits itself), so a connection
        // within one process is found in the table but attributed to no one. (A test
        // spawning a process at the same moment holds a copy of every descriptor between
        // its fork and exec, and would be named: so the answer is the one once that passed.)
        let identify = |conn| identify_all(&[conn]).pop().unwrap();
        let mut own = identify(conn);
        for _ in 0..20 {
            if own == Identity::Unknown(unknown::NOT_FOUND) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            own = identify(conn);
        }
        assert_eq!(own, Identity::Unknown(unknown::NOT_FOUND));
        // A connection that is not in this namespace's table.
        let elsewhere = Conn {
            peer: "10.255.255.1:1".parse().unwrap(),
            local: conn.local,
        };
        assert_eq!(identify(elsewhere), Identity::Unknown(unknown::ELSEWHERE));
        // This process, described as the daemon would describe a client.
        let me = std::process::id();
        let p = linux::describe(me, std::path::Path::new("/proc/self"));
        assert_eq!(p.pid, me);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(p.exe.as_deref(), Some(exe.to_string_lossy().as_ref()));
        let first = std::env::args().next().unwrap();
        assert!(
            p.cmd.starts_with(&first[..first.len().min(CMD_MAX)]),
            "{p:?}"
        );
        assert!(!p.name.is_empty());
    }
}
