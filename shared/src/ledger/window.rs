//! The ledger's reading of a task's active window and exclusion: an
//! occurrence its exclusion matches is `skipped (excluded)`, one outside
//! the window was `not_scheduled`. Both are derived from the `start_at`,
//! `end_at` and `exclude` of the definition in force at the occurrence
//! (migration 000009 keeps them with each definition), not recorded per
//! occurrence: an excluded per-second schedule would otherwise write a row
//! a second (docs/DESIGN.md, "Active windows and exclusions").

use chrono::{DateTime, Utc};

use super::summary::utc;
use super::{Definition, OccurrenceState};
use crate::schedule::parse_zone;

/// The state and reason the window or exclusion gives the occurrence `t`
/// of `def`, if they decide it.
pub(super) fn bounded(t: DateTime<Utc>, def: &Definition) -> Option<(OccurrenceState, String)> {
    let bounds = &def.bounds;
    if let Some(start) = bounds.start_at.filter(|s| t < *s) {
        return Some((
            OccurrenceState::NotScheduled,
            format!(
                "before the task's active window (it starts at {})",
                utc(start)
            ),
        ));
    }
    if let Some(end) = bounds.end_at.filter(|e| t >= *e) {
        return Some((
            OccurrenceState::NotScheduled,
            format!("after the task's active window (it ended at {})", utc(end)),
        ));
    }
    let zone = parse_zone(&def.timezone).ok()?;
    bounds
        .excludes(t, zone)
        .then(|| (OccurrenceState::Skipped, "excluded".to_string()))
}
