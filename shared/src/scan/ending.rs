//! The end of an `overlap = allow` row's schedule (a one-shot, or the end
//! of its active window): the scan queued its last occurrences, and the
//! row must not be disabled yet, or the processor would drop them as
//! messages of a disabled (and re-versioned) task. Instead the row waits
//! on its last occurrence under a lease, as a `forbid` row does; the
//! write-back of that occurrence finds no next one and disables the task
//! (with the active window's reason, when it was the window).

use chrono::{DateTime, Duration, Utc};

use super::Window;
use crate::firetime;
use crate::store::Claimed;

/// For a row whose window holds the last occurrences of its schedule: the
/// occurrence to wait on and the lease that holds it until its run is
/// recorded (its fire time, its timeout and the default lease).
pub(super) fn hold_last(c: &Claimed, w: &Window) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    if w.next != Some(None) {
        return None;
    }
    // An unreadable schedule also ends the window: that row is disabled.
    crate::schedule::Schedule::parse(&c.schedule).ok()?;
    let last = *w.occurrences.last()?;
    let keep = Duration::milliseconds(i64::from(c.timeout_ms.max(0)))
        + Duration::seconds(crate::config::defaults::LEASE_SECS as i64);
    Some((
        last,
        firetime::fire_at(c.task_id, last, c.jitter_secs) + keep,
    ))
}
