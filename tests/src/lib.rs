//! Helpers shared by the end-to-end tests: the SQS emulator, test queues.
//!
//! Tests run against real services started by `make services`: Postgres
//! (`DATABASE_URL`, used by `#[sqlx::test]`) and moto's SQS server
//! (`AWS_ENDPOINT_URL_SQS`). A missing service is a test failure with a
//! message saying how to start it, never a silent skip.

use std::time::Duration;

use sundial::queue::sqs::{SqsDelivery, SqsQueue};

/// The SQS emulator's endpoint, or a panic explaining how to start it.
pub fn sqs_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL_SQS").unwrap_or_else(|_| {
        panic!("AWS_ENDPOINT_URL_SQS is not set: run `eval \"$(make -s services)\"` or `make test`")
    })
}

/// An SQS client for the emulator.
pub async fn sqs_client() -> aws_sdk_sqs::Client {
    let _ = sqs_endpoint();
    sundial::queue::sqs::client_from_env().await
}

/// Creates a fresh queue (each test its own: the emulator slows down with
/// deep queues) and returns its adapter.
pub async fn fresh_queue(prefix: &str) -> SqsQueue {
    let client = sqs_client().await;
    let name = format!("{prefix}-{}-{}", std::process::id(), rand_suffix());
    let url = client
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .expect("create_queue on the SQS emulator")
        .queue_url()
        .expect("queue url")
        .to_string();
    SqsQueue::new(client, url, 8)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    nanos * 1000 + N.fetch_add(1, Ordering::Relaxed)
}

/// Receives (and deletes) messages until `expected` arrived or `timeout`
/// passed; returns each with the instant it was received.
pub async fn drain_queue(
    queue: &SqsQueue,
    expected: usize,
    timeout: Duration,
) -> Vec<(SqsDelivery, std::time::Instant)> {
    let deadline = std::time::Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < expected && std::time::Instant::now() < deadline {
        let batch = queue
            .receive(10, Duration::from_secs(1), None)
            .await
            .expect("receive from the SQS emulator");
        let now = std::time::Instant::now();
        let receipts: Vec<String> = batch.iter().map(|d| d.receipt_handle.clone()).collect();
        queue.delete(&receipts).await.expect("delete");
        got.extend(batch.into_iter().map(|d| (d, now)));
    }
    got
}
