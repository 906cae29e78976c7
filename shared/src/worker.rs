//! The worker: one component owns "receive → process → settle" for every
//! inbox the processor is fed from.
//!
//! * [`SqsInbox`]: long-polls the SQS dispatch queue (`sundial process`,
//!   `sundial dev` with `SUNDIAL_QUEUE_URL`);
//! * [`EventInbox`]: the batch of one SQS event handed to the processor
//!   Lambda (its settlement becomes the `batchItemFailures`);
//! * [`MemoryInbox`]: the in-process queue of `sundial dev` and the bench.
//!
//! [`run_worker`] keeps at most `max_outstanding` messages received and not
//! yet settled, streams them into the processor as they arrive (no batch
//! barriers), and settles each one as soon as its outcome is durable:
//! [`Disposition::Done`] deletes it, [`Disposition::Retry`] hands it back
//! to be delivered again after the given delay (quickly, not after the
//! queue's visibility timeout), [`Disposition::Poison`] leaves it to the
//! queue's dead-letter policy. Each body is parsed once, by the processor.
//!
//! An inbox that fails to receive (SQS unreachable) is retried with capped,
//! jittered backoff until shutdown; the worker never gives up by itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::message::DispatchMessage;
use crate::process::{Disposition, ProcessReport, Processor};
use crate::queue::memory::MemoryQueue;
use crate::queue::sqs::{SqsError, SqsQueue};
use crate::queue::Outgoing;

/// One received message.
#[derive(Debug, Clone)]
pub struct Delivery<R> {
    /// What the inbox needs to settle it.
    pub receipt: R,
    /// The message body (parsed by the processor).
    pub body: String,
}

/// What a receive call returned.
#[derive(Debug)]
pub enum Received<R> {
    /// Messages (possibly none: the long poll ended empty).
    Messages(Vec<Delivery<R>>),
    /// The inbox has nothing more, ever (an event batch, a closed queue).
    Ended,
}

/// A receive failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// The SQS call failed.
    #[error(transparent)]
    Sqs(#[from] SqsError),
}

/// Somewhere dispatch messages come from.
#[async_trait]
pub trait Inbox: Send + Sync {
    /// Identifies a received message until it is settled.
    type Receipt: Send + 'static;

    /// Waits for up to `max` messages (the inbox's own long poll).
    async fn receive(&self, max: usize) -> Result<Received<Self::Receipt>, InboxError>;

    /// Settles messages whose outcome is durable. Never fails: a message
    /// that cannot be settled is delivered again, and the processor drops
    /// it as already recorded.
    async fn settle(&self, settled: Vec<(Self::Receipt, Disposition)>);
}

/// How [`run_worker`] runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Messages received and not yet settled, at most.
    pub max_outstanding: usize,
    /// The invocation's end (Lambda); requests that would not finish
    /// before it are handed back.
    pub deadline: Option<Instant>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            max_outstanding: 400,
            deadline: None,
        }
    }
}

/// First backoff after a failed receive; doubled per failure up to
/// [`RECEIVE_BACKOFF_MAX`], with jitter.
const RECEIVE_BACKOFF: Duration = Duration::from_millis(500);
/// Longest backoff after failed receives.
const RECEIVE_BACKOFF_MAX: Duration = Duration::from_secs(20);
/// Settlements passed to the inbox per call at most (SQS batch size).
const SETTLE_BATCH: usize = 10;

/// Capped exponential backoff with "equal jitter": between half and all of
/// `base · 2^failures`, at most `max`.
pub fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = base
        .checked_mul(2u32.saturating_pow(failures.min(16)))
        .unwrap_or(max)
        .min(max);
    let half = ceiling / 2;
    half + Duration::from_millis(rand::random_range(0..=half.as_millis() as u64))
}

/// Feeds `inbox` to the processor until shutdown (or the inbox ends);
/// messages already received are finished and settled before it returns.
pub async fn run_worker<I: Inbox + 'static>(
    processor: &Processor,
    inbox: Arc<I>,
    opts: &WorkerOptions,
    shutdown: watch::Receiver<bool>,
) -> ProcessReport {
    let outstanding = Arc::new(AtomicUsize::new(0));
    let (settle_tx, settle_rx) = mpsc::unbounded_channel::<(I::Receipt, Disposition)>();
    let inbound = receive_stream(
        inbox.clone(),
        outstanding.clone(),
        opts.max_outstanding.max(1),
        shutdown,
    );
    let processing = async {
        let report = processor
            .process(inbound, opts.deadline, |receipt, disposition| {
                outstanding.fetch_sub(1, Ordering::Relaxed);
                let _ = settle_tx.send((receipt, disposition));
            })
            .await;
        drop(settle_tx);
        report
    };
    let (report, ()) = futures::join!(processing, settle_all(&*inbox, settle_rx));
    report
}

/// Receives while fewer than `max_outstanding` messages are unsettled,
/// until shutdown or the inbox ends.
fn receive_stream<I: Inbox + 'static>(
    inbox: Arc<I>,
    outstanding: Arc<AtomicUsize>,
    max_outstanding: usize,
    shutdown: watch::Receiver<bool>,
) -> impl futures::Stream<Item = (I::Receipt, String)> + Send + 'static {
    let state = (inbox, outstanding, shutdown, 0u32);
    futures::stream::unfold(
        state,
        move |(inbox, outstanding, mut shutdown, mut failures)| async move {
            loop {
                // Stop on shutdown, or when nobody can ask for it any more.
                if *shutdown.borrow() || shutdown.has_changed().is_err() {
                    return None;
                }
                let room = max_outstanding.saturating_sub(outstanding.load(Ordering::Relaxed));
                if room == 0 {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(10)) => continue,
                        _ = shutdown.wait_for(|stop| *stop) => return None,
                    }
                }
                // A receive is never abandoned (not even for shutdown): the
                // messages it picked up would stay invisible for the whole
                // visibility timeout. What it brings is processed.
                let received = inbox.receive(room).await;
                match received {
                    Ok(Received::Messages(batch)) => {
                        failures = 0;
                        if batch.is_empty() {
                            continue;
                        }
                        outstanding.fetch_add(batch.len(), Ordering::Relaxed);
                        let items: Vec<(I::Receipt, String)> =
                            batch.into_iter().map(|d| (d.receipt, d.body)).collect();
                        return Some((
                            futures::stream::iter(items),
                            (inbox, outstanding, shutdown, failures),
                        ));
                    }
                    Ok(Received::Ended) => return None,
                    Err(err) => {
                        let wait = backoff(failures, RECEIVE_BACKOFF, RECEIVE_BACKOFF_MAX);
                        failures = failures.saturating_add(1);
                        tracing::warn!(error = %err, retry_in_ms = wait.as_millis() as u64, "receive failed; backing off");
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            _ = shutdown.wait_for(|stop| *stop) => return None,
                        }
                    }
                }
            }
        },
    )
    .flatten()
}

/// Passes settlements to the inbox in small batches as they come.
async fn settle_all<I: Inbox>(
    inbox: &I,
    mut settled: mpsc::UnboundedReceiver<(I::Receipt, Disposition)>,
) {
    while let Some(first) = settled.recv().await {
        let mut batch = vec![first];
        while batch.len() < SETTLE_BATCH {
            match settled.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        inbox.settle(batch).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single insert/remove/push.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// --- SQS, long polling --------------------------------------------------------

/// The SQS dispatch queue, long-polled.
#[derive(Debug, Clone)]
pub struct SqsInbox {
    queue: SqsQueue,
    wait: Duration,
    visibility: Option<Duration>,
}

impl SqsInbox {
    /// Long-polls `queue` with `wait` (≤ 20 s) per receive; `visibility`
    /// overrides the queue's visibility timeout on receive.
    pub fn new(queue: SqsQueue, wait: Duration, visibility: Option<Duration>) -> Self {
        SqsInbox {
            queue,
            wait: wait.min(Duration::from_secs(20)),
            visibility,
        }
    }
}

#[async_trait]
impl Inbox for SqsInbox {
    type Receipt = String;

    async fn receive(&self, max: usize) -> Result<Received<String>, InboxError> {
        let batch = self
            .queue
            .receive(max.min(10) as i32, self.wait, self.visibility)
            .await?;
        Ok(Received::Messages(
            batch
                .into_iter()
                .map(|d| Delivery {
                    receipt: d.receipt_handle,
                    body: d.body,
                })
                .collect(),
        ))
    }

    async fn settle(&self, settled: Vec<(String, Disposition)>) {
        let mut delete = Vec::new();
        let mut hand_back = Vec::new();
        for (receipt, disposition) in settled {
            match disposition {
                Disposition::Done => delete.push(receipt),
                Disposition::Retry { after } => hand_back.push((receipt, after)),
                // Left invisible until its visibility timeout; after
                // `maxReceiveCount` receives, SQS moves it to the DLQ.
                Disposition::Poison => {}
            }
        }
        if !delete.is_empty() {
            if let Err(err) = self.queue.delete(&delete).await {
                // Not deleted means delivered again: dropped as recorded.
                tracing::warn!(error = %err, count = delete.len(), "delete failed");
            }
        }
        if !hand_back.is_empty() {
            if let Err(err) = self.queue.change_visibility_batch(&hand_back).await {
                tracing::warn!(error = %err, count = hand_back.len(), "cannot hand messages back early; they return after the visibility timeout");
            }
        }
    }
}

// --- one SQS event (Lambda) ---------------------------------------------------

/// A record of an SQS event, by its message id.
#[derive(Debug, Clone)]
pub struct EventReceipt {
    /// `messageId`: what `batchItemFailures` names.
    pub message_id: String,
    /// `receiptHandle`, to hand the message back early.
    pub receipt_handle: Option<String>,
}

/// The records of one SQS event as an inbox: received once; what is not
/// done becomes a batch item failure.
pub struct EventInbox {
    records: Mutex<Option<Vec<Delivery<EventReceipt>>>>,
    queue: Option<SqsQueue>,
    failures: Mutex<Vec<String>>,
}

impl EventInbox {
    /// `(message id, receipt handle, body)` of each record. Records without
    /// a body fail at once (SQS retries them into the dead-letter queue).
    /// With `queue`, handed-back messages become visible again after their
    /// retry delay instead of the visibility timeout.
    pub fn new(
        records: impl IntoIterator<Item = (String, Option<String>, Option<String>)>,
        queue: Option<SqsQueue>,
    ) -> Self {
        let mut deliveries = Vec::new();
        let mut failures = Vec::new();
        for (message_id, receipt_handle, body) in records {
            match body {
                Some(body) => deliveries.push(Delivery {
                    receipt: EventReceipt {
                        message_id,
                        receipt_handle,
                    },
                    body,
                }),
                None => failures.push(message_id),
            }
        }
        EventInbox {
            records: Mutex::new(Some(deliveries)),
            queue,
            failures: Mutex::new(failures),
        }
    }

    /// The message ids to report as `batchItemFailures`.
    pub fn failures(&self) -> Vec<String> {
        lock(&self.failures).clone()
    }
}

#[async_trait]
impl Inbox for EventInbox {
    type Receipt = EventReceipt;

    async fn receive(&self, _max: usize) -> Result<Received<EventReceipt>, InboxError> {
        // The worker bounds what it takes by `max`; an event is at most
        // 10,000 records and already in memory, so it is handed over whole.
        Ok(match lock(&self.records).take() {
            Some(all) => Received::Messages(all),
            None => Received::Ended,
        })
    }

    async fn settle(&self, settled: Vec<(EventReceipt, Disposition)>) {
        let mut hand_back = Vec::new();
        for (receipt, disposition) in settled {
            match disposition {
                // Lambda deletes what is not reported.
                Disposition::Done => continue,
                Disposition::Retry { after } => {
                    if let Some(handle) = receipt.receipt_handle {
                        hand_back.push((handle, after));
                    }
                }
                Disposition::Poison => {}
            }
            lock(&self.failures).push(receipt.message_id);
        }
        if let (Some(queue), false) = (&self.queue, hand_back.is_empty()) {
            if let Err(err) = queue.change_visibility_batch(&hand_back).await {
                tracing::warn!(error = %err, "cannot hand messages back early; they return after the visibility timeout");
            }
        }
    }
}

// --- the in-process queue -----------------------------------------------------

/// Longest wait of one memory-queue receive.
const MEMORY_RECEIVE_WAIT: Duration = Duration::from_millis(500);
/// Most messages taken from the memory queue per receive.
const MEMORY_RECEIVE_MAX: usize = 100;

/// The in-process queue as an inbox. It keeps every received, unsettled
/// message, so a graceful shutdown can hand them back to the database.
pub struct MemoryInbox {
    queue: Arc<MemoryQueue>,
    outstanding: Mutex<HashMap<u64, DispatchMessage>>,
    seq: AtomicU64,
    refused: Mutex<Vec<DispatchMessage>>,
    redelivered: AtomicU64,
    max_redeliver_delay: Duration,
}

impl MemoryInbox {
    /// An inbox over `queue`.
    pub fn new(queue: Arc<MemoryQueue>) -> Self {
        MemoryInbox {
            queue,
            outstanding: Mutex::default(),
            seq: AtomicU64::new(0),
            refused: Mutex::default(),
            redelivered: AtomicU64::new(0),
            max_redeliver_delay: crate::queue::MAX_DELAY,
        }
    }

    /// Hands messages back after at most `delay`.
    pub fn with_redeliver_delay(mut self, delay: Duration) -> Self {
        self.max_redeliver_delay = delay;
        self
    }

    /// The queue behind it.
    pub fn queue(&self) -> &Arc<MemoryQueue> {
        &self.queue
    }

    /// Takes the messages received and not settled, and those handed back
    /// that the queue refused (closed or full).
    pub fn take_unsettled(&self) -> (Vec<DispatchMessage>, Vec<DispatchMessage>) {
        let unsettled = lock(&self.outstanding).drain().map(|(_, m)| m).collect();
        let refused = std::mem::take(&mut *lock(&self.refused));
        (unsettled, refused)
    }

    /// Messages handed back and queued again so far.
    pub fn redelivered(&self) -> u64 {
        self.redelivered.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Inbox for MemoryInbox {
    type Receipt = u64;

    async fn receive(&self, max: usize) -> Result<Received<u64>, InboxError> {
        if self.queue.is_closed() {
            return Ok(Received::Ended);
        }
        let batch = self
            .queue
            .receive(max.min(MEMORY_RECEIVE_MAX), MEMORY_RECEIVE_WAIT)
            .await;
        let mut map = lock(&self.outstanding);
        Ok(Received::Messages(
            batch
                .into_iter()
                .map(|message| {
                    let id = self.seq.fetch_add(1, Ordering::Relaxed);
                    let body = message.to_json();
                    map.insert(id, message);
                    Delivery { receipt: id, body }
                })
                .collect(),
        ))
    }

    async fn settle(&self, settled: Vec<(u64, Disposition)>) {
        for (id, disposition) in settled {
            let Some(message) = lock(&self.outstanding).remove(&id) else {
                continue;
            };
            match disposition {
                Disposition::Done => {}
                Disposition::Retry { after } => {
                    self.redelivered.fetch_add(1, Ordering::Relaxed);
                    let sent = self.queue.push(&[Outgoing {
                        message: message.clone(),
                        delay: after.min(self.max_redeliver_delay),
                    }]);
                    if !sent.failed.is_empty() {
                        lock(&self.refused).push(message);
                    }
                }
                // Only this process writes to the memory queue: a poison
                // message here is a bug, not input. Drop it loudly.
                Disposition::Poison => {
                    tracing::error!(
                        task_id = message.task_id,
                        "unreadable message on the in-process queue; dropped"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        for failures in 0..40 {
            let d = backoff(failures, RECEIVE_BACKOFF, RECEIVE_BACKOFF_MAX);
            let ceiling =
                (RECEIVE_BACKOFF * 2u32.saturating_pow(failures.min(16))).min(RECEIVE_BACKOFF_MAX);
            assert!(d >= ceiling / 2 && d <= ceiling, "{failures}: {d:?}");
        }
    }

    #[tokio::test]
    async fn an_event_inbox_reports_what_is_not_done() {
        let inbox = EventInbox::new(
            vec![
                ("a".to_string(), None, Some("{}".to_string())),
                ("b".to_string(), None, Some("{}".to_string())),
                ("c".to_string(), None, Some("{}".to_string())),
                ("no-body".to_string(), None, None),
            ],
            None,
        );
        let Ok(Received::Messages(all)) = inbox.receive(1).await else {
            panic!("the first receive hands the batch over");
        };
        assert_eq!(all.len(), 3);
        assert!(matches!(inbox.receive(1).await, Ok(Received::Ended)));
        let mut ids = all.into_iter().map(|d| d.receipt);
        let (a, b, c) = (
            ids.next().unwrap(),
            ids.next().unwrap(),
            ids.next().unwrap(),
        );
        inbox
            .settle(vec![
                (a, Disposition::Done),
                (b, Disposition::HAND_BACK),
                (c, Disposition::Poison),
            ])
            .await;
        assert_eq!(inbox.failures(), vec!["no-body", "b", "c"]);
    }
}
