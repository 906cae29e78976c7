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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::process::{Disposition, ProcessReport, Processor};
use crate::queue::sqs::SqsError;

mod inboxes;
pub use inboxes::{EventInbox, EventReceipt, MemoryInbox, SqsInbox};

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
                        tracing::debug!(received = batch.len(), "received");
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
