//! Container metrics against real cgroups: the test creates cgroups with docker-,
//! systemd-, containerd-, cri-o- and kubepods-style paths in this host's v1 hierarchies and
//! in the v2 (`unified`) one, moves real processes into them (a busy loop, a process that
//! allocates memory, a process in its own network namespace with a veth pair), and checks the agent's
//! `container_*` series — labels and values — against the cgroup files read around the same
//! collection tick. The cgroups and processes are removed at the end, also on failure.
//!
//! Name resolution is pointed at an unreachable docker socket and kubelet: series keep their
//! ids and nothing is logged above debug about it.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sonde_tests::{Agent, eventually, exposition::Exposition, free_addr, http_get};

const CGROUPFS: &str = "/sys/fs/cgroup";
const V1: &[&str] = &["cpu", "cpuacct", "memory", "blkio", "pids"];

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn hex_id(seed: u64) -> String {
    (0..4)
        .map(|i| {
            format!(
                "{:016x}",
                seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(i * 13) ^ (i as u64)
            )
        })
        .collect()
}

/// Cgroups and processes created by the test; everything is removed on drop.
struct Fixture {
    dirs: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dirs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Creates `path` (and its parents) in each hierarchy; returns the leaf directories.
    fn cgroup(&mut self, hierarchies: &[&str], path: &str) -> Vec<PathBuf> {
        let mut leaves = Vec::new();
        for h in hierarchies {
            let mut dir = Path::new(CGROUPFS).join(h);
            for component in path.trim_start_matches('/').split('/') {
                dir = dir.join(component);
                if !dir.exists() {
                    std::fs::create_dir(&dir)
                        .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                    self.dirs.push(dir.clone());
                }
            }
            leaves.push(dir);
        }
        leaves
    }

    /// Spawns `cmd` (which waits for a line on stdin before its real work), moves it into
    /// `leaves`, then lets it go. Returns its pid.
    fn run_in(
        &mut self,
        leaves: &[PathBuf],
        cmd: &mut Command,
    ) -> (
        u32,
        ChildStdin,
        Option<BufReader<std::process::ChildStdout>>,
    ) {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn workload");
        let pid = child.id();
        for leaf in leaves {
            std::fs::write(leaf.join("cgroup.procs"), pid.to_string())
                .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", leaf.display()));
        }
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "go").unwrap();
        let stdout = child.stdout.take().map(BufReader::new);
        self.children.push(child);
        (pid, stdin, stdout)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever else runs in our cgroups (children of the workloads) goes too.
        for dir in &self.dirs {
            for pid in std::fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    // SAFETY: signalling a process of our own test cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        // Deepest first; a just-emptied v1 memory cgroup can take a moment to be removable.
        for dir in self.dirs.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if dir.exists() {
                eprintln!("could not remove cgroup {}", dir.display());
            }
        }
    }
}

fn read_u64(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

fn keyed(path: &Path, key: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{key} not in {}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// Reads `before`, waits for an agent tick that started afterwards, reads `after`.
fn around_a_tick<T>(agent_url: &str, read: impl Fn() -> T) -> (T, Exposition, T) {
    let before = read();
    let t = now();
    let shown = eventually(Duration::from_secs(20), "an agent tick", || {
        let e = Exposition::parse(&http_get(agent_url).ok()?.body);
        (e.get("sonde_agent_last_collection_timestamp_seconds", &[])? >= t).then_some(e)
    });
    (before, shown, read())
}

fn one(
    e: &Exposition,
    name: &str,
    labels: &[(&str, &str)],
) -> (std::collections::BTreeMap<String, String>, f64) {
    let found = e.find(name, labels);
    assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
    (found[0].0.clone(), found[0].1)
}

#[test]
fn docker_systemd_kubepods_cgroups_v1_and_v2_with_real_processes() {
    assert!(
        sonde_tests::require_root("agent_container_cgroups"),
        "creating cgroups needs root"
    );
    let tmp = tempfile::tempdir().unwrap();
    // An unreachable docker (socket path with nobody listening) and kubelet (closed port).
    let docker_socket = tmp.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&docker_socket).unwrap());
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[containers]\ncgroups = \"containers\"\ndocker_socket = \"{}\"\nkubelet_url = \"http://{}\"\nresolve_timeout = \"500ms\"\n",
            docker_socket.display(),
            free_addr()
        ),
    )
    .unwrap();
    let dead_aggregator = format!("http://{}", free_addr());
    let agent = Agent::start(
        &[dead_aggregator],
        &[
            "--no-ebpf",
            "--interval",
            "1s",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let url = format!("http://{}/metrics", agent.metrics);

    let seed = u64::from(std::process::id()) << 20 ^ (now() * 1e3) as u64;
    let prefix = format!("/sonde-test-{}-{}", std::process::id(), seed % 100_000);
    let (docker, systemd, crio, containerd, netns) = (
        hex_id(seed),
        hex_id(seed + 1),
        hex_id(seed + 2),
        hex_id(seed + 3),
        hex_id(seed + 4),
    );
    let (uid_crio, uid_containerd) = (
        "0f3c2a1b-4d5e-4f60-8a7b-9c0d1e2f3a4b",
        "7e6d5c4b-3a29-4180-9f7e-6d5c4b3a2918",
    );
    let mut fx = Fixture::new();

    // 1. docker, cgroupfs driver, v1: a busy loop.
    let docker_path = format!("{prefix}/docker/{docker}");
    let docker_dirs = fx.cgroup(V1, &docker_path);
    fx.run_in(
        &docker_dirs,
        Command::new("sh").args(["-c", "read x; while :; do :; done"]),
    );
    // 2. docker, systemd driver, v1: allocates and touches 64 MiB after being moved.
    let systemd_path = format!("{prefix}/system.slice/docker-{systemd}.scope");
    let systemd_dirs = fx.cgroup(V1, &systemd_path);
    let (_, _keep, stdout) = fx.run_in(
        &systemd_dirs,
        Command::new("/usr/bin/python3").args(["-c", "import sys,time\nsys.stdin.readline()\nx = b'a' * (64 << 20)\nprint('ready', flush=True)\ntime.sleep(600)"]),
    );
    let mut line = String::new();
    stdout.unwrap().read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    // 3. cri-o under kubepods (cgroupfs driver), v1.
    let crio_path = format!("{prefix}/kubepods/besteffort/pod{uid_crio}/crio-{crio}");
    let crio_dirs = fx.cgroup(V1, &crio_path);
    fx.run_in(
        &crio_dirs,
        Command::new("sh").args(["-c", "read x; sleep 600"]),
    );
    // 4. containerd under kubepods (systemd driver), cgroup v2 only: a busy loop.
    let containerd_path = format!(
        "{prefix}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{containerd}.scope",
        uid_containerd.replace('-', "_")
    );
    let containerd_dirs = fx.cgroup(&["unified"], &containerd_path);
    fx.run_in(
        &containerd_dirs,
        Command::new("sh").args(["-c", "read x; while :; do :; done"]),
    );
    // 5. docker, v1, in its own network namespace with a dummy interface it sends on.
    let netns_path = format!("{prefix}/docker/{netns}");
    let netns_dirs = fx.cgroup(V1, &netns_path);
    let (netns_pid, _keep2, netns_out) = fx.run_in(
        &netns_dirs,
        Command::new("unshare").args(["-n", "/usr/bin/python3", "-c", "import sys,socket,subprocess,time\nsys.stdin.readline()\nfor c in ['ip link add eth0 type veth peer name peer0', 'ip link set peer0 up', 'ip link set eth0 up', 'ip addr add 10.99.0.1/24 dev eth0', 'ip neigh add 10.99.0.3 lladdr 02:00:00:00:00:03 dev eth0']: subprocess.run(c.split(), check=True)\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor _ in range(5): s.sendto(b'x' * 100, ('10.99.0.3', 9))\nprint('sent', flush=True)\ntime.sleep(600)"]),
    );
    let mut line = String::new();
    netns_out.unwrap().read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "sent");

    // Labels: id, container_id, pod_uid; no names (resolution unreachable).
    let (labels, _) = eventually(
        Duration::from_secs(20),
        "the new cgroups to be discovered",
        || {
            let e = Exposition::parse(&http_get(&url).ok()?.body);
            let found = e.find(
                "container_cpu_usage_seconds_total",
                &[("id", containerd_path.as_str())],
            );
            (found.len() == 1
                && !e
                    .find(
                        "container_cpu_usage_seconds_total",
                        &[("id", netns_path.as_str())],
                    )
                    .is_empty())
            .then(|| (found[0].0.clone(), found[0].1))
        },
    );
    assert_eq!(labels.get("container_id"), Some(&containerd));
    assert_eq!(
        labels.get("pod_uid").map(String::as_str),
        Some(uid_containerd)
    );
    assert_eq!(labels.get("cpu").map(String::as_str), Some("total"));
    for absent in ["name", "image", "namespace", "pod", "container"] {
        assert!(
            !labels.contains_key(absent),
            "{absent} set without a reachable runtime: {labels:?}"
        );
    }

    // CPU (v1 cpuacct, busy loop) and memory (v1) against the files around one tick.
    let cpuacct = Path::new(CGROUPFS)
        .join("cpuacct")
        .join(docker_path.trim_start_matches('/'));
    let memory = Path::new(CGROUPFS)
        .join("memory")
        .join(systemd_path.trim_start_matches('/'));
    let unified = Path::new(CGROUPFS)
        .join("unified")
        .join(containerd_path.trim_start_matches('/'));
    let read = || {
        (
            read_u64(&cpuacct.join("cpuacct.usage")) as f64 / 1e9,
            read_u64(&memory.join("memory.usage_in_bytes")) as f64,
            keyed(&unified.join("cpu.stat"), "usage_usec") as f64 / 1e6,
        )
    };
    let (before, shown, after) = around_a_tick(&url, read);
    let (l, cpu) = one(
        &shown,
        "container_cpu_usage_seconds_total",
        &[("id", &docker_path)],
    );
    assert_eq!(l.get("container_id"), Some(&docker));
    assert!(!l.contains_key("pod_uid"));
    assert!(
        before.0 <= cpu && cpu <= after.0,
        "docker cpu {cpu} not within cpuacct.usage {} .. {}",
        before.0,
        after.0
    );
    assert!(cpu > 0.1, "the busy loop burnt CPU: {cpu}");
    let (_, usage) = one(
        &shown,
        "container_memory_usage_bytes",
        &[("id", &systemd_path)],
    );
    assert!(
        (usage - before.1).abs() <= 0.05 * before.1 + 1e6
            && (usage - after.1).abs() <= 0.05 * after.1 + 1e6,
        "memory usage {usage} vs {} / {}",
        before.1,
        after.1
    );
    let (l, rss) = one(&shown, "container_memory_rss", &[("id", &systemd_path)]);
    assert_eq!(l.get("container_id"), Some(&systemd));
    let stat = memory.join("memory.stat");
    assert_eq!(
        rss,
        keyed(&stat, "total_rss") as f64,
        "rss equals total_rss (stable after allocation)"
    );
    assert!(rss >= (64 << 20) as f64, "rss {rss} holds the 64 MiB");
    let (_, working_set) = one(
        &shown,
        "container_memory_working_set_bytes",
        &[("id", &systemd_path)],
    );
    let inactive = keyed(&stat, "total_inactive_file") as f64;
    assert!(
        (working_set - (usage - inactive).max(0.0)).abs() <= 1e6,
        "working set {working_set} = usage {usage} - inactive_file {inactive}"
    );
    let (_, v2cpu) = one(
        &shown,
        "container_cpu_usage_seconds_total",
        &[("id", &containerd_path)],
    );
    assert!(
        before.2 <= v2cpu && v2cpu <= after.2,
        "v2 cpu {v2cpu} not within cpu.stat usage {} .. {}",
        before.2,
        after.2
    );
    // cgroup v2 here has no memory controller: no memory series, never a zero.
    assert!(
        shown
            .find("container_memory_usage_bytes", &[("id", &containerd_path)])
            .is_empty()
    );
    // PSI comes from v2.
    one(
        &shown,
        "container_pressure_cpu_waiting_seconds_total",
        &[("id", &containerd_path)],
    );
    // cri-o under kubepods (cgroupfs driver).
    let (l, _) = one(
        &shown,
        "container_memory_usage_bytes",
        &[("id", &crio_path)],
    );
    assert_eq!(
        (l.get("container_id"), l.get("pod_uid").map(String::as_str)),
        (Some(&crio), Some(uid_crio))
    );
    // Pod-level cgroups are reported with their pod uid and no container id.
    let pod_path = format!("{prefix}/kubepods/besteffort/pod{uid_crio}");
    let (l, _) = one(&shown, "container_memory_usage_bytes", &[("id", &pod_path)]);
    assert!(!l.contains_key("container_id"));
    // Processes (v1 pids).
    let (_, procs) = one(&shown, "container_processes", &[("id", &crio_path)]);
    let pids = read_u64(
        &Path::new(CGROUPFS)
            .join("pids")
            .join(crio_path.trim_start_matches('/'))
            .join("pids.current"),
    );
    assert_eq!(procs, pids as f64, "sh and its sleep");
    assert_eq!(procs, 2.0);
    // Network: the container's own namespace, by interface; lo is not reported. IPv6
    // neighbour discovery keeps sending, so the files are read around a tick.
    let eth0 = || -> Vec<u64> {
        let net_dev = std::fs::read_to_string(format!("/proc/{netns_pid}/net/dev")).unwrap();
        net_dev
            .lines()
            .find_map(|l| l.trim().strip_prefix("eth0:"))
            .unwrap()
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let (before, shown, after) = around_a_tick(&url, eth0);
    let (l, tx_packets) = one(
        &shown,
        "container_network_transmit_packets_total",
        &[("id", &netns_path), ("interface", "eth0")],
    );
    assert_eq!(l.get("container_id"), Some(&netns));
    assert!(
        before[9] as f64 <= tx_packets && tx_packets <= after[9] as f64,
        "tx packets {tx_packets} vs {} .. {}",
        before[9],
        after[9]
    );
    assert!(tx_packets >= 5.0);
    let (_, tx_bytes) = one(
        &shown,
        "container_network_transmit_bytes_total",
        &[("id", &netns_path), ("interface", "eth0")],
    );
    assert!(
        before[8] as f64 <= tx_bytes && tx_bytes <= after[8] as f64,
        "tx bytes {tx_bytes} vs {} .. {}",
        before[8],
        after[8]
    );
    assert!(
        shown
            .find(
                "container_network_transmit_packets_total",
                &[("interface", "lo")]
            )
            .is_empty()
    );
    assert!(
        shown
            .find(
                "container_network_transmit_packets_total",
                &[("id", &docker_path)]
            )
            .is_empty(),
        "host network namespace: no container network series"
    );

    // A container that exits and whose cgroup is removed disappears (inotify).
    let mut busy = fx.children.remove(0);
    busy.kill().unwrap();
    busy.wait().unwrap();
    for h in V1 {
        let dir = Path::new(CGROUPFS)
            .join(h)
            .join(docker_path.trim_start_matches('/'));
        for _ in 0..50 {
            if std::fs::remove_dir(&dir).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    eventually(
        Duration::from_secs(20),
        "the removed container's series to go",
        || {
            let e = Exposition::parse(&http_get(&url).ok()?.body);
            e.find("container_cpu_usage_seconds_total", &[("id", &docker_path)])
                .is_empty()
                .then_some(())
        },
    );

    // Unreachable runtimes degrade silently.
    let log = agent.log();
    for line in log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
    {
        assert!(
            !line.contains("docker") && !line.contains("kubelet") && !line.contains("resolve"),
            "unexpected log line: {line}"
        );
    }
    drop(fx);
}

#[test]
fn missing_cgroupfs_is_logged_once_and_node_metrics_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let absent = tmp.path().join("no-cgroups");
    let dead_aggregator = format!("http://{}", free_addr());
    let agent = Agent::start(
        &[dead_aggregator],
        &[
            "--no-ebpf",
            "--interval",
            "200ms",
            "--path-cgroupfs",
            absent.to_str().unwrap(),
        ],
    );
    let url = format!("http://{}/metrics", agent.metrics);
    eventually(Duration::from_secs(20), "several ticks", || {
        let e = Exposition::parse(&http_get(&url).ok()?.body);
        (e.get(
            "sonde_agent_collect_duration_seconds_count",
            &[("collector", "container")],
        )? >= 5.0)
            .then_some(())
    });
    let e = Exposition::parse(&http_get(&url).unwrap().body);
    assert!(e.get("node_load1", &[]).is_some());
    assert!(e.names().iter().all(|n| !n.starts_with("container_")));
    assert_eq!(
        e.get(
            "sonde_agent_collector_errors_total",
            &[("collector", "container")]
        ),
        None
    );
    let log = agent.log();
    let mentions = log
        .lines()
        .filter(|l| l.contains("no cgroup hierarchy found"))
        .count();
    assert_eq!(mentions, 1, "logged once:\n{log}");
    assert!(
        log.contains(&absent.display().to_string()),
        "the log names the path:\n{log}"
    );
}
