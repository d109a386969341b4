//! Decoding `TCP_EVENTS` records into [`TcpRecord`]s.
//!
//! Must not: aggregate (that is `http_metrics::tcp`).

use std::net::SocketAddr;

use sonde_ebpf_common::{
    TcpEvent,
    tcp::{kind, owner},
};

use super::http::peer_addr;

/// What happened to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpKind {
    /// Outbound connect succeeded.
    ConnectOk,
    /// Outbound connect failed (refused, timed out, aborted).
    ConnectFailed,
    /// A tracked outbound connection ended.
    Closed,
    /// A segment was retransmitted.
    Retransmit,
}

/// The process behind a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Process id.
    pub tgid: u32,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// comm of the connecting/accepting thread.
    pub comm: String,
    /// Whether the process accepted the connection (inbound) rather than connected it.
    pub inbound: bool,
}

/// One decoded TCP event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRecord {
    /// What happened.
    pub kind: TcpKind,
    /// Connect time (connect outcomes only).
    pub duration_ns: u64,
    /// The process behind the socket, when it was seen connecting or accepting.
    pub owner: Option<Owner>,
    /// Local endpoint.
    pub local: Option<SocketAddr>,
    /// Remote endpoint.
    pub remote: Option<SocketAddr>,
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than a [`TcpEvent`].
    #[error("TCP event record of {len} bytes, expected {expected}")]
    Short {
        /// Record length.
        len: usize,
        /// `size_of::<TcpEvent>()`.
        expected: usize,
    },
    /// An unknown kind.
    #[error("TCP event of unknown kind {0}")]
    Kind(u8),
}

/// Decodes one ring-buffer record.
pub fn decode(record: &[u8]) -> Result<TcpRecord, DecodeError> {
    if record.len() < size_of::<TcpEvent>() {
        return Err(DecodeError::Short {
            len: record.len(),
            expected: size_of::<TcpEvent>(),
        });
    }
    // SAFETY: the record holds at least one `TcpEvent`, a plain-old-data type for which
    // every bit pattern is valid.
    let e: TcpEvent = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let kind = match e.kind {
        kind::CONNECT_OK => TcpKind::ConnectOk,
        kind::CONNECT_FAILED => TcpKind::ConnectFailed,
        kind::CLOSED => TcpKind::Closed,
        kind::RETRANSMIT => TcpKind::Retransmit,
        other => return Err(DecodeError::Kind(other)),
    };
    Ok(TcpRecord {
        kind,
        duration_ns: e.duration_ns,
        owner: (e.tracked != owner::NONE).then(|| Owner {
            tgid: e.tgid,
            cgroup_id: e.cgroup_id,
            comm: String::from_utf8_lossy(e.comm_bytes()).into_owned(),
            inbound: e.tracked == owner::INBOUND,
        }),
        local: peer_addr(e.family, &e.saddr, e.sport),
        remote: peer_addr(e.family, &e.daddr, e.dport),
    })
}

#[cfg(test)]
mod tests {
    use sonde_ebpf_common::COMM_LEN;

    use super::*;

    #[test]
    fn decodes_connect_and_untracked_retransmit() {
        let mut e = TcpEvent {
            ts_ns: 5,
            duration_ns: 1234,
            cgroup_id: 9,
            tgid: 77,
            kind: kind::CONNECT_OK,
            tracked: owner::OUTBOUND,
            family: 2,
            sport: 40000,
            dport: 443,
            state: 0,
            saddr: [0; 16],
            daddr: [0; 16],
            comm: [0; COMM_LEN],
        };
        e.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        e.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        e.comm[..2].copy_from_slice(b"py");
        // SAFETY: viewing a POD value as bytes.
        let b = unsafe {
            std::slice::from_raw_parts((&raw const e).cast::<u8>(), size_of::<TcpEvent>())
        }
        .to_vec();
        let r = decode(&b).unwrap();
        assert_eq!(r.kind, TcpKind::ConnectOk);
        assert_eq!(
            r.owner,
            Some(Owner {
                tgid: 77,
                cgroup_id: 9,
                comm: "py".to_owned(),
                inbound: false
            })
        );
        assert_eq!(r.remote, Some("10.0.0.2:443".parse().unwrap()));
        assert_eq!(r.local, Some("10.0.0.1:40000".parse().unwrap()));
        assert!(decode(&b[..10]).is_err());

        e.kind = kind::RETRANSMIT;
        e.tracked = owner::NONE;
        // SAFETY: as above.
        let b = unsafe {
            std::slice::from_raw_parts((&raw const e).cast::<u8>(), size_of::<TcpEvent>())
        }
        .to_vec();
        let r = decode(&b).unwrap();
        assert_eq!((r.kind, r.owner), (TcpKind::Retransmit, None));
        e.kind = 42;
        // SAFETY: as above.
        let b = unsafe {
            std::slice::from_raw_parts((&raw const e).cast::<u8>(), size_of::<TcpEvent>())
        }
        .to_vec();
        assert_eq!(decode(&b), Err(DecodeError::Kind(42)));
    }
}
