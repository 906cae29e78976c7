//! Overlap `skip`: when a run of a `skip` task finishes, the occurrences
//! that came due while it was in flight are recorded as skipped (reason
//! overlap) and the schedule continues with the first one after now, so
//! nothing waits for a slow run and nothing fires late because of it.
//! Occurrences due before the run started (an outage) stay catch-up's
//! business: they are passed over.

use chrono::{DateTime, Utc};

use crate::message::DispatchMessage;
use crate::store::{RunRecord, SkippedOccurrence};
use crate::task::{Overlap, Task, Timing};

/// Most occurrences one finished run records as skipped; the rest of a
/// very long run's occurrences are passed over silently.
pub const MAX_OVERLAP_SKIPS: usize = 100;

/// What a finished run of a `skip` task leaves behind.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlapSkips {
    /// Occurrences that came due while the run was in flight.
    pub skipped: Vec<DateTime<Utc>>,
    /// Where the schedule continues: the first occurrence after now.
    pub next_run_at: Option<DateTime<Utc>>,
    /// The reason recorded on each skipped run.
    pub reason: String,
}

/// For a scheduled run of a `skip` task: where the schedule continues and
/// the occurrences to record as skipped with the outcome; `None` for other
/// tasks and for manual firings (the usual rules apply).
pub(super) fn at_finish(
    task: &Task,
    timing: &Timing,
    message: &DispatchMessage,
    run: &RunRecord,
    now: DateTime<Utc>,
) -> Option<(Option<DateTime<Utc>>, Vec<SkippedOccurrence>)> {
    if task.overlap != Overlap::Skip || message.off_schedule() {
        return None;
    }
    let left = skipped_while_in_flight(timing, message, run, now);
    if !left.skipped.is_empty() {
        tracing::info!(
            skipped = left.skipped.len(),
            "occurrences came due while the run was in flight; recording them as skipped"
        );
    }
    let skips = left
        .skipped
        .iter()
        .map(|&occurrence| SkippedOccurrence {
            task_id: task.id,
            occurrence,
            reason: left.reason.clone(),
            manual: false,
        })
        .collect();
    Some((left.next_run_at, skips))
}

/// The occurrences of `timing` in `(start of the run, now]`, where the run
/// started at its first attempt (a retried occurrence was in flight from
/// its occurrence on), and the next one after `now`.
pub fn skipped_while_in_flight(
    timing: &Timing,
    message: &DispatchMessage,
    run: &RunRecord,
    now: DateTime<Utc>,
) -> OverlapSkips {
    let started = if message.attempt > 1 {
        message.occurrence
    } else {
        run.fired_at.unwrap_or(message.occurrence)
    };
    let mut skipped = Vec::new();
    let mut cursor = message.occurrence.max(started);
    while skipped.len() < MAX_OVERLAP_SKIPS {
        match timing.next_after(cursor).at() {
            Some(t) if t <= now => {
                skipped.push(t);
                cursor = t;
            }
            _ => break,
        }
    }
    OverlapSkips {
        skipped,
        next_run_at: timing.next_after(now.max(message.occurrence)).at(),
        reason: format!(
            "overlap: the run of {} was still in flight (overlap = skip)",
            message.occurrence.format("%Y-%m-%d %H:%M:%SZ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RunStatus;
    use crate::task::CatchUp;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn run(fired_at: &str) -> RunRecord {
        RunRecord {
            status: RunStatus::Succeeded,
            attempts: 1,
            fired_at: Some(t(fired_at)),
            finished_at: t(fired_at),
            http_status: Some(200),
            latency_ms: Some(1),
            error: None,
            response_excerpt: None,
            pacing_ms: None,
            trigger: crate::trigger::Trigger::Schedule,
            backfill_id: None,
            rerun: 0,
        }
    }

    #[test]
    fn occurrences_due_during_a_slow_run_are_skipped_not_delayed() {
        let timing = Timing::parse("rate(10 seconds)", "UTC", CatchUp::All, 3600).unwrap();
        let message = DispatchMessage::new(1, t("2026-12-01T09:00:00Z"), 1);
        let got = skipped_while_in_flight(
            &timing,
            &message,
            &run("2026-12-01T09:00:00.010Z"),
            t("2026-12-01T09:00:25Z"),
        );
        assert_eq!(
            got.skipped,
            vec![t("2026-12-01T09:00:10Z"), t("2026-12-01T09:00:20Z")]
        );
        assert_eq!(got.next_run_at, Some(t("2026-12-01T09:00:30Z")));
        assert!(got
            .reason
            .starts_with("overlap: the run of 2026-12-01 09:00:00Z"));
    }

    #[test]
    fn occurrences_before_a_late_start_are_not_the_overlap_s() {
        let timing = Timing::parse("rate(10 seconds)", "UTC", CatchUp::Skip, 3600).unwrap();
        let message = DispatchMessage::new(1, t("2026-12-01T09:00:00Z"), 1);
        // Fired a minute late (an outage), answered in 5 s.
        let got = skipped_while_in_flight(
            &timing,
            &message,
            &run("2026-12-01T09:01:00Z"),
            t("2026-12-01T09:01:15Z"),
        );
        assert_eq!(got.skipped, vec![t("2026-12-01T09:01:10Z")]);
        assert_eq!(got.next_run_at, Some(t("2026-12-01T09:01:20Z")));
    }
}
