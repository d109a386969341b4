//! Connection security toward the aggregators: TLS (with the aggregator CA), mutual TLS (a
//! client certificate) and an optional bearer token.
//!
//! Files are read at every (re)connection, so rotated certificates and tokens take effect
//! on the next connection without a restart.

use std::path::PathBuf;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Why a connection could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The token is not a valid header value.
    #[error("bearer token in {path} is not a valid HTTP header value")]
    BadToken {
        /// Its path.
        path: PathBuf,
    },
    /// tonic refused the TLS settings.
    #[error("invalid TLS settings: {0}")]
    Tls(#[source] tonic::transport::Error),
}

/// TLS files of the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// CA certificate(s) that sign the aggregators' certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS (PEM).
    pub cert_file: Option<PathBuf>,
    /// Client key for mutual TLS (PEM).
    pub key_file: Option<PathBuf>,
    /// Name to verify in the aggregator's certificate instead of the URL's host.
    pub server_name: Option<String>,
    /// File holding a bearer token sent as `authorization: Bearer <token>`.
    pub bearer_token_file: Option<PathBuf>,
}

fn read(what: &'static str, path: &PathBuf) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|source| SecurityError::Read {
        what,
        path: path.clone(),
        source,
    })
}

impl Security {
    /// Applies TLS to an `https://` endpoint (reading the files now).
    pub fn apply(&self, endpoint: Endpoint, https: bool) -> Result<Endpoint, SecurityError> {
        if !https {
            return Ok(endpoint);
        }
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &self.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read("CA file", ca)?));
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            tls = tls.identity(Identity::from_pem(
                read("client certificate", cert)?,
                read("client key", key)?,
            ));
        }
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name.clone());
        }
        endpoint.tls_config(tls).map_err(SecurityError::Tls)
    }

    /// The `authorization` header value, if a token file is configured.
    pub fn authorization(
        &self,
    ) -> Result<Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>, SecurityError> {
        let Some(path) = &self.bearer_token_file else {
            return Ok(None);
        };
        let token = read("bearer token file", path)?;
        let token = String::from_utf8_lossy(&token).trim().to_owned();
        format!("Bearer {token}")
            .parse()
            .map(Some)
            .map_err(|_| SecurityError::BadToken { path: path.clone() })
    }
}
