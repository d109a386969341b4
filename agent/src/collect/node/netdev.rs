//! Network device counters from `/proc/net/dev` with node_exporter's names:
//! `node_network_{receive,transmit}_<field>_total{device}`. Same values as node_exporter's
//! netlink path in its default (legacy-named) mode; `receive_nohandler` (netlink only) is not
//! exported.

use std::path::{Path, PathBuf};

use regex::Regex;

use super::int;
use crate::collect::{
    CollectError, Collector, Emitter, Sources, config::filter, sources::parse_error,
};

const RECEIVE: [&str; 8] = [
    "bytes",
    "packets",
    "errs",
    "drop",
    "fifo",
    "frame",
    "compressed",
    "multicast",
];
const TRANSMIT: [&str; 8] = [
    "bytes",
    "packets",
    "errs",
    "drop",
    "fifo",
    "colls",
    "carrier",
    "compressed",
];

/// Reads `/proc/net/dev`.
#[derive(Debug)]
pub struct NetdevCollector {
    path: PathBuf,
    sources: Sources,
    exclude: Option<Regex>,
}

impl NetdevCollector {
    /// A collector under `procfs` skipping devices that match `device_exclude`.
    pub fn new(procfs: &Path, device_exclude: &str) -> Self {
        Self {
            path: procfs.join("net/dev"),
            sources: Sources::new("netdev"),
            exclude: filter(device_exclude),
        }
    }
}

impl Collector for NetdevCollector {
    fn name(&self) -> &'static str {
        "netdev"
    }

    fn collect(&mut self, out: &mut Emitter) -> Result<(), CollectError> {
        let Some(text) = self.sources.read(&self.path)? else {
            return Ok(());
        };
        for dev in parse(&text).map_err(|p| parse_error(&self.path, p))? {
            if self.exclude.as_ref().is_some_and(|r| r.is_match(&dev.name)) {
                continue;
            }
            emit(out, "node_network", &[("device", &dev.name)], &dev);
        }
        Ok(())
    }
}

/// Emits `<prefix>_{receive,transmit}_<field>_total` for one device, node_exporter style.
fn emit(out: &mut Emitter, prefix: &str, labels: &[(&str, &str)], dev: &Device) {
    for (direction, fields, values) in [
        ("receive", &RECEIVE, &dev.receive),
        ("transmit", &TRANSMIT, &dev.transmit),
    ] {
        for (field, value) in fields.iter().zip(values) {
            out.counter(
                &format!("{prefix}_{direction}_{field}_total"),
                &format!("Network device statistic {direction}_{field}."),
                labels,
                *value as f64,
            );
        }
    }
}

/// One line of `/proc/net/dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Interface name.
    pub name: String,
    /// bytes packets errs drop fifo frame compressed multicast.
    pub receive: [u64; 8],
    /// bytes packets errs drop fifo colls carrier compressed.
    pub transmit: [u64; 8],
}

/// Parses `/proc/net/dev` (also `/proc/<pid>/net/dev` for containers).
pub fn parse(text: &str) -> Result<Vec<Device>, String> {
    let mut devices = Vec::new();
    for line in text.lines().skip(2).filter(|l| !l.trim().is_empty()) {
        let (name, rest) = line
            .split_once(':')
            .ok_or_else(|| format!("line {line:?} has no ':'"))?;
        let name = name.trim().to_owned();
        let values = rest
            .split_whitespace()
            .map(|f| int(f, &name))
            .collect::<Result<Vec<u64>, String>>()?;
        if values.len() != 16 {
            return Err(format!(
                "device {name}: {} counters, expected 16",
                values.len()
            ));
        }
        let mut dev = Device {
            name,
            receive: [0; 8],
            transmit: [0; 8],
        };
        dev.receive.copy_from_slice(&values[..8]);
        dev.transmit.copy_from_slice(&values[8..]);
        devices.push(dev);
    }
    Ok(devices)
}

/// Emits cAdvisor's `container_network_*` for one device of a container.
pub fn emit_container(out: &mut Emitter, labels: &[(&str, &str)], dev: &Device) {
    let [rx_bytes, rx_packets, rx_errs, rx_drop, ..] = dev.receive;
    let [tx_bytes, tx_packets, tx_errs, tx_drop, ..] = dev.transmit;
    for (name, help, value) in [
        (
            "container_network_receive_bytes_total",
            "Cumulative count of bytes received",
            rx_bytes,
        ),
        (
            "container_network_receive_packets_total",
            "Cumulative count of packets received",
            rx_packets,
        ),
        (
            "container_network_receive_errors_total",
            "Cumulative count of errors encountered while receiving",
            rx_errs,
        ),
        (
            "container_network_receive_packets_dropped_total",
            "Cumulative count of packets dropped while receiving",
            rx_drop,
        ),
        (
            "container_network_transmit_bytes_total",
            "Cumulative count of bytes transmitted",
            tx_bytes,
        ),
        (
            "container_network_transmit_packets_total",
            "Cumulative count of packets transmitted",
            tx_packets,
        ),
        (
            "container_network_transmit_errors_total",
            "Cumulative count of errors encountered while transmitting",
            tx_errs,
        ),
        (
            "container_network_transmit_packets_dropped_total",
            "Cumulative count of packets dropped while transmitting",
            tx_drop,
        ),
    ] {
        out.counter(name, help, labels, value as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::node::testutil;

    const DEV: &str = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:  600724    4205    0    0    0     0          0         0   600724    4205    0    0    0     0       0          0\n  eth0: 677361244   25402    1    2    3     4          5         6  1322766   13838    7    8    9    10       11          12\n";

    #[test]
    fn counters_per_device() {
        let dir = testutil::root(&[("net/dev", DEV)]);
        let mut e = Emitter::new(0);
        NetdevCollector::new(dir.path(), "^lo$")
            .collect(&mut e)
            .unwrap();
        let p = e.finish();
        let v = |name, dev| testutil::value(&p, name, &[("device", dev)]);
        assert_eq!(
            v("node_network_receive_bytes_total", "eth0"),
            Some(677361244.0)
        );
        assert_eq!(v("node_network_receive_multicast_total", "eth0"), Some(6.0));
        assert_eq!(v("node_network_transmit_colls_total", "eth0"), Some(10.0));
        assert_eq!(
            v("node_network_transmit_compressed_total", "eth0"),
            Some(12.0)
        );
        assert_eq!(v("node_network_receive_bytes_total", "lo"), None);
        assert!(parse("a\nb\neth0: 1 2\n").unwrap_err().contains("eth0"));
    }
}
