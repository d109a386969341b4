//! Kubelet pod list (`GET <kubelet>/pods`, the read-only port): pod name and namespace by
//! pod uid, container name and image by container id (`containerd://<id>`, `cri-o://<id>`,
//! `docker://<id>`).
//!
//! Must not: cache across refreshes (the resolver decides when to refetch).

use std::{
    collections::HashMap,
    net::{TcpStream, ToSocketAddrs},
    time::Duration,
};

use serde_json::Value;

use super::{
    Meta,
    http::{self, HttpError, Timeouts},
};

/// Why the pod list could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The URL is not `http://host:port[/prefix]`.
    #[error("kubelet URL {url:?} is not http://host:port")]
    Url {
        /// The URL.
        url: String,
    },
    /// Transport or HTTP failure.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The body was not a pod list.
    #[error("kubelet {url}/pods: invalid JSON: {source}")]
    Json {
        /// The URL.
        url: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// One pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pod {
    /// Pod name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Container id → (container name, image).
    pub containers: HashMap<String, (String, String)>,
}

/// Pods by uid.
#[derive(Debug, Clone, Default)]
pub struct Pods(pub HashMap<String, Pod>);

impl Pods {
    /// Fills namespace/pod (and container/image when `container_id` is in the pod).
    pub fn fill(&self, uid: &str, container_id: Option<&str>, meta: &mut Meta) {
        let Some(pod) = self.0.get(uid) else {
            return;
        };
        meta.namespace = Some(pod.namespace.clone());
        meta.pod = Some(pod.name.clone());
        if let Some((name, image)) = container_id.and_then(|id| pod.containers.get(id)) {
            meta.container = Some(name.clone());
            meta.image = Some(image.clone()).filter(|i| !i.is_empty());
        }
    }
}

/// Fetches and parses `<url>/pods`.
pub fn fetch(url: &str, timeout: Duration) -> Result<Pods, KubeletError> {
    let bad_url = || KubeletError::Url {
        url: url.to_owned(),
    };
    let rest = url.strip_prefix("http://").ok_or_else(bad_url)?;
    let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let target = format!("kubelet {url}/pods");
    let io = |source| HttpError::Io {
        target: target.clone(),
        source,
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|_| bad_url())?
        .next()
        .ok_or_else(bad_url)?;
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    stream.set_timeouts(timeout).map_err(io)?;
    let path = format!(
        "/{}pods",
        if prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", prefix.trim_end_matches('/'))
        }
    );
    let body = http::get(stream, authority, &path, &target)?;
    parse(&body).map_err(|source| KubeletError::Json {
        url: url.to_owned(),
        source,
    })
}

/// Parses a `PodList`.
pub fn parse(body: &[u8]) -> Result<Pods, serde_json::Error> {
    let json: Value = serde_json::from_slice(body)?;
    let mut pods = HashMap::new();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    for item in json["items"].as_array().into_iter().flatten() {
        let meta = &item["metadata"];
        let uid = text(&meta["uid"]);
        if uid.is_empty() {
            continue;
        }
        let mut pod = Pod {
            name: text(&meta["name"]),
            namespace: text(&meta["namespace"]),
            containers: HashMap::new(),
        };
        for list in [
            "containerStatuses",
            "initContainerStatuses",
            "ephemeralContainerStatuses",
        ] {
            for status in item["status"][list].as_array().into_iter().flatten() {
                let id = text(&status["containerID"]);
                let Some((_, id)) = id.split_once("://") else {
                    continue;
                };
                pod.containers.insert(
                    id.to_owned(),
                    (text(&status["name"]), text(&status["image"])),
                );
            }
        }
        pods.insert(uid, pod);
    }
    Ok(Pods(pods))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const UID: &str = "5f1d7c2a-93b4-4e0a-9c61-2b8e4f7a1d30";
    const ID: &str = "8c1b6a3e2d4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b";

    #[test]
    fn parses_pod_list_fixture() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/runtime/kubelet-pods.json");
        let pods = parse(&std::fs::read(path).unwrap()).unwrap();
        let mut meta = Meta::default();
        pods.fill(UID, Some(ID), &mut meta);
        assert_eq!(meta.namespace.as_deref(), Some("shop"));
        assert_eq!(meta.pod.as_deref(), Some("cart-7d9f8b6c4-x2x9q"));
        assert_eq!(meta.container.as_deref(), Some("cart"));
        assert_eq!(
            meta.image.as_deref(),
            Some("registry.example/shop/cart:2.3.1")
        );
        let mut pod_only = Meta::default();
        pods.fill(UID, None, &mut pod_only);
        assert_eq!((pod_only.pod.is_some(), pod_only.container), (true, None));
    }

    #[test]
    fn unreachable_kubelet_is_an_error_not_a_hang() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let started = std::time::Instant::now();
        let err = fetch(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2)).unwrap_err();
        assert!(matches!(err, KubeletError::Http(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(matches!(
            fetch("ftp://x", Duration::from_secs(1)),
            Err(KubeletError::Url { .. })
        ));
    }
}
