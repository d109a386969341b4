//! Real workloads for the eBPF HTTP and TCP tests: cgroups that look like containers,
//! network namespaces with a veth pair, nginx, and the Python servers and clients in
//! `tests/fixtures/http/` that record their own per-request timing (the truth the agent is
//! compared with).
//!
//! Everything created here is removed on drop (processes killed, cgroups and namespaces
//! deleted), also when the test panics.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use crate::{Process, eventually};

/// The CPU timed workloads are pinned to: the last one this process may run on.
pub fn workload_cpu() -> usize {
    // SAFETY: `set` is a plain bitmask the call fills in.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; the size is that of `set`.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(
        rc,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    (0..libc::CPU_SETSIZE as usize)
        .rev()
        // SAFETY: `i` is below CPU_SETSIZE.
        .find(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .expect("at least one CPU")
}

/// Held by a test while its timed workloads run: the tests of one test binary run in
/// parallel, and two of them on the [`workload_cpu`] at once would queue each other's
/// real-time tasks inside the spans they time.
pub fn exclusive_cpu() -> std::sync::MutexGuard<'static, ()> {
    static CPU: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that panicked while holding it leaves nothing behind that matters here.
    CPU.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process and call: `<prefix><pid>x<n>`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where the cgroup v2 hierarchy is mounted.
pub fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    mounts
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .expect("a cgroup2 hierarchy is mounted (the agent's container tests need it)")
}

/// A cgroup v2 directory for this test, with container-like children. Removing it kills
/// whatever still runs inside.
#[derive(Debug)]
pub struct TestCgroup {
    root: PathBuf,
    /// Path relative to the cgroup2 root, e.g. `/sonde-test-123x0`.
    pub path: String,
    children: Vec<PathBuf>,
}

impl TestCgroup {
    /// Creates `/sonde-test-<unique>`.
    pub fn new() -> Self {
        let root = cgroup2_root();
        let name = unique("sonde-test-");
        std::fs::create_dir(root.join(&name))
            .unwrap_or_else(|e| panic!("create cgroup {name}: {e}"));
        Self {
            root,
            path: format!("/{name}"),
            children: Vec::new(),
        }
    }

    /// Creates a child named like a Docker container scope; returns its 64-hex id and path
    /// (relative to the cgroup2 root).
    pub fn container(&mut self) -> (String, String) {
        let id = format!("{}{}", random_hex32(), random_hex32());
        let rel = format!("{}/docker-{id}.scope", self.path);
        let dir = self.root.join(rel.trim_start_matches('/'));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create cgroup {rel}: {e}"));
        self.children.push(dir);
        (id, rel)
    }

    /// A command that moves itself into cgroup `rel` and then runs `program args…`.
    pub fn command(&self, rel: &str, program: &str, args: &[&str]) -> Command {
        self.spawn_in(rel, "exec \"$@\"", program, args)
    }

    /// Like [`TestCgroup::command`], at real-time priority (`chrt -f 10`) when the system
    /// allows it: a workload that times itself is then not preempted by the machine's other
    /// work between its own clock reads and its syscalls, which the agent cannot see.
    ///
    /// When it is, the workload is also pinned to one CPU ([`workload_cpu`]): a request then
    /// passes from client to server (and on to a backend) by a direct switch between
    /// real-time tasks on that CPU, never by a wake-up on another CPU, which on a busy
    /// (virtual) machine can wait milliseconds for that CPU and would add time to one side's
    /// truth that the other side's measurement does not contain.
    pub fn command_rt(&self, rel: &str, program: &str, args: &[&str]) -> Command {
        let cpu = workload_cpu();
        self.spawn_in(
            rel,
            &format!(
                "if chrt -f 10 true 2>/dev/null; then exec taskset -c {cpu} chrt -f 10 \"$@\"; \
                 else exec \"$@\"; fi"
            ),
            program,
            args,
        )
    }

    fn spawn_in(&self, rel: &str, exec: &str, program: &str, args: &[&str]) -> Command {
        let procs = self
            .root
            .join(rel.trim_start_matches('/'))
            .join("cgroup.procs");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("echo $$ > {} && {exec}", procs.display()))
            .arg("sh")
            .arg(program)
            .args(args);
        cmd
    }

    fn kill_all(dir: &Path) {
        for _ in 0..50 {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            let pids: Vec<i32> = procs
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                // SAFETY: signalling processes this test started (they live in its cgroup).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Default for TestCgroup {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for child in self.children.iter().rev() {
            Self::kill_all(child);
            let _ = std::fs::remove_dir(child);
        }
        let own = self.root.join(self.path.trim_start_matches('/'));
        Self::kill_all(&own);
        let _ = std::fs::remove_dir(own);
    }
}

/// 32 random lowercase hex digits (a kernel-generated UUID without dashes).
fn random_hex32() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("read a random uuid")
        .trim()
        .replace('-', "")
}

/// `GET path` to a loopback fixture server on a fresh `Connection: close` connection, with a
/// `traceparent` header when given; panics unless the answer is `HTTP/1.0 200`.
///
/// The request goes out in one write: `write!` on an unbuffered stream sends every piece of
/// the format string as its own segment, and the kernel sees `traceparent` only in the
/// buffer that holds the request line (split requests are `agent_http_split_request.rs`'s
/// subject). Under load the pieces arrived apart and spans started new traces.
pub fn get_close(port: u16, path: &str, traceparent: Option<&str>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let tp = traceparent
        .map(|t| format!("traceparent: {t}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{tp}Connection: close\r\n\r\n");
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    assert!(out.starts_with("HTTP/1.0 200"), "GET {path}: {out:?}");
}

/// Waits for a port file written by a fixture and returns the port.
pub fn wait_port(file: &Path, process: &mut Process) -> u16 {
    process
        .wait_until(Duration::from_secs(20), || file.exists())
        .unwrap_or_else(|log| panic!("fixture did not start:\n{log}"));
    std::fs::read_to_string(file)
        .expect("port file")
        .trim()
        .parse()
        .expect("port number")
}

/// One line of a timing log: kind, status, nanoseconds, start (CLOCK_MONOTONIC ns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// Route kind (`fast`, `slow`, …).
    pub kind: String,
    /// Status code.
    pub status: u16,
    /// Duration in ns.
    pub ns: u64,
    /// Start, CLOCK_MONOTONIC ns: orders the requests of one kind like the agent's spans.
    pub start_ns: u64,
}

/// Requests per connection of a `timed_client.py` plan (`kind:count,…`), warm-up excluded.
pub fn plan_len(plan: &str) -> usize {
    plan.split(',')
        .map(|item| {
            let (_, count) = item.split_once(':').expect("kind:count");
            count.parse::<usize>().expect("count")
        })
        .sum()
}

/// Reads a timing log once it has `n` lines (a server's logger thread may lag behind its
/// responses); panics with what it has after 20 s.
pub fn wait_timings(path: &Path, n: usize) -> Vec<Timing> {
    let mut last = Vec::new();
    for _ in 0..200 {
        last = read_timings(path);
        if last.len() >= n {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{} has {} timings, expected {n}",
        path.display(),
        last.len()
    );
}

/// Reads a timing log.
pub fn read_timings(path: &Path) -> Vec<Timing> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let mut f = line.split_whitespace();
            Timing {
                kind: f.next().expect("kind").to_owned(),
                status: f.next().and_then(|s| s.parse().ok()).expect("status"),
                ns: f.next().and_then(|s| s.parse().ok()).expect("ns"),
                start_ns: f.next().and_then(|s| s.parse().ok()).expect("start"),
            }
        })
        .collect()
}

/// The kind of the first request of every connection of `timed_client.py`: counted, but
/// not compared for latency, because it includes the server's accept (and thread start),
/// which the client's clock sees and the server's does not.
pub const WARMUP: &str = "warmup";

/// Nearest-rank quantile of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Mean.
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Whether `measured` agrees with `truth` within 5% or 0.3 ms (the tolerance).
pub fn agrees(measured: f64, truth: f64) -> bool {
    (measured - truth).abs() <= (0.05 * truth).max(0.0003)
}

/// An nginx instance in a cgroup, with its own prefix directory and config.
#[derive(Debug)]
pub struct Nginx {
    /// The port it listens on.
    pub port: u16,
    /// Access log (`$uri $status $request_time`).
    pub access_log: PathBuf,
    /// The master process.
    pub process: Process,
}

impl Nginx {
    /// Starts nginx in cgroup `rel` of `cgroup` with `server_body` inside its `server {}`
    /// block (listening on a free port; `tls` adds a self-signed certificate), and
    /// `http_extra` in the `http {}` block.
    pub fn start(
        cgroup: &TestCgroup,
        rel: &str,
        dir: &Path,
        tls: bool,
        server_body: &str,
        http_extra: &str,
    ) -> Self {
        for attempt in 1..=5 {
            let port = crate::free_addr().port();
            let access_log = dir.join("access.log");
            let ssl = if tls {
                let (cert, key) = self_signed(dir);
                format!(
                    "listen 127.0.0.1:{port} ssl;\nssl_certificate {};\nssl_certificate_key {};",
                    cert.display(),
                    key.display()
                )
            } else {
                format!("listen 127.0.0.1:{port};")
            };
            let d = dir.display();
            let conf = format!(
                "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
                 http {{\n  log_format t '$uri $status $request_time';\n  access_log {d}/access.log t;\n\
                 client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
                 keepalive_requests 100000;\n  {http_extra}\n\
                 server {{\n    {ssl}\n    {server_body}\n  }}\n}}\n"
            );
            let conf_path = dir.join("nginx.conf");
            std::fs::write(&conf_path, conf).expect("write nginx.conf");
            let mut cmd = cgroup.command_rt(
                rel,
                "nginx",
                &[
                    "-c",
                    conf_path.to_str().unwrap(),
                    "-p",
                    dir.to_str().unwrap(),
                    "-e",
                    dir.join("error.log").to_str().unwrap(),
                ],
            );
            let mut process = Process::spawn("nginx", &mut cmd, dir);
            let ready = process.wait_until(Duration::from_secs(20), || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            match ready {
                Ok(()) => {
                    return Self {
                        port,
                        access_log,
                        process,
                    };
                }
                Err(log) if attempt < 5 && log.contains("Address already in use") => continue,
                Err(log) => panic!(
                    "nginx did not start:\n{log}\n{}",
                    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                ),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Requests per (uri kind, status) in the access log, where the kind is the first path
    /// segment after `strip`.
    pub fn access_counts(&self, strip: &str) -> BTreeMap<(String, u16), usize> {
        let mut out = BTreeMap::new();
        for line in std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
        {
            let mut f = line.split_whitespace();
            let (Some(uri), Some(status)) = (f.next(), f.next()) else {
                continue;
            };
            let Some(rest) = uri.strip_prefix(strip) else {
                continue;
            };
            let kind = rest.trim_start_matches('/').split('/').next().unwrap_or("");
            *out.entry((kind.to_owned(), status.parse().unwrap_or(0)))
                .or_insert(0) += 1;
        }
        out
    }
}

/// A self-signed certificate and key for `localhost` in `dir`.
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if !cert.exists() {
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl req failed");
    }
    (cert, key)
}

/// A network namespace with a veth pair to the host: host side `10.<a>.<b>.1/30`, namespace
/// side `.2`. Deleted (with the veth) on drop.
#[derive(Debug)]
pub struct NetNs {
    /// Namespace name.
    pub name: String,
    /// Host-side interface.
    pub host_if: String,
    /// Host-side address.
    pub host_ip: String,
    /// Namespace-side address.
    pub ns_ip: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    /// Creates the namespace and the veth pair.
    pub fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = (std::process::id() * 7 + n) % 60000;
        let name = format!("sonde-t{}x{n}", std::process::id());
        let host_if = format!("sh{tag}");
        let peer_if = format!("sp{tag}");
        let (a, b) = (100 + tag / 16384 % 100, (tag % 16384) / 64);
        let base = (tag % 64) * 4;
        let host_ip = format!("10.{a}.{b}.{}", base + 1);
        let ns_ip = format!("10.{a}.{b}.{}", base + 2);
        ip(&["netns", "add", &name]);
        let ns = Self {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip: host_ip.clone(),
            ns_ip: ns_ip.clone(),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
        ]);
        ip(&["link", "set", &peer_if, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &peer_if,
        ]);
        ip(&["-n", &name, "link", "set", &peer_if, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ns
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }
}

impl Default for NetNs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Processes inside keep the namespace alive only through their own handles; the
        // veth goes away with the namespace's name and its last user.
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|out| {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: signalling processes this test started in its namespace.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            });
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Writes an agent config file with `[ebpf.filter]` including `cgroups` and excluding
/// `exclude_processes`, plus `extra` TOML; returns its path.
pub fn agent_config(
    dir: &Path,
    cgroups: &[&str],
    exclude_processes: &[&str],
    extra: &str,
) -> PathBuf {
    let list = |v: &[&str]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "interval = \"1s\"\n{extra}\n[ebpf.filter]\ninclude_cgroups = [{}]\nexclude_processes = [{}]\n",
            list(cgroups),
            list(exclude_processes)
        ),
    )
    .expect("write agent config");
    path
}

/// Whether the agent's `metrics` text reports `program` attached.
pub fn attached(metrics: &str, program: &str) -> bool {
    metrics.contains(&format!(
        "sonde_agent_ebpf_program_attached{{program=\"{program}\"}} 1"
    ))
}

/// The programs that see socket reads, one per data path (`sock_recv_length`,
/// `sys_exit_read_regs`, or the enter hooks with `sys_exit_io`).
pub const READ_PROGRAMS: [&str; 3] = ["sock_recv_length", "sys_exit_read_regs", "sys_exit_io"];

/// Waits until the agent's HTTP read hooks are attached, whichever way reads are hooked.
pub fn wait_http_hooks(agent: &crate::Agent) {
    eventually(
        Duration::from_secs(30),
        "the HTTP read hooks to attach",
        || {
            let metrics = agent.metrics_text();
            READ_PROGRAMS
                .iter()
                .any(|p| attached(&metrics, p))
                .then_some(())
        },
    );
}

/// Waits until the agent reports `program` attached.
pub fn wait_attached(agent: &crate::Agent, program: &str) {
    eventually(
        Duration::from_secs(30),
        &format!("{program} to attach"),
        || attached(&agent.metrics_text(), program).then_some(()),
    );
}
