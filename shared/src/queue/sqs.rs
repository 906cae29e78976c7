//! SQS adapter over `aws-sdk-sqs`.
//!
//! Sends with `SendMessageBatch` (10 entries per call, several calls in
//! flight), retries throttled or service-side failures with backoff, and
//! reports exactly which messages were not accepted. The endpoint comes
//! from the standard AWS configuration chain, so `AWS_ENDPOINT_URL_SQS`
//! points it at an emulator.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use futures::StreamExt;

use super::{DispatchQueue, Outgoing, SendReport};
use crate::firetime::{delay_seconds_with_lead, whole_seconds};

/// Entries per `SendMessageBatch` call (the SQS maximum).
pub const BATCH_SIZE: usize = 10;
/// Attempts per batch before its remaining entries count as failed.
const SEND_ATTEMPTS: u32 = 3;

/// Longest long-poll wait SQS allows.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// What a receive's attempt timeout adds to its long-poll wait.
pub const RECEIVE_MARGIN: Duration = Duration::from_secs(10);

/// Timeouts of a receive with long-poll `wait`: each attempt may take the
/// wait plus [`RECEIVE_MARGIN`], so the client never gives up first.
pub fn receive_timeouts(wait: Duration) -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(wait + RECEIVE_MARGIN)
        .operation_timeout((wait + RECEIVE_MARGIN) * 2 + Duration::from_secs(5))
        .build()
}

/// Builds an SQS client from the environment (region, credentials,
/// `AWS_ENDPOINT_URL_SQS`), with short timeouts so an unreachable queue is
/// reported within seconds instead of hanging a scan.
pub async fn client_from_env() -> aws_sdk_sqs::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(25))
                .build(),
        )
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
        .load()
        .await;
    aws_sdk_sqs::Client::new(&config)
}

/// Creates a queue (tests and benchmarks: one fresh queue each) and
/// returns its URL.
pub async fn create_queue(client: &aws_sdk_sqs::Client, name: &str) -> Result<String, SqsError> {
    let out = client
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| sqs_error("CreateQueue", e))?;
    out.queue_url().map(str::to_owned).ok_or(SqsError {
        operation: "CreateQueue",
        message: "no queue URL in the answer".into(),
    })
}

/// Deletes a queue by URL.
pub async fn delete_queue(client: &aws_sdk_sqs::Client, url: &str) -> Result<(), SqsError> {
    client
        .delete_queue()
        .queue_url(url)
        .send()
        .await
        .map_err(|e| sqs_error("DeleteQueue", e))?;
    Ok(())
}

/// The dispatch queue on SQS.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    concurrency: usize,
    /// Messages are made due this much before their delay (see
    /// [`crate::firetime::delay_seconds_with_lead`]).
    lead: Duration,
}

/// A received message.
#[derive(Debug, Clone)]
pub struct SqsDelivery {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// `ApproximateReceiveCount`: 1 on the first delivery.
    pub receive_count: u32,
}

/// A call to SQS failed as a whole.
#[derive(Debug, thiserror::Error)]
#[error("SQS {operation} failed: {message}")]
pub struct SqsError {
    /// The API operation.
    pub operation: &'static str,
    /// The error with its sources.
    pub message: String,
}

fn sqs_error<E: std::error::Error>(operation: &'static str, err: E) -> SqsError {
    // The SDK's Display is terse ("dispatch failure"); the source chain says why.
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    SqsError { operation, message }
}

impl SqsQueue {
    pub fn new(
        client: aws_sdk_sqs::Client,
        queue_url: impl Into<String>,
        concurrency: usize,
    ) -> Self {
        SqsQueue {
            client,
            queue_url: queue_url.into(),
            concurrency: concurrency.max(1),
            lead: crate::config::defaults::DELIVERY_LEAD,
        }
    }

    /// Makes messages due `lead` before their delay, so a queue that
    /// delivers late still delivers before the fire instant (the processor
    /// holds them until then). Capped at [`crate::firetime::MAX_DELIVERY_LEAD`].
    pub fn with_delivery_lead(mut self, lead: Duration) -> Self {
        self.lead = lead.min(crate::firetime::MAX_DELIVERY_LEAD);
        self
    }

    /// The dispatch queue named by `SUNDIAL_QUEUE_URL`, with the client from
    /// [`client_from_env`] and `SUNDIAL_SEND_CONCURRENCY` calls in flight.
    pub async fn from_settings(
        settings: &crate::config::Settings,
    ) -> Result<Self, crate::config::ConfigError> {
        let url = settings.require_queue_url()?;
        Ok(
            SqsQueue::new(client_from_env().await, url, settings.send_concurrency)
                .with_delivery_lead(settings.delivery_lead),
        )
    }

    pub fn client(&self) -> &aws_sdk_sqs::Client {
        &self.client
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Sends one chunk (≤ 10 entries); returns the chunk-local indexes that
    /// failed for good and the first error seen.
    async fn send_chunk(&self, chunk: &[Outgoing]) -> (Vec<usize>, Option<String>) {
        let mut pending: Vec<usize> = (0..chunk.len()).collect();
        let mut last_error = None;
        for attempt in 0..SEND_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt))).await;
            }
            let entries = match self.entries(chunk, &pending) {
                Ok(e) => e,
                Err(err) => return (pending, Some(err.to_string())),
            };
            let result = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await;
            match result {
                Ok(out) => {
                    let (retry, fatal, refusal) = sort_failures(out.failed());
                    last_error = refusal.or(last_error);
                    if retry.is_empty() {
                        return (fatal, last_error);
                    }
                    pending = retry;
                    pending.extend(fatal);
                }
                Err(err) => {
                    last_error = Some(sqs_error("SendMessageBatch", err).to_string());
                }
            }
        }
        (pending, last_error)
    }

    /// The batch entries of the `pending` messages of `chunk`, each with
    /// its chunk-local index as its id.
    fn entries(
        &self,
        chunk: &[Outgoing],
        pending: &[usize],
    ) -> Result<Vec<SendMessageBatchRequestEntry>, aws_sdk_sqs::error::BuildError> {
        pending
            .iter()
            .map(|&i| {
                let out = &chunk[i];
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(out.message.to_json())
                    .delay_seconds(delay_seconds_with_lead(out.delay, self.lead))
                    .build()
            })
            .collect()
    }

    /// Long-polls for up to `max` (≤ 10) messages.
    pub async fn receive(
        &self,
        max: i32,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> Result<Vec<SqsDelivery>, SqsError> {
        let wait = wait.min(MAX_WAIT);
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(wait.as_secs() as i32)
            .set_visibility_timeout(visibility.map(|v| v.as_secs() as i32))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .customize()
            // A receive abandoned before its long poll ends leaves the
            // messages it picked up invisible: always outwait the poll.
            .config_override(
                aws_sdk_sqs::config::Builder::default().timeout_config(receive_timeouts(wait)),
            )
            .send()
            .await
            .map_err(|e| sqs_error("ReceiveMessage", e))?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                Some(SqsDelivery {
                    message_id: m.message_id()?.to_string(),
                    receipt_handle: m.receipt_handle()?.to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                    receive_count,
                })
            })
            .collect())
    }

    /// Deletes processed messages (≤ 10 per call, chunked here).
    pub async fn delete(&self, receipt_handles: &[String]) -> Result<(), SqsError> {
        for chunk in receipt_handles.chunks(BATCH_SIZE) {
            let entries: Result<Vec<_>, _> = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .build()
                })
                .collect();
            let entries = entries.map_err(|e| sqs_error("DeleteMessageBatch", e))?;
            self.client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sqs_error("DeleteMessageBatch", e))?;
        }
        Ok(())
    }

    /// Makes received messages visible again after their delay (whole
    /// seconds, rounded down), ten per `ChangeMessageVisibilityBatch` call.
    pub async fn change_visibility_batch(
        &self,
        messages: &[(String, Duration)],
    ) -> Result<(), SqsError> {
        for chunk in messages.chunks(BATCH_SIZE) {
            let entries: Result<Vec<_>, _> = chunk
                .iter()
                .enumerate()
                .map(|(i, (handle, after))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .visibility_timeout(whole_seconds(*after))
                        .build()
                })
                .collect();
            let entries = entries.map_err(|e| sqs_error("ChangeMessageVisibilityBatch", e))?;
            self.client
                .change_message_visibility_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sqs_error("ChangeMessageVisibilityBatch", e))?;
        }
        Ok(())
    }

    /// Makes a received message visible again after `after`.
    pub async fn change_visibility(
        &self,
        receipt_handle: &str,
        after: Duration,
    ) -> Result<(), SqsError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(after.as_secs().min(43_200) as i32)
            .send()
            .await
            .map_err(|e| sqs_error("ChangeMessageVisibility", e))?;
        Ok(())
    }

    /// Queue attributes such as `ApproximateNumberOfMessages`.
    pub async fn attributes(&self) -> Result<HashMap<String, String>, SqsError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| sqs_error("GetQueueAttributes", e))?;
        Ok(out
            .attributes()
            .map(|a| {
                a.iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[async_trait]
impl DispatchQueue for SqsQueue {
    async fn send(&self, messages: &[Outgoing]) -> SendReport {
        // Chunks as index ranges: closures over borrowed slices trip the
        // async-trait lifetime checker.
        let ranges: Vec<(usize, usize)> = (0..messages.len())
            .step_by(BATCH_SIZE)
            .map(|start| (start, (start + BATCH_SIZE).min(messages.len())))
            .collect();
        let calls = ranges.len();
        let results: Vec<(usize, (Vec<usize>, Option<String>))> = futures::stream::iter(ranges)
            .map(
                |(start, end)| async move { (start, self.send_chunk(&messages[start..end]).await) },
            )
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut report = SendReport {
            calls,
            ..Default::default()
        };
        for (offset, (failed, error)) in results {
            if !failed.is_empty() && report.first_error.is_none() {
                report.first_error = error;
            }
            report.failed.extend(failed.into_iter().map(|i| offset + i));
        }
        report.failed.sort_unstable();
        report
    }
}

/// The entries a batch refused, by chunk-local index: those worth sending
/// again, and those that will fail again (sender faults: a bad entry);
/// with the last refusal's code and message.
fn sort_failures(failed: &[BatchResultErrorEntry]) -> (Vec<usize>, Vec<usize>, Option<String>) {
    let mut retry = Vec::new();
    let mut fatal = Vec::new();
    let mut last = None;
    for failed in failed {
        let Ok(i) = failed.id().parse::<usize>() else {
            continue;
        };
        last = Some(format!(
            "{}: {}",
            failed.code(),
            failed.message().unwrap_or("no message")
        ));
        // Sender faults (a bad entry) will fail again.
        if failed.sender_fault() {
            fatal.push(i);
        } else {
            retry.push(i);
        }
    }
    (retry, fatal, last)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receive_always_outwaits_its_long_poll() {
        for secs in [0, 1, 10, 19, 20] {
            let wait = Duration::from_secs(secs);
            let t = receive_timeouts(wait);
            let attempt = t.operation_attempt_timeout().unwrap_or_default();
            assert!(
                attempt > wait + Duration::from_secs(5),
                "{secs}: {attempt:?}"
            );
            assert!(t.operation_timeout().unwrap_or_default() > attempt);
        }
    }
}
