//! What became of each occurrence ([`account`]): the recorded run if
//! there is one, else what the task's events and its state now say of it
//! (not scheduled, in flight, pending, missed, passed over), with the
//! reason in words.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};

use chrono::{DateTime, Duration, Utc};

use super::summary::{summary, utc};
use super::{
    CatchUp, Definition, Entry, Enumerated, EventKind, OccurrenceState, Overlap, RunFacts,
    TaskEvent, TaskNow,
};

/// Everything [`account`] needs to know.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub definitions: &'a [Definition],
    /// In order of `at`; the last pause/resume before the range included.
    pub events: &'a [TaskEvent],
    /// The runs of the range, by occurrence.
    pub runs: &'a BTreeMap<DateTime<Utc>, RunFacts>,
    pub task: &'a TaskNow,
    pub now: DateTime<Utc>,
    pub grace: Duration,
    /// End of the range: runs after it are context, not entries.
    pub to: DateTime<Utc>,
}

/// The ledger of the enumerated occurrences, plus every run of the range
/// that no definition defines (manual firings), in order.
pub fn account(facts: &Facts<'_>, enumerated: &Enumerated) -> Vec<Entry> {
    let mut entries: Vec<Entry> = enumerated
        .occurrences
        .iter()
        .map(|&(t, index)| classify(facts, t, &facts.definitions[index]))
        .collect();
    let listed: std::collections::HashSet<DateTime<Utc>> =
        enumerated.occurrences.iter().map(|o| o.0).collect();
    let earliest = enumerated.more_before;
    for run in facts.runs.values() {
        if listed.contains(&run.scheduled_for)
            || run.scheduled_for > facts.to
            || earliest.is_some_and(|e| run.scheduled_for < e)
        {
            continue;
        }
        let def = in_force_at(facts.definitions, run.scheduled_for);
        let timezone = def.map_or_else(|| "UTC".to_string(), |d| d.timezone.clone());
        let reason = if run.manual {
            "fired by hand (trigger), outside the schedule"
        } else {
            "recorded for an instant the schedule in force does not define"
        };
        entries.push(with_run(run, timezone, None, Some(reason.to_string())));
    }
    entries.sort_by_key(|e| e.scheduled_for);
    entries
}

/// The definition in force at `t`.
fn in_force_at(definitions: &[Definition], t: DateTime<Utc>) -> Option<&Definition> {
    definitions
        .iter()
        .rev()
        .find(|d| d.valid_from <= t && d.valid_to.is_none_or(|end| t < end))
}

/// The entry of an occurrence with a recorded run.
pub(super) fn with_run(
    run: &RunFacts,
    timezone: String,
    definition_version: Option<i64>,
    reason: Option<String>,
) -> Entry {
    let skipped = run.status == "skipped";
    let lag_ms = run.fired_at.map(|fired| {
        let pacing = Duration::milliseconds(i64::from(run.pacing_ms.unwrap_or(0).max(0)));
        (fired - run.scheduled_for - pacing).num_milliseconds()
    });
    let mut entry = Entry {
        scheduled_for: run.scheduled_for,
        timezone,
        definition_version,
        state: if skipped {
            OccurrenceState::Skipped
        } else {
            OccurrenceState::Fired
        },
        run: Some(run.clone()),
        lag_ms,
        reason: if skipped {
            run.error.clone().or(reason)
        } else {
            reason
        },
        event: None,
        summary: String::new(),
    };
    entry.summary = summary(&entry);
    entry
}

/// What became of the occurrence `t` of `def`.
fn classify(facts: &Facts<'_>, t: DateTime<Utc>, def: &Definition) -> Entry {
    if let Some(run) = facts.runs.get(&t) {
        return with_run(run, def.timezone.clone(), Some(def.version), None);
    }
    let (state, reason, event) = match super::window::bounded(t, def) {
        // A pause or disable at the time says more than the window.
        Some((state, reason)) if off_at(facts.events, t).is_none() => (state, reason, None),
        _ => without_run(facts, t),
    };
    let mut entry = Entry {
        scheduled_for: t,
        timezone: def.timezone.clone(),
        definition_version: Some(def.version),
        state,
        run: None,
        lag_ms: None,
        reason: Some(reason),
        event,
        summary: String::new(),
    };
    entry.summary = summary(&entry);
    entry
}

/// The pause or disable in force at `t`, if the task was off then.
fn off_at(events: &[TaskEvent], t: DateTime<Utc>) -> Option<&TaskEvent> {
    events
        .iter()
        .rev()
        .filter(|e| e.at <= t)
        .find(|e| e.kind != EventKind::Edited)
        .filter(|e| matches!(e.kind, EventKind::Paused | EventKind::Disabled))
}

/// The reading of an occurrence without a run: its state, why, and the
/// event that explains it.
type Reading = (OccurrenceState, String, Option<TaskEvent>);

/// What became of an occurrence without a run: off (paused, disabled),
/// held by its flow, or read against what the task waits on now.
fn without_run(facts: &Facts<'_>, t: DateTime<Utc>) -> Reading {
    use OccurrenceState::*;
    let task = facts.task;
    let now = facts.now;
    if let Some(off) = off_at(facts.events, t) {
        return (NotScheduled, off_reason(off), Some(off.clone()));
    }
    let leased = task.lease_until.is_some_and(|until| until > now);
    let waits = task.next_run_at.is_none_or(|next| next <= t);
    if let (Some(held), true, false, true) = (&task.flow_held, waits, leased, t <= now) {
        return (Pending, held.clone(), None);
    }
    let overdue = now - t > facts.grace;
    match task.next_run_at {
        Some(next) if next == t => the_next_run(leased, t > now, overdue),
        Some(next) if next < t => after_the_next_run(task, next, leased, t > now, overdue),
        // The task has moved past it (or has no next run at all).
        _ => moved_past(facts, t, overdue),
    }
}

/// The occurrence the task waits on.
fn the_next_run(leased: bool, future: bool, overdue: bool) -> Reading {
    use OccurrenceState::*;
    if leased {
        (
            InFlight,
            "claimed by a scanner; no outcome recorded yet".into(),
            None,
        )
    } else if future {
        (Pending, "the task's next run".into(), None)
    } else if overdue {
        (
            Missed,
            "no run and no lease (is a scanner running?)".into(),
            None,
        )
    } else {
        (
            Pending,
            "due; waiting for a scanner to claim it".into(),
            None,
        )
    }
}

/// An occurrence after the one the task waits on (`next`).
fn after_the_next_run(
    task: &TaskNow,
    next: DateTime<Utc>,
    leased: bool,
    future: bool,
    overdue: bool,
) -> Reading {
    use OccurrenceState::*;
    if future {
        (
            Pending,
            format!("after the task's next run ({})", utc(next)),
            None,
        )
    } else if leased {
        (
            Pending,
            if task.overlap == Overlap::Skip {
                format!(
                    "due while the run of {} is in flight: recorded as skipped when it ends (overlap = skip)",
                    utc(next)
                )
            } else {
                format!(
                    "waits for the run of {} to finish (overlap = forbid)",
                    utc(next)
                )
            },
            None,
        )
    } else if overdue {
        (
            Missed,
            format!(
                "no run and no lease; the task still waits on {} (is a scanner running?)",
                utc(next)
            ),
            None,
        )
    } else {
        (
            Pending,
            format!("due; the task still waits on {}", utc(next)),
            None,
        )
    }
}

/// An occurrence the task has moved past (or a task with no next run).
fn moved_past(facts: &Facts<'_>, t: DateTime<Utc>, overdue: bool) -> Reading {
    use OccurrenceState::*;
    let task = facts.task;
    let now = facts.now;
    // `overlap = allow` tasks move on when an occurrence is queued,
    // before its outcome is recorded.
    let outcome_window = Duration::milliseconds(i64::from(task.timeout_ms.max(0)))
        + Duration::seconds(i64::from(task.jitter_secs.max(0)))
        + facts.grace;
    if task.overlap == Overlap::Allow && task.next_run_at.is_some() && now - t <= outcome_window {
        return (InFlight, "queued; no outcome recorded yet".into(), None);
    }
    if task.next_run_at.is_none() && task.enabled {
        // Rows inserted with SQL wait for the scanner's first computation.
        return if t > now {
            (
                Pending,
                "the scanner has not computed the task's next run yet".into(),
                None,
            )
        } else if overdue {
            (
                Missed,
                "the task has no next run computed (is a scanner running?)".into(),
                None,
            )
        } else {
            (
                Pending,
                "due; the scanner has not computed the task's next run yet".into(),
                None,
            )
        };
    }
    passed_over(facts, t)
}

/// Passed over: by an edit of the schedule, or by catch-up.
fn passed_over(facts: &Facts<'_>, t: DateTime<Utc>) -> Reading {
    let later_run = facts
        .runs
        .range((Excluded(t), Unbounded))
        .map(|(_, r)| r)
        .find(|r| !r.manual);
    let until = later_run.map_or(facts.now, |r| r.scheduled_for);
    let edit = facts
        .events
        .iter()
        .find(|e| e.kind == EventKind::Edited && e.at > t && e.at <= until);
    if let Some(edit) = edit {
        let reason = format!(
            "the schedule was edited at {} by {} before it ran",
            utc(edit.at),
            edit.actor
        );
        return (OccurrenceState::PassedOver, reason, Some(edit.clone()));
    }
    let policy = catch_up_name(facts.task.catch_up);
    let reason = match later_run {
        Some(r) => format!(
            "passed over by catch-up `{policy}`: the task fired {} instead",
            utc(r.scheduled_for)
        ),
        None => match facts.task.next_run_at {
            Some(next) => format!(
                "passed over by catch-up `{policy}`: the task moved on to {}",
                utc(next)
            ),
            None => format!("passed over by catch-up `{policy}`"),
        },
    };
    (OccurrenceState::PassedOver, reason, None)
}

fn catch_up_name(c: CatchUp) -> &'static str {
    match c {
        CatchUp::Skip => "skip",
        CatchUp::All => "all",
        CatchUp::None => "none",
    }
}

fn off_reason(event: &TaskEvent) -> String {
    let what = match event.kind {
        EventKind::Disabled => "disabled",
        _ => "paused",
    };
    let mut reason = format!(
        "the task was {what} at {} by {}",
        utc(event.at),
        event.actor
    );
    if let Some(why) = &event.reason {
        reason.push_str(": ");
        reason.push_str(why);
    }
    reason
}
