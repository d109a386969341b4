//! Connections opened before the agent started: found in `/proc/<pid>/fd` and the owning
//! network namespace's `/proc/<pid>/net/tcp{,6}`, and added to the kernel's `CONNS` map so
//! keep-alive connections that predate the agent are measured from their next request.
//!
//! A socket is `accepted` when its local port is listening in the same network namespace,
//! `connected` otherwise. Must not: touch sockets of processes the filter excludes.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

use sonde_ebpf_common::{
    ConnInfo, ConnKey,
    http::{conn_kind, role},
};

/// One TCP socket from `/proc/net/tcp{,6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socket {
    /// Local endpoint.
    pub local: SocketAddr,
    /// Remote endpoint.
    pub remote: SocketAddr,
    /// `st` column (1 = ESTABLISHED, 10 = LISTEN).
    pub state: u8,
}

/// Parses `/proc/net/tcp` or `/proc/net/tcp6` into inode → socket.
pub fn parse_tcp_table(text: &str, v6: bool) -> HashMap<u64, Socket> {
    let mut out = HashMap::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 10 {
            continue;
        }
        let (Some(local), Some(remote)) = (endpoint(cols[1], v6), endpoint(cols[2], v6)) else {
            continue;
        };
        let (Ok(state), Ok(inode)) = (u8::from_str_radix(cols[3], 16), cols[9].parse::<u64>())
        else {
            continue;
        };
        if inode != 0 {
            out.insert(
                inode,
                Socket {
                    local,
                    remote,
                    state,
                },
            );
        }
    }
    out
}

/// `0100007F:1F90` (IPv4, host-order words) or 32 hex digits of IPv6 (4 host-order words).
fn endpoint(text: &str, v6: bool) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = if v6 {
        if addr.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for word in 0..4 {
            let w = u32::from_str_radix(&addr[word * 8..word * 8 + 8], 16).ok()?;
            bytes[word * 4..word * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        let v6 = Ipv6Addr::from(bytes);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    } else {
        let w = u32::from_str_radix(addr, 16).ok()?;
        IpAddr::V4(Ipv4Addr::from(w.to_le_bytes()))
    };
    Some(SocketAddr::new(ip, port))
}

/// The `CONNS` entry for an established socket.
pub fn conn_info(socket: &Socket, listening: &HashSet<u16>) -> ConnInfo {
    let mut peer_addr = [0u8; 16];
    let family = match socket.remote.ip() {
        IpAddr::V4(v4) => {
            peer_addr[..4].copy_from_slice(&v4.octets());
            2
        }
        IpAddr::V6(v6) => {
            peer_addr = v6.octets();
            10
        }
    };
    ConnInfo {
        opened_ns: 0,
        peer_addr,
        peer_port: socket.remote.port(),
        family,
        role: if listening.contains(&socket.local.port()) {
            role::ACCEPTED
        } else {
            role::CONNECTED
        },
    }
}

/// Established TCP connections of every process under `proc_root` (one entry per fd),
/// for processes `admit(pid, comm)` accepts.
pub fn existing_connections(
    proc_root: &Path,
    mut admit: impl FnMut(u32, &str) -> bool,
) -> Vec<(ConnKey, ConnInfo)> {
    // Per network namespace: sockets by inode and listening ports.
    let mut namespaces: HashMap<String, (HashMap<u64, Socket>, HashSet<u16>)> = HashMap::new();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
            continue;
        };
        let sockets: Vec<(u32, u64)> = fds
            .flatten()
            .filter_map(|fd| {
                let n = fd.file_name().to_str()?.parse::<u32>().ok()?;
                let target = std::fs::read_link(fd.path()).ok()?;
                let inode = target
                    .to_str()?
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()?;
                Some((n, inode))
            })
            .collect();
        if sockets.is_empty() {
            continue;
        }
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !admit(pid, comm.trim_end()) {
            continue;
        }
        let Ok(netns) = std::fs::read_link(dir.join("ns/net")) else {
            continue;
        };
        let (table, listening) = namespaces
            .entry(netns.to_string_lossy().into_owned())
            .or_insert_with(|| {
                let mut table = HashMap::new();
                for (file, v6) in [("net/tcp", false), ("net/tcp6", true)] {
                    if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
                        table.extend(parse_tcp_table(&text, v6));
                    }
                }
                let listening = table
                    .values()
                    .filter(|s| s.state == 10)
                    .map(|s| s.local.port())
                    .collect();
                (table, listening)
            });
        for (fd, inode) in sockets {
            let Some(socket) = table.get(&inode) else {
                continue;
            };
            if socket.state != 1 {
                continue;
            }
            let key = ConnKey {
                tgid: pid,
                kind: conn_kind::FD,
                id: u64::from(fd),
            };
            out.push((key, conn_info(socket, listening)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn parses_sockets_and_assigns_roles() {
        let t = parse_tcp_table(TCP, false);
        assert_eq!(t.len(), 3);
        assert_eq!(t[&1001].state, 10);
        assert_eq!(t[&1002].local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t[&1002].remote, "127.0.0.1:54321".parse().unwrap());
        let listening: HashSet<u16> = [8080].into();
        let server = conn_info(&t[&1002], &listening);
        assert_eq!(
            (server.role, server.peer_port, server.family),
            (role::ACCEPTED, 54321, 2)
        );
        assert_eq!(&server.peer_addr[..4], &[127, 0, 0, 1]);
        let client = conn_info(&t[&1003], &listening);
        assert_eq!((client.role, client.peer_port), (role::CONNECTED, 8080));
    }

    #[test]
    fn parses_ipv6_and_mapped() {
        let line = "  sl  local_address                         remote_address                        st\n   0: 00000000000000000000000001000000:1F90 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 77 1\n";
        let t = parse_tcp_table(line, true);
        assert_eq!(t[&77].local, "[::1]:8080".parse().unwrap());
        assert_eq!(t[&77].remote, "127.0.0.1:54321".parse().unwrap());
    }

    #[test]
    fn finds_this_process_connection() {
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let me = std::process::id();
        let found = existing_connections(Path::new("/proc"), |pid, _| pid == me);
        let port = listener.local_addr().unwrap().port();
        let local = client.local_addr().unwrap().port();
        assert!(
            found
                .iter()
                .any(|(k, i)| k.tgid == me && i.role == role::CONNECTED && i.peer_port == port),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|(k, i)| k.tgid == me && i.role == role::ACCEPTED && i.peer_port == local),
            "{found:?}"
        );
    }
}
