//! The occurrence ledger: for a task and a time range, every occurrence its
//! schedule defined (as of the definition in force then) and what became
//! of it. This module holds the rules, without a database: the store
//! ([`crate::store::ledger`]) loads the facts (definitions, events, runs,
//! the task row) and [`account`] turns them into [`Entry`]s.
//!
//! An occurrence with a recorded run is `fired` or `skipped` (the run
//! says why). Without a run, it is:
//!
//! * `not_scheduled` while the task was paused or disabled (the event says
//!   when and by whom);
//! * `in_flight` when the task waits on it and a lease is held;
//! * `pending` when it is in the future, or due within the grace;
//! * `missed` when it is due more than the grace ago ([`MISSED_GRACE`]
//!   unless `SUNDIAL_MISSED_GRACE_SECS` says otherwise), nothing holds
//!   it, and the task still waits on it (or on an earlier one);
//! * `passed_over` when the task moved past it without a run: catch-up
//!   fired a later occurrence instead, or the schedule was edited.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::schedule::{parse_zone, Schedule, Tz};
use crate::task::{CatchUp, Overlap};

/// Most occurrences one answer lists.
pub const MAX_OCCURRENCES: usize = 1000;
/// How long past its time an occurrence nobody holds counts as `missed`,
/// by default (`SUNDIAL_MISSED_GRACE_SECS` sets it per process).
pub const MISSED_GRACE: Duration =
    Duration::seconds(crate::config::defaults::MISSED_GRACE_SECS as i64);
/// Schedule evaluations one answer may spend (DST overlaps aside, a window
/// of [`MAX_OCCURRENCES`] minimum intervals holds that many occurrences).
const MAX_EVALUATIONS: usize = 4 * MAX_OCCURRENCES + 16;

/// A timing a task had, in force from `valid_from` until `valid_to`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Definition {
    /// The task's version when this timing came into force.
    pub version: i64,
    pub schedule: String,
    pub timezone: String,
    pub valid_from: DateTime<Utc>,
    /// Absent: still in force.
    pub valid_to: Option<DateTime<Utc>>,
    /// The active window and the exclusion in force with it.
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    pub exclude: Option<String>,
    /// The same, parsed once (an unreadable exclusion, which only plain SQL
    /// can store, excludes nothing).
    #[sqlx(skip)]
    #[serde(skip)]
    pub bounds: crate::schedule::Bounds,
}

impl Definition {
    /// Parses `start_at`, `end_at` and `exclude` into [`Definition::bounds`].
    pub fn with_bounds(mut self) -> Self {
        let window = crate::window::TaskWindow {
            start_at: self.start_at,
            end_at: self.end_at,
            exclude: self.exclude.clone(),
        };
        self.bounds = window.bounds().unwrap_or_default();
        self
    }
}

/// What happened to a task (a row of `task_events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum EventKind {
    /// Someone set `enabled = false`.
    Paused,
    /// Someone set `enabled = true`.
    Resumed,
    /// Sundial turned the task off (invalid schedule, one-shot done).
    Disabled,
    /// The schedule or time zone changed.
    Edited,
}

/// One change of a task: when, what, by whom.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TaskEvent {
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    /// `admin API`, `sql`, `scanner`, or what the writer set in `sundial.actor`.
    pub actor: String,
    pub reason: Option<String>,
    /// The task's version after the change.
    pub version: i64,
}

/// The recorded run of an occurrence.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RunFacts {
    pub scheduled_for: DateTime<Utc>,
    /// `succeeded`, `failed`, `timed_out` or `skipped`.
    pub status: String,
    pub attempts: i32,
    pub fired_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    pub http_status: Option<i32>,
    pub latency_ms: Option<i32>,
    /// The delay flow-control pacing added (not lateness).
    pub pacing_ms: Option<i32>,
    pub error: Option<String>,
    /// Fired by hand (`POST /trigger`), not by the schedule.
    pub manual: bool,
    /// The `Sundial-Trigger` of the attempt recorded (`schedule`, `retry`,
    /// `catch-up`, `backfill`, `manual`).
    pub trigger: crate::trigger::Trigger,
    /// The backfill that fired it, if one did.
    pub backfill_id: Option<i64>,
}

/// The task as it is now: what it waits on and who holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskNow {
    pub enabled: bool,
    pub next_run_at: Option<DateTime<Utc>>,
    pub lease_until: Option<DateTime<Utc>>,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    pub timeout_ms: i32,
    pub jitter_secs: i32,
    /// Why the task's flow holds its work now (open breaker, backoff): its
    /// due occurrences wait on purpose and are not missed.
    pub flow_held: Option<String>,
}

/// What became of an occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OccurrenceState {
    /// A request went out; `run.status` says how it ended.
    Fired,
    /// Recorded without a request (catch-up `none`, flow open, ...).
    Skipped,
    /// Not due yet, or due within the grace and waiting to be claimed.
    Pending,
    /// Claimed (leased) or queued; no outcome yet.
    InFlight,
    /// The task was paused or disabled at its time.
    NotScheduled,
    /// The task moved past it without a run.
    PassedOver,
    /// Due longer than the grace ago, no run, no lease.
    Missed,
}

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Entry {
    pub scheduled_for: DateTime<Utc>,
    /// The zone the occurrence was defined in.
    pub timezone: String,
    /// Version of the definition that defined it; absent for a run that
    /// no definition defines (fired by hand).
    pub definition_version: Option<i64>,
    pub state: OccurrenceState,
    /// The recorded run, for `fired` and `skipped`.
    pub run: Option<RunFacts>,
    /// Lateness: fired_at − scheduled_for − pacing, in milliseconds.
    pub lag_ms: Option<i64>,
    /// Why, in words (the skip reason, what the task waits on, ...).
    pub reason: Option<String>,
    /// The pause, disable or edit that explains a `not_scheduled` or
    /// `passed_over` occurrence.
    pub event: Option<TaskEvent>,
    /// The answer for people: "09:00 UTC on 2026-12-01 fired at ...".
    pub summary: String,
}

/// The occurrences a range holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Enumerated {
    /// Occurrences in order, each with the index of its definition.
    pub occurrences: Vec<(DateTime<Utc>, usize)>,
    /// Set when the range holds earlier occurrences than those listed:
    /// ask again with `to` just before this instant.
    pub more_before: Option<DateTime<Utc>>,
    /// Definitions whose schedule or zone cannot be evaluated, by index.
    pub unreadable: Vec<(usize, String)>,
}

/// The occurrences of `definitions` within `[from, to]`, newest kept when
/// there are more than [`MAX_OCCURRENCES`]. `definitions` are in order of
/// `valid_from`.
pub fn enumerate(definitions: &[Definition], from: DateTime<Utc>, to: DateTime<Utc>) -> Enumerated {
    let mut out = Enumerated::default();
    // Newest definition first, so the cap drops the oldest occurrences.
    let mut newest_first: Vec<Vec<(DateTime<Utc>, usize)>> = Vec::new();
    let mut listed = 0usize;
    for (index, def) in definitions.iter().enumerate().rev() {
        let start = from.max(def.valid_from);
        // `valid_to` is exclusive: at that instant the next definition holds.
        let in_force = |t: DateTime<Utc>| t <= to && def.valid_to.is_none_or(|end| t < end);
        if start > to || def.valid_to.is_some_and(|end| end <= start) {
            continue;
        }
        let (schedule, zone) = match (Schedule::parse(&def.schedule), parse_zone(&def.timezone)) {
            (Ok(s), Ok(z)) => (s, z),
            (Err(e), _) | (_, Err(e)) => {
                out.unreadable.push((index, e.to_string()));
                continue;
            }
        };
        let room = MAX_OCCURRENCES - listed;
        if room == 0 {
            out.more_before = Some(
                newest_first
                    .last()
                    .and_then(|v| v.first())
                    .map_or(to, |o| o.0),
            );
            break;
        }
        let end = def.valid_to.map_or(to, |e| e.min(to));
        // Only the last `room` minimum intervals can hold what is kept.
        let window_start = match schedule.min_interval() {
            _ if schedule.is_one_shot() => start,
            interval => {
                let step = interval.unwrap_or(Duration::hours(23));
                let span = step
                    .checked_mul(i32::try_from(room).unwrap_or(i32::MAX))
                    .unwrap_or(Duration::MAX);
                end.checked_sub_signed(span).map_or(start, |w| w.max(start))
            }
        };
        let mut found = Vec::new();
        let mut cursor = window_start - Duration::nanoseconds(1);
        let mut evaluations = 0usize;
        while evaluations < MAX_EVALUATIONS {
            evaluations += 1;
            let Some(t) = schedule.next_after(cursor, zone) else {
                break;
            };
            if !in_force(t) {
                break;
            }
            if t >= start {
                found.push((t, index));
            }
            cursor = t;
        }
        let clipped = window_start > start || found.len() > room;
        if found.len() > room {
            found.drain(..found.len() - room);
        }
        listed += found.len();
        let first = found.first().map(|o| o.0);
        newest_first.push(found);
        if clipped {
            out.more_before = Some(first.unwrap_or(window_start));
            break;
        }
    }
    out.occurrences = newest_first.into_iter().rev().flatten().collect();
    out
}

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

fn with_run(
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
    let (state, reason, event) = match window::bounded(t, def) {
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

fn without_run(
    facts: &Facts<'_>,
    t: DateTime<Utc>,
) -> (OccurrenceState, String, Option<TaskEvent>) {
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
        Some(next) if next == t => {
            if leased {
                (
                    InFlight,
                    "claimed by a scanner; no outcome recorded yet".into(),
                    None,
                )
            } else if t > now {
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
        Some(next) if next < t => {
            if t > now {
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
        // The task has moved past it (or has no next run at all).
        _ => {
            // `overlap = allow` tasks move on when an occurrence is queued,
            // before its outcome is recorded.
            let outcome_window = Duration::milliseconds(i64::from(task.timeout_ms.max(0)))
                + Duration::seconds(i64::from(task.jitter_secs.max(0)))
                + facts.grace;
            if task.overlap == Overlap::Allow
                && task.next_run_at.is_some()
                && now - t <= outcome_window
            {
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
    }
}

fn passed_over(
    facts: &Facts<'_>,
    t: DateTime<Utc>,
) -> (OccurrenceState, String, Option<TaskEvent>) {
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

/// An instant as operators read it in a reason: `2026-12-01 09:00:00Z`.
fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// `09:00 Europe/Berlin on 2026-12-01` (seconds only when not zero).
fn local_head(t: DateTime<Utc>, zone: Tz, zone_name: &str) -> String {
    let local = t.with_timezone(&zone);
    let time = if local.format("%S").to_string() == "00" {
        local.format("%H:%M")
    } else {
        local.format("%H:%M:%S")
    };
    format!("{time} {zone_name} on {}", local.format("%Y-%m-%d"))
}

/// The sentence `sundial why` prints for an entry.
pub fn summary(entry: &Entry) -> String {
    let (zone, zone_name) = match parse_zone(&entry.timezone) {
        Ok(z) => (z, entry.timezone.as_str()),
        Err(_) => (Tz::UTC, "UTC"),
    };
    let head = local_head(entry.scheduled_for, zone, zone_name);
    let local = |t: DateTime<Utc>| t.with_timezone(&zone);
    let reason = entry.reason.as_deref().unwrap_or("");
    match (entry.state, &entry.run) {
        (OccurrenceState::Fired, Some(run)) => {
            let fired = run.fired_at.map_or_else(
                || "fired".to_string(),
                |at| format!("fired at {}", local(at).format("%H:%M:%S%.3f")),
            );
            let answer = match (run.http_status, run.latency_ms) {
                (Some(status), Some(ms)) => format!("{status} in {ms} ms"),
                (Some(status), None) => status.to_string(),
                (None, Some(ms)) => format!("no answer after {ms} ms"),
                (None, None) => "no answer".to_string(),
            };
            let attempts = if run.attempts > 1 {
                format!(" after {} attempts", run.attempts)
            } else {
                String::new()
            };
            let manual = if run.manual {
                " (by hand)"
            } else if run.backfill_id.is_some() {
                " (by a backfill)"
            } else if run.trigger == crate::trigger::Trigger::CatchUp {
                " (catching up)"
            } else {
                ""
            };
            match run.status.as_str() {
                "succeeded" => format!("{head} {fired}{manual}, {answer}{attempts}"),
                outcome => {
                    let outcome = if outcome == "timed_out" {
                        "timed out"
                    } else {
                        "failed"
                    };
                    let error = run
                        .error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default();
                    format!("{head} {fired}{manual} and {outcome}{attempts}, {answer}{error}")
                }
            }
        }
        (OccurrenceState::Skipped, _) => format!("{head} did not fire: skipped ({reason})"),
        (OccurrenceState::NotScheduled, _) => match &entry.event {
            Some(event) => {
                let what = if event.kind == EventKind::Disabled {
                    "disabled"
                } else {
                    "paused"
                };
                let when = local(event.at);
                let when = if when.date_naive() == local(entry.scheduled_for).date_naive() {
                    when.format("%H:%M").to_string()
                } else {
                    when.format("%H:%M on %Y-%m-%d").to_string()
                };
                let mut s = format!(
                    "{head} did not fire: the task was {what} at {when} by {}",
                    event.actor
                );
                if let Some(why) = &event.reason {
                    s.push_str(&format!(" ({why})"));
                }
                s
            }
            // The active window's verdict (`ledger::window`).
            None if !reason.is_empty() => format!("{head} did not fire: {reason}"),
            None => format!("{head} did not fire: the task was paused"),
        },
        (OccurrenceState::PassedOver, _) => format!("{head} did not fire: {reason}"),
        (OccurrenceState::Missed, _) => format!(
            "{head} missed: due {}, {reason}",
            local(entry.scheduled_for).format("%Y-%m-%d %H:%M")
        ),
        (OccurrenceState::InFlight, _) => format!("{head} is in flight: {reason}"),
        (OccurrenceState::Pending, _) => format!("{head} is pending: {reason}"),
        (OccurrenceState::Fired, None) => format!("{head} fired"),
    }
}

#[cfg(test)]
mod tests;
mod window;
