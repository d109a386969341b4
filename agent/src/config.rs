//! The agent's configuration: one serde struct, layered
//! defaults → config file → environment → command-line flags (later wins), validated once.
//!
//! Every flag has an environment variable (`SONDE_AGENT_<FLAG>`; lists are comma-separated);
//! clap resolves flag over environment, and both override the `--config` TOML file, whose keys
//! are the field names below (`deny_unknown_fields`).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

pub use crate::collect::config::{ContainerConfig, NodeConfig};
use crate::ebpf::hooks::DataPath;

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

/// The agent's settings. Defaults are those of [`Config::default`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Identity of this agent in every batch; empty means the host name.
    pub agent_id: String,
    /// Labels added to every series sent to the aggregators (not to `/metrics`, where the
    /// scraper adds its own target labels), unless the series already has that label.
    /// `instance` defaults to the agent id and `job` to `sonde-agent`, like Prometheus' target
    /// labels for a scraped exporter; set them here to override.
    pub labels: std::collections::BTreeMap<String, String>,
    /// gRPC URLs of the aggregator replicas (`http://host:9181`); every replica gets every
    /// batch.
    pub aggregators: Vec<String>,
    /// Address of the agent's own `/metrics` and health endpoints.
    pub listen_metrics: SocketAddr,
    /// How often metrics are collected and sent.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// zstd level for batch payloads (0 disables compression).
    pub compression_level: i32,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (`tracing` directives).
    pub log_level: String,
    /// How long shutdown may take (flushing included).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// eBPF settings.
    pub ebpf: EbpfConfig,
    /// Node metrics (node_exporter's names).
    pub node: NodeConfig,
    /// Container metrics (cAdvisor's names).
    pub containers: ContainerConfig,
    /// Delivery to the aggregators: disk buffer, quorum, security.
    pub transport: TransportConfig,
    /// Spans from the eBPF HTTP exchanges: linking, sampling, budget, OTLP export.
    pub traces: crate::trace::TraceConfig,
}

/// Delivery settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// Directory of the disk buffer (batches not yet acknowledged by every aggregator).
    pub buffer_dir: PathBuf,
    /// Largest size of the disk buffer; beyond it the oldest batches are dropped and counted.
    pub buffer_max_bytes: u64,
    /// fsync the buffer after every batch.
    pub buffer_fsync: bool,
    /// Acknowledgements that make a batch delivered; 0 means a majority of the aggregators.
    pub write_quorum: usize,
    /// Allow `http://` (plaintext) URLs to hosts other than loopback.
    pub allow_plaintext: bool,
    /// TLS toward `https://` aggregators.
    pub tls: TlsConfig,
    /// File holding a bearer token sent with every stream.
    pub bearer_token_file: Option<PathBuf>,
}

/// TLS files (PEM). Read at every connection, so rotations apply without a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// CA certificate(s) that sign the aggregators' certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificate, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client private key, for mutual TLS.
    pub key_file: Option<PathBuf>,
    /// Name expected in the aggregator's certificate, when it differs from the URL's host.
    pub server_name: Option<String>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            buffer_dir: PathBuf::from("/var/lib/sonde-agent/buffer"),
            buffer_max_bytes: 512 << 20,
            buffer_fsync: true,
            write_quorum: 0,
            allow_plaintext: false,
            tls: TlsConfig::default(),
            bearer_token_file: None,
        }
    }
}

impl TransportConfig {
    /// The write quorum for `replicas` aggregators (a majority when unset).
    pub fn quorum(&self, replicas: usize) -> usize {
        if self.write_quorum == 0 {
            replicas / 2 + 1
        } else {
            self.write_quorum
        }
    }
}

/// eBPF settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EbpfConfig {
    /// Load the eBPF programs at all. When false (or when the kernel refuses), the agent still
    /// collects procfs and cgroup metrics.
    pub enabled: bool,
    /// Mount tracefs and bpffs when they are not mounted.
    pub mount_filesystems: bool,
    /// HTTP/1.x RED metrics from syscalls and OpenSSL.
    pub http: HttpConfig,
    /// TCP connection metrics.
    pub tcp: TcpConfig,
    /// Which processes and cgroups HTTP and TCP tracing sees.
    pub filter: FilterConfig,
}

/// HTTP tracing settings (`[ebpf.http]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Trace HTTP/1.x over plain sockets (syscall tracepoints).
    pub enabled: bool,
    /// Trace HTTPS through OpenSSL (uprobes on `SSL_read`/`SSL_write` in every libssl found).
    pub tls: bool,
    /// Connections (each with its in-flight request) tracked at once in the kernel; the
    /// least recently used are evicted beyond this. About 270 bytes of kernel memory each.
    pub max_connections: u32,
    /// Bytes of the kernel → agent event ring buffer (a power of two, at least 64 KiB).
    pub ring_buffer_size: u32,
    /// Distinct `http_route` values per service and side; further routes become `{other}`.
    pub max_routes_per_service: usize,
    /// HTTP series kept; exchanges that would add more are dropped and counted.
    pub max_series: usize,
    /// A series without requests for this long is dropped.
    #[serde(with = "humantime_serde")]
    pub series_idle_expiry: Duration,
    /// How often running processes are scanned for newly loaded libssl files.
    #[serde(with = "humantime_serde")]
    pub tls_scan_interval: Duration,
    /// Which hooks see socket data: `socket` (the `sock_recv_length`/`sock_send_length`
    /// tracepoints, Linux 6.3+ on x86_64: no syscall hook sees data), `syscall_exit` (reads
    /// at their exit, arguments from the saved registers, writes at their entry; Linux 5.15+
    /// on x86_64) or `enter_exit` (every kernel and architecture, two hits per read). The
    /// agent falls back along that order where the kernel or architecture does not allow
    /// the one asked for.
    pub data_hooks: DataHooks,
}

/// [`HttpConfig::data_hooks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataHooks {
    /// The socket tracepoints where possible.
    Socket,
    /// Read exits and write entries of the syscalls where possible.
    SyscallExit,
    /// Enter and exit of the read syscalls, entry of the writes.
    EnterExit,
}

impl DataHooks {
    /// The loader's preferred [`DataPath`].
    pub fn path(self) -> DataPath {
        match self {
            Self::Socket => DataPath::Socket,
            Self::SyscallExit => DataPath::Registers,
            Self::EnterExit => DataPath::EnterExit,
        }
    }
}

/// TCP tracing settings (`[ebpf.tcp]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// Trace connects, connection ends and retransmits.
    pub enabled: bool,
    /// Distinct destinations per service; further ones become `{other}`.
    pub max_destinations_per_service: usize,
    /// TCP series kept; events that would add more are dropped and counted.
    pub max_series: usize,
}

/// Include/exclude rules for HTTP and TCP tracing (`[ebpf.filter]`). Excludes win over
/// includes; with any include rule, only matching tasks are traced. Rules are applied in the
/// kernel (nothing about an excluded task leaves it) and again in the agent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Process names (`comm`, at most 15 bytes, as in `/proc/<pid>/comm`) to trace.
    pub include_processes: Vec<String>,
    /// Process names never to trace.
    pub exclude_processes: Vec<String>,
    /// cgroup v2 paths (e.g. `/system.slice/nginx.service`); tasks in them or below are
    /// traced.
    pub include_cgroups: Vec<String>,
    /// cgroup v2 paths whose tasks (and descendants') are never traced.
    pub exclude_cgroups: Vec<String>,
}

impl FilterConfig {
    /// Most rules in total (the kernel's rule table size).
    pub const MAX_RULES: usize = 16;

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.include_processes.len()
            + self.exclude_processes.len()
            + self.include_cgroups.len()
            + self.exclude_cgroups.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            agent_id: String::new(),
            labels: std::collections::BTreeMap::new(),
            aggregators: vec!["http://127.0.0.1:9181".to_owned()],
            listen_metrics: SocketAddr::from(([0, 0, 0, 0], 9182)),
            interval: Duration::from_secs(15),
            compression_level: 3,
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            shutdown_grace: Duration::from_secs(10),
            ebpf: EbpfConfig::default(),
            node: NodeConfig::default(),
            containers: ContainerConfig::default(),
            transport: TransportConfig::default(),
            traces: crate::trace::TraceConfig::default(),
        }
    }
}

impl Default for EbpfConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            mount_filesystems: true,
            http: HttpConfig::default(),
            tcp: TcpConfig::default(),
            filter: FilterConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tls: true,
            max_connections: 32_768,
            ring_buffer_size: 2 * 1024 * 1024,
            max_routes_per_service: 100,
            max_series: 10_000,
            series_idle_expiry: Duration::from_secs(3600),
            tls_scan_interval: Duration::from_secs(10),
            data_hooks: DataHooks::Socket,
        }
    }
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_destinations_per_service: 100,
            max_series: 10_000,
        }
    }
}

impl EbpfConfig {
    /// Checks the eBPF settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: String| Err(ConfigError::Invalid { key, problem });
        let http = &self.http;
        if http.max_connections < 1024 {
            return invalid(
                "ebpf.http.max_connections",
                format!("{} is below the minimum of 1024", http.max_connections),
            );
        }
        let ring = http.ring_buffer_size;
        if !ring.is_power_of_two() || !(64 * 1024..=1 << 30).contains(&ring) {
            return invalid(
                "ebpf.http.ring_buffer_size",
                format!("{ring} must be a power of two between 65536 and 1073741824"),
            );
        }
        if http.max_routes_per_service == 0 {
            return invalid(
                "ebpf.http.max_routes_per_service",
                "must be at least 1".to_owned(),
            );
        }
        if http.max_series == 0 {
            return invalid("ebpf.http.max_series", "must be at least 1".to_owned());
        }
        if http.tls_scan_interval < Duration::from_secs(1) {
            return invalid(
                "ebpf.http.tls_scan_interval",
                format!("{:?} is below the minimum of 1s", http.tls_scan_interval),
            );
        }
        if self.tcp.max_destinations_per_service == 0 || self.tcp.max_series == 0 {
            return invalid(
                "ebpf.tcp",
                "max_destinations_per_service and max_series must be at least 1".to_owned(),
            );
        }
        let f = &self.filter;
        if f.len() > FilterConfig::MAX_RULES {
            return invalid(
                "ebpf.filter",
                format!(
                    "{} rules; at most {} are supported",
                    f.len(),
                    FilterConfig::MAX_RULES
                ),
            );
        }
        for (key, names) in [
            ("ebpf.filter.include_processes", &f.include_processes),
            ("ebpf.filter.exclude_processes", &f.exclude_processes),
        ] {
            if let Some(bad) = names.iter().find(|n| n.is_empty() || n.len() > 15) {
                return invalid(
                    key,
                    format!("entry {bad:?} must be a process name of 1 to 15 bytes (its comm)"),
                );
            }
        }
        for (key, paths) in [
            ("ebpf.filter.include_cgroups", &f.include_cgroups),
            ("ebpf.filter.exclude_cgroups", &f.exclude_cgroups),
        ] {
            if let Some(bad) = paths.iter().find(|p| !p.starts_with('/')) {
                return invalid(
                    key,
                    format!("entry {bad:?} must be a cgroup v2 path starting with /"),
                );
            }
        }
        Ok(())
    }
}

/// Command line of `sonde-agent`.
#[derive(Debug, Parser)]
#[command(
    name = "sonde-agent",
    version,
    about = "Sonde agent: node, container and eBPF HTTP metrics, streamed to Sonde aggregators",
    long_about = "Sonde agent: node, container and eBPF HTTP metrics, streamed to Sonde \
                  aggregators.\n\nSettings come from, in increasing precedence: built-in \
                  defaults, the --config file (TOML), SONDE_AGENT_* environment variables, \
                  flags. eBPF programs need root or CAP_BPF + CAP_PERFMON; without them the \
                  agent runs with procfs metrics only."
)]
pub struct Cli {
    /// TOML config file (keys as in deploy/agent.example.toml).
    #[arg(long, env = "SONDE_AGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Aggregator gRPC URL; repeat for each replica [default: http://127.0.0.1:9181].
    #[arg(
        long = "aggregator",
        env = "SONDE_AGENT_AGGREGATORS",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub aggregators: Vec<String>,
    /// Address of the agent's own /metrics [default: 0.0.0.0:9182].
    #[arg(long, env = "SONDE_AGENT_LISTEN_METRICS", value_name = "ADDR")]
    pub listen_metrics: Option<SocketAddr>,
    /// Agent identity sent with every batch [default: the host name].
    #[arg(long, env = "SONDE_AGENT_AGENT_ID", value_name = "ID")]
    pub agent_id: Option<String>,
    /// Collection interval, e.g. `15s` [default: 15s].
    #[arg(long, env = "SONDE_AGENT_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    /// Do not load eBPF programs.
    #[arg(long, env = "SONDE_AGENT_NO_EBPF")]
    pub no_ebpf: bool,
    /// Directory of the disk buffer [default: /var/lib/sonde-agent/buffer].
    #[arg(long, env = "SONDE_AGENT_BUFFER_DIR", value_name = "DIR")]
    pub buffer_dir: Option<PathBuf>,
    /// Largest size of the disk buffer in bytes [default: 536870912 (512 MiB)].
    #[arg(long, env = "SONDE_AGENT_BUFFER_MAX_BYTES", value_name = "BYTES")]
    pub buffer_max_bytes: Option<u64>,
    /// Log format [default: text].
    #[arg(long, env = "SONDE_AGENT_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `info,sonde_agent::ebpf=debug` [default: info].
    #[arg(long, env = "SONDE_AGENT_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// procfs mount point, e.g. `/host/proc` in a container [default: /proc].
    #[arg(long, env = "SONDE_AGENT_PATH_PROCFS", value_name = "DIR")]
    pub path_procfs: Option<PathBuf>,
    /// sysfs mount point [default: /sys].
    #[arg(long, env = "SONDE_AGENT_PATH_SYSFS", value_name = "DIR")]
    pub path_sysfs: Option<PathBuf>,
    /// Where the host's root filesystem is mounted [default: /].
    #[arg(long, env = "SONDE_AGENT_PATH_ROOTFS", value_name = "DIR")]
    pub path_rootfs: Option<PathBuf>,
    /// cgroupfs mount point [default: /sys/fs/cgroup].
    #[arg(long, env = "SONDE_AGENT_PATH_CGROUPFS", value_name = "DIR")]
    pub path_cgroupfs: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Capture or replay instead of running the agent (flags above go before it).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `sonde-agent capture` and `sonde-agent replay`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Record what the agent observes (kernel events, collector readings) into a Parquet file.
    Capture(crate::capture::run::CaptureArgs),
    /// Feed a capture through the agent's aggregation and exporter into aggregators.
    Replay(crate::replay::ReplayArgs),
}

impl Config {
    /// Builds the effective configuration from the command line (which carries the
    /// environment) and the config file it names.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let mut config = match &cli.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        if !cli.aggregators.is_empty() {
            config.aggregators = cli.aggregators.clone();
        }
        if let Some(v) = cli.listen_metrics {
            config.listen_metrics = v;
        }
        if let Some(v) = &cli.agent_id {
            config.agent_id = v.clone();
        }
        if let Some(v) = cli.interval {
            config.interval = v;
        }
        if cli.no_ebpf {
            config.ebpf.enabled = false;
        }
        if let Some(v) = &cli.buffer_dir {
            config.transport.buffer_dir = v.clone();
        }
        if let Some(v) = cli.buffer_max_bytes {
            config.transport.buffer_max_bytes = v;
        }
        if let Some(v) = cli.log_format {
            config.log_format = v;
        }
        if let Some(v) = &cli.log_level {
            config.log_level = v.clone();
        }
        if let Some(v) = &cli.path_procfs {
            config.node.procfs = v.clone();
        }
        if let Some(v) = &cli.path_sysfs {
            config.node.sysfs = v.clone();
        }
        if let Some(v) = &cli.path_rootfs {
            config.node.rootfs = v.clone();
        }
        if let Some(v) = &cli.path_cgroupfs {
            config.containers.cgroupfs = v.clone();
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

    /// Checks ranges and formats.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: String| Err(ConfigError::Invalid { key, problem });
        for name in self.labels.keys() {
            let mut bytes = name.bytes();
            let valid = bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.starts_with("__");
            if !valid {
                return invalid(
                    "labels",
                    format!(
                        "{name:?} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, no leading __)"
                    ),
                );
            }
        }
        if self.aggregators.is_empty() {
            return invalid(
                "aggregators",
                "must name at least one aggregator".to_owned(),
            );
        }
        for url in &self.aggregators {
            let (plaintext, rest) =
                match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
                    (Some(rest), _) => (true, rest),
                    (_, Some(rest)) => (false, rest),
                    _ => {
                        return invalid(
                            "aggregators",
                            format!("entry {url:?} is not an http:// or https:// URL"),
                        );
                    }
                };
            let host = rest.split(['/', '?']).next().unwrap_or("");
            if host.is_empty() {
                return invalid("aggregators", format!("entry {url:?} has no host"));
            }
            if plaintext && !self.transport.allow_plaintext && !is_loopback(host) {
                return invalid(
                    "aggregators",
                    format!(
                        "entry {url:?} is plaintext to a non-loopback host: use https:// (with \
                         [transport.tls]) or set transport.allow_plaintext = true explicitly"
                    ),
                );
            }
        }
        if self.interval < Duration::from_millis(100) {
            return invalid(
                "interval",
                format!("{:?} is below the minimum of 100ms", self.interval),
            );
        }
        if !(0..=22).contains(&self.compression_level) {
            return invalid(
                "compression_level",
                format!("{} is outside 0..=22", self.compression_level),
            );
        }
        let t = &self.transport;
        if t.buffer_max_bytes < 64 << 10 {
            return invalid(
                "transport.buffer_max_bytes",
                format!("{} is below the minimum of 64 KiB", t.buffer_max_bytes),
            );
        }
        if t.buffer_dir.as_os_str().is_empty() {
            return invalid("transport.buffer_dir", "must not be empty".to_owned());
        }
        if t.write_quorum > self.aggregators.len() {
            return invalid(
                "transport.write_quorum",
                format!(
                    "{} exceeds the number of aggregators ({})",
                    t.write_quorum,
                    self.aggregators.len()
                ),
            );
        }
        if t.tls.cert_file.is_some() != t.tls.key_file.is_some() {
            return invalid(
                "transport.tls",
                "cert_file and key_file must be set together (mutual TLS)".to_owned(),
            );
        }
        self.node.validate()?;
        self.containers.validate()?;
        self.traces
            .validate()
            .map_err(|problem| ConfigError::Invalid {
                key: "traces",
                problem,
            })?;
        self.ebpf.validate()
    }

    /// Delivery settings as the exporter takes them.
    pub fn security(&self) -> crate::export::Security {
        let t = &self.transport;
        crate::export::Security {
            ca_file: t.tls.ca_file.clone(),
            cert_file: t.tls.cert_file.clone(),
            key_file: t.tls.key_file.clone(),
            server_name: t.tls.server_name.clone(),
            bearer_token_file: t.bearer_token_file.clone(),
        }
    }

    /// The labels added to every series sent: `job`, `instance`, then the configured ones.
    pub fn target_labels(&self, agent_id: &str) -> Vec<(String, String)> {
        let mut labels = std::collections::BTreeMap::from([
            ("instance".to_owned(), agent_id.to_owned()),
            ("job".to_owned(), "sonde-agent".to_owned()),
        ]);
        labels.extend(self.labels.clone());
        labels.into_iter().filter(|(_, v)| !v.is_empty()).collect()
    }

    /// The agent id to use: the configured one, or the host name.
    pub fn effective_agent_id(&self) -> String {
        if !self.agent_id.is_empty() {
            return self.agent_id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown-host".to_owned())
    }
}

/// Whether a URL host (with optional port) is a loopback address.
fn is_loopback(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("sonde-agent").chain(args.iter().copied()))
            .expect("valid command line")
    }

    #[test]
    fn example_config_in_deploy_loads_and_equals_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent.example.toml");
        let config = Config::from_file(&path).expect("example config loads");
        config.validate().expect("example config is valid");
        assert_eq!(
            config,
            Config::default(),
            "the example documents the defaults"
        );
    }

    #[test]
    fn repeated_aggregator_flags_replace_the_file_list() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.toml");
        std::fs::write(
            &file,
            "aggregators = [\"http://file:1\"]\ninterval = \"5s\"\n",
        )
        .unwrap();
        let config = Config::load(&cli(&[
            "--config",
            file.to_str().unwrap(),
            "--aggregator",
            "http://127.0.0.1:1",
            "--aggregator",
            "https://b:2",
        ]))
        .unwrap();
        assert_eq!(config.aggregators, ["http://127.0.0.1:1", "https://b:2"]);
        assert_eq!(config.interval, Duration::from_secs(5));
    }

    #[test]
    fn plaintext_only_to_loopback_unless_allowed() {
        for ok in [
            "http://127.0.0.1:9181",
            "http://localhost:1",
            "http://[::1]:9181",
            "https://x:1",
        ] {
            assert!(Config::load(&cli(&["--aggregator", ok])).is_ok(), "{ok}");
        }
        let err = Config::load(&cli(&["--aggregator", "http://10.0.0.1:9181"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("transport.allow_plaintext"), "{err}");
        let mut config = Config {
            aggregators: vec!["http://10.0.0.1:9181".into()],
            ..Config::default()
        };
        config.transport.allow_plaintext = true;
        config.validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = Config::load(&cli(&["--aggregator", "a:1"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`aggregators`") && err.contains("a:1"),
            "{err}"
        );
        let err = Config::load(&cli(&["--interval", "1ms"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`interval`"), "{err}");
    }

    #[test]
    fn bad_ebpf_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        for (toml, key) in [
            (
                "[ebpf.http]\nring_buffer_size = 100000\n",
                "`ebpf.http.ring_buffer_size`",
            ),
            (
                "[ebpf.http]\nmax_connections = 10\n",
                "`ebpf.http.max_connections`",
            ),
            (
                "[ebpf.filter]\nexclude_processes = [\"a-name-longer-than-15\"]\n",
                "`ebpf.filter.exclude_processes`",
            ),
            (
                "[ebpf.filter]\ninclude_cgroups = [\"system.slice\"]\n",
                "`ebpf.filter.include_cgroups`",
            ),
        ] {
            let file = dir.path().join("c.toml");
            std::fs::write(&file, toml).unwrap();
            let err = Config::load(&cli(&["--config", file.to_str().unwrap()]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
    }
}
