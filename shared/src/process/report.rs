//! [`ProcessReport`]: the figures of one processing run, for logs, EMF
//! metrics and tests.

use serde::Serialize;

/// Figures of one processing run, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProcessReport {
    pub received: u64,
    /// Requests made.
    pub fired: u64,
    pub succeeded: u64,
    /// Runs recorded as failed (non-retryable, or attempts exhausted).
    pub failed: u64,
    /// Runs recorded as timed out (attempts exhausted on timeouts).
    pub timed_out: u64,
    /// Attempts that timed out (retried or not).
    pub attempt_timeouts: u64,
    /// Attempts scheduled again.
    pub retried: u64,
    /// Occurrences skipped under catch-up `none`.
    pub skipped: u64,
    /// Messages dropped: task deleted, disabled, edited, or occurrence
    /// already recorded.
    pub stale_dropped: u64,
    /// Messages whose body could not be read.
    pub invalid: u64,
    /// Messages handed back because the deadline was near.
    pub not_started: u64,
    /// Messages handed back because the database or queue failed.
    pub write_failures: u64,
    /// Messages that arrived early and were held until their fire time.
    pub held: u64,
    /// Messages that arrived far too early and were put back with the
    /// remaining delay.
    pub put_back: u64,
    /// Next occurrences leased and enqueued by the processor (chaining).
    pub chained: u64,
    /// Fire lag (start of the first attempt − occurrence), milliseconds.
    #[serde(skip)]
    pub fire_lag_ms: Vec<f64>,
    /// Target latency per request, milliseconds.
    #[serde(skip)]
    pub latency_ms: Vec<f64>,
    /// How late the queue delivered each message after its fire instant
    /// (0 when it came early and was held), milliseconds.
    #[serde(skip)]
    pub delivery_late_ms: Vec<f64>,
    /// The processor's own delay: request start − max(fire instant,
    /// arrival), milliseconds. What Sundial adds beyond the queue.
    #[serde(skip)]
    pub start_delay_ms: Vec<f64>,
}

impl ProcessReport {
    /// Adds another report's figures to this one.
    pub fn merge(&mut self, other: &ProcessReport) {
        self.received += other.received;
        self.fired += other.fired;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.timed_out += other.timed_out;
        self.attempt_timeouts += other.attempt_timeouts;
        self.retried += other.retried;
        self.skipped += other.skipped;
        self.stale_dropped += other.stale_dropped;
        self.invalid += other.invalid;
        self.not_started += other.not_started;
        self.write_failures += other.write_failures;
        self.held += other.held;
        self.put_back += other.put_back;
        self.chained += other.chained;
        self.fire_lag_ms.extend_from_slice(&other.fire_lag_ms);
        self.latency_ms.extend_from_slice(&other.latency_ms);
        self.delivery_late_ms
            .extend_from_slice(&other.delivery_late_ms);
        self.start_delay_ms.extend_from_slice(&other.start_delay_ms);
    }
}
