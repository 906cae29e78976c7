//! `sundial dev`: the whole system in one local process. The logic lives
//! in [`sundial::dev`]; this module reads flags and the environment, sets
//! up logging and signals, and prints the exit summary.

use std::time::Duration;

use anyhow::Result;
use clap::{Args, ValueEnum};
use sundial::config::Settings;
use sundial::dev::{defaults, run_dev, DevOptions};
use sundial::logging::{self, LogFormat};

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Admin API port on 127.0.0.1 (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = defaults::PORT)]
    port: u16,
    /// Seconds in-flight requests get to finish on Ctrl-C / SIGTERM before
    /// they are aborted and their leases released.
    #[arg(long, value_name = "SECS", default_value_t = defaults::GRACE.as_secs())]
    grace: u64,
    /// Start a built-in echo endpoint and a task `sundial-demo` firing it
    /// every 10 seconds.
    #[arg(long)]
    demo: bool,
    /// Seconds between status lines.
    #[arg(long, value_name = "SECS", default_value_t = defaults::STATUS_EVERY.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    status_every: u64,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormatArg::Text)]
    log_format: LogFormatArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

pub async fn run(args: DevArgs) -> Result<()> {
    logging::init(match args.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    });
    let settings = Settings::from_env()?;
    let opts = DevOptions {
        port: args.port,
        grace: Duration::from_secs(args.grace),
        demo: args.demo,
        status_every: Duration::from_secs(args.status_every),
        ..DevOptions::new(settings)
    };
    let report = run_dev(opts, crate::runtime::shutdown_signal()).await?;
    let handed_back = &report.shutdown;
    eprintln!(
        "stopped: fired {} (succeeded {}, failed {}, timed out {}); {} aborted, {} queued handed back, {} leases released",
        report.process.fired,
        report.process.succeeded,
        report.process.failed,
        report.process.timed_out,
        handed_back.unsettled,
        handed_back.drained,
        handed_back.released,
    );
    Ok(())
}
