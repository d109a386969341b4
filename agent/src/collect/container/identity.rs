//! What a cgroup path says about the container in it: the container id and runtime from
//! the last path component, the pod uid from a kubepods component. Covers docker
//! (`/docker/<id>`, `/system.slice/docker-<id>.scope`), containerd (`cri-containerd-<id>.scope`,
//! `nerdctl-<id>.scope`, bare ids under kubepods or a containerd namespace), cri-o
//! (`crio-<id>.scope`, `/crio-<id>`), podman (`libpod-<id>.scope`) and kubepods with the
//! cgroupfs (`/kubepods/burstable/pod<uid>/<id>`) or systemd
//! (`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/…`)
//! drivers.
//!
//! Must not: touch the filesystem or the network.

/// The container runtime a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// Docker Engine.
    Docker,
    /// containerd (CRI or nerdctl).
    Containerd,
    /// CRI-O.
    Crio,
    /// Podman.
    Podman,
}

/// Identity parsed from a cgroup path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The 64-hex container id.
    pub container_id: Option<String>,
    /// The runtime, when the path says.
    pub runtime: Option<Runtime>,
    /// The Kubernetes pod uid (with dashes).
    pub pod_uid: Option<String>,
}

impl Identity {
    /// Whether this is a container or a pod.
    pub fn is_container_or_pod(&self) -> bool {
        self.container_id.is_some() || self.pod_uid.is_some()
    }
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn pod_uid(s: &str) -> Option<String> {
    let uid = s.replace('_', "-");
    let parts: Vec<&str> = uid.split('-').collect();
    let shape = parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12];
    (shape && uid.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())).then_some(uid)
}

/// Parses a cgroup path such as `/kubepods/besteffort/pod<uid>/<id>`.
pub fn parse(path: &str) -> Identity {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut identity = Identity::default();
    for component in &components {
        let slice = component.strip_suffix(".slice").unwrap_or(component);
        let candidate = if let Some(rest) = slice.strip_prefix("kubepods-") {
            // kubepods-pod<uid> or kubepods-<qos>-pod<uid>
            rest.rsplit_once("pod").map(|(_, uid)| uid)
        } else {
            component.strip_prefix("pod")
        };
        if let Some(uid) = candidate.and_then(pod_uid) {
            identity.pod_uid = Some(uid);
        }
    }
    let Some(last) = components.last() else {
        return identity;
    };
    let base = last.strip_suffix(".scope").unwrap_or(last);
    let (runtime, id) = [
        ("docker-", Some(Runtime::Docker)),
        ("cri-containerd-", Some(Runtime::Containerd)),
        ("nerdctl-", Some(Runtime::Containerd)),
        ("crio-", Some(Runtime::Crio)),
        ("libpod-", Some(Runtime::Podman)),
    ]
    .iter()
    .find_map(|(prefix, runtime)| base.strip_prefix(prefix).map(|id| (*runtime, id)))
    .unwrap_or((None, base));
    if !is_container_id(id) {
        return identity;
    }
    let parent = components.len().checked_sub(2).map(|i| components[i]);
    identity.runtime = runtime.or(match parent {
        Some("docker") => Some(Runtime::Docker),
        Some("libpod_parent") => Some(Runtime::Podman),
        _ => None,
    });
    identity.container_id = Some(id.to_owned());
    identity
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f9a1c0e5b7d2a4c6e8f0a1b3c5d7e9f1a3b5c7d9e0f2a4b6c8d0e1f3a5b7c9d";
    const UID: &str = "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d";

    fn id(path: &str) -> (Option<String>, Option<Runtime>, Option<String>) {
        let i = parse(path);
        (i.container_id, i.runtime, i.pod_uid)
    }

    #[test]
    fn runtimes_and_drivers() {
        let some = || Some(ID.to_owned());
        assert_eq!(
            id(&format!("/docker/{ID}")),
            (some(), Some(Runtime::Docker), None)
        );
        assert_eq!(
            id(&format!("/system.slice/docker-{ID}.scope")),
            (some(), Some(Runtime::Docker), None)
        );
        assert_eq!(
            id(&format!("/system.slice/crio-{ID}.scope")),
            (some(), Some(Runtime::Crio), None)
        );
        assert_eq!(
            id(&format!("/machine.slice/libpod-{ID}.scope")),
            (some(), Some(Runtime::Podman), None)
        );
        assert_eq!(id(&format!("/default/{ID}")), (some(), None, None));
        let underscored = UID.replace('-', "_");
        assert_eq!(
            id(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{underscored}.slice/cri-containerd-{ID}.scope"
            )),
            (some(), Some(Runtime::Containerd), Some(UID.to_owned()))
        );
        assert_eq!(
            id(&format!("/kubepods.slice/kubepods-pod{underscored}.slice")),
            (None, None, Some(UID.to_owned()))
        );
        assert_eq!(
            id(&format!("/kubepods/besteffort/pod{UID}/{ID}")),
            (some(), None, Some(UID.to_owned()))
        );
        assert_eq!(
            id(&format!("/kubepods/burstable/pod{UID}/crio-{ID}")),
            (some(), Some(Runtime::Crio), Some(UID.to_owned()))
        );
    }

    #[test]
    fn not_containers() {
        for path in [
            "/",
            "/system.slice/nginx.service",
            "/user.slice/user-0.slice/session-1.scope",
            &format!("/system.slice/crio-conmon-{ID}.scope"),
            &format!("/docker/{}", &ID[..12]),
            &format!("/docker/{}", ID.to_uppercase()),
            "/kubepods/podnot-a-uid",
        ] {
            assert!(!parse(path).is_container_or_pod(), "{path}");
        }
    }
}
