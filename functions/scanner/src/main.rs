//! Scanner Lambda: EventBridge invokes it every minute; it claims due
//! occurrences from Postgres and sends them to SQS with per-message delays.
//! Everything is built once per cold start; the handler only translates the
//! event into a call on `sundial::scan` and back.

use std::time::Duration;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use sqlx::PgPool;
use sundial::app::{App, QueueNeed};
use sundial::config::Settings;
use sundial::queue::DispatchQueue;
use sundial::scan::{tick, ScanOptions, ScanSummary};
use sundial::{logging, metrics};

#[tokio::main]
async fn main() -> Result<(), Error> {
    logging::init(logging::LogFormat::Lambda);
    let app = App::start(Settings::from_env()?, QueueNeed::Sqs).await?;
    let function = logging::function_name("sundial-scanner");
    let opts = app.scan_options(function.clone());
    let queue = app.queue.dispatch();
    let (pool, queue, opts, function) = (&app.pool, queue.as_ref(), &opts, function.as_str());
    lambda_runtime::run(service_fn(move |event| async move {
        handle(event, pool, queue, opts, function).await
    }))
    .await
}

/// Runs one tick (scan + bounded purge) within the invocation's time and
/// reports it.
async fn handle(
    event: LambdaEvent<EventBridgeEvent>,
    pool: &PgPool,
    queue: &dyn DispatchQueue,
    opts: &ScanOptions,
    function: &str,
) -> Result<ScanSummary, Error> {
    let remaining = event
        .context
        .deadline()
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    let mut opts = opts.clone();
    // Keep a few seconds to release leases and answer.
    opts.budget = opts
        .budget
        .min(remaining.saturating_sub(Duration::from_secs(5)));
    tracing::info!(
        request_id = %event.context.request_id,
        scheduled_time = ?event.payload.time,
        budget_ms = opts.budget.as_millis() as u64,
        "scan started"
    );
    let summary = tick(pool, queue, &opts).await?;
    metrics::for_scan(&summary).emit(function);
    tracing::info!(?summary, "scan finished");
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sundial::queue::memory::MemoryQueue;

    /// What EventBridge sends for a `rate(1 minute)` schedule.
    const SCHEDULED_EVENT: &str = r#"{
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-22T10:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/sundial-scanner-every-minute"],
        "detail": {}
    }"#;

    #[sqlx::test(migrator = "sundial::store::MIGRATOR")]
    async fn handles_a_real_scheduled_event(pool: PgPool) {
        sundial_testkit::TaskBuilder::new()
            .name("due-")
            .url("https://example.com")
            .next_run_at(chrono::Utc::now())
            .insert_many(&pool, 12)
            .await;
        let payload: EventBridgeEvent = serde_json::from_str(SCHEDULED_EVENT).unwrap();
        let mut context = lambda_runtime::Context::default();
        context.deadline = (std::time::SystemTime::now() + Duration::from_secs(60))
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let queue = MemoryQueue::default();
        let opts = ScanOptions {
            lookahead: Duration::from_secs(60),
            page_size: 5,
            lease: Duration::from_secs(300),
            budget: Duration::from_secs(50),
            owner: "test".into(),
            retention_days: 30,
            notifier: None,
            missed_grace: Duration::from_secs(120),
        };
        let summary = handle(
            LambdaEvent::new(payload, context),
            &pool,
            &queue,
            &opts,
            "test",
        )
        .await
        .unwrap();
        assert_eq!(summary.claimed, 12);
        assert_eq!(summary.enqueued, 12);
        assert_eq!(summary.pages, 3);
        assert_eq!(queue.len(), 12);
        // The Lambda answers with the summary as JSON.
        let answer = serde_json::to_value(&summary).unwrap();
        assert_eq!(answer["enqueued"], 12);
    }
}
