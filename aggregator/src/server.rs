//! Assembles and runs the aggregator: store, gRPC ingest, HTTP API, shutdown.
//!
//! Shutdown order: readiness drops, both servers stop accepting and drain in-flight requests
//! (streams end after the batch being handled is acknowledged), then the store is dropped,
//! releasing the data directory. Tasks that do not finish within the grace period are
//! logged by name.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use sonde_proto::v1::ingest_server::IngestServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::service::interceptor::InterceptedService;

use crate::{
    config::Config,
    http_api::{self, ApiState},
    ingest::{
        Applier, IngestService,
        security::{
            ReloadingTls, ReloadingToken, SecurityError, TlsFiles, check_token, tls_incoming,
        },
    },
    jaeger,
    metrics::Metrics,
    promql::Engine,
    remote_write,
    store::{Store, StoreError},
};

/// Why the aggregator could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory is unusable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS files or the bearer token file are unusable.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which server.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A server failed while running.
    #[error("{what} server failed: {message}")]
    Serve {
        /// Which server.
        what: &'static str,
        /// The error.
        message: String,
    },
}

/// A started aggregator.
#[derive(Debug)]
pub struct Running {
    /// The bound HTTP address.
    pub http_addr: SocketAddr,
    /// The bound gRPC address.
    pub grpc_addr: SocketAddr,
    tasks: TaskTracker,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
    grace: std::time::Duration,
    store: Arc<Store>,
    maintenance: Maintenance,
}

/// The store's background work on its own threads (never on the runtime): periodic flush,
/// compaction and retention, and the interval fsync. Dropping the sender stops them.
#[derive(Debug)]
struct Maintenance {
    stop: Option<std::sync::mpsc::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Maintenance {
    fn start(store: Arc<Store>, flush_interval: std::time::Duration) -> Self {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let stopped = Arc::new(std::sync::Mutex::new(stopped));
        let mut threads = Vec::new();
        let spawn = |name: &str, period: std::time::Duration, work: Box<dyn Fn() + Send>| {
            let stopped = stopped.clone();
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    loop {
                        let wait = stopped
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .recv_timeout(period);
                        if !matches!(wait, Err(std::sync::mpsc::RecvTimeoutError::Timeout)) {
                            break;
                        }
                        work();
                    }
                })
                .expect("spawn a store maintenance thread")
        };
        let s = store.clone();
        threads.push(spawn(
            "sonde-store-maint",
            flush_interval,
            Box::new(move || {
                if let Err(error) = s.flush(false) {
                    tracing::error!(%error, "head flush failed; will retry");
                }
                if let Err(error) = s.compact(false) {
                    tracing::error!(%error, "compaction failed; will retry");
                }
                if let Err(error) = s.apply_retention() {
                    tracing::error!(%error, "retention failed; will retry");
                }
            }),
        ));
        if let crate::store::FsyncPolicy::Interval(period) = store.options().fsync {
            let s = store.clone();
            threads.push(spawn(
                "sonde-wal-fsync",
                period,
                Box::new(move || {
                    if let Err(error) = s.sync() {
                        tracing::error!(%error, "WAL fsync failed");
                    }
                }),
            ));
        }
        Self {
            stop: Some(stop),
            threads,
        }
    }

    /// Stops the threads and waits for them (a running flush completes first).
    fn stop(&mut self) {
        self.stop.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, what, source })
}

/// Opens the store, binds both listeners and starts serving. Returns once listening.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, ServerError> {
    // Opening replays the WAL; readiness comes only after it.
    let options = config.storage.store_options();
    let data_dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open_with(&data_dir, options))
        .await
        .map_err(|e| ServerError::Serve {
            what: "store",
            message: e.to_string(),
        })??;
    let maintenance = Maintenance::start(store.clone(), config.storage.flush_interval);
    let metrics = Arc::new(Metrics::new());
    let http_listener = bind(config.listen_http, "HTTP").await?;
    let grpc_listener = bind(config.listen_grpc, "gRPC").await?;
    let http_addr = http_listener
        .local_addr()
        .expect("bound socket has an address");
    let grpc_addr = grpc_listener
        .local_addr()
        .expect("bound socket has an address");
    let ready = Arc::new(AtomicBool::new(false));
    let tasks = TaskTracker::new();

    let applier = Arc::new(Applier::new(
        store.clone(),
        config.limits.clone(),
        metrics.clone(),
    ));
    let ingest = IngestService::new(applier.clone(), metrics.clone(), shutdown.clone());
    let max_message = ingest.max_message_bytes();
    let token = config
        .grpc
        .bearer_token_file
        .as_deref()
        .map(ReloadingToken::token)
        .transpose()?
        .map(Arc::new);
    let service = InterceptedService::new(
        IngestServer::new(ingest).max_decoding_message_size(max_message),
        move |request: tonic::Request<()>| match &token {
            Some(token) => check_token(token, &request).map(|()| request),
            None => Ok(request),
        },
    );
    let grpc_shutdown = shutdown.clone();
    let router = tonic::transport::Server::builder().add_service(service);
    match &config.grpc.tls {
        Some(files) => {
            let tls = Arc::new(ReloadingTls::tls(&TlsFiles {
                cert: files.cert_file.clone(),
                key: files.key_file.clone(),
                client_ca: files.client_ca_file.clone(),
            })?);
            let incoming = tls_incoming(grpc_listener, tls, shutdown.clone());
            tasks.spawn(async move {
                let result = router
                    .serve_with_incoming_shutdown(incoming, grpc_shutdown.clone().cancelled_owned())
                    .await;
                if let Err(error) = result {
                    tracing::error!(%error, "gRPC server failed");
                    grpc_shutdown.cancel();
                }
            });
        }
        None => {
            tasks.spawn(async move {
                let result = router
                    .serve_with_incoming_shutdown(
                        TcpListenerStream::new(grpc_listener),
                        grpc_shutdown.clone().cancelled_owned(),
                    )
                    .await;
                if let Err(error) = result {
                    tracing::error!(%error, "gRPC server failed");
                    grpc_shutdown.cancel();
                }
            });
        }
    }

    let state = ApiState {
        engine: Engine::new(store.clone(), config.query.clone()),
        store: store.clone(),
        metrics: metrics.clone(),
        ready: ready.clone(),
        started: Instant::now(),
    };
    let router = http_api::router(state)
        .merge(remote_write::router(applier, metrics))
        .merge(jaeger::router(store.clone()));
    let http_shutdown = shutdown.clone();
    tasks.spawn(async move {
        let result = axum::serve(http_listener, router)
            .with_graceful_shutdown(http_shutdown.clone().cancelled_owned())
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "HTTP server failed");
            http_shutdown.cancel();
        }
    });
    tasks.close();

    ready.store(true, Ordering::Release);
    tracing::info!(
        %http_addr,
        %grpc_addr,
        data_dir = %config.data_dir.display(),
        "sonde-aggregator ready"
    );
    Ok(Running {
        http_addr,
        grpc_addr,
        tasks,
        ready,
        shutdown,
        grace: config.shutdown_grace,
        store,
        maintenance,
    })
}

impl Running {
    /// Waits for the shutdown token, then drains within the grace period.
    pub async fn wait(mut self) -> Result<(), ServerError> {
        self.shutdown.cancelled().await;
        self.ready.store(false, Ordering::Release);
        tracing::info!("shutting down");
        if tokio::time::timeout(self.grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                unfinished = self.tasks.len(),
                grace = ?self.grace,
                "tasks did not finish within the shutdown grace period"
            );
        }
        // Ingest has drained: flush the head so the next start has little WAL to replay.
        let store = self.store.clone();
        let mut maintenance = std::mem::replace(
            &mut self.maintenance,
            Maintenance {
                stop: None,
                threads: Vec::new(),
            },
        );
        let flushed = tokio::task::spawn_blocking(move || {
            maintenance.stop();
            store.flush(true)
        })
        .await;
        match flushed {
            Ok(Ok(blocks)) => tracing::info!(blocks, "head flushed on shutdown"),
            Ok(Err(error)) => {
                tracing::error!(%error, "flush on shutdown failed; the WAL keeps the data")
            }
            Err(error) => tracing::error!(%error, "flush on shutdown panicked"),
        }
        let stats = self.store.stats();
        tracing::info!(series = stats.series, samples = stats.samples, "stopped");
        Ok(())
    }
}
