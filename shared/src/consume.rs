//! A long-running SQS consumer with the semantics of Lambda's SQS event
//! source: long polling, up to 10 messages per receive, delete what is
//! done, leave what must be redelivered (visibility timeout, then the
//! dead-letter queue after the receive limit). Used by `sundial process`
//! outside Lambda (containers) and by end-to-end tests.
//!
//! Receiving never waits for a batch to finish: messages flow into the
//! processor's stream as they arrive, bounded by `max_outstanding`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::process::{Disposition, ProcessReport, Processor};
use crate::queue::sqs::SqsQueue;

/// How the consumer polls.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// Long-poll wait per receive (≤ 20 s).
    pub wait: Duration,
    /// Messages received but not yet settled, at most.
    pub max_outstanding: usize,
    /// Visibility timeout requested on receive; `None` keeps the queue's.
    pub visibility: Option<Duration>,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        ConsumeOptions {
            wait: Duration::from_secs(20),
            max_outstanding: 500,
            visibility: None,
        }
    }
}

/// Identifies a received message until it is settled.
struct Receipt {
    handle: String,
}

/// Consumes `queue` until `shutdown` turns true; messages already received
/// are finished before it returns.
pub async fn consume_sqs(
    processor: &Processor,
    queue: &SqsQueue,
    opts: &ConsumeOptions,
    shutdown: watch::Receiver<bool>,
) -> ProcessReport {
    let outstanding = Arc::new(AtomicUsize::new(0));
    let (delete_tx, delete_rx) = mpsc::unbounded_channel::<String>();
    let inbound = receive_stream(queue.clone(), opts.clone(), shutdown, outstanding.clone());
    let deleting = delete_done(queue, delete_rx);
    let processing = async move {
        let report = processor
            .process(inbound, None, |receipt: Receipt, disposition| {
                outstanding.fetch_sub(1, Ordering::Relaxed);
                if disposition == Disposition::Done {
                    let _ = delete_tx.send(receipt.handle);
                }
            })
            .await;
        drop(delete_tx);
        report
    };
    let (report, ()) = futures::join!(processing, deleting);
    report
}

/// Receives messages one receive call at a time, pausing while too many
/// are outstanding, until shutdown.
fn receive_stream(
    queue: SqsQueue,
    opts: ConsumeOptions,
    shutdown: watch::Receiver<bool>,
    outstanding: Arc<AtomicUsize>,
) -> impl futures::Stream<Item = (Receipt, String)> + Send + 'static {
    futures::stream::unfold(
        (queue, opts, shutdown, outstanding),
        |(queue, opts, mut shutdown, outstanding)| async move {
            loop {
                if *shutdown.borrow() {
                    return None;
                }
                if outstanding.load(Ordering::Relaxed) >= opts.max_outstanding {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let received = tokio::select! {
                    r = queue.receive(10, opts.wait, opts.visibility) => r,
                    _ = shutdown.changed() => return None,
                };
                match received {
                    Ok(batch) if !batch.is_empty() => {
                        outstanding.fetch_add(batch.len(), Ordering::Relaxed);
                        let items: Vec<(Receipt, String)> = batch
                            .into_iter()
                            .map(|d| {
                                (
                                    Receipt {
                                        handle: d.receipt_handle,
                                    },
                                    d.body,
                                )
                            })
                            .collect();
                        return Some((
                            futures::stream::iter(items),
                            (queue, opts, shutdown, outstanding),
                        ));
                    }
                    Ok(_) => continue,
                    Err(err) => {
                        tracing::warn!(error = %err, "receive failed; retrying in a second");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        },
    )
    .flatten()
}

/// Deletes settled messages in batches of up to 10.
async fn delete_done(queue: &SqsQueue, mut handles: mpsc::UnboundedReceiver<String>) {
    let mut batch = Vec::new();
    while let Some(first) = handles.recv().await {
        batch.push(first);
        while batch.len() < 10 {
            match handles.try_recv() {
                Ok(h) => batch.push(h),
                Err(_) => break,
            }
        }
        if let Err(err) = queue.delete(&batch).await {
            // Not deleted means delivered again: the processor drops it as
            // already recorded.
            tracing::warn!(error = %err, count = batch.len(), "delete failed");
        }
        batch.clear();
    }
}
