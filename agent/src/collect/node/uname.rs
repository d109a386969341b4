//! `node_uname_info{sysname,release,version,machine,nodename,domainname} 1` from uname(2)
//! (the agent's UTS namespace: run it in the host's, as node_exporter).

use crate::collect::{CollectError, Collector, Emitter};

/// Calls uname(2).
#[derive(Debug, Default)]
pub struct UnameCollector;

impl UnameCollector {
    /// A collector.
    pub fn new() -> Self {
        Self
    }
}

fn field(chars: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Collector for UnameCollector {
    fn name(&self) -> &'static str {
        "uname"
    }

    fn collect(&mut self, out: &mut Emitter) -> Result<(), CollectError> {
        // SAFETY: utsname is plain old data; uname fills it and has no other preconditions.
        let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: `uts` is a valid, writable utsname.
        if unsafe { libc::uname(&mut uts) } != 0 {
            return Err(CollectError::Read {
                path: "uname(2)".to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
        let (sysname, release, version, machine, nodename, domainname) = (
            field(&uts.sysname),
            field(&uts.release),
            field(&uts.version),
            field(&uts.machine),
            field(&uts.nodename),
            field(&uts.domainname),
        );
        out.gauge(
            "node_uname_info",
            "Labeled system information as provided by the uname system call.",
            &[
                ("domainname", &domainname),
                ("machine", &machine),
                ("nodename", &nodename),
                ("release", &release),
                ("sysname", &sysname),
                ("version", &version),
            ],
            1.0,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::node::testutil;

    #[test]
    fn reports_this_kernel() {
        let mut e = Emitter::new(0);
        UnameCollector::new().collect(&mut e).unwrap();
        let p = e.finish();
        assert_eq!(
            testutil::value(&p, "node_uname_info", &[("sysname", "Linux")]),
            Some(1.0)
        );
    }
}
