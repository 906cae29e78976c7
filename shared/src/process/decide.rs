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
use crate::store::RunStatus;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::CatchUp;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    const OCC: &str = "2026-12-01T09:00:00Z";

    fn task() -> Task {
        Task {
            id: 7,
            name: "t".into(),
            schedule: "rate(1 minute)".into(),
            timezone: "UTC".into(),
            method: "POST".into(),
            url: "https://example.com/".into(),
            headers: sqlx::types::Json(serde_json::json!({})),
            body: None,
            timeout_ms: 1000,
            max_attempts: 3,
            retry_backoff_ms: 100,
            catch_up: CatchUp::Skip,
            catch_up_max_age_secs: 3600,
            overlap: Overlap::Forbid,
            jitter_secs: 0,
            enabled: true,
            next_run_at: Some(t(OCC)),
            lease_until: None,
            version: 3,
            schedule_error: None,
            last_run_at: None,
            last_status: None,
            last_error: None,
            consecutive_failures: 0,
            created_at: t(OCC),
            updated_at: t(OCC),
            flow_key: None,
            flow: "example.com:443".into(),
            tags: Vec::new(),
            alerting: Default::default(),
            window: Default::default(),
        }
    }

    fn message() -> DispatchMessage {
        DispatchMessage::new(7, t(OCC), 3)
    }

    fn timing(task: &Task) -> Timing {
        Timing::of(task).unwrap()
    }

    #[test]
    fn the_rules_before_a_call_in_their_order() {
        let ms = Duration::from_millis;
        type Case = (
            &'static str,
            Box<dyn Fn(&mut DispatchMessage, &mut Task, &mut bool, &mut bool)>,
            &'static str,
            Before,
        );
        let cases: Vec<Case> = vec![
            (
                "on time",
                Box::new(|_, _, _, _| {}),
                "2026-12-01T09:00:00Z",
                Before::Fire {
                    fire_at: t(OCC),
                    hold: Duration::ZERO,
                },
            ),
            (
                "late fires at once",
                Box::new(|_, _, _, _| {}),
                "2026-12-01T09:00:05Z",
                Before::Fire {
                    fire_at: t(OCC),
                    hold: Duration::ZERO,
                },
            ),
            (
                "early is held",
                Box::new(|_, _, _, _| {}),
                "2026-12-01T08:59:59.250Z",
                Before::Fire {
                    fire_at: t(OCC),
                    hold: ms(750),
                },
            ),
            (
                "far too early is put back",
                Box::new(|_, _, _, _| {}),
                "2026-12-01T08:59:50Z",
                Before::PutBack {
                    fire_at: t(OCC),
                    early: ms(10_000),
                },
            ),
            (
                "a retry fires at its backoff's end",
                Box::new(|m, _, _, _| {
                    m.attempt = 2;
                    m.fire_at = Some(t("2026-12-01T09:00:00.100Z"));
                }),
                "2026-12-01T09:00:00.040Z",
                Before::Fire {
                    fire_at: t("2026-12-01T09:00:00.100Z"),
                    hold: ms(60),
                },
            ),
            (
                // (17.675 s of jitter for task 7: far beyond the hold)
                "jitter from the task when the message has none",
                Box::new(|_, t, _, _| t.jitter_secs = 30),
                "2026-12-01T09:00:00Z",
                Before::PutBack {
                    fire_at: firetime::fire_at(7, t(OCC), 30),
                    early: firetime::jitter_offset(7, t(OCC), 30),
                },
            ),
            (
                "deleted",
                Box::new(|_, _, _, gone| *gone = true),
                OCC,
                Before::Drop(Stale::Deleted),
            ),
            (
                "disabled",
                Box::new(|_, t, _, _| t.enabled = false),
                OCC,
                Before::Drop(Stale::Disabled),
            ),
            (
                "already recorded",
                Box::new(|_, _, r, _| *r = true),
                OCC,
                Before::Drop(Stale::AlreadyRecorded),
            ),
            (
                "edited",
                Box::new(|m, _, _, _| m.task_version = 2),
                OCC,
                Before::Drop(Stale::Edited),
            ),
            (
                "recorded beats edited",
                Box::new(|m, _, r, _| {
                    m.task_version = 2;
                    *r = true;
                }),
                OCC,
                Before::Drop(Stale::AlreadyRecorded),
            ),
            (
                "catch-up none skips a late one",
                Box::new(|_, t, _, _| t.catch_up = CatchUp::None),
                "2026-12-01T09:05:00Z",
                Before::Skip,
            ),
            (
                "catch-up none fires within the grace",
                Box::new(|_, t, _, _| t.catch_up = CatchUp::None),
                "2026-12-01T09:00:30Z",
                Before::Fire {
                    fire_at: t(OCC),
                    hold: Duration::ZERO,
                },
            ),
            (
                "a manual firing is never skipped",
                Box::new(|m, t, _, _| {
                    t.catch_up = CatchUp::None;
                    m.manual = true;
                }),
                "2026-12-01T09:05:00Z",
                Before::Fire {
                    fire_at: t(OCC),
                    hold: Duration::ZERO,
                },
            ),
        ];
        for (name, mutate, now, expected) in cases {
            let (mut m, mut task, mut recorded, mut gone) = (message(), task(), false, false);
            mutate(&mut m, &mut task, &mut recorded, &mut gone);
            let timing = timing(&task);
            let got = before_firing(
                &m,
                (!gone).then_some(&task),
                Some(&timing),
                recorded,
                t(now),
            );
            assert_eq!(got, expected, "{name}");
        }
        // An unreadable stored schedule.
        let task = task();
        assert_eq!(
            before_firing(&message(), Some(&task), None, false, t(OCC)),
            Before::Drop(Stale::ScheduleUnreadable)
        );
    }

    #[test]
    fn the_rules_after_a_call() {
        let retryable = |timed_out| Verdict::Retryable {
            retry_after: None,
            timed_out,
        };
        let cases = [
            (
                "2xx",
                Verdict::Succeeded,
                1,
                AfterCall::Finish(RunStatus::Succeeded),
            ),
            (
                "5xx with attempts left",
                retryable(false),
                1,
                AfterCall::Retry,
            ),
            (
                "5xx on the last attempt",
                retryable(false),
                3,
                AfterCall::Finish(RunStatus::Failed),
            ),
            (
                "timeout with attempts left",
                retryable(true),
                2,
                AfterCall::Retry,
            ),
            (
                "timeout on the last attempt",
                retryable(true),
                3,
                AfterCall::Finish(RunStatus::TimedOut),
            ),
            (
                "beyond the last attempt",
                retryable(false),
                9,
                AfterCall::Finish(RunStatus::Failed),
            ),
        ];
        for (name, verdict, attempt, expected) in cases {
            assert_eq!(after_call(&verdict, attempt, 3), expected, "{name}");
        }
    }

    #[test]
    fn other_verdicts_fail_at_once() {
        for verdict in [Verdict::Failed, Verdict::Refused] {
            assert_eq!(
                after_call(&verdict, 1, 3),
                AfterCall::Finish(RunStatus::Failed),
                "{verdict:?}"
            );
        }
    }

    #[test]
    fn chaining_is_for_forbid_tasks_due_within_the_horizon() {
        let now = t(OCC);
        let horizon = Duration::from_secs(75);
        let soon = Some(t("2026-12-01T09:00:10Z"));
        let later = Some(t("2026-12-01T09:02:00Z"));
        let cases = [
            ("forbid, due soon", soon, Overlap::Forbid, false, true),
            (
                "forbid, at the horizon",
                Some(t("2026-12-01T09:01:15Z")),
                Overlap::Forbid,
                false,
                true,
            ),
            (
                "forbid, beyond the horizon",
                later,
                Overlap::Forbid,
                false,
                false,
            ),
            (
                "allow: the scanner's job",
                soon,
                Overlap::Allow,
                false,
                false,
            ),
            ("manual", soon, Overlap::Forbid, true, false),
            ("schedule ended", None, Overlap::Forbid, false, false),
        ];
        for (name, next, overlap, manual, expected) in cases {
            assert_eq!(
                chains(next, overlap, manual, now, horizon),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn the_schedule_moves_on_except_for_manual_firings() {
        let task = task();
        let timing = timing(&task);
        let now = t("2026-12-01T09:00:00.200Z");
        assert_eq!(
            next_run(&message(), &timing, now),
            Some(t("2026-12-01T09:01:00Z"))
        );
        let mut manual = message();
        manual.manual = true;
        assert_eq!(next_run(&manual, &timing, now), None);
        assert!(heals(&message(), &task));
        assert!(!heals(&manual, &task));
        let mut moved = task.clone();
        moved.next_run_at = Some(t("2026-12-01T09:01:00Z"));
        assert!(!heals(&message(), &moved));
    }
}
