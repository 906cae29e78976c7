//! Which occurrences of a claimed row go out now ([`window`]): one for a
//! one-at-a-time task, every one within the lookahead for `overlap =
//! allow`, so sub-minute schedules fire at full rate with a scanner that
//! ticks once a minute.

use chrono::{DateTime, Utc};

use crate::store::Claimed;
use crate::task::{Overlap, Timing};

/// Most occurrences of one `overlap = allow` task sent per claim: enough
/// for a per-second schedule across the longest lookahead SQS can delay.
pub const MAX_OCCURRENCES_PER_TASK: usize = 900;

/// The occurrences of one claimed row that this scan sends, and where the
/// task continues afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Occurrences to send, in order; the first is the claimed one.
    pub occurrences: Vec<DateTime<Utc>>,
    /// For `overlap = allow`: the next occurrence after the window (`None`
    /// when the schedule ends). `forbid` tasks move on when their run is
    /// recorded instead.
    pub next: Option<Option<DateTime<Utc>>>,
}

/// Which occurrences of a claimed row go out now.
///
/// A `forbid` task sends only its claimed occurrence: the next one is
/// dispatched when this one is recorded (by the processor, within the
/// lookahead, or by a later scan). An `allow` task sends every occurrence
/// due up to `horizon` (so sub-minute schedules fire at full rate although
/// the scanner runs once a minute), after firing an overdue one once
/// (catch-up `skip`: the rest continues from `now`).
pub fn window(c: &Claimed, now: DateTime<Utc>, horizon: DateTime<Utc>) -> Window {
    let mut occurrences = vec![c.occurrence];
    if c.overlap != Overlap::Allow {
        return Window {
            occurrences,
            next: None,
        };
    }
    let bounds = crate::window::TaskWindow {
        start_at: c.start_at,
        end_at: c.end_at,
        exclude: c.exclude.clone(),
    }
    .bounds();
    let timing = Timing::parse(&c.schedule, &c.timezone, Default::default(), 0)
        .and_then(|t| Ok(t.within(bounds?)));
    let Ok(timing) = timing else {
        // Unreadable schedules only come from plain SQL; the processor
        // drops the message and the row is disabled on its next edit.
        return Window {
            occurrences,
            next: Some(None),
        };
    };
    // Window and exclusion apply here as everywhere a next run is computed.
    let mut next = timing.next_after(c.occurrence.max(now)).at();
    while let Some(at) = next {
        if at > horizon || occurrences.len() >= MAX_OCCURRENCES_PER_TASK {
            break;
        }
        occurrences.push(at);
        next = timing.next_after(at).at();
    }
    Window {
        occurrences,
        next: Some(next),
    }
}
