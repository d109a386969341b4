//! A minimal HTTP/1.1 GET for the runtime APIs (Docker over a unix socket, the kubelet over
//! TCP): one request per connection, `Content-Length`, chunked or read-to-close bodies, a
//! time limit, and a cap on the body size.
//!
//! Must not: follow redirects, speak TLS or keep connections.

use std::{
    io::{Read, Write},
    time::Duration,
};

/// Largest body accepted (a kubelet pod list of a busy node fits).
const MAX_BODY: usize = 64 << 20;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting, writing or reading failed.
    #[error("{target}: {source}")]
    Io {
        /// What was asked.
        target: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The response was not a valid HTTP/1.x response.
    #[error("{target}: malformed response: {problem}")]
    Malformed {
        /// What was asked.
        target: String,
        /// What was wrong.
        problem: String,
    },
    /// A status other than 200.
    #[error("{target}: HTTP status {status}")]
    Status {
        /// What was asked.
        target: String,
        /// The status code.
        status: u16,
    },
}

/// Sends `GET path` on `stream` and returns the body of a 200 response.
pub fn get<S: Read + Write>(
    mut stream: S,
    host: &str,
    path: &str,
    target: &str,
) -> Result<Vec<u8>, HttpError> {
    let io = |source| HttpError::Io {
        target: target.to_owned(),
        source,
    };
    // One write: a server may answer (and close) as soon as it has read the request head.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sonde-agent\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_BODY as u64 + 64 * 1024)
        .read_to_end(&mut raw)
        .map_err(io)?;
    parse_response(&raw, target)
}

/// Parses a whole HTTP/1.x response.
pub fn parse_response(raw: &[u8], target: &str) -> Result<Vec<u8>, HttpError> {
    let malformed = |problem: &str| HttpError::Malformed {
        target: target.to_owned(),
        problem: problem.to_owned(),
    };
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| malformed("no end of headers"))?;
    let head =
        std::str::from_utf8(&raw[..split]).map_err(|_| malformed("headers are not UTF-8"))?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.get(2..5))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed("bad status line"))?;
    if status != 200 {
        return Err(HttpError::Status {
            target: target.to_owned(),
            status,
        });
    }
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| malformed("bad Content-Length"))?,
            );
        }
    }
    if chunked {
        return dechunk(body).ok_or_else(|| malformed("bad chunked encoding"));
    }
    match length {
        Some(n) if body.len() >= n => Ok(body[..n].to_vec()),
        Some(_) => Err(malformed("body shorter than Content-Length")),
        None => Ok(body.to_vec()),
    }
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if body.len() < size + 2 || out.len() + size > MAX_BODY {
            return None;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// Applies `timeout` to reads and writes of a stream.
pub trait Timeouts {
    /// Sets both timeouts.
    fn set_timeouts(&self, timeout: Duration) -> std::io::Result<()>;
}

impl Timeouts for std::os::unix::net::UnixStream {
    fn set_timeouts(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

impl Timeouts for std::net::TcpStream {
    fn set_timeouts(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_chunked_and_status() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra";
        assert_eq!(parse_response(plain, "t").unwrap(), b"{}");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked, "t").unwrap(), b"abcde");
        let missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(
            parse_response(missing, "t"),
            Err(HttpError::Status { status: 404, .. })
        ));
        assert!(parse_response(b"garbage", "t").is_err());
    }
}
