//! `sundial migrate`, `sundial scan` and `sundial process`: the Lambda
//! use cases run from the command line (containers, cron boxes, tests).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use sundial::app::{App, QueueNeed};
use sundial::config::Settings;
use sundial::queue::sqs::MAX_WAIT;
use sundial::scan::{run_ticks, tick};
use sundial::worker::{run_worker, SqsInbox, WorkerOptions};
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
    /// Tick repeatedly until interrupted (a database outage is waited out).
    #[arg(long = "loop", id = "repeat")]
    repeat: bool,
    /// Seconds between ticks with --loop (EventBridge's cadence is 60).
    #[arg(long, default_value_t = 1, requires = "repeat",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    every: u64,
    /// Print EMF metrics lines on stdout after each scan.
    #[arg(long)]
    emf: bool,
}

/// One tick (`--once`), or ticks at a fixed rate until a signal. Both go
/// through [`sundial::scan::tick`], the scanner Lambda's code.
pub async fn scan(args: ScanArgs) -> Result<()> {
    logging::init(logging::LogFormat::Text);
    let settings = Settings::from_env()?;
    let report = |summary: &sundial::scan::ScanSummary| {
        if args.emf {
            metrics::for_scan(summary).emit("sundial-cli-scan");
        }
        eprintln!(
            "claimed {} enqueued {} failed {} backlog {} purged {} ({} ms)",
            summary.claimed,
            summary.enqueued,
            summary.failed,
            summary.backlog,
            summary.purged_runs,
            summary.elapsed_ms
        );
    };
    if !args.repeat {
        let app = App::start(settings, QueueNeed::Sqs).await?;
        let summary = tick(
            &app.pool,
            app.queue.dispatch().as_ref(),
            &app.scan_options("sundial-cli"),
        )
        .await?;
        report(&summary);
        return Ok(());
    }
    let shutdown = shutdown_signal();
    let Some(app) = App::start_patiently(settings, QueueNeed::Sqs, shutdown.clone()).await? else {
        return Ok(());
    };
    let queue = app.queue.dispatch();
    let totals = run_ticks(
        &app.pool,
        queue.as_ref(),
        &app.scan_options("sundial-cli"),
        Duration::from_secs(args.every),
        shutdown,
        report,
    )
    .await;
    eprintln!(
        "stopped after {} ticks ({} failed): claimed {} enqueued {}",
        totals.ticks, totals.errors, totals.claimed, totals.enqueued
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// The SQS dispatch queue (default: SUNDIAL_QUEUE_URL).
    #[arg(long)]
    queue_url: Option<String>,
    /// Long-poll wait per receive, seconds (≤ 20).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=20))]
    wait: u64,
    /// Print an EMF metrics line on exit.
    #[arg(long)]
    emf: bool,
}

/// Consumes the dispatch queue like the processor Lambda, through the same
/// worker, until a signal; a database or SQS outage is waited out.
pub async fn process(args: ProcessArgs) -> Result<()> {
    logging::init(logging::LogFormat::Text);
    let mut settings = Settings::from_env()?;
    if let Some(url) = args.queue_url {
        settings.queue_url = Some(url);
    }
    let shutdown = shutdown_signal();
    let Some(app) = App::start_patiently(settings, QueueNeed::Sqs, shutdown.clone()).await? else {
        return Ok(());
    };
    let processor = app.processor()?;
    let Some(queue) = app.sqs().cloned() else {
        anyhow::bail!("sundial process needs SUNDIAL_QUEUE_URL");
    };
    let wait = Duration::from_secs(args.wait).min(MAX_WAIT);
    eprintln!("consuming {} (Ctrl-C to stop)", queue.queue_url());
    let inbox = Arc::new(SqsInbox::new(queue, wait, None));
    let opts = WorkerOptions {
        max_outstanding: app.settings.concurrency * 2,
        deadline: None,
    };
    let report = run_worker(&processor, inbox, &opts, shutdown).await;
    if args.emf {
        metrics::emit_process(&report, "sundial-cli-process");
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
