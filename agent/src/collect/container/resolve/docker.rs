//! Docker Engine API: `GET /containers/<id>/json` over the unix socket gives the container's
//! name, image and, for containers started by the kubelet's dockershim/cri-dockerd, its
//! Kubernetes labels.
//!
//! Must not: cache (the resolver does) or retry.

use std::{os::unix::net::UnixStream, path::Path, time::Duration};

use serde_json::Value;

use super::{
    Meta,
    http::{self, HttpError, Timeouts},
};

/// Why an inspect failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// Transport or HTTP failure.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The body was not the JSON we expect.
    #[error("docker inspect {id}: invalid JSON: {source}")]
    Json {
        /// The container.
        id: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// Asks the daemon behind `socket` about container `id`.
pub fn inspect(socket: &Path, id: &str, timeout: Duration) -> Result<Meta, DockerError> {
    let target = format!("docker {} /containers/{id}/json", socket.display());
    let io = |source| HttpError::Io {
        target: target.clone(),
        source,
    };
    let stream = UnixStream::connect(socket).map_err(io)?;
    stream.set_timeouts(timeout).map_err(io)?;
    let body = http::get(stream, "docker", &format!("/containers/{id}/json"), &target)?;
    parse(&body).map_err(|source| DockerError::Json {
        id: id.to_owned(),
        source,
    })
}

/// Reads name, image and Kubernetes labels from an inspect response.
pub fn parse(body: &[u8]) -> Result<Meta, serde_json::Error> {
    let json: Value = serde_json::from_slice(body)?;
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    let labels = &json["Config"]["Labels"];
    Ok(Meta {
        name: text(&json["Name"]).map(|n| n.trim_start_matches('/').to_owned()),
        image: text(&json["Config"]["Image"]),
        namespace: text(&labels["io.kubernetes.pod.namespace"]),
        pod: text(&labels["io.kubernetes.pod.name"]),
        container: text(&labels["io.kubernetes.container.name"]),
    })
}

/// Fills what `meta` does not know yet from `found`.
pub fn merge(found: Meta, meta: &mut Meta) {
    for (slot, value) in [
        (&mut meta.name, found.name),
        (&mut meta.image, found.image),
        (&mut meta.namespace, found.namespace),
        (&mut meta.pod, found.pod),
        (&mut meta.container, found.container),
    ] {
        if slot.is_none() {
            *slot = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        os::unix::net::UnixListener,
    };

    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/runtime")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn parses_inspect_fixtures() {
        let plain = parse(&fixture("docker-inspect.json")).unwrap();
        assert_eq!(plain.name.as_deref(), Some("web-1"));
        assert_eq!(plain.image.as_deref(), Some("nginx:1.25"));
        assert_eq!(plain.pod, None);
        let k8s = parse(&fixture("docker-inspect-kubernetes.json")).unwrap();
        assert_eq!(k8s.namespace.as_deref(), Some("shop"));
        assert_eq!(k8s.pod.as_deref(), Some("cart-7d9f8b6c4-x2x9q"));
        assert_eq!(k8s.container.as_deref(), Some("cart"));
        assert!(parse(b"{not json").is_err());
    }

    #[test]
    fn talks_to_a_socket_and_fails_cleanly_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        assert!(matches!(
            inspect(&socket, "abc", Duration::from_secs(1)),
            Err(DockerError::Http(HttpError::Io { .. }))
        ));
        let listener = UnixListener::bind(&socket).unwrap();
        let body = fixture("docker-inspect.json");
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let n = conn.read(&mut request).unwrap();
            let request = String::from_utf8_lossy(&request[..n]).into_owned();
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .unwrap();
            conn.write_all(&body).unwrap();
            request
        });
        let meta = inspect(&socket, "abc", Duration::from_secs(5)).unwrap();
        assert_eq!(meta.name.as_deref(), Some("web-1"));
        assert!(
            server
                .join()
                .unwrap()
                .starts_with("GET /containers/abc/json HTTP/1.1\r\n")
        );
    }
}
