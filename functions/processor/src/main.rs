//! Processor Lambda: the SQS event source hands it batches of dispatch
//! messages; it fires the endpoints with bounded concurrency, writes the
//! outcomes back, and reports the messages to redeliver as batch item
//! failures (the trigger must use `ReportBatchItemFailures`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use sundial::config::Settings;
use sundial::message::DispatchMessage;
use sundial::process::{Disposition, Processor};
use sundial::queue::sqs::SqsQueue;
use sundial::{logging, metrics, store};

#[tokio::main]
async fn main() -> Result<(), Error> {
    logging::init(logging::LogFormat::Lambda);
    let settings = Settings::from_env()?;
    let pool = store::connect_from_settings(&settings).await?;
    // Retries go back to the dispatch queue itself.
    let queue = SqsQueue::from_settings(&settings).await?;
    let processor = Processor::from_settings(pool, &settings, Arc::new(queue.clone()))?;
    let function = logging::function_name("sundial-processor");
    let (processor, queue, function) = (&processor, &queue, function.as_str());
    lambda_runtime::run(service_fn(move |event| async move {
        handle(event, processor, Some(queue), function).await
    }))
    .await
}

/// How soon a message handed back for lack of time (or a database hiccup)
/// is delivered again. Without this it would wait out the queue's whole
/// visibility timeout (6 × the function timeout).
const HANDBACK_DELAY: Duration = Duration::from_secs(2);

/// Processes one SQS batch before the invocation's deadline. `queue` (the
/// dispatch queue) is used to make handed-back messages visible again soon.
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
    let deadline = tokio::time::Instant::now() + remaining;
    let mut failures = Vec::new();
    let mut messages = Vec::with_capacity(event.payload.records.len());
    let mut receipts = std::collections::HashMap::new();
    for record in event.payload.records {
        if let (Some(id), Some(receipt)) = (&record.message_id, &record.receipt_handle) {
            receipts.insert(id.clone(), receipt.clone());
        }
        match (record.message_id, record.body) {
            (Some(id), Some(body)) => messages.push((id, body)),
            // Without a body there is nothing to do but let SQS retry it
            // into the dead-letter queue.
            (Some(id), None) => failures.push(id),
            (None, _) => tracing::warn!("SQS record without a message id"),
        }
    }
    let bodies: std::collections::HashMap<String, bool> = messages
        .iter()
        .map(|(id, body)| (id.clone(), DispatchMessage::parse(body).is_ok()))
        .collect();
    let (dispositions, report) = processor.process_batch(messages, Some(deadline)).await;
    for (id, disposition) in dispositions {
        if disposition != Disposition::Redeliver {
            continue;
        }
        // Readable messages come back soon; unreadable ones wait out the
        // visibility timeout on their way to the dead-letter queue.
        let readable = bodies.get(&id).copied().unwrap_or(false);
        if let (true, Some(queue), Some(receipt)) = (readable, queue, receipts.get(&id)) {
            if let Err(err) = queue.change_visibility(receipt, HANDBACK_DELAY).await {
                tracing::warn!(error = %err, message_id = %id, "cannot shorten visibility");
            }
        }
        failures.push(id);
    }
    metrics::for_process(&report).emit(function);
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
    use sundial::queue::memory::MemoryQueue;
    use sundial::target_server::{self, TargetConfig};

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
        let (id, version): (i64, i64) = sqlx::query_as(
            "INSERT INTO tasks (name, schedule, url, next_run_at) \
             VALUES ('ok', 'rate(1 hour)', $1, date_trunc('second', now())) RETURNING id, version",
        )
        .bind(server.url("/ok"))
        .fetch_one(&pool)
        .await
        .unwrap();
        let occurrence: chrono::DateTime<chrono::Utc> =
            sqlx::query_scalar("SELECT next_run_at FROM tasks WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
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
