//! `sundial migrate`, `sundial scan` and `sundial process`: the Lambda
//! use cases run from the command line (containers, cron boxes, tests).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use sundial::config::Settings;
use sundial::consume::{consume_sqs, ConsumeOptions};
use sundial::process::Processor;
use sundial::queue::sqs::SqsQueue;
use sundial::scan::{scan as scan_once, ScanOptions};
use sundial::{logging, metrics, store};
use tokio::sync::watch;

pub async fn migrate() -> Result<()> {
    logging::init(logging::LogFormat::Text);
    let settings = Settings::from_env()?;
    let pool = store::connect(settings.require_database_url()?, 1)
        .await
        .context("cannot connect to DATABASE_URL")?;
    store::migrate(&pool).await?;
    eprintln!("migrations applied");
    Ok(())
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Scan once and exit (the default).
    #[arg(long, conflicts_with = "repeat")]
    once: bool,
    /// Scan repeatedly until interrupted.
    #[arg(long = "loop", id = "repeat")]
    repeat: bool,
    /// Seconds between scans with --loop.
    #[arg(long, default_value_t = 1, requires = "repeat")]
    every: u64,
    /// Print EMF metrics lines on stdout after each scan.
    #[arg(long)]
    emf: bool,
}

pub async fn scan(args: ScanArgs) -> Result<()> {
    logging::init(logging::LogFormat::Text);
    let settings = Settings::from_env()?;
    let pool = store::connect(settings.require_database_url()?, settings.db_pool_size).await?;
    let queue = SqsQueue::from_settings(&settings).await?;
    let opts = ScanOptions::from_settings(&settings, "sundial-cli");
    let shutdown = shutdown_signal();
    loop {
        let summary = scan_once(&pool, &queue, &opts).await?;
        if args.emf {
            metrics::for_scan(&summary).emit("sundial-cli-scan");
        }
        eprintln!(
            "claimed {} enqueued {} failed {} backlog {} ({} ms)",
            summary.claimed, summary.enqueued, summary.failed, summary.backlog, summary.elapsed_ms
        );
        if !args.repeat || *shutdown.borrow() {
            return Ok(());
        }
        let mut stop = shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(args.every.max(1))) => {}
            _ = stop.changed() => return Ok(()),
        }
    }
}

#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// The SQS dispatch queue (default: SUNDIAL_QUEUE_URL).
    #[arg(long)]
    queue_url: Option<String>,
    /// Long-poll wait per receive, seconds (≤ 20).
    #[arg(long, default_value_t = 20)]
    wait: u64,
    /// Print an EMF metrics line on exit.
    #[arg(long)]
    emf: bool,
}

pub async fn process(args: ProcessArgs) -> Result<()> {
    logging::init(logging::LogFormat::Text);
    let mut settings = Settings::from_env()?;
    if let Some(url) = args.queue_url {
        settings.queue_url = Some(url);
    }
    let pool = store::connect(settings.require_database_url()?, settings.db_pool_size).await?;
    let queue = SqsQueue::from_settings(&settings).await?;
    let processor = Processor::from_settings(pool, &settings, Arc::new(queue.clone()))?;
    let opts = ConsumeOptions {
        wait: Duration::from_secs(args.wait.min(20)),
        max_outstanding: settings.concurrency * 2,
        visibility: None,
    };
    eprintln!("consuming {} (Ctrl-C to stop)", queue.queue_url());
    let report = consume_sqs(&processor, &queue, &opts, shutdown_signal()).await;
    if args.emf {
        metrics::for_process(&report).emit("sundial-cli-process");
    }
    eprintln!(
        "fired {} succeeded {} failed {} retried {} stale {}",
        report.fired, report.succeeded, report.failed, report.retried, report.stale_dropped
    );
    Ok(())
}

/// Turns true on Ctrl-C or SIGTERM.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = tx.send(true);
    });
    rx
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
