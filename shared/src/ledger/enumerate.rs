//! Which occurrences a range holds: those of each definition while it was
//! in force, newest first so that the cap of [`MAX_OCCURRENCES`] drops the
//! oldest, with a bounded number of schedule evaluations whatever the
//! range.

use chrono::{DateTime, Duration, Utc};

use super::{Definition, MAX_EVALUATIONS, MAX_OCCURRENCES};
use crate::schedule::{parse_zone, Schedule, Tz};

/// An occurrence and the index of the definition that defines it.
type Occurrence = (DateTime<Utc>, usize);

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
    let mut newest_first: Vec<Vec<Occurrence>> = Vec::new();
    let mut listed = 0usize;
    for (index, def) in definitions.iter().enumerate().rev() {
        let start = from.max(def.valid_from);
        if start > to || def.valid_to.is_some_and(|end| end <= start) {
            continue;
        }
        let parsed = match readable(def) {
            Ok(parsed) => parsed,
            Err(e) => {
                out.unreadable.push((index, e));
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
        let (found, clipped_at) = newest_of(def, index, &parsed, start, to, room);
        listed += found.len();
        newest_first.push(found);
        if let Some(at) = clipped_at {
            out.more_before = Some(at);
            break;
        }
    }
    out.occurrences = newest_first.into_iter().rev().flatten().collect();
    out
}

/// The schedule and zone of a definition, or why they cannot be read.
fn readable(def: &Definition) -> Result<(Schedule, Tz), String> {
    match (Schedule::parse(&def.schedule), parse_zone(&def.timezone)) {
        (Ok(s), Ok(z)) => Ok((s, z)),
        (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
    }
}

/// The newest `room` occurrences of `def` (definition `index`) from
/// `start` on while it is in force, and, when it holds earlier ones than
/// those, the instant the listed ones begin at (or the search began at).
fn newest_of(
    def: &Definition,
    index: usize,
    (schedule, zone): &(Schedule, Tz),
    start: DateTime<Utc>,
    to: DateTime<Utc>,
    room: usize,
) -> (Vec<Occurrence>, Option<DateTime<Utc>>) {
    // `valid_to` is exclusive: at that instant the next definition holds.
    let in_force = |t: DateTime<Utc>| t <= to && def.valid_to.is_none_or(|end| t < end);
    let end = def.valid_to.map_or(to, |e| e.min(to));
    let window_start = search_start(schedule, start, end, room);
    let mut found = Vec::new();
    let mut cursor = window_start - Duration::nanoseconds(1);
    let mut evaluations = 0usize;
    while evaluations < MAX_EVALUATIONS {
        evaluations += 1;
        let Some(t) = schedule.next_after(cursor, *zone) else {
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
    let first = found.first().map(|o| o.0);
    (found, clipped.then(|| first.unwrap_or(window_start)))
}

/// Where the search for the newest `room` occurrences before `end` may
/// start: only the last `room` minimum intervals can hold what is kept.
fn search_start(
    schedule: &Schedule,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    room: usize,
) -> DateTime<Utc> {
    match schedule.min_interval() {
        _ if schedule.is_one_shot() => start,
        interval => {
            let step = interval.unwrap_or(Duration::hours(23));
            let span = step
                .checked_mul(i32::try_from(room).unwrap_or(i32::MAX))
                .unwrap_or(Duration::MAX);
            end.checked_sub_signed(span).map_or(start, |w| w.max(start))
        }
    }
}
