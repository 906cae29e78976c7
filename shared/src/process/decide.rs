//! The processor's rules as pure functions: each takes what it needs
//! (the message, the task, the clock reading) and returns a decision; no
//! I/O. The steps around them ([`super::prepare`], [`super::settle`])
//! turn decisions into writes, logs and counters. docs/DESIGN.md states
//! the rules; the table tests below check each one.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::fire::Verdict;
use crate::firetime::{self, Arrival};
use crate::message::DispatchMessage;
use crate::store::{OnOpen, Outcome, OutcomeKind, RunStatus};
use crate::task::{Overlap, Task, Timing};

/// Why a message is dropped without a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// The task was deleted.
    Deleted,
    /// The task is paused or disabled.
    Disabled,
    /// The stored schedule cannot be read (only plain SQL can store one;
    /// the scanner disables such rows).
    ScheduleUnreadable,
    /// The occurrence already has a recorded run (a duplicate delivery).
    AlreadyRecorded,
    /// The task was edited since the message was sent.
    Edited,
}

impl Stale {
    /// For the log line.
    pub fn reason(self) -> &'static str {
        match self {
            Stale::Deleted => "task deleted; dropping message",
            Stale::Disabled => "task disabled; dropping message",
            Stale::ScheduleUnreadable => "task schedule unreadable; dropping message",
            Stale::AlreadyRecorded => "occurrence already recorded; dropping duplicate",
            Stale::Edited => "task edited since dispatch; dropping message",
        }
    }
}

/// What to do with a message before any call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before {
    /// Drop it (see [`Stale`]).
    Drop(Stale),
    /// Record it as skipped: catch-up `none` and too late.
    Skip,
    /// Fire it at `fire_at`, holding it for `hold` first (zero: at once).
    Fire {
        /// The instant it fires.
        fire_at: DateTime<Utc>,
        /// How long to hold it (it came early).
        hold: Duration,
    },
    /// It came far too early: send it again to arrive at `fire_at`.
    PutBack {
        /// The instant it fires.
        fire_at: DateTime<Utc>,
        /// The remaining delay.
        early: Duration,
    },
}

/// The rules in the order they apply: the task must exist, be enabled and
/// readable; a recorded occurrence or an edited task drops the message;
/// catch-up `none` skips a late occurrence; then the message fires on its
/// instant (held if early, put back if far too early).
pub fn before_firing(
    message: &DispatchMessage,
    task: Option<&Task>,
    timing: Option<&Timing>,
    recorded: bool,
    now: DateTime<Utc>,
) -> Before {
    let Some(task) = task else {
        return Before::Drop(Stale::Deleted);
    };
    if !task.enabled {
        return Before::Drop(Stale::Disabled);
    }
    let Some(timing) = timing else {
        return Before::Drop(Stale::ScheduleUnreadable);
    };
    if recorded {
        return Before::Drop(Stale::AlreadyRecorded);
    }
    if task.version != message.task_version {
        return Before::Drop(Stale::Edited);
    }
    if !message.off_schedule() && timing.should_skip(message.occurrence, now) {
        return Before::Skip;
    }
    let fire_at = fire_instant(message, task);
    match firetime::on_arrival(fire_at, now) {
        Arrival::Fire => Before::Fire {
            fire_at,
            hold: Duration::ZERO,
        },
        Arrival::Hold(hold) => Before::Fire { fire_at, hold },
        Arrival::PutBack(early) => Before::PutBack { fire_at, early },
    }
}

/// The instant a message fires: what it says, or (messages of older
/// builds) its occurrence plus the task's jitter; a manual firing at once.
pub fn fire_instant(message: &DispatchMessage, task: &Task) -> DateTime<Utc> {
    match message.fire_at {
        Some(at) => at,
        None if message.off_schedule() => message.occurrence,
        None => firetime::fire_at(task.id, message.occurrence, task.jitter_secs),
    }
}

/// After a dropped duplicate: should the schedule be moved on? Only when
/// the task still waits on exactly this occurrence (its write-back lost a
/// race with an edit); manual firings never move it.
pub fn heals(message: &DispatchMessage, task: &Task) -> bool {
    !message.off_schedule() && task.next_run_at == Some(message.occurrence)
}

/// After a call: try again, or finish with this status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterCall {
    /// Another attempt (the caller picks the backoff).
    Retry,
    /// The occurrence is finished.
    Finish(RunStatus),
}

/// 2xx succeeds; 429, 5xx, timeouts and connection errors are retried
/// while attempts are left; everything else (other 4xx, a refused target)
/// fails at once. Exhausted timeouts finish as `timed_out`.
pub fn after_call(verdict: &Verdict, attempt: u32, max_attempts: i32) -> AfterCall {
    match verdict {
        Verdict::Succeeded => AfterCall::Finish(RunStatus::Succeeded),
        Verdict::Retryable { timed_out, .. } => {
            if i64::from(attempt) < i64::from(max_attempts) {
                AfterCall::Retry
            } else if *timed_out {
                AfterCall::Finish(RunStatus::TimedOut)
            } else {
                AfterCall::Finish(RunStatus::Failed)
            }
        }
        _ => AfterCall::Finish(RunStatus::Failed),
    }
}

/// Where the schedule continues after a finished occurrence (`None` for a
/// manual firing, which never moves it, or a schedule that has ended).
pub fn next_run(
    message: &DispatchMessage,
    timing: &Timing,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if message.off_schedule() {
        return None;
    }
    timing.next_after_run(message.occurrence, now)
}

/// Should the processor chain the next occurrence (lease it in the
/// write-back and enqueue it)? For `forbid` tasks whose next occurrence is
/// due within `horizon`; `allow` tasks get theirs from the scanner.
pub fn chains(
    next: Option<DateTime<Utc>>,
    overlap: Overlap,
    manual: bool,
    now: DateTime<Utc>,
    horizon: Duration,
) -> bool {
    let Some(next) = next else {
        return false;
    };
    let horizon = now + chrono::Duration::from_std(horizon).unwrap_or_default();
    !manual && overlap.one_at_a_time() && next <= horizon
}

/// How long a lease lasts beyond an occurrence's fire time (a retry's, a
/// held or put-back message's, a chained occurrence's): the task's
/// timeout plus `lease`, so no scanner dispatches it again meanwhile.
pub fn lease_after(task: &Task, lease: Duration) -> chrono::Duration {
    chrono::Duration::from_std(Duration::from_millis(task.timeout_ms.max(0) as u64) + lease)
        .unwrap_or_default()
}

/// A message of a rate-limited flow this much past its slot is re-paced.
pub const REPACE_AFTER: Duration = Duration::from_millis(50);

/// Should a message that arrived `ready_at` take a new slot of its flow?
/// When it was sent without one (`slot_on_arrival`) or is more than
/// [`REPACE_AFTER`] past its fire instant (the queue delivered it late,
/// and with it others that would go out together), and its flow is
/// rate-limited (`rate_limited`, asked only then); manual firings never
/// wait for a slot.
pub fn repaces(
    message: &DispatchMessage,
    task: &Task,
    ready_at: DateTime<Utc>,
    rate_limited: impl FnOnce() -> bool,
) -> bool {
    let late_after = chrono::Duration::from_std(REPACE_AFTER).unwrap_or_default();
    let late = ready_at - late_after > fire_instant(message, task);
    !message.manual && (message.slot_on_arrival || late) && rate_limited()
}

/// Is a scheduled occurrence recorded as skipped because its flow is, or
/// was at its time, open with the policy `skip`? `on_open` tells the
/// flow's policy if so (asked only for scheduled occurrences: manual and
/// backfill firings are never skipped).
pub fn open_flow_skips(
    message: &DispatchMessage,
    on_open: impl FnOnce() -> Option<OnOpen>,
) -> bool {
    !message.off_schedule() && on_open() == Some(OnOpen::Skip)
}

/// The write a dropped message still asks for: a duplicate of a recorded
/// occurrence heals a schedule stuck on it; a message of an older version
/// releases the lease so the scanner dispatches the current definition.
pub fn stale_outcome(
    why: Stale,
    message: &DispatchMessage,
    task: &Task,
    timing: &Timing,
    now: DateTime<Utc>,
) -> Option<Outcome> {
    let outcome = |version, kind| Outcome {
        task_id: task.id,
        version,
        occurrence: message.occurrence,
        kind,
    };
    match why {
        Stale::AlreadyRecorded => heals(message, task).then(|| {
            outcome(
                task.version,
                OutcomeKind::AlreadyRecorded {
                    next_run_at: timing.next_after_run(message.occurrence, now),
                },
            )
        }),
        Stale::Edited => {
            (!message.off_schedule()).then(|| outcome(message.task_version, OutcomeKind::Released))
        }
        Stale::Deleted | Stale::Disabled | Stale::ScheduleUnreadable => None,
    }
}

#[cfg(test)]
mod tests;
