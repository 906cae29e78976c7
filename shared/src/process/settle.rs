//! Step 4 of the pipeline: turn a call's result (or a decision made
//! without one) into the write it asks for and the message's disposition:
//! a retry, a finished run that moves the schedule on, a chained next
//! occurrence, a put-back.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::decide::{self, AfterCall};
use super::{Chain, Disposition, InFlight, ProcessReport, Processor, Settled, MAX_BACKOFF};
use crate::fire::{retry_delay, FireResult, Fired};
use crate::firetime;
use crate::flow::HoldReason;
use crate::message::DispatchMessage;
use crate::queue::Outgoing;
use crate::store::{Outcome, OutcomeKind, RunRecord, RunStatus};
use crate::task::{Task, Timing};

impl Processor {
    /// Turns a call's result into a write and a disposition.
    pub(super) fn settle<Id>(&self, job: InFlight<Id>, fired: Fired) -> Settled<Id> {
        let InFlight {
            id,
            message,
            task,
            timing,
            span,
            hold_until,
            ready_at,
            delivery_late,
            trigger,
        } = job;
        let _entered = span.enter();
        let mut report = ProcessReport {
            received: 1,
            held: u64::from(hold_until.is_some()),
            tags: task.tags.clone(),
            ..Default::default()
        };
        let result = match fired {
            Fired::Done(result) => result,
            Fired::NotStarted => {
                report.not_started = 1;
                tracing::info!("deadline near; handing the message back");
                return Settled::hand_back(id, report);
            }
            Fired::Held { until, why } => {
                return self.held(id, message, &task, &timing, until, why, report);
            }
        };
        count_call(&mut report, &message, &result, ready_at, delivery_late);
        let now = Utc::now();
        match decide::after_call(&result.verdict, message.attempt, task.max_attempts) {
            AfterCall::Retry => self.retry(id, &message, &task, &result, now, report),
            AfterCall::Finish(status) => {
                match status {
                    RunStatus::Succeeded => report.succeeded = 1,
                    RunStatus::TimedOut => report.timed_out = 1,
                    _ => report.failed = 1,
                }
                // Lag of this attempt (for a retry: since the occurrence,
                // backoff included), so each line shows how late it went out.
                tracing::info!(
                    task = %task.name,
                    status = result.http_status,
                    outcome = status.as_str(),
                    lag_ms = (result.started_at - message.occurrence).num_milliseconds(),
                    latency_ms = result.latency.as_millis() as u64,
                    "fired"
                );
                let run = run_record(&result, status, &message, trigger);
                self.finish(id, &message, &task, &timing, run, now, report)
            }
        }
    }

    /// Another attempt: a new message after the backoff (never sooner than
    /// `Retry-After`), with the lease kept until well after it.
    fn retry<Id>(
        &self,
        id: Id,
        message: &DispatchMessage,
        task: &Task,
        result: &FireResult,
        now: DateTime<Utc>,
        mut report: ProcessReport,
    ) -> Settled<Id> {
        let retry_after = match result.verdict {
            crate::fire::Verdict::Retryable { retry_after, .. } => retry_after,
            _ => None,
        };
        let delay = retry_delay(
            message.attempt.saturating_sub(1),
            Duration::from_millis(task.retry_backoff_ms.max(1) as u64),
            MAX_BACKOFF,
            retry_after,
        )
        .min(MAX_BACKOFF);
        report.retried = 1;
        tracing::info!(
            status = result.http_status,
            error = result.error.as_deref(),
            retry_in_ms = delay.as_millis() as u64,
            "attempt failed; retrying"
        );
        // The flow's backoff and retry budget may move it later.
        let wanted = now + chrono::Duration::from_std(delay).unwrap_or_default();
        let (retry_at, _) = self.flows.retry_at(&task.flow, wanted, now);
        let delay = firetime::delay_until(retry_at, now);
        // No slot of a paced flow now: one when it arrives (see
        // `DispatchMessage::slot_on_arrival`).
        let next = message.retry(retry_at).slot_on_arrival();
        let lease_until = retry_at + self.lease_after(task);
        Settled {
            releases: None,
            // Manual firings hold no lease.
            outcome: (!message.off_schedule()).then_some(Outcome {
                task_id: task.id,
                version: task.version,
                occurrence: message.occurrence,
                kind: OutcomeKind::Retrying { lease_until },
            }),
            retry: Some(Outgoing {
                message: next,
                delay,
            }),
            ..Settled::new(id, Disposition::Done, report)
        }
    }

    /// A message its flow held instead of firing: sent again to fire when
    /// the flow allows (same attempt; the lease kept past it), or, for an
    /// open flow whose policy is `skip`, recorded as skipped.
    #[allow(clippy::too_many_arguments)]
    fn held<Id>(
        &self,
        id: Id,
        message: DispatchMessage,
        task: &Task,
        timing: &Timing,
        until: DateTime<Utc>,
        why: HoldReason,
        mut report: ProcessReport,
    ) -> Settled<Id> {
        let now = Utc::now();
        let on_open = || match why {
            HoldReason::Open(on_open) => Some(on_open),
            HoldReason::Backoff => None,
        };
        if decide::open_flow_skips(&message, on_open) {
            tracing::info!(flow = %task.flow, "flow open; skipping the occurrence (on_open = skip)");
            report.skipped = 1;
            report.flow_skipped = 1;
            let run = skipped_run(&message, task, now);
            return self.finish(id, &message, task, timing, run, now, report);
        }
        report.flow_held = 1;
        tracing::info!(
            flow = %task.flow,
            until = %until,
            reason = if why == HoldReason::Backoff { "backoff" } else { "open" },
            "flow holds the occurrence; sending it again"
        );
        let lease_until = until + self.lease_after(task);
        Settled {
            releases: None,
            outcome: (!message.off_schedule()).then(|| Outcome {
                task_id: task.id,
                version: task.version,
                occurrence: message.occurrence,
                kind: OutcomeKind::Retrying {
                    lease_until: lease_until.max(now),
                },
            }),
            retry: Some(Outgoing {
                message: message.held_until(until).slot_on_arrival(),
                delay: firetime::delay_until(until, now),
            }),
            ..Settled::new(id, Disposition::Done, report)
        }
    }

    /// Sends a message that came far too early again with the remaining
    /// delay, and keeps the lease until well after it.
    pub(super) fn put_back<Id>(
        &self,
        id: Id,
        message: DispatchMessage,
        task: &Task,
        fire_at: DateTime<Utc>,
        early: Duration,
        now: DateTime<Utc>,
    ) -> Settled<Id> {
        let lease_until = fire_at + self.lease_after(task);
        let outcome = (!message.off_schedule()).then(|| Outcome {
            task_id: task.id,
            version: task.version,
            occurrence: message.occurrence,
            kind: OutcomeKind::Retrying {
                lease_until: lease_until.max(now),
            },
        });
        Settled {
            releases: None,
            outcome,
            retry: Some(Outgoing {
                message: message.firing_at(fire_at),
                delay: early,
            }),
            ..Settled::new(
                id,
                Disposition::Done,
                ProcessReport {
                    put_back: 1,
                    ..Default::default()
                },
            )
        }
    }

    /// How long a lease lasts beyond an occurrence's fire time
    /// ([`decide::lease_after`] with the configured lease).
    fn lease_after(&self, task: &Task) -> chrono::Duration {
        decide::lease_after(task, self.opts.lease)
    }

    /// The occurrence is finished with `run`: record it, move the schedule
    /// on (unless manual), and chain the next occurrence when
    /// [`decide::chains`] says so.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish<Id>(
        &self,
        id: Id,
        message: &DispatchMessage,
        task: &Task,
        timing: &Timing,
        run: RunRecord,
        now: DateTime<Utc>,
        report: ProcessReport,
    ) -> Settled<Id> {
        let (next_run_at, skips) = super::overlap::at_finish(task, timing, message, &run, now)
            .unwrap_or_else(|| (decide::next_run(message, timing, now), Vec::new()));
        let chain = decide::chains(
            next_run_at,
            task.overlap,
            message.off_schedule(),
            now,
            self.opts.chain_horizon,
        )
        .then_some(next_run_at)
        .flatten()
        .map(|next| {
            let at = firetime::fire_at(task.id, next, task.jitter_secs);
            Chain {
                message: DispatchMessage::new(task.id, next, task.version).firing_at(at),
                flow: task.flow.clone(),
                keep: self.lease_after(task),
            }
        });
        let chain_lease = chain
            .as_ref()
            .and_then(|c| c.message.fire_at)
            .map(|at| at.max(now) + self.lease_after(task));
        Settled {
            releases: None,
            outcome: Some(Outcome {
                task_id: task.id,
                version: task.version,
                occurrence: message.occurrence,
                kind: OutcomeKind::Finished {
                    run,
                    next_run_at,
                    manual: message.off_schedule(),
                    chain_lease,
                },
            }),
            chain,
            skips,
            ..Settled::new(id, Disposition::Done, report)
        }
    }
}

/// The figures of one call: latency, lag, and how the queue and Sundial
/// shared the delay.
fn count_call(
    report: &mut ProcessReport,
    message: &DispatchMessage,
    result: &FireResult,
    ready_at: DateTime<Utc>,
    delivery_late: chrono::Duration,
) {
    let ms = |d: chrono::Duration| d.num_microseconds().unwrap_or(0) as f64 / 1000.0;
    report.fired = 1;
    if let crate::fire::Verdict::Retryable {
        timed_out: true, ..
    } = result.verdict
    {
        report.attempt_timeouts = 1;
    }
    report
        .latency_ms
        .push(result.latency.as_secs_f64() * 1000.0);
    report.delivery_late_ms.push(ms(delivery_late));
    report
        .start_delay_ms
        .push(ms(result.started_at - ready_at).max(0.0));
    if message.attempt == 1 && !message.off_schedule() {
        // Lateness is counted from the instant flow control gave it.
        let paced = chrono::Duration::milliseconds(message.paced_ms.min(i64::MAX as u64) as i64);
        report
            .fire_lag_ms
            .push(ms(result.started_at - message.occurrence - paced).max(0.0));
        report.pacing_ms.push(message.paced_ms as f64);
    }
}

/// The run of an occurrence skipped because its flow was open.
fn skipped_run(message: &DispatchMessage, task: &Task, now: DateTime<Utc>) -> RunRecord {
    let flow = &task.flow;
    RunRecord {
        trigger: crate::trigger::Trigger::of(message, task.jitter_secs, now),
        backfill_id: message.backfill.map(|b| b.id),
        rerun: message.rerun(),
        status: RunStatus::Skipped,
        attempts: message.attempt.min(i32::MAX as u32) as i32,
        fired_at: None,
        finished_at: now,
        http_status: None,
        latency_ms: None,
        error: Some(crate::sanitise::clean_text(
            &format!("flow {flow} open: skipped (on_open = skip)"),
            512,
        )),
        response_excerpt: None,
        pacing_ms: paced(message),
    }
}

/// The pacing a run records.
fn paced(message: &DispatchMessage) -> Option<i32> {
    (message.paced_ms > 0).then(|| message.paced_ms.min(i32::MAX as u64) as i32)
}

fn run_record(
    result: &FireResult,
    status: RunStatus,
    message: &DispatchMessage,
    trigger: crate::trigger::Trigger,
) -> RunRecord {
    let attempt = message.attempt;
    RunRecord {
        trigger,
        backfill_id: message.backfill.map(|b| b.id),
        rerun: message.rerun(),
        pacing_ms: paced(message),
        status,
        attempts: attempt.min(i32::MAX as u32) as i32,
        fired_at: Some(result.started_at),
        finished_at: result.started_at
            + chrono::Duration::from_std(result.latency).unwrap_or_default(),
        http_status: result.http_status.map(i32::from),
        latency_ms: Some(result.latency.as_millis().min(i32::MAX as u128) as i32),
        error: result.error.clone(),
        response_excerpt: result.response_excerpt.clone(),
    }
}
