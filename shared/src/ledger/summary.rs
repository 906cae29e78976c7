//! The sentence `sundial why` prints for a ledger entry, in the zone the
//! occurrence was defined in: "09:00 Europe/Berlin on 2026-12-01 fired at
//! 09:00:00.004, 200 in 83 ms".

use chrono::{DateTime, Utc};

use super::{Entry, EventKind, OccurrenceState, RunFacts, TaskEvent};
use crate::schedule::{parse_zone, Tz};

/// An instant as operators read it in a reason: `2026-12-01 09:00:00Z`.
pub(super) fn utc(t: DateTime<Utc>) -> String {
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
        (OccurrenceState::Fired, Some(run)) => fired(&head, run, zone),
        (OccurrenceState::Skipped, _) => format!("{head} did not fire: skipped ({reason})"),
        (OccurrenceState::NotScheduled, _) => match &entry.event {
            Some(event) => turned_off(&head, event, entry.scheduled_for, zone),
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

/// A fired occurrence: when, how it was fired, the answer, the attempts,
/// and the error of a failure.
fn fired(head: &str, run: &RunFacts, zone: Tz) -> String {
    let fired = run.fired_at.map_or_else(
        || "fired".to_string(),
        |at| {
            format!(
                "fired at {}",
                at.with_timezone(&zone).format("%H:%M:%S%.3f")
            )
        },
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

/// An occurrence the task was paused or disabled at: by whom, when (the
/// time alone on the occurrence's own day), and why.
fn turned_off(head: &str, event: &TaskEvent, scheduled_for: DateTime<Utc>, zone: Tz) -> String {
    let local = |t: DateTime<Utc>| t.with_timezone(&zone);
    let what = if event.kind == EventKind::Disabled {
        "disabled"
    } else {
        "paused"
    };
    let when = local(event.at);
    let when = if when.date_naive() == local(scheduled_for).date_naive() {
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
