//! Security of the gRPC ingest endpoint: TLS and mutual TLS (rustls) with certificates
//! reloaded when their files change, and an optional bearer token.
//!
//! Files are checked for changes at most every [`RELOAD_CHECK`]; a reload that fails (a
//! half-written certificate, a key that does not match) is logged and the previous good
//! configuration stays in use.

use std::{
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use rustls::{
    ServerConfig,
    crypto::ring::default_provider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};

/// How often files are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS or the token could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("{what} {path} contains no {expected}")]
    Empty {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What was expected.
        expected: &'static str,
    },
    /// rustls refused the material.
    #[error("invalid TLS configuration from {path}: {source}")]
    Rustls {
        /// The file at fault (certificate or CA).
        path: PathBuf,
        /// rustls' error.
        #[source]
        source: rustls::Error,
    },
    /// The client CA could not be turned into a verifier.
    #[error("invalid client CA {path}: {message}")]
    ClientCa {
        /// The CA file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// TLS files of the ingest endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA whose certificates clients must present (mutual TLS), if set.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.cert.as_path(), self.key.as_path()];
        paths.extend(self.client_ca.as_deref());
        paths
    }

    /// Builds a rustls server configuration (ALPN h2) from the files.
    pub fn load(&self) -> Result<Arc<ServerConfig>, SecurityError> {
        let provider = Arc::new(default_provider());
        fn read_err<'a>(
            what: &'static str,
            path: &'a Path,
        ) -> impl FnOnce(rustls::pki_types::pem::Error) -> SecurityError + 'a {
            move |e| SecurityError::Read {
                what,
                path: path.to_owned(),
                source: io::Error::other(e.to_string()),
            }
        }
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .map_err(read_err("certificate", &self.cert))?
            .collect::<Result<_, _>>()
            .map_err(read_err("certificate", &self.cert))?;
        if certs.is_empty() {
            return Err(SecurityError::Empty {
                what: "certificate",
                path: self.cert.clone(),
                expected: "CERTIFICATE block",
            });
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(read_err("key", &self.key))?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| SecurityError::Rustls {
                path: self.cert.clone(),
                source,
            })?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca).map_err(read_err("client CA", ca))? {
                    let cert = cert.map_err(read_err("client CA", ca))?;
                    roots.add(cert).map_err(|source| SecurityError::Rustls {
                        path: ca.clone(),
                        source,
                    })?;
                }
                if roots.is_empty() {
                    return Err(SecurityError::Empty {
                        what: "client CA",
                        path: ca.clone(),
                        expected: "CERTIFICATE block",
                    });
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| SecurityError::ClientCa {
                            path: ca.clone(),
                            message: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config =
            builder
                .with_single_cert(certs, key)
                .map_err(|source| SecurityError::Rustls {
                    path: self.cert.clone(),
                    source,
                })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Modification times of a set of files, to notice rotations.
fn fingerprint(paths: &[&Path]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

#[derive(Debug)]
struct Loaded<T> {
    value: T,
    fingerprint: Vec<Option<SystemTime>>,
    checked: Instant,
}

/// A value built from files, rebuilt when their modification times change.
#[derive(Debug)]
pub struct Reloading<T> {
    paths: Vec<PathBuf>,
    build: fn(&[PathBuf]) -> Result<T, SecurityError>,
    what: &'static str,
    current: Mutex<Loaded<T>>,
}

impl<T: Clone> Reloading<T> {
    /// Builds the value now (failing start-up on error) and remembers the files.
    pub fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        build: fn(&[PathBuf]) -> Result<T, SecurityError>,
    ) -> Result<Self, SecurityError> {
        let value = build(&paths)?;
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let fingerprint = fingerprint(&refs);
        Ok(Self {
            paths,
            build,
            what,
            current: Mutex::new(Loaded {
                value,
                fingerprint,
                checked: Instant::now(),
            }),
        })
    }

    /// The current value, reloaded first if the files changed since the last check.
    pub fn get(&self) -> T {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.checked.elapsed() >= RELOAD_CHECK {
            current.checked = Instant::now();
            let refs: Vec<&Path> = self.paths.iter().map(PathBuf::as_path).collect();
            let now = fingerprint(&refs);
            if now != current.fingerprint {
                match (self.build)(&self.paths) {
                    Ok(value) => {
                        current.value = value;
                        current.fingerprint = now;
                        tracing::info!(what = self.what, "reloaded after a file change");
                    }
                    Err(error) => {
                        tracing::error!(what = self.what, %error, "reload failed; keeping the previous configuration");
                    }
                }
            }
        }
        current.value.clone()
    }
}

fn build_tls(paths: &[PathBuf]) -> Result<Arc<ServerConfig>, SecurityError> {
    TlsFiles {
        cert: paths[0].clone(),
        key: paths[1].clone(),
        client_ca: paths.get(2).cloned(),
    }
    .load()
}

fn build_token(paths: &[PathBuf]) -> Result<Arc<str>, SecurityError> {
    let path = &paths[0];
    let text = std::fs::read_to_string(path).map_err(|source| SecurityError::Read {
        what: "bearer token file",
        path: path.clone(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(SecurityError::Empty {
            what: "bearer token file",
            path: path.clone(),
            expected: "token",
        });
    }
    Ok(Arc::from(token))
}

/// TLS configuration that follows its files.
pub type ReloadingTls = Reloading<Arc<ServerConfig>>;

impl ReloadingTls {
    /// Loads the TLS files (error on start-up if they are unusable).
    pub fn tls(files: &TlsFiles) -> Result<Self, SecurityError> {
        Reloading::new(
            "gRPC TLS certificates",
            files.paths().into_iter().map(Path::to_owned).collect(),
            build_tls,
        )
    }
}

/// The expected bearer token, following its file.
pub type ReloadingToken = Reloading<Arc<str>>;

impl ReloadingToken {
    /// Loads the token file (error on start-up if it is unreadable or empty).
    pub fn token(path: &Path) -> Result<Self, SecurityError> {
        Reloading::new("gRPC bearer token", vec![path.to_owned()], build_token)
    }
}

/// Checks `authorization: Bearer <token>` on every stream.
pub fn check_token(token: &ReloadingToken, request: &Request<()>) -> Result<(), Status> {
    let expected = token.get();
    let given = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| Status::unauthenticated("missing bearer token (authorization header)"))?;
    // Compare without an early exit on the first differing byte.
    let equal = given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if equal {
        Ok(())
    } else {
        Err(Status::unauthenticated("invalid bearer token"))
    }
}

/// Accepts TCP connections and completes TLS handshakes (each in its own task, with a
/// timeout), yielding established streams for the gRPC server. Failed handshakes are logged
/// and dropped; they never stop the listener.
pub fn tls_incoming(
    listener: TcpListener,
    tls: Arc<ReloadingTls>,
    shutdown: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsStream<TcpStream>, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = TlsAcceptor::from(tls.get());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => tracing::warn!(%peer, %error, "TLS handshake failed"),
                    Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
