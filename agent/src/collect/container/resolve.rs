//! Container names: a background thread asks the Docker Engine API (unix socket) and the
//! kubelet (`/pods` on its read-only port) about container ids the collector discovered, and
//! caches the answers. Collection only reads the cache, so it never waits on a runtime.
//!
//! When a runtime is absent or unreachable, resolution degrades to ids without error: the
//! failure is logged once at debug level and the series carry `id`/`container_id`/`pod_uid`
//! only. Must not: block collection, or log above debug for an unreachable runtime.

pub mod docker;
pub mod http;
pub mod kubelet;

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{
        Arc, RwLock,
        mpsc::{Receiver, SyncSender, TrySendError},
    },
    time::{Duration, Instant},
};

use super::identity::{Identity, Runtime};

/// Names of a container, as far as they could be resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// Runtime name (docker's `Name` without the slash).
    pub name: Option<String>,
    /// Image reference.
    pub image: Option<String>,
    /// Kubernetes namespace.
    pub namespace: Option<String>,
    /// Kubernetes pod name.
    pub pod: Option<String>,
    /// Kubernetes container name.
    pub container: Option<String>,
}

/// What to resolve.
#[derive(Debug, Clone)]
struct Request {
    container_id: Option<String>,
    runtime: Option<Runtime>,
    pod_uid: Option<String>,
}

/// Where to ask.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Docker Engine API socket.
    pub docker_socket: PathBuf,
    /// Kubelet base URL, empty for none.
    pub kubelet_url: String,
    /// Limit per request.
    pub timeout: Duration,
}

type Cache = Arc<RwLock<HashMap<String, Meta>>>;

/// Handle used by the collector: cache lookups and resolution requests.
#[derive(Debug)]
pub struct Resolver {
    cache: Cache,
    tx: SyncSender<Request>,
    requested: HashSet<String>,
}

/// Cache key: the container id, else `pod:<uid>`.
fn key(identity: &Identity) -> Option<String> {
    identity
        .container_id
        .clone()
        .or_else(|| identity.pod_uid.as_ref().map(|uid| format!("pod:{uid}")))
}

impl Resolver {
    /// Starts the resolver thread.
    pub fn start(endpoints: Endpoints) -> Self {
        let cache = Cache::default();
        let (tx, rx) = std::sync::mpsc::sync_channel(4096);
        let worker_cache = cache.clone();
        let spawned = std::thread::Builder::new()
            .name("sonde-resolve".to_owned())
            .spawn(move || run(endpoints, rx, worker_cache));
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the name resolver; containers keep their ids only");
        }
        Self {
            cache,
            tx,
            requested: HashSet::new(),
        }
    }

    /// The cached names of a container or pod; asks for them (once) when unknown.
    pub fn lookup(&mut self, identity: &Identity) -> Option<Meta> {
        let key = key(identity)?;
        if let Some(meta) = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Some(meta.clone());
        }
        if self.requested.insert(key.clone()) {
            let request = Request {
                container_id: identity.container_id.clone(),
                runtime: identity.runtime,
                pod_uid: identity.pod_uid.clone(),
            };
            if let Err(TrySendError::Full(_)) = self.tx.try_send(request) {
                self.requested.remove(&key);
            }
        }
        None
    }

    /// Forgets containers that are gone (so the cache does not grow forever).
    pub fn retain(&mut self, live: &HashSet<String>) {
        self.requested.retain(|k| live.contains(k));
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| live.contains(k));
    }

    /// The cache key of an identity (for [`Resolver::retain`]).
    pub fn key(identity: &Identity) -> Option<String> {
        key(identity)
    }
}

/// How often unresolved ids are retried, and the kubelet pod list refreshed at most.
const RETRY: Duration = Duration::from_secs(30);

fn run(endpoints: Endpoints, rx: Receiver<Request>, cache: Cache) {
    let mut pending: Vec<Request> = Vec::new();
    let mut pods = kubelet::Pods::default();
    let mut pods_fetched: Option<Instant> = None;
    let mut logged: HashSet<&'static str> = HashSet::new();
    loop {
        match rx.recv_timeout(RETRY) {
            Ok(request) => pending.push(request),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
        while let Ok(request) = rx.try_recv() {
            pending.push(request);
        }
        let wants_kubelet = pending.iter().any(|r| r.pod_uid.is_some());
        if wants_kubelet
            && !endpoints.kubelet_url.is_empty()
            && pods_fetched.is_none_or(|t| t.elapsed() >= RETRY)
        {
            pods_fetched = Some(Instant::now());
            match kubelet::fetch(&endpoints.kubelet_url, endpoints.timeout) {
                Ok(list) => pods = list,
                Err(error) => {
                    if logged.insert("kubelet") {
                        tracing::debug!(url = %endpoints.kubelet_url, %error, "kubelet unreachable; pods keep their uids only (logged once)");
                    }
                }
            }
        }
        let mut unresolved = Vec::new();
        for request in pending.drain(..) {
            let mut meta = Meta::default();
            if let Some(uid) = &request.pod_uid {
                pods.fill(uid, request.container_id.as_deref(), &mut meta);
            }
            if let Some(id) = &request.container_id
                && matches!(request.runtime, Some(Runtime::Docker) | None)
                && endpoints.docker_socket.exists()
            {
                match docker::inspect(&endpoints.docker_socket, id, endpoints.timeout) {
                    Ok(found) => docker::merge(found, &mut meta),
                    Err(error) => {
                        if logged.insert("docker") {
                            tracing::debug!(socket = %endpoints.docker_socket.display(), %error, "docker API unusable; containers keep their ids only (logged once)");
                        }
                    }
                }
            }
            let resolved = meta != Meta::default();
            let Some(key) = key(&Identity {
                container_id: request.container_id.clone(),
                runtime: request.runtime,
                pod_uid: request.pod_uid.clone(),
            }) else {
                continue;
            };
            if resolved {
                cache
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, meta);
            } else {
                unresolved.push(request);
            }
        }
        // Retried on the next timeout (at most every RETRY), never in a tight loop.
        pending = unresolved;
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        os::unix::net::UnixListener,
        path::Path,
    };

    use super::*;

    const ID: &str = "3f9a1c0e5b7d2a4c6e8f0a1b3c5d7e9f1a3b5c7d9e0f2a4b6c8d0e1f3a5b7c9d";

    fn docker_identity() -> Identity {
        Identity {
            container_id: Some(ID.to_owned()),
            runtime: Some(Runtime::Docker),
            pod_uid: None,
        }
    }

    /// Polls the cache for up to `seconds` (a failed attempt is retried after `RETRY`).
    fn wait_for(resolver: &mut Resolver, identity: &Identity, seconds: u64) -> Option<Meta> {
        for _ in 0..seconds * 20 {
            if let Some(meta) = resolver.lookup(identity) {
                return Some(meta);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    #[test]
    fn names_arrive_in_the_background_from_a_docker_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let body = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/runtime/docker-inspect.json"),
        )
        .unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut buf = [0u8; 2048];
                let _ = conn.read(&mut buf);
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(&body);
            }
        });
        let mut resolver = Resolver::start(Endpoints {
            docker_socket: socket,
            kubelet_url: String::new(),
            timeout: Duration::from_secs(10),
        });
        let identity = docker_identity();
        assert_eq!(
            resolver.lookup(&identity),
            None,
            "the first lookup never waits"
        );
        let meta = wait_for(&mut resolver, &identity, 45).expect("resolved in the background");
        assert_eq!(meta.name.as_deref(), Some("web-1"));
        assert_eq!(meta.image.as_deref(), Some("nginx:1.25"));
        // Gone containers are forgotten.
        resolver.retain(&HashSet::new());
        assert!(resolver.cache.read().unwrap().is_empty());
    }

    #[test]
    fn unreachable_runtimes_leave_ids_only() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        drop(UnixListener::bind(&socket).unwrap()); // exists, nobody listens
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut resolver = Resolver::start(Endpoints {
            docker_socket: socket,
            kubelet_url: format!("http://127.0.0.1:{port}"),
            timeout: Duration::from_millis(300),
        });
        let mut identity = docker_identity();
        identity.pod_uid = Some("5f1d7c2a-93b4-4e0a-9c61-2b8e4f7a1d30".to_owned());
        assert_eq!(wait_for(&mut resolver, &identity, 3), None);
    }
}
