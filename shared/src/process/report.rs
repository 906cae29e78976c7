//! [`ProcessReport`]: the figures of one processing run, for logs, EMF
//! metrics and tests.

use std::collections::BTreeMap;

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
    /// Copies of a message this processor was firing already, handed back
    /// until it is recorded.
    pub duplicates: u64,
    /// Messages that arrived far too early and were put back with the
    /// remaining delay.
    pub put_back: u64,
    /// Next occurrences leased and enqueued by the processor (chaining).
    pub chained: u64,
    /// Messages their flow held (backoff, open breaker) and sent again.
    pub flow_held: u64,
    /// Occurrences recorded as skipped because their flow was open
    /// (`on_open = skip`).
    pub flow_skipped: u64,
    /// 429 answers.
    pub throttled: u64,
    /// Probes of open flows sent.
    pub probes: u64,
    /// Retries delayed to the next window by their flow's retry budget.
    pub budget_delayed: u64,
    /// Flows this processor saw open / close.
    pub flows_opened: u64,
    pub flows_closed: u64,
    /// Flows open as seen at the end of a run (merged reports keep the
    /// largest).
    pub flows_open: u64,
    /// Notification events every destination took / given up for good.
    pub notifications_sent: u64,
    pub notifications_failed: u64,
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
    /// Delay flow control added to first attempts (pacing, holds), ms.
    #[serde(skip)]
    pub pacing_ms: Vec<f64>,
    /// On the report of one message: its task's tags. [`merge`] files the
    /// message's figures under each of them in `by_tag`.
    ///
    /// [`merge`]: ProcessReport::merge
    #[serde(skip)]
    pub tags: Vec<String>,
    /// Lag and failure figures per task tag (the EMF `Tag` dimension).
    #[serde(skip)]
    pub by_tag: BTreeMap<String, TagFigures>,
}

/// The figures one tag's tasks add up to in a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagFigures {
    /// Requests made.
    pub fired: u64,
    /// Runs recorded as failed / timed out.
    pub failed: u64,
    pub timed_out: u64,
    /// Fire lag of first attempts, milliseconds (at most
    /// [`MAX_TAG_SAMPLES`] kept).
    pub fire_lag_ms: Vec<f64>,
}

impl TagFigures {
    fn add(&mut self, fired: u64, failed: u64, timed_out: u64, lag: &[f64]) {
        self.fired += fired;
        self.failed += failed;
        self.timed_out += timed_out;
        let room = MAX_TAG_SAMPLES.saturating_sub(self.fire_lag_ms.len());
        self.fire_lag_ms
            .extend_from_slice(&lag[..lag.len().min(room)]);
    }
}

/// Distinct tags one report keeps figures for: a run that sees more (tags
/// are an operator's vocabulary, so that is a misuse) counts the rest only
/// in the untagged totals.
pub const MAX_TAGS_PER_REPORT: usize = 100;
/// Lag samples kept per tag.
pub const MAX_TAG_SAMPLES: usize = 2_000;

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
        self.duplicates += other.duplicates;
        self.put_back += other.put_back;
        self.chained += other.chained;
        self.flow_held += other.flow_held;
        self.flow_skipped += other.flow_skipped;
        self.throttled += other.throttled;
        self.probes += other.probes;
        self.budget_delayed += other.budget_delayed;
        self.flows_opened += other.flows_opened;
        self.flows_closed += other.flows_closed;
        self.flows_open = self.flows_open.max(other.flows_open);
        self.notifications_sent += other.notifications_sent;
        self.notifications_failed += other.notifications_failed;
        for (mine, theirs) in [
            (&mut self.fire_lag_ms, &other.fire_lag_ms),
            (&mut self.latency_ms, &other.latency_ms),
            (&mut self.delivery_late_ms, &other.delivery_late_ms),
            (&mut self.start_delay_ms, &other.start_delay_ms),
            (&mut self.pacing_ms, &other.pacing_ms),
        ] {
            keep_samples(mine, theirs);
        }
        for tag in &other.tags {
            if let Some(f) = self.tag_figures(tag) {
                f.add(
                    other.fired,
                    other.failed,
                    other.timed_out,
                    &other.fire_lag_ms,
                );
            }
        }
        for (tag, theirs) in &other.by_tag {
            if let Some(f) = self.tag_figures(tag) {
                let t = theirs;
                f.add(t.fired, t.failed, t.timed_out, &t.fire_lag_ms);
            }
        }
    }

    /// The figures of `tag`, made on first use while there is room.
    fn tag_figures(&mut self, tag: &str) -> Option<&mut TagFigures> {
        if !self.by_tag.contains_key(tag) && self.by_tag.len() >= MAX_TAGS_PER_REPORT {
            return None;
        }
        Some(self.by_tag.entry(tag.to_string()).or_default())
    }
}

impl ProcessReport {
    /// Adds the flow events of a run (see [`crate::flow::FlowCounters`]).
    pub fn add_flow_counters(&mut self, c: &crate::flow::FlowCounters) {
        self.throttled += c.throttled;
        self.probes += c.probes;
        self.budget_delayed += c.budget_delayed;
        self.flows_opened += c.opened;
        self.flows_closed += c.closed;
        self.flows_open = c.open_now;
    }
}

/// Samples kept per distribution: a long-running consumer merges reports
/// for as long as it runs, and must not grow with every firing.
pub const MAX_SAMPLES: usize = 20_000;

/// Appends samples up to [`MAX_SAMPLES`]; the counters stay exact.
fn keep_samples(mine: &mut Vec<f64>, theirs: &[f64]) {
    let room = MAX_SAMPLES.saturating_sub(mine.len());
    mine.extend_from_slice(&theirs[..theirs.len().min(room)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_bounded_and_counters_exact() {
        let one = ProcessReport {
            fired: 1,
            latency_ms: vec![1.0],
            ..Default::default()
        };
        let mut total = ProcessReport::default();
        for _ in 0..MAX_SAMPLES + 5 {
            total.merge(&one);
        }
        assert_eq!(total.fired, (MAX_SAMPLES + 5) as u64);
        assert_eq!(total.latency_ms.len(), MAX_SAMPLES);
    }

    #[test]
    fn a_message_s_figures_are_filed_under_each_of_its_tags() {
        let failed = ProcessReport {
            fired: 1,
            failed: 1,
            fire_lag_ms: vec![40.0],
            tags: vec!["team:a".into(), "billing".into()],
            ..Default::default()
        };
        let ok = ProcessReport {
            fired: 1,
            succeeded: 1,
            fire_lag_ms: vec![10.0],
            tags: vec!["team:a".into()],
            ..Default::default()
        };
        let untagged = ProcessReport {
            fired: 1,
            timed_out: 1,
            ..Default::default()
        };
        let mut total = ProcessReport::default();
        for one in [&failed, &ok, &untagged] {
            total.merge(one);
        }
        assert_eq!(total.fired, 3);
        assert!(total.tags.is_empty(), "a total belongs to no task");
        let a = &total.by_tag["team:a"];
        assert_eq!((a.fired, a.failed, a.timed_out), (2, 1, 0));
        assert_eq!(a.fire_lag_ms, vec![40.0, 10.0]);
        let billing = &total.by_tag["billing"];
        assert_eq!((billing.fired, billing.failed), (1, 1));
        assert_eq!(total.by_tag.len(), 2);

        // Totals merged into totals keep their per-tag figures.
        let mut grand = ProcessReport::default();
        grand.merge(&total);
        grand.merge(&total);
        assert_eq!(grand.by_tag["team:a"].fired, 4);
        assert_eq!(grand.by_tag["billing"].failed, 2);
    }

    #[test]
    fn tags_per_report_are_bounded() {
        let mut total = ProcessReport::default();
        for i in 0..MAX_TAGS_PER_REPORT + 20 {
            total.merge(&ProcessReport {
                fired: 1,
                fire_lag_ms: vec![1.0; 50],
                tags: vec![format!("t{i}"), "common".into()],
                ..Default::default()
            });
        }
        assert_eq!(total.by_tag.len(), MAX_TAGS_PER_REPORT);
        // A tag already kept still counts every message.
        let common = &total.by_tag["common"];
        assert_eq!(common.fired, (MAX_TAGS_PER_REPORT + 20) as u64);
        assert_eq!(common.fire_lag_ms.len(), MAX_TAG_SAMPLES);
        assert_eq!(total.fired, (MAX_TAGS_PER_REPORT + 20) as u64);
    }
}
