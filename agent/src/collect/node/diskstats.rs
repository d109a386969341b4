//! Block device I/O from `/proc/diskstats` with node_exporter's names: `node_disk_*`
//! (bytes from 512-byte sectors, seconds from milliseconds) and `node_disk_info`.
//! Devices matching the exclude filter (by default partitions, loop and ram devices) are
//! skipped. Discard (kernel 4.18+) and flush (5.5+) fields appear when the kernel has them.

use std::path::{Path, PathBuf};

use regex::Regex;

use super::int;
use crate::collect::{
    CollectError, Collector, Emitter, Sources, config::filter, sources::parse_error,
};

/// Unit of the sector fields of `/proc/diskstats`, whatever the device's sector size.
const SECTOR_BYTES: f64 = 512.0;

/// How each field (after major, minor, name) is exported: name, help, scale. All are
/// counters except `io_now`, a gauge.
const FIELDS: [(&str, &str, f64); 17] = [
    (
        "node_disk_reads_completed_total",
        "The total number of reads completed successfully.",
        1.0,
    ),
    (
        "node_disk_reads_merged_total",
        "The total number of reads merged.",
        1.0,
    ),
    (
        "node_disk_read_bytes_total",
        "The total number of bytes read successfully.",
        SECTOR_BYTES,
    ),
    (
        "node_disk_read_time_seconds_total",
        "The total number of seconds spent by all reads.",
        0.001,
    ),
    (
        "node_disk_writes_completed_total",
        "The total number of writes completed successfully.",
        1.0,
    ),
    (
        "node_disk_writes_merged_total",
        "The number of writes merged.",
        1.0,
    ),
    (
        "node_disk_written_bytes_total",
        "The total number of bytes written successfully.",
        SECTOR_BYTES,
    ),
    (
        "node_disk_write_time_seconds_total",
        "This is the total number of seconds spent by all writes.",
        0.001,
    ),
    (
        "node_disk_io_now",
        "The number of I/Os currently in progress.",
        1.0,
    ),
    (
        "node_disk_io_time_seconds_total",
        "Total seconds spent doing I/Os.",
        0.001,
    ),
    (
        "node_disk_io_time_weighted_seconds_total",
        "The weighted # of seconds spent doing I/Os.",
        0.001,
    ),
    (
        "node_disk_discards_completed_total",
        "The total number of discards completed successfully.",
        1.0,
    ),
    (
        "node_disk_discards_merged_total",
        "The total number of discards merged.",
        1.0,
    ),
    (
        "node_disk_discarded_sectors_total",
        "The total number of sectors discarded successfully.",
        1.0,
    ),
    (
        "node_disk_discard_time_seconds_total",
        "This is the total number of seconds spent by all discards.",
        0.001,
    ),
    (
        "node_disk_flush_requests_total",
        "The total number of flush requests completed successfully",
        1.0,
    ),
    (
        "node_disk_flush_requests_time_seconds_total",
        "This is the total number of seconds spent by all flush requests.",
        0.001,
    ),
];

/// Reads `/proc/diskstats`.
#[derive(Debug)]
pub struct DiskstatsCollector {
    path: PathBuf,
    sources: Sources,
    exclude: Option<Regex>,
}

impl DiskstatsCollector {
    /// A collector under `procfs` skipping devices that match `device_exclude`.
    pub fn new(procfs: &Path, device_exclude: &str) -> Self {
        Self {
            path: procfs.join("diskstats"),
            sources: Sources::new("diskstats"),
            exclude: filter(device_exclude),
        }
    }
}

impl Collector for DiskstatsCollector {
    fn name(&self) -> &'static str {
        "diskstats"
    }

    fn collect(&mut self, out: &mut Emitter) -> Result<(), CollectError> {
        let Some(text) = self.sources.read(&self.path)? else {
            return Ok(());
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() < 14 {
                return Err(parse_error(
                    &self.path,
                    format!(
                        "line {line:?} has {} fields, expected at least 14",
                        parts.len()
                    ),
                ));
            }
            let (major, minor, device) = (parts[0], parts[1], parts[2]);
            if self.exclude.as_ref().is_some_and(|r| r.is_match(device)) {
                continue;
            }
            out.gauge(
                "node_disk_info",
                "Info of /sys/block/<block_device>.",
                &[("device", device), ("major", major), ("minor", minor)],
                1.0,
            );
            for ((name, help, scale), field) in FIELDS.iter().zip(&parts[3..]) {
                let value = int(field, &format!("{device} {name}"))
                    .map_err(|p| parse_error(&self.path, p))? as f64
                    * scale;
                if *name == "node_disk_io_now" {
                    out.gauge(name, help, &[("device", device)], value);
                } else {
                    out.counter(name, help, &[("device", device)], value);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::{config::DEFAULT_DISK_DEVICE_EXCLUDE, node::testutil};

    #[test]
    fn units_filters_and_optional_fields() {
        let dir = testutil::root(&[(
            "diskstats",
            "   7       0 loop0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n 254       0 vda 304975 21559 26497034 942620 50891 81237 39215592 163139 2 74324 1111707 30150 36 11080632 5705 3836 242\n 254       1 vda1 1 2 3 4 5 6 7 8 0 9 10\n   8       0 sda 1 2 3 4 5 6 7 8 0 9 10\n",
        )]);
        let mut e = Emitter::new(0);
        DiskstatsCollector::new(dir.path(), DEFAULT_DISK_DEVICE_EXCLUDE)
            .collect(&mut e)
            .unwrap();
        let p = e.finish();
        let v = |name, dev| testutil::value(&p, name, &[("device", dev)]);
        assert_eq!(
            v("node_disk_read_bytes_total", "vda"),
            Some(26497034.0 * 512.0)
        );
        assert_eq!(v("node_disk_io_time_seconds_total", "vda"), Some(74.324));
        assert_eq!(v("node_disk_io_now", "vda"), Some(2.0));
        assert_eq!(v("node_disk_flush_requests_total", "vda"), Some(3836.0));
        assert_eq!(v("node_disk_reads_completed_total", "loop0"), None);
        assert_eq!(v("node_disk_reads_completed_total", "vda1"), None);
        assert_eq!(v("node_disk_writes_completed_total", "sda"), Some(5.0));
        assert_eq!(
            v("node_disk_discards_completed_total", "sda"),
            None,
            "old kernel: no discard fields"
        );
        assert_eq!(
            testutil::value(&p, "node_disk_info", &[("device", "vda"), ("major", "254")]),
            Some(1.0)
        );
    }
}
