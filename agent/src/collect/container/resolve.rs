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
        if let Some(meta) = self.cache.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
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
