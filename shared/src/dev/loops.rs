//! The loops a dev process runs beside its worker: the admin API, the
//! scanner at its fixed rate, the periodic status line, the SQS consumer
//! with its shutdown grace; and the shutdown signals they share.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use chrono::Utc;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::defaults;
use crate::process::{ProcessReport, Processor};
use crate::queue::memory::MemoryQueue;
use crate::queue::sqs::SqsQueue;
use crate::queue::DispatchQueue;
use crate::scan::ScanOptions;
use crate::store;
use crate::worker::{run_worker, SqsInbox, WorkerOptions};

/// Waits for a background task to end, aborting it after `limit`.
pub(super) async fn bounded<T>(mut task: tokio::task::JoinHandle<T>, limit: Duration) -> Option<T> {
    match tokio::time::timeout(limit, &mut task).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(err)) => {
            tracing::error!(error = %err, "background task failed");
            None
        }
        Err(_) => {
            task.abort();
            None
        }
    }
}

/// Resolves once shutdown is asked for (or its sender is gone).
pub(crate) async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Resolves `grace` after shutdown is asked for.
pub(crate) async fn grace_over(shutdown: watch::Receiver<bool>, grace: Duration) {
    stopped(shutdown).await;
    tokio::time::sleep(grace).await;
}

pub(super) async fn serve_admin(
    listener: TcpListener,
    router: Router,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let limits = crate::admin::serve::ServeLimits::default();
    let serve = crate::admin::serve::serve(listener, router, stopped(shutdown.clone()), limits);
    tokio::select! {
        result = serve => {
            if let Err(err) = result {
                tracing::error!(error = %err, "admin API stopped");
            }
        }
        () = grace_over(shutdown, grace) => {}
    }
}

/// Ticks every `every` until shutdown (see [`crate::scan::run_ticks`]).
pub(super) async fn scan_loop(
    pool: PgPool,
    queue: Arc<dyn DispatchQueue>,
    opts: ScanOptions,
    every: Duration,
    shutdown: watch::Receiver<bool>,
) -> crate::scan::TickTotals {
    crate::scan::run_ticks(&pool, queue.as_ref(), &opts, every, shutdown, |summary| {
        if summary.invalid > 0 {
            tracing::warn!(
                invalid = summary.invalid,
                "tasks with invalid schedules disabled"
            );
        }
        if summary.claimed > 0 {
            tracing::debug!(
                claimed = summary.claimed,
                enqueued = summary.enqueued,
                failed = summary.failed,
                "scanned"
            );
        }
    })
    .await
}

/// Logs a compact status line every `every`.
pub(super) async fn status_loop(
    pool: PgPool,
    queue: Option<Arc<MemoryQueue>>,
    every: Duration,
    shutdown: watch::Receiver<bool>,
) {
    let started = Utc::now();
    let window = chrono::Duration::from_std(defaults::STATUS_WINDOW).unwrap_or_default();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every.max(Duration::from_millis(100))) => {}
            () = stopped(shutdown.clone()) => return,
        }
        let now = Utc::now();
        let since = started.max(now - window);
        let figures =
            futures::try_join!(store::backlog(&pool, now), store::run_stats(&pool, since));
        let (backlog, stats) = match figures {
            Ok(f) => f,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read status figures");
                continue;
            }
        };
        // `None` (no runs yet) leaves the field out.
        let ms = |v: Option<f64>| v.map(|v| v.round() as i64);
        tracing::info!(
            backlog = backlog.due,
            queued = queue.as_ref().map(|q| q.len()),
            fired = stats.runs - stats.skipped,
            succeeded = stats.succeeded,
            failed = stats.failed,
            timeouts = stats.timed_out,
            lag_p50_ms = ms(stats.lag_p50_ms),
            lag_p99_ms = ms(stats.lag_p99_ms),
            window_secs = (now - since).num_seconds(),
            "status"
        );
    }
}

/// The SQS consumer with a grace period: messages not finished by then
/// stay on the queue, which delivers them again after their visibility
/// timeout (no lease to release).
pub(super) async fn consume_sqs_with_grace(
    processor: &Processor,
    queue: &SqsQueue,
    grace: Duration,
    shutdown: watch::Receiver<bool>,
) -> ProcessReport {
    let inbox = Arc::new(SqsInbox::new(queue.clone(), Duration::from_secs(10), None));
    let opts = WorkerOptions::default();
    tokio::select! {
        report = run_worker(processor, inbox, &opts, shutdown.clone()) => report,
        () = grace_over(shutdown, grace) => {
            tracing::warn!("grace period over; abandoning in-flight requests (SQS delivers them again)");
            ProcessReport::default()
        }
    }
}
