//! `sonde-aggregator`: parses configuration, starts the server, stops it on SIGINT/SIGTERM.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sonde_aggregator::{
    config::{Cli, Command, Config, TestCommand},
    import, rules, server, telemetry,
};
use tokio_util::sync::CancellationToken;

// Ingest allocates and frees many small label and sample vectors; mimalloc spends far less
// time on them than glibc's allocator (measured with `cargo xtask bench ingest`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(error) => {
            // Logging may not be set up yet: print the cause chain to stderr ourselves.
            eprintln!("sonde-aggregator: error: {}", report(&error));
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

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if let Some(Command::Test(TestCommand::Rules { files })) = &cli.command {
        return Ok(if rules::unittest::run_files(files) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let config = Config::load(&cli)?;
    match &cli.command {
        Some(Command::PrintConfig) => {
            print!(
                "{}",
                toml::to_string(&config).context("cannot render the configuration")?
            );
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Import { files }) => {
            telemetry::init_logging(config.log_format, &config.log_level)
                .map_err(anyhow::Error::msg)?;
            let summary = import::import(&config.data_dir, files, config.storage.store_options())?;
            let seconds = summary.parse_seconds + summary.write_seconds;
            println!(
                "imported {} samples of {} series from {} lines into {} ({} blocks; {} duplicate \
                 samples dropped) in {seconds:.2}s ({:.0} samples/s; parse {:.2}s, write {:.2}s)",
                summary.samples,
                summary.series,
                summary.lines,
                config.data_dir.display(),
                summary.blocks,
                summary.duplicates,
                summary.samples as f64 / seconds.max(1e-9),
                summary.parse_seconds,
                summary.write_seconds,
            );
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Inspect) => {
            print!(
                "{}",
                sonde_aggregator::store::inspect::inspect(&config.data_dir)?
            );
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Test(_)) | None => {}
    }
    telemetry::init_logging(config.log_format, &config.log_level).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sonde-aggregator")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        let running = server::start(config, shutdown).await?;
        running.wait().await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
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
