//! From wall-clock matches to instants: the DST rule.
//!
//! The rule itself is documented on the module (`schedule`, "DST"); this
//! file implements it with two searches, one per kind of schedule.
//!
//! Instants are whole seconds (Unix time); zone offsets are too.

use chrono::{DateTime, Datelike, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone};
use chrono_tz::{GapInfo, Tz};

use super::cron::Cron;

/// Offsets are sampled at most this far apart when looking for a transition.
/// No zone has two transitions within six hours, and sampling is cheap.
const PROBE_STEP_SECS: i64 = 6 * 3600;
/// Safety net for the real-time search: each round ends at an offset change,
/// and a horizon holds a few dozen of those.
const MAX_TRANSITIONS: usize = 1_000;
/// Safety net for the fixed-time search: rounds only repeat for matches
/// that resolve to an instant not after the start (one overlap's worth).
const MAX_FIXED_ROUNDS: usize = 200_000;

/// The next occurrence of `cron` strictly after Unix second `after`.
pub(crate) fn next_cron(cron: &Cron, after: i64, tz: Tz) -> Option<i64> {
    if cron.is_fixed_time() {
        next_fixed_time(cron, after, tz)
    } else {
        next_real_time(cron, after, tz)
    }
}

/// The one instant a fixed wall-clock time denotes (see the module doc):
/// the earlier of two, or the end of the gap it falls into.
pub(crate) fn resolve_fixed(local: NaiveDateTime, tz: Tz) -> Option<i64> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(instant) => Some(instant.timestamp()),
        LocalResult::Ambiguous(a, b) => Some(a.timestamp().min(b.timestamp())),
        LocalResult::None => Some(GapInfo::new(&local, &tz)?.end?.timestamp()),
    }
}

/// Fixed-time jobs: walk matching wall-clock times upwards and resolve each.
///
/// Resolution is monotone in wall-clock time, and the wall-clock reading of
/// `after` resolves to at most `after` (it exists, and resolving picks the
/// earlier instant), so the first match from there that resolves past
/// `after` is the answer.
fn next_fixed_time(cron: &Cron, after: i64, tz: Tz) -> Option<i64> {
    let (mut from, _) = local_at(after, tz)?;
    let last_year = cron.horizon_year(from.year())?;
    for _ in 0..MAX_FIXED_ROUNDS {
        let candidate = cron.next_match(from, last_year)?;
        if let Some(instant) = resolve_fixed(candidate, tz) {
            if instant > after {
                return Some(instant);
            }
        }
        from = candidate.checked_add_signed(TimeDelta::seconds(1))?;
    }
    None
}

/// Real-time jobs: the first instant whose wall-clock reading matches.
///
/// While the offset stays constant, wall-clock time is real time shifted,
/// so the next match under the current offset is the answer — unless the
/// offset changes before it. Then no instant before that change matches
/// (their readings all precede the match), and the search restarts there.
fn next_real_time(cron: &Cron, after: i64, tz: Tz) -> Option<i64> {
    let mut start = after.checked_add(1)?;
    let (first_local, _) = local_at(start, tz)?;
    let last_year = cron.horizon_year(first_local.year())?;
    for _ in 0..MAX_TRANSITIONS {
        let (local, offset) = local_at(start, tz)?;
        let candidate = cron.next_match(local, last_year)?;
        let instant = candidate.and_utc().timestamp().checked_sub(offset)?;
        match next_offset_change(start, instant, offset, tz) {
            None => return Some(instant),
            Some(change) => start = change,
        }
    }
    None
}

/// Wall-clock reading and UTC offset (seconds) at Unix second `instant`.
pub(super) fn local_at(instant: i64, tz: Tz) -> Option<(NaiveDateTime, i64)> {
    let utc = DateTime::from_timestamp(instant, 0)?.naive_utc();
    let offset = i64::from(offset_at(utc, tz));
    Some((utc.checked_add_signed(TimeDelta::seconds(offset))?, offset))
}

fn offset_at(utc: NaiveDateTime, tz: Tz) -> i32 {
    tz.offset_from_utc_datetime(&utc).fix().local_minus_utc()
}

fn offset_at_second(instant: i64, tz: Tz) -> Option<i32> {
    Some(offset_at(
        DateTime::from_timestamp(instant, 0)?.naive_utc(),
        tz,
    ))
}

/// The first second in `(from, to]` whose offset differs from `offset`
/// (the offset at `from`), found by sampling then bisecting.
pub(super) fn next_offset_change(from: i64, to: i64, offset: i64, tz: Tz) -> Option<i64> {
    let same = |instant: i64| offset_at_second(instant, tz).map(i64::from) == Some(offset);
    let mut low = from;
    while low < to {
        let high = low.saturating_add(PROBE_STEP_SECS).min(to);
        if !same(high) {
            return Some(bisect_change(low, high, same));
        }
        low = high;
    }
    None
}

/// Given `same(low)` and `!same(high)`, the first second with `!same`.
fn bisect_change(mut low: i64, mut high: i64, same: impl Fn(i64) -> bool) -> i64 {
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if same(middle) {
            low = middle;
        } else {
            high = middle;
        }
    }
    high
}
