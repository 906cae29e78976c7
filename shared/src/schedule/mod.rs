//! Schedule expressions (cron, rate, at, macros) and their evaluation in a time zone.
//!
//! Supported syntax ([`Schedule::parse`] trims surrounding whitespace):
//!
//! | form | example | notes |
//! |---|---|---|
//! | 5-field cron | `*/15 9-17 * * MON-FRI` | `min hour dom month dow`; dow 0-7, 0 and 7 = Sunday |
//! | 6-field cron | `30 0 12 * * *` | a leading seconds field |
//! | EventBridge | `cron(0 12 ? * MON-FRI *)` | `min hour dom month dow year`; dow 1-7 = SUN-SAT; year 1970-2199 |
//! | rate | `rate(5 minutes)` | second(s), minute(s), hour(s), day(s); aligned to the Unix epoch |
//! | at | `at(2026-03-08T02:30:00)` | one occurrence, wall-clock time of the task's zone |
//! | macro | `@daily` | `@yearly @annually @monthly @weekly @daily @midnight @hourly` |
//!
//! Cron fields take values, names (`JAN`-`DEC`, `SUN`-`SAT`, any case),
//! ranges `a-b`, steps `*/n`, `a-b/n`, `a/n` (a to the end, every n), and
//! comma lists. `L` in day-of-month is the last day of the month. `?` in
//! day-of-month or day-of-week means "no restriction" (any dialect).
//!
//! Day-of-month and day-of-week combine as in Vixie cron: when both are
//! restricted a day matches if *either* does; when either is written
//! starting with `*` (or is `?`) both must match, so effectively only the
//! other one counts. EventBridge's "one of them must be `?`" is not
//! enforced; the same Vixie rule applies.
//!
//! # Time zones and DST
//!
//! Cron expressions and `at` are evaluated in wall-clock time of the task's
//! zone. `rate` is not: its occurrences are the multiples of its period
//! since the Unix epoch (`rate(1 day)` fires at 00:00Z whatever the zone),
//! so it follows real time and DST never stretches or shrinks it.
//!
//! Cron fields describe local wall-clock times of the task's zone. Around a
//! DST transition a wall-clock time may not exist (spring forward: the *gap*)
//! or exist twice (fall back: the *overlap*). Sundial follows Debian cron:
//!
//! * **Fixed-time schedules** — the second, minute and hour fields are each a
//!   single value or a comma list of single values (no `*`, range or step;
//!   e.g. `30 2 * * *`, `0 9,17 * * MON-FRI`, `@daily`, `at(...)`):
//!   every matching wall-clock time yields exactly one occurrence.
//!   * exists once → that instant;
//!   * exists twice (overlap) → the first, earlier instant only;
//!   * does not exist (gap) → the first instant after the jump, i.e. the
//!     transition instant itself (New York 02:30 on spring-forward day →
//!     03:00 EDT = 07:00Z). Several matches in one gap collapse into that one
//!     instant: an occurrence is an instant, and each instant fires once.
//!
//!   So a daily job is never lost and never doubled.
//! * **Every other schedule** (a `*`, range or step in the second, minute or
//!   hour field, e.g. `*/15 * * * *`, `@hourly`) follows real time: it fires
//!   at every instant whose local wall-clock reading matches. In the overlap
//!   it fires in both passes (`*/15` fires 8 times in the two real hours
//!   labelled 01:xx); in the gap nothing is invented, the missing wall times
//!   are simply skipped.
//!
//! Debian decides by whether the minute or hour field *starts with* `*`;
//! Sundial also counts ranges and steps (`0-30/10 2 * * *`) as repeating,
//! and, having a seconds field, applies the same test to it.
//!
//! Both behaviours are checked against a minute-by-minute reference
//! evaluator around real transitions (New York, Berlin, Lord Howe with its
//! 30-minute shift, São Paulo's midnight switch): see `tests/reference.rs`.
//!
//! # Horizon
//!
//! A search gives up after nine allowed years without a match (enough for
//! `0 0 29 2 *` across 2100, which is not a leap year), so impossible
//! schedules such as `0 0 30 2 *` answer `None` quickly.

mod at;
pub mod bounds;
mod cron;
pub mod describe;
pub mod dst;
mod error;
mod field;
pub mod preview;
mod rate;
mod zone;

#[cfg(test)]
mod tests;

use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
pub use chrono_tz::Tz;

pub use bounds::{Bounds, Next};
pub use describe::describe;
pub use error::{AtProblem, FieldProblem, RateProblem, ScheduleError};

use cron::Cron;
use error::clip;
use rate::Rate;

/// A parsed schedule expression. Cheap to clone; evaluate it with
/// [`Schedule::next_after`] in the task's zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    // Boxed: the compiled field sets dwarf the other variants.
    Cron(Box<Cron>),
    Rate(Rate),
    At(NaiveDateTime),
}

impl Schedule {
    /// Parses any supported expression (trims whitespace).
    pub fn parse(expr: &str) -> Result<Schedule, ScheduleError> {
        let expr = expr.trim();
        if expr.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let kind = if expr.starts_with('@') {
            Kind::Cron(Box::new(Cron::parse_macro(expr)?))
        } else if let Some(inner) = call_argument(expr, "cron") {
            Kind::Cron(Box::new(Cron::parse_eventbridge(inner)?))
        } else if let Some(inner) = call_argument(expr, "rate") {
            Kind::Rate(Rate::parse(inner)?)
        } else if let Some(inner) = call_argument(expr, "at") {
            Kind::At(at::parse(inner)?)
        } else if expr.contains('(') || expr.contains(')') {
            return Err(ScheduleError::Unrecognized { expr: clip(expr) });
        } else {
            Kind::Cron(Box::new(Cron::parse_unix(expr)?))
        };
        Ok(Schedule { kind })
    }

    /// The first occurrence strictly after `after`, evaluated in `tz`; None
    /// when the schedule has no further occurrence (a past `at(...)`, or
    /// nothing within the search horizon of nine years, e.g. `0 0 30 2 *`).
    /// DST gaps and overlaps are resolved as the module doc describes.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        // Occurrences are whole seconds, so "after 10.5s" is "after 10s".
        let after = after.timestamp();
        let next = match &self.kind {
            Kind::Cron(cron) => zone::next_cron(cron, after, tz)?,
            Kind::Rate(rate) => rate.next_after(after)?,
            Kind::At(local) => zone::resolve_fixed(*local, tz).filter(|at| *at > after)?,
        };
        DateTime::from_timestamp(next, 0)
    }

    /// Up to `count` occurrences strictly after `after`, in order.
    pub fn upcoming(&self, after: DateTime<Utc>, tz: Tz, count: usize) -> Vec<DateTime<Utc>> {
        // No up-front allocation by `count`: it may come from a request.
        let mut occurrences = Vec::new();
        let mut cursor = after;
        while occurrences.len() < count {
            let Some(next) = self.next_after(cursor, tz) else {
                break;
            };
            occurrences.push(next);
            cursor = next;
        }
        occurrences
    }

    /// True for schedules with a single occurrence (`at(...)`).
    pub fn is_one_shot(&self) -> bool {
        matches!(self.kind, Kind::At(_))
    }

    /// Smallest interval between occurrences, if easily known: the period of
    /// a `rate`, or the wall-clock spacing of a sub-daily cron schedule
    /// (e.g. 15 minutes for `*/15 * * * *`; 1 second for `* * * * * *`).
    /// Use it to reject or flag overly frequent schedules. None for `at` and
    /// for daily-or-rarer cron schedules. Note that around a fall-back
    /// transition a real-time cron schedule can fire twice within a shorter
    /// *real* interval (`0 1-23/2 * * *` at 01:00 EDT and 01:00 EST).
    pub fn min_interval(&self) -> Option<TimeDelta> {
        let secs = match &self.kind {
            Kind::Cron(cron) => cron.min_wall_interval_secs()?,
            Kind::Rate(rate) => rate.period_secs(),
            Kind::At(_) => return None,
        };
        Some(TimeDelta::seconds(secs))
    }
}

/// `name(inner)` → `inner`, name matched case-insensitively.
fn call_argument<'a>(expr: &'a str, name: &str) -> Option<&'a str> {
    let head = expr.get(..name.len())?;
    let rest = expr.get(name.len()..)?.trim_start();
    if !head.eq_ignore_ascii_case(name) {
        return None;
    }
    rest.strip_prefix('(')?.strip_suffix(')')
}

/// The normalized form: single spaces, names upper-cased, canonical macro
/// and unit names. Parsing it yields an equal `Schedule`.
impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Cron(cron) => cron.fmt(f),
            Kind::Rate(rate) => rate.fmt(f),
            Kind::At(local) => f.write_str(&at::display(local)),
        }
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(expr: &str) -> Result<Schedule, ScheduleError> {
        Schedule::parse(expr)
    }
}

impl serde::Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Schedule, D::Error> {
        let text = String::deserialize(deserializer)?;
        Schedule::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Parses an IANA zone name (`Europe/Berlin`, `UTC`); the error names it.
pub fn parse_zone(name: &str) -> Result<Tz, ScheduleError> {
    name.trim()
        .parse()
        .map_err(|_| ScheduleError::UnknownZone { zone: clip(name) })
}

/// Parses `expr` and `zone` and returns up to `count` occurrences strictly
/// after `after` (for `sundial schedule preview` and the admin API). The
/// caller bounds `count`.
pub fn preview(
    expr: &str,
    zone: &str,
    after: DateTime<Utc>,
    count: usize,
) -> Result<Vec<DateTime<Utc>>, ScheduleError> {
    let tz = parse_zone(zone)?;
    let schedule = Schedule::parse(expr)?;
    Ok(schedule.upcoming(after, tz, count))
}
