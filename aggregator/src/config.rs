//! The aggregator's configuration: one serde struct, layered
//! defaults → config file → environment → command-line flags (later wins), validated once.
//!
//! Every flag has an environment variable (`SONDE_AGGREGATOR_<FLAG>`); clap resolves flag
//! over environment, and both override the file. `--config` names a TOML file whose keys are
//! the field names below (`deny_unknown_fields`: a typo is an error naming the key).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this struct.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error (names the key and position).
        #[source]
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("invalid configuration: `{key}` {problem}")]
    Invalid {
        /// The key, as written in the config file.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The aggregator's settings. Defaults are those of [`Config::default`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory holding all persistent state (created if absent).
    pub data_dir: PathBuf,
    /// Address of the HTTP server: Prometheus API, health, `/metrics`.
    pub listen_http: SocketAddr,
    /// Address of the gRPC ingest server agents push to.
    pub listen_grpc: SocketAddr,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (`tracing` directives, e.g. `info,sonde_aggregator::ingest=debug`).
    pub log_level: String,
    /// How long shutdown may take before unfinished tasks are abandoned.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Ingest limits.
    pub limits: Limits,
    /// Query settings.
    pub query: QueryConfig,
    /// Security of the gRPC ingest endpoint.
    pub grpc: GrpcConfig,
    /// Storage: WAL, blocks, retention.
    pub storage: StorageConfig,
}

/// Security of the gRPC ingest endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Serve plaintext gRPC on a non-loopback address. Without TLS and without this, the
    /// aggregator refuses to start (plaintext only when configured explicitly).
    pub allow_plaintext: bool,
    /// Serve TLS with these files (reloaded when they change).
    pub tls: Option<GrpcTlsConfig>,
    /// Require `authorization: Bearer <token>` with the token in this file (reloaded when it
    /// changes).
    pub bearer_token_file: Option<PathBuf>,
}

/// TLS files of the gRPC endpoint (PEM).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcTlsConfig {
    /// Server certificate chain.
    pub cert_file: PathBuf,
    /// Server private key.
    pub key_file: PathBuf,
    /// CA that signs client certificates; when set, clients must present one (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
}

/// Limits applied to every ingested batch; violations are rejected with a precise error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted batch payload, uncompressed, in bytes.
    pub max_batch_bytes: u64,
    /// Most labels (including `__name__`) one series may have.
    pub max_labels_per_series: usize,
    /// Longest label name, in bytes.
    pub max_label_name_bytes: usize,
    /// Longest label value, in bytes.
    pub max_label_value_bytes: usize,
    /// Most distinct series one agent may create (cardinality guard); batches that would
    /// exceed it are rejected.
    pub max_series_per_agent: usize,
}

/// Query evaluation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// How far back an instant selector looks for a sample (Prometheus: 5m).
    #[serde(with = "humantime_serde")]
    pub lookback_delta: Duration,
    /// Default and maximum evaluation time of one query.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Most samples one query may hold in memory at once (selected samples plus
    /// intermediate results), as Prometheus' `--query.max-samples`.
    pub max_samples: usize,
    /// Most series one query may select from the store (per evaluation block).
    pub max_series: usize,
    /// Step of subqueries written without one (`x[1h:]`), Prometheus' evaluation interval.
    #[serde(with = "humantime_serde")]
    pub subquery_step: Duration,
    /// Queries evaluated at once; more wait (their wait counts toward their timeout).
    pub max_concurrent: usize,
}

/// When the WAL is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WalFsync {
    /// Before every batch is acknowledged (concurrent batches share an fsync).
    Always,
    /// Every `wal_fsync_interval`; acknowledged batches survive a crash of the process but
    /// not of the machine within that interval.
    Interval,
    /// Left to the operating system.
    Never,
}

/// Storage settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// When WAL writes are fsynced: `always`, `interval` or `never`.
    pub wal_fsync: WalFsync,
    /// Period of the background fsync with `wal_fsync = "interval"`.
    #[serde(with = "humantime_serde")]
    pub wal_fsync_interval: Duration,
    /// Size at which a WAL segment is sealed and a new one started.
    pub wal_segment_bytes: u64,
    /// How often the head is checked for samples to flush, and blocks for compaction and
    /// retention.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Time range of the blocks flushed from the head (aligned to multiples of it).
    #[serde(with = "humantime_serde")]
    pub block_duration: Duration,
    /// Time range blocks are compacted into (a multiple of `block_duration`).
    #[serde(with = "humantime_serde")]
    pub compacted_block_duration: Duration,
    /// How far behind the newest sample a sample is still accepted; older ones are
    /// rejected with an error naming the series and timestamp.
    #[serde(with = "humantime_serde")]
    pub out_of_order_window: Duration,
    /// Blocks older than this (behind the newest sample) are deleted; 0s keeps everything.
    #[serde(with = "humantime_serde")]
    pub retention_time: Duration,
    /// Oldest blocks are deleted while blocks and WAL exceed this many bytes; 0: no limit.
    pub retention_size_bytes: u64,
    /// Exemplars kept in memory, in one ring shared by all series (Prometheus'
    /// `storage.exemplars.max_exemplars`); 0 disables exemplar storage.
    pub max_exemplars: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        let store = crate::store::StoreOptions::default();
        Self {
            wal_fsync: WalFsync::Always,
            wal_fsync_interval: Duration::from_secs(1),
            wal_segment_bytes: store.wal_segment_bytes,
            flush_interval: Duration::from_secs(60),
            block_duration: store.block_duration,
            compacted_block_duration: store.compacted_block_duration,
            out_of_order_window: store.out_of_order_window,
            retention_time: store.retention_time,
            retention_size_bytes: store.retention_bytes,
            max_exemplars: store.max_exemplars,
        }
    }
}

impl StorageConfig {
    /// The store options these settings stand for.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        use crate::store::FsyncPolicy;
        crate::store::StoreOptions {
            fsync: match self.wal_fsync {
                WalFsync::Always => FsyncPolicy::Always,
                WalFsync::Interval => FsyncPolicy::Interval(self.wal_fsync_interval),
                WalFsync::Never => FsyncPolicy::Never,
            },
            block_duration: self.block_duration,
            compacted_block_duration: self.compacted_block_duration,
            out_of_order_window: self.out_of_order_window,
            retention_time: self.retention_time,
            retention_bytes: self.retention_size_bytes,
            wal_segment_bytes: self.wal_segment_bytes,
            max_exemplars: self.max_exemplars,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            listen_http: SocketAddr::from(([0, 0, 0, 0], 9180)),
            listen_grpc: SocketAddr::from(([127, 0, 0, 1], 9181)),
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            shutdown_grace: Duration::from_secs(30),
            limits: Limits::default(),
            query: QueryConfig::default(),
            grpc: GrpcConfig::default(),
            storage: StorageConfig::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_batch_bytes: 64 << 20,
            max_labels_per_series: 64,
            max_label_name_bytes: 256,
            max_label_value_bytes: 4096,
            max_series_per_agent: 1_000_000,
        }
    }
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            lookback_delta: Duration::from_secs(5 * 60),
            timeout: Duration::from_secs(120),
            max_samples: 50_000_000,
            max_series: 1_000_000,
            subquery_step: Duration::from_secs(60),
            max_concurrent: 20,
        }
    }
}

/// Command line of `sonde-aggregator`.
#[derive(Debug, Parser)]
#[command(
    name = "sonde-aggregator",
    version,
    about = "Sonde aggregator: stores what agents send, answers PromQL over the Prometheus HTTP API",
    long_about = "Sonde aggregator: stores what agents send, answers PromQL over the Prometheus \
                  HTTP API.\n\nSettings come from, in increasing precedence: built-in defaults, \
                  the --config file (TOML), SONDE_AGGREGATOR_* environment variables, flags."
)]
pub struct Cli {
    /// TOML config file (keys as in deploy/aggregator.example.toml).
    #[arg(
        long,
        env = "SONDE_AGGREGATOR_CONFIG",
        value_name = "FILE",
        global = true
    )]
    pub config: Option<PathBuf>,
    /// Directory for all persistent state [default: data].
    #[arg(
        long,
        env = "SONDE_AGGREGATOR_DATA_DIR",
        value_name = "DIR",
        global = true
    )]
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address (Prometheus API, /metrics, health) [default: 0.0.0.0:9180].
    #[arg(long, env = "SONDE_AGGREGATOR_LISTEN_HTTP", value_name = "ADDR")]
    pub listen_http: Option<SocketAddr>,
    /// gRPC listen address for agents [default: 127.0.0.1:9181; a non-loopback address needs
    /// TLS or grpc.allow_plaintext].
    #[arg(long, env = "SONDE_AGGREGATOR_LISTEN_GRPC", value_name = "ADDR")]
    pub listen_grpc: Option<SocketAddr>,
    /// Log format [default: text].
    #[arg(
        long,
        env = "SONDE_AGGREGATOR_LOG_FORMAT",
        value_name = "FORMAT",
        global = true
    )]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `info,sonde_aggregator::ingest=debug` [default: info].
    #[arg(
        long,
        env = "SONDE_AGGREGATOR_LOG_LEVEL",
        value_name = "FILTER",
        global = true
    )]
    pub log_level: Option<String>,
    /// A subcommand; without one the aggregator serves.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands besides serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the effective configuration (after file, environment and flags) as TOML and exit.
    PrintConfig,
    /// Backfill OpenMetrics text files with timestamps (what `promtool tsdb
    /// create-blocks-from openmetrics` takes) into --data-dir as Parquet blocks. The
    /// aggregator must not be running on that directory.
    Import {
        /// OpenMetrics files, each ending with `# EOF`.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print the blocks in --data-dir with the on-disk size of every Parquet column
    /// (read-only; works beside a running aggregator).
    Inspect,
}

impl Config {
    /// Builds the effective configuration from the command line (which carries the
    /// environment) and the config file it names.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let mut config = match &cli.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        if let Some(v) = &cli.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = cli.listen_http {
            config.listen_http = v;
        }
        if let Some(v) = cli.listen_grpc {
            config.listen_grpc = v;
        }
        if let Some(v) = cli.log_format {
            config.log_format = v;
        }
        if let Some(v) = &cli.log_level {
            config.log_level = v.clone();
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML config file (missing keys take their defaults).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Checks ranges and relations between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        if self.listen_http == self.listen_grpc && self.listen_http.port() != 0 {
            return invalid("listen_grpc", "must differ from listen_http");
        }
        if self.limits.max_batch_bytes < 1024 {
            return invalid("limits.max_batch_bytes", "must be at least 1024");
        }
        if self.grpc.tls.is_none()
            && !self.grpc.allow_plaintext
            && !self.listen_grpc.ip().is_loopback()
        {
            return Err(ConfigError::Invalid {
                key: "grpc.allow_plaintext",
                problem: format!(
                    "must be true to serve plaintext gRPC on the non-loopback address {} \
                     (or configure [grpc.tls])",
                    self.listen_grpc
                ),
            });
        }
        if self.limits.max_series_per_agent == 0 {
            return invalid("limits.max_series_per_agent", "must be at least 1");
        }
        if self.limits.max_labels_per_series == 0 {
            return invalid("limits.max_labels_per_series", "must be at least 1");
        }
        if self.query.lookback_delta.is_zero() {
            return invalid("query.lookback_delta", "must be positive");
        }
        if self.query.timeout.is_zero() {
            return invalid("query.timeout", "must be positive");
        }
        if self.query.max_samples == 0 {
            return invalid("query.max_samples", "must be at least 1");
        }
        if self.query.max_series == 0 {
            return invalid("query.max_series", "must be at least 1");
        }
        if self.query.subquery_step.as_millis() == 0 {
            return invalid("query.subquery_step", "must be at least 1ms");
        }
        if self.query.max_concurrent == 0 {
            return invalid("query.max_concurrent", "must be at least 1");
        }
        let st = &self.storage;
        if st.block_duration < Duration::from_secs(60) {
            return invalid("storage.block_duration", "must be at least 1m");
        }
        if !st
            .compacted_block_duration
            .as_millis()
            .is_multiple_of(st.block_duration.as_millis())
        {
            return invalid(
                "storage.compacted_block_duration",
                "must be a multiple of storage.block_duration",
            );
        }
        if st.wal_segment_bytes < 64 * 1024 {
            return invalid("storage.wal_segment_bytes", "must be at least 65536");
        }
        if st.flush_interval.is_zero() {
            return invalid("storage.flush_interval", "must be positive");
        }
        if st.wal_fsync == WalFsync::Interval && st.wal_fsync_interval.is_zero() {
            return invalid("storage.wal_fsync_interval", "must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("sonde-aggregator").chain(args.iter().copied()))
            .expect("valid command line")
    }

    #[test]
    fn example_config_in_deploy_loads_and_equals_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/aggregator.example.toml");
        let config = Config::from_file(&path).expect("example config loads");
        config.validate().expect("example config is valid");
        assert_eq!(
            config,
            Config::default(),
            "the example documents the defaults"
        );
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from/file\"\nlisten_http = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let config = Config::load(&cli(&[
            "--config",
            file.to_str().unwrap(),
            "--listen-http",
            "127.0.0.1:2",
        ]))
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/from/file"));
        assert_eq!(config.listen_http, "127.0.0.1:2".parse().unwrap());
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "data_dri = \"x\"\n").unwrap();
        let err = Config::from_file(&file).unwrap_err().to_string();
        assert!(err.contains("data_dri"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let mut config = Config::default();
        config.query.lookback_delta = Duration::ZERO;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("query.lookback_delta"), "{err}");
    }
}
