//! The inboxes [`run_worker`](super::run_worker) is fed from: the SQS
//! queue long-polled ([`SqsInbox`]), the batch of one SQS event handed to
//! the processor Lambda ([`EventInbox`]), and the in-process queue of
//! `sundial dev` and the bench ([`MemoryInbox`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{lock, Delivery, Inbox, InboxError, Received};
use crate::message::DispatchMessage;
use crate::process::Disposition;
use crate::queue::memory::MemoryQueue;
use crate::queue::sqs::SqsQueue;
use crate::queue::Outgoing;

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
