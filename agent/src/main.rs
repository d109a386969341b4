//! `sonde-agent`: parses configuration, starts the agent, stops it on SIGINT/SIGTERM.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sonde_agent::{
    agent, capture,
    config::{Cli, Command, Config},
    replay, telemetry,
};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    agent::tune_allocator();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Logging may not be set up yet: print the cause chain to stderr ourselves.
            eprintln!("sonde-agent: error: {}", report(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `a: b: c`, skipping a cause whose text its parent already
/// includes (our error types print their source inline).
fn report(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(&cli)?;
    if cli.print_config {
        print!(
            "{}",
            toml::to_string(&config).context("cannot render the configuration")?
        );
        return Ok(());
    }
    telemetry::init_logging(config.log_format, &config.log_level).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("sonde-agent")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        match cli.command {
            Some(Command::Capture(args)) => {
                capture::capture(config, args.into(), shutdown).await?;
                return Ok(());
            }
            Some(Command::Replay(args)) => {
                let mut config = config;
                config.aggregators.clone_from(&args.aggregators);
                config.validate()?;
                replay::replay(config, args.into(), shutdown).await?;
                return Ok(());
            }
            None => {}
        }
        let running = agent::start(config, shutdown).await?;
        running.wait().await;
        anyhow::Ok(())
    })
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return;
    };
    tokio::select! {
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
    }
    shutdown.cancel();
}
