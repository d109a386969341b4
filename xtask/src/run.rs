//! `cargo xtask run`: the main job. Builds everything (release), starts one aggregator with
//! local storage and one agent on this host, prints where to query, and on Ctrl-C stops the
//! agent first (so it flushes to the aggregator) and then the aggregator.

use std::{
    net::TcpStream,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{ebpf, util};

#[derive(clap::Args)]
pub struct Options {
    /// Directory for the aggregator's data.
    #[arg(long, default_value = "target/sonde-run")]
    state_dir: PathBuf,
    /// Address of the aggregator's HTTP API (Prometheus API, /metrics).
    #[arg(long, default_value = "127.0.0.1:9180")]
    http: String,
    /// Address of the aggregator's gRPC ingest endpoint.
    #[arg(long, default_value = "127.0.0.1:9181")]
    grpc: String,
    /// Address of the agent's own /metrics.
    #[arg(long, default_value = "127.0.0.1:9182")]
    agent_metrics: String,
    /// Build in debug mode instead of release.
    #[arg(long)]
    debug: bool,
    /// Run the binaries already in DIR instead of building (the end-to-end test uses this).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let root = util::workspace_root();
    let bin_dir = match &options.bin_dir {
        Some(dir) => dir.clone(),
        None => {
            ebpf::build(&ebpf::Options { debug: false })?;
            let mut build = util::cargo();
            build.args(["build", "-p", "sonde-agent", "-p", "sonde-aggregator"]);
            if !options.debug {
                build.arg("--release");
            }
            util::run(&mut build)?;
            root.join("target")
                .join(if options.debug { "debug" } else { "release" })
        }
    };
    let state = root.join(&options.state_dir);
    std::fs::create_dir_all(&state)
        .with_context(|| format!("cannot create {}", state.display()))?;

    if !util::is_root() {
        eprintln!(
            "warning: not running as root: the agent will run without eBPF programs \
             (needs CAP_BPF and CAP_PERFMON); node metrics still flow"
        );
    }

    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    let mut aggregator = spawn(
        Command::new(bin_dir.join("sonde-aggregator"))
            .arg("--data-dir")
            .arg(state.join("aggregator"))
            .args([
                "--listen-http",
                &options.http,
                "--listen-grpc",
                &options.grpc,
            ]),
    )?;
    wait_listening(&options.http, &mut aggregator, "aggregator")?;
    let mut agent = spawn(
        Command::new(bin_dir.join("sonde-agent"))
            .args(["--aggregator", &format!("http://{}", options.grpc)])
            .args(["--listen-metrics", &options.agent_metrics])
            .arg("--buffer-dir")
            .arg(state.join("agent-buffer")),
    )?;

    let url = format!("http://{}", options.http);
    println!(
        "\nSonde is running.\n\
         \x20 Prometheus API (Grafana data source URL): {url}\n\
         \x20 aggregator self-metrics: {url}/metrics\n\
         \x20 agent self-metrics:      http://{}/metrics\n\
         \x20 data: {}\n\n\
         Example queries:\n\
         \x20 curl -s '{url}/api/v1/label/__name__/values'\n\
         \x20 curl -s '{url}/api/v1/query' --data-urlencode 'query=node_load1'\n\
         \x20 curl -s '{url}/api/v1/query' --data-urlencode 'query=node_process_execs_total'\n\
         \x20 curl -s '{url}/api/v1/query' --data-urlencode \\\n\
         \x20   'query=100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{{mode=\"idle\"}}[1m])))'\n\n\
         Grafana: data sources and dashboards in {grafana}/ (point provisioning/ at this URL;\n\
         \x20 see README.md, section Grafana).\n\n\
         Press Ctrl-C to stop (the agent flushes first, then the aggregator).",
        options.agent_metrics,
        state.display(),
        grafana = root.join("deploy/grafana").display(),
    );

    let outcome = loop {
        if STOP.load(Ordering::SeqCst) {
            break Ok(());
        }
        if let Some(status) = agent.try_wait()? {
            break Err(anyhow::anyhow!("the agent exited unexpectedly: {status}"));
        }
        if let Some(status) = aggregator.try_wait()? {
            break Err(anyhow::anyhow!(
                "the aggregator exited unexpectedly: {status}"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("\nstopping agent…");
    let agent_stopped = stop(&mut agent, "agent");
    eprintln!("stopping aggregator…");
    let aggregator_stopped = stop(&mut aggregator, "aggregator");
    outcome?;
    agent_stopped.and(aggregator_stopped)
}

fn spawn(cmd: &mut Command) -> anyhow::Result<Child> {
    eprintln!("+ {}", util::display(cmd));
    // Own process group: a terminal Ctrl-C reaches only xtask, which stops the children in order.
    cmd.process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", util::display(cmd)))
}

fn wait_listening(addr: &str, child: &mut Child, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("the {name} exited during start-up: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the {name} did not listen on {addr} within 30 s")
}

/// Stops a child with SIGTERM (killing it after 30 s); an error unless it exits cleanly.
fn stop(child: &mut Child, name: &str) -> anyhow::Result<()> {
    if let Ok(Some(status)) = child.try_wait() {
        return clean(status, name);
    }
    // SAFETY: sending a signal to our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => {
                eprintln!("{name} stopped ({status})");
                return clean(status, name);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(error) => bail!("{name}: {error}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("the {name} did not stop within 30 s; killed it")
}

fn clean(status: std::process::ExitStatus, name: &str) -> anyhow::Result<()> {
    if status.success() {
        Ok(())
    } else {
        bail!("the {name} stopped with {status}")
    }
}
