//! Include/exclude rules: turned into the kernel's rule table (comm and cgroup-subtree
//! rules) and applied again to every decoded event, so an excluded task is never exported
//! even before its cgroup could be resolved in the kernel.
//!
//! Must not: reorder or drop configured rules; the kernel table has one slot per rule.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use sonde_ebpf_common::{
    COMM_LEN, FilterRule,
    http::{filter_action, filter_kind},
};

use crate::config::FilterConfig;

/// A cgroup id that matches nothing (rules whose cgroup does not exist yet).
const NO_CGROUP: u64 = u64::MAX;

/// The rules, ready for both layers.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    config: FilterConfig,
    cgroup_root: Option<PathBuf>,
}

impl Filter {
    /// Rules from the configuration; cgroup paths are resolved under `cgroup_root` (the
    /// cgroup v2 mount).
    pub fn new(config: &FilterConfig, cgroup_root: Option<PathBuf>) -> Self {
        Self {
            config: config.clone(),
            cgroup_root,
        }
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.config.is_empty()
    }

    /// The kernel's rule table, in configuration order: includes then excludes, processes
    /// then cgroups. Cgroups that do not exist (yet) get an id that matches nothing; see
    /// [`Filter::kernel_rules`] again later to resolve them.
    pub fn kernel_rules(&self) -> Vec<FilterRule> {
        let c = &self.config;
        let mut rules = Vec::with_capacity(c.len());
        for (names, action) in [
            (&c.include_processes, filter_action::INCLUDE),
            (&c.exclude_processes, filter_action::EXCLUDE),
        ] {
            for name in names {
                let mut comm = [0u8; COMM_LEN];
                let bytes = name.as_bytes();
                let n = bytes.len().min(COMM_LEN - 1);
                comm[..n].copy_from_slice(&bytes[..n]);
                rules.push(FilterRule {
                    kind: filter_kind::COMM,
                    action,
                    level: 0,
                    _pad: 0,
                    cgroup_id: 0,
                    comm,
                });
            }
        }
        for (paths, action) in [
            (&c.include_cgroups, filter_action::INCLUDE),
            (&c.exclude_cgroups, filter_action::EXCLUDE),
        ] {
            for path in paths {
                let (id, level) = self.resolve(path).unwrap_or((NO_CGROUP, depth(path)));
                rules.push(FilterRule {
                    kind: filter_kind::CGROUP,
                    action,
                    level,
                    _pad: 0,
                    cgroup_id: id,
                    comm: [0; COMM_LEN],
                });
            }
        }
        rules
    }

    /// The cgroup v2 id (inode) and depth of `path`, if it exists.
    fn resolve(&self, path: &str) -> Option<(u64, u32)> {
        let root = self.cgroup_root.as_deref()?;
        let dir = root.join(path.trim_start_matches('/'));
        let meta = std::fs::metadata(dir).ok()?;
        Some((meta.ino(), depth(path)))
    }

    /// Whether an event of a thread named `comm` in cgroup `cgroup_path` may be exported.
    pub fn allows(&self, comm: &str, cgroup_path: Option<&str>) -> bool {
        let c = &self.config;
        let comm_is = |name: &String| truncate_comm(name) == comm;
        let under = |prefix: &String| cgroup_path.is_some_and(|p| is_under(p, prefix));
        if c.exclude_processes.iter().any(comm_is) || c.exclude_cgroups.iter().any(under) {
            return false;
        }
        let has_include = !c.include_processes.is_empty() || !c.include_cgroups.is_empty();
        !has_include
            || c.include_processes.iter().any(comm_is)
            || c.include_cgroups.iter().any(under)
    }
}

/// The comm the kernel would show for a process name (at most 15 bytes).
fn truncate_comm(name: &str) -> &str {
    let mut end = name.len().min(COMM_LEN - 1);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Depth of a cgroup path: `/` is 0, `/a` is 1, `/a/b` is 2.
fn depth(path: &str) -> u32 {
    path.split('/').filter(|s| !s.is_empty()).count() as u32
}

/// Whether cgroup `path` is `prefix` or below it (component-wise).
fn is_under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `Path` of the cgroup v2 root, for callers that have none configured.
pub fn cgroup_root() -> Option<PathBuf> {
    super::identity::cgroup2_mount().filter(|p| Path::new(p).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> FilterConfig {
        FilterConfig {
            include_processes: vec!["nginx".into()],
            exclude_processes: vec!["wrk".into()],
            include_cgroups: vec!["/system.slice/app.service".into()],
            exclude_cgroups: vec!["/system.slice/app.service/secret".into()],
        }
    }

    #[test]
    fn user_space_rules() {
        let f = Filter::new(&config(), None);
        assert!(f.allows("nginx", None));
        assert!(!f.allows("wrk", Some("/system.slice/app.service")));
        assert!(f.allows("python3", Some("/system.slice/app.service/worker")));
        assert!(!f.allows("python3", Some("/system.slice/app.service/secret/x")));
        // Component-wise: app.service2 is not below app.service.
        assert!(!f.allows("python3", Some("/system.slice/app.service2")));
        assert!(!f.allows("python3", None));
        assert!(Filter::new(&FilterConfig::default(), None).allows("anything", None));
        let only_exclude = FilterConfig {
            exclude_processes: vec!["wrk".into()],
            ..Default::default()
        };
        assert!(Filter::new(&only_exclude, None).allows("curl", None));
    }

    #[test]
    fn kernel_rules_resolve_cgroups_and_keep_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("system.slice/app.service")).unwrap();
        let f = Filter::new(&config(), Some(dir.path().to_owned()));
        let rules = f.kernel_rules();
        assert_eq!(rules.len(), 4);
        assert_eq!(
            (rules[0].kind, rules[0].action, &rules[0].comm[..6]),
            (filter_kind::COMM, filter_action::INCLUDE, &b"nginx\0"[..])
        );
        assert_eq!(rules[1].action, filter_action::EXCLUDE);
        let ino = std::fs::metadata(dir.path().join("system.slice/app.service"))
            .unwrap()
            .ino();
        assert_eq!((rules[2].cgroup_id, rules[2].level), (ino, 2));
        // Not created yet: matches nothing until resolved again.
        assert_eq!((rules[3].cgroup_id, rules[3].level), (NO_CGROUP, 3));
    }
}
