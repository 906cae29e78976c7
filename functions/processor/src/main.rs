//! Processor Lambda: the SQS event source hands it batches of dispatch
//! messages; it fires the endpoints with bounded concurrency, writes the
//! outcomes back, and reports the messages to redeliver as batch item
//! failures (the trigger must use `ReportBatchItemFailures`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use sundial::app::{App, QueueNeed};
use sundial::config::Settings;
use sundial::process::Processor;
use sundial::queue::sqs::SqsQueue;
use sundial::worker::{run_worker, EventInbox, WorkerOptions};
use sundial::{logging, metrics};

#[tokio::main]
async fn main() -> Result<(), Error> {
    logging::init(logging::LogFormat::Lambda);
    let app = App::start(Settings::from_env()?, QueueNeed::Sqs).await?;
    // Retries and chained occurrences go back to the dispatch queue itself.
    let processor = app.processor()?;
    let queue = app.sqs().cloned();
    let function = logging::function_name("sundial-processor");
    let (processor, queue, function) = (&processor, queue.as_ref(), function.as_str());
    lambda_runtime::run(service_fn(move |event| async move {
        handle(event, processor, queue, function).await
    }))
    .await
}

/// Processes one SQS batch before the invocation's deadline through the
/// worker: what is not done becomes a batch item failure; handed-back
/// messages are made visible again after their retry delay (`queue`, the
/// dispatch queue), not after the visibility timeout.
async fn handle(
    event: LambdaEvent<SqsEvent>,
    processor: &Processor,
    queue: Option<&SqsQueue>,
    function: &str,
) -> Result<SqsBatchResponse, Error> {
    let remaining = event
        .context
        .deadline()
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    let opts = WorkerOptions {
        max_outstanding: event.payload.records.len().max(1),
        deadline: Some(tokio::time::Instant::now() + remaining),
    };
    let records = event
        .payload
        .records
        .into_iter()
        .filter_map(|r| match r.message_id {
            Some(id) => Some((id, r.receipt_handle, r.body)),
            None => {
                tracing::warn!("SQS record without a message id");
                None
            }
        });
    let inbox = Arc::new(EventInbox::new(records, queue.cloned()));
    // The batch ends the run; nothing else stops it.
    let (_keep, never) = tokio::sync::watch::channel(false);
    let report = run_worker(processor, inbox.clone(), &opts, never).await;
    let failures = inbox.failures();
    metrics::emit_process(&report, function);
    tracing::info!(?report, failures = failures.len(), "batch processed");
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::PgPool;
    use sundial::message::DispatchMessage;
    use sundial::queue::memory::MemoryQueue;
    use sundial_target::{self as target_server, TargetConfig};

    /// An SQS event as Lambda delivers it, with the given (id, body) records.
    fn sqs_event(records: &[(&str, String)]) -> SqsEvent {
        let records: Vec<serde_json::Value> = records
            .iter()
            .map(|(id, body)| {
                serde_json::json!({
                    "messageId": id,
                    "receiptHandle": format!("AQEB{id}=="),
                    "body": body,
                    "attributes": {
                        "ApproximateReceiveCount": "1",
                        "SentTimestamp": "1763805600000",
                        "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                        "ApproximateFirstReceiveTimestamp": "1763805600005"
                    },
                    "messageAttributes": {},
                    "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:sundial-dispatch",
                    "awsRegion": "us-east-1"
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
    }

    #[sqlx::test(migrator = "sundial::store::MIGRATOR")]
    async fn reports_only_failed_items(pool: PgPool) {
        let server = target_server::spawn(TargetConfig::default()).await.unwrap();
        let task = sundial_testkit::TaskBuilder::new()
            .name("ok")
            .url(server.url("/ok"))
            .next_run_at(
                chrono::DurationRound::duration_trunc(
                    chrono::Utc::now(),
                    chrono::Duration::seconds(1),
                )
                .unwrap(),
            )
            .insert(&pool)
            .await;
        let (id, version) = (task.id, task.version);
        let occurrence = task.next_run_at.unwrap();
        let good = DispatchMessage::new(id, occurrence, version).to_json();
        let mut env = std::collections::HashMap::new();
        env.insert(
            "SUNDIAL_ALLOW_TARGETS".to_string(),
            "127.0.0.1/32".to_string(),
        );
        let settings = Settings::from_map(&env).unwrap();
        let processor =
            Processor::from_settings(pool.clone(), &settings, Arc::new(MemoryQueue::default()))
                .unwrap();
        let event = sqs_event(&[
            ("059f36b4-87a3-44ab-83d2-661975830a7d", good),
            (
                "2e1424d4-f796-459a-8184-9c92662be6da",
                "{\"v\":99}".to_string(),
            ),
        ]);
        let mut context = lambda_runtime::Context::default();
        context.deadline = (SystemTime::now() + Duration::from_secs(30))
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let response = handle(LambdaEvent::new(event, context), &processor, None, "test")
            .await
            .unwrap();
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, vec!["2e1424d4-f796-459a-8184-9c92662be6da"]);
        assert_eq!(server.stats.requests(), 1);
        let status: String = sqlx::query_scalar("SELECT status FROM task_runs WHERE task_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(status, "succeeded");
        // The wire format Lambda expects.
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(
            json["batchItemFailures"][0]["itemIdentifier"],
            "2e1424d4-f796-459a-8184-9c92662be6da"
        );
    }
}
