//! The dispatch queue port: send batches of dispatch messages with
//! per-message delays. Two adapters: [`sqs::SqsQueue`] over `aws-sdk-sqs`
//! and [`memory::MemoryQueue`] in-process (for `sundial dev` and tests).

use std::time::Duration;

use async_trait::async_trait;

use crate::message::DispatchMessage;

pub mod memory;
pub mod sqs;

pub use crate::firetime::MAX_DELAY;

/// One message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub message: DispatchMessage,
    /// Delivered no earlier than this from now (capped at [`MAX_DELAY`]).
    pub delay: Duration,
}

/// What happened to a batch of sends.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SendReport {
    /// Indexes (into the slice given to [`DispatchQueue::send`]) of
    /// messages that were NOT accepted by the queue. Everything else was.
    pub failed: Vec<usize>,
    /// Why the first failure happened, for logs and the scan summary.
    pub first_error: Option<String>,
    /// Calls made to the queue service (`SendMessageBatch` calls for SQS).
    pub calls: usize,
}

/// Somewhere dispatch messages can be sent.
#[async_trait]
pub trait DispatchQueue: Send + Sync {
    /// Sends all messages; never fails as a whole: failures are reported
    /// per message so the caller can release exactly those leases.
    async fn send(&self, messages: &[Outgoing]) -> SendReport;
}
