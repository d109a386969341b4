//! `node_netstat_<Protocol>_<Field>` (untyped, like node_exporter) from `/proc/net/netstat`,
//! `/proc/net/snmp` and `/proc/net/snmp6`, limited to the configured fields (by default
//! node_exporter's list, which includes `Tcp_RetransSegs`, `ActiveOpens`, `PassiveOpens`,
//! `CurrEstab`). These are the counters of the network namespace the procfs view belongs to.

use std::path::{Path, PathBuf};

use regex::Regex;

use crate::collect::{
    CollectError, Collector, Emitter, Sources, config::filter, sources::parse_error,
};

/// Reads `/proc/net/{netstat,snmp,snmp6}`.
#[derive(Debug)]
pub struct NetstatCollector {
    dir: PathBuf,
    sources: Sources,
    fields: Option<Regex>,
}

impl NetstatCollector {
    /// A collector under `procfs` exporting fields that match `fields`.
    pub fn new(procfs: &Path, fields: &str) -> Self {
        Self {
            dir: procfs.join("net"),
            sources: Sources::new("netstat"),
            fields: filter(fields),
        }
    }
}

impl Collector for NetstatCollector {
    fn name(&self) -> &'static str {
        "netstat"
    }

    fn collect(&mut self, out: &mut Emitter) -> Result<(), CollectError> {
        let mut stats = Vec::new();
        for file in ["netstat", "snmp", "snmp6"] {
            let path = self.dir.join(file);
            let Some(text) = self.sources.read(&path)? else {
                continue;
            };
            let parsed = if file == "snmp6" {
                parse_snmp6(&text)
            } else {
                parse_pairs(&text)
            };
            stats.extend(parsed.map_err(|p| parse_error(&path, p))?);
        }
        for (key, value) in stats {
            if self.fields.as_ref().is_some_and(|r| !r.is_match(&key)) {
                continue;
            }
            let help = format!("Statistic {}.", key.replacen('_', "", 1));
            out.untyped(&format!("node_netstat_{key}"), &help, &[], value);
        }
        Ok(())
    }
}

/// `/proc/net/netstat` and `/proc/net/snmp`: a header line and a value line per protocol.
fn parse_pairs(text: &str) -> Result<Vec<(String, f64)>, String> {
    let mut out = Vec::new();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    while let Some(header) = lines.next() {
        let values = lines
            .next()
            .ok_or_else(|| format!("header {header:?} has no value line"))?;
        let mut names = header.split_whitespace();
        let mut numbers = values.split_whitespace();
        let (protocol, protocol_again) = (names.next().unwrap_or(""), numbers.next().unwrap_or(""));
        if protocol != protocol_again {
            return Err(format!(
                "header {protocol:?} followed by {protocol_again:?}"
            ));
        }
        let protocol = protocol.trim_end_matches(':');
        for (name, number) in names.zip(numbers) {
            let value: f64 = number
                .parse()
                .map_err(|_| format!("{protocol} {name}: {number:?} is not a number"))?;
            out.push((format!("{protocol}_{name}"), value));
        }
    }
    Ok(out)
}

/// `/proc/net/snmp6`: `Ip6InReceives 123` lines; the protocol ends at the first `6`.
fn parse_snmp6(text: &str) -> Result<Vec<(String, f64)>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split_whitespace();
        let (Some(key), Some(number)) = (parts.next(), parts.next()) else {
            return Err(format!("unexpected line {line:?}"));
        };
        let Some(split) = key.find('6') else {
            continue;
        };
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{key}: {number:?} is not a number"))?;
        out.push((format!("{}_{}", &key[..=split], &key[split + 1..]), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::{config::DEFAULT_NETSTAT_FIELDS, node::testutil};

    #[test]
    fn fields_from_all_three_files() {
        let dir = testutil::root(&[
            (
                "net/snmp",
                "Tcp: RtoAlgorithm ActiveOpens PassiveOpens CurrEstab RetransSegs MaxConn\nTcp: 1 503 363 5 7 -1\n",
            ),
            (
                "net/netstat",
                "TcpExt: SyncookiesSent TCPTimeouts Other\nTcpExt: 0 2 9\n",
            ),
            (
                "net/snmp6",
                "Ip6InOctets                     1234\nUdpLite6InErrors 3\nIcmp6InType1 4\n",
            ),
        ]);
        let mut e = Emitter::new(0);
        NetstatCollector::new(dir.path(), DEFAULT_NETSTAT_FIELDS)
            .collect(&mut e)
            .unwrap();
        let p = e.finish();
        let v = |n| testutil::value(&p, n, &[]);
        assert_eq!(v("node_netstat_Tcp_ActiveOpens"), Some(503.0));
        assert_eq!(v("node_netstat_Tcp_CurrEstab"), Some(5.0));
        assert_eq!(v("node_netstat_Tcp_RetransSegs"), Some(7.0));
        assert_eq!(v("node_netstat_TcpExt_TCPTimeouts"), Some(2.0));
        assert_eq!(v("node_netstat_Ip6_InOctets"), Some(1234.0));
        assert_eq!(v("node_netstat_UdpLite6_InErrors"), Some(3.0));
        assert_eq!(v("node_netstat_Tcp_MaxConn"), None, "filtered out");
        assert_eq!(v("node_netstat_Icmp6_InType1"), None, "filtered out");
        assert!(parse_pairs("Tcp: A\nUdp: 1\n").is_err());
    }
}
