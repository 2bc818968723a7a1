//! Which local process is at the other end of a loopback TCP connection, for the audit
//! of issuances in `credport status` ("last issued to pid 4242 (python3)").
//!
//! Linux only, best effort: the client's socket is found in `/proc/net/tcp` (or `tcp6`)
//! by its address pair, then its inode among the open files of the processes this user
//! may inspect (`/proc/<pid>/fd`). Only the process's short name (`/proc/<pid>/comm`) is
//! reported, never its command line, which may hold secrets. A client that closed its
//! connection before the scan, or another user's process, stays unknown. The scan runs off
//! the request path (a blocking task, throttled per scope by the caller).

use std::net::SocketAddr;

/// The two ends of an accepted connection, as the accept loop saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    /// The client's address.
    pub peer: SocketAddr,
    /// The daemon's address of this connection.
    pub local: SocketAddr,
}

/// `/proc/net/tcp*`'s hex form of an address: 32-bit words in host (little-endian) order.
fn proc_hex(addr: SocketAddr) -> String {
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

/// The inode of the client's socket of `conn` in a `/proc/net/tcp*` table.
fn socket_inode(table: &str, conn: Conn) -> Option<u64> {
    let (local, remote) = (proc_hex(conn.peer), proc_hex(conn.local));
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[1].eq_ignore_ascii_case(&local) && f[2].eq_ignore_ascii_case(&remote))
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

/// `pid N (comm)` of the local process holding the client end of `conn`, if found.
pub fn process_of(conn: Conn) -> Option<String> {
    if !conn.peer.ip().is_loopback() {
        return None;
    }
    let table = match conn.peer {
        SocketAddr::V4(_) => "/proc/net/tcp",
        SocketAddr::V6(_) => "/proc/net/tcp6",
    };
    let inode = socket_inode(&std::fs::read_to_string(table).ok()?, conn)?;
    let wanted = format!("socket:[{inode}]");
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let found = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == wanted.as_str())
        });
        if found {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            let comm: String = comm
                .trim()
                .chars()
                .filter(|c| !c.is_control())
                .take(32)
                .collect();
            return Some(format!("pid {pid} ({comm})"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_forms() {
        assert_eq!(proc_hex("127.0.0.1:9911".parse().unwrap()), "0100007F:26B7");
        assert_eq!(
            proc_hex("[::1]:80".parse().unwrap()),
            "00000000000000000000000001000000:0050"
        );
    }

    #[test]
    fn finds_this_process_for_its_own_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_server, peer) = l.accept().unwrap();
        let conn = Conn {
            peer,
            local: l.local_addr().unwrap(),
        };
        assert_eq!(peer, client.local_addr().unwrap());
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        assert!(socket_inode(&table, conn).is_some(), "{table}");
        // process_of skips this process (the daemon never audits itself), so a connection
        // within one process is found in the table but attributed to no one.
        assert_eq!(process_of(conn), None);
    }
}
