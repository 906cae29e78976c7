//! `at(yyyy-mm-ddThh:mm:ss)`: a single occurrence at a wall-clock time of
//! the task's zone. It follows the fixed-time DST rule (`zone.rs`): a time in
//! a spring-forward gap fires at the end of the gap, a repeated one fires
//! once, at its first instance.

use chrono::{NaiveDate, NaiveDateTime};

use super::error::{clip, AtProblem, ScheduleError};
use super::field::parse_digits;

/// Parses the inside of `at(...)`. Strict on shape (exactly the EventBridge
/// Scheduler format), because a lenient date parser is where ambiguity
/// creeps in (`2026-3-8`, fractional seconds, offsets that would contradict
/// the task's zone).
pub(crate) fn parse(inner: &str) -> Result<NaiveDateTime, ScheduleError> {
    let text = inner.trim();
    let error = |problem| ScheduleError::At {
        token: clip(text),
        problem,
    };
    let bytes = text.as_bytes();
    let shape_ok = bytes.len() == 19
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b'T' || *b == b't',
            13 | 16 => *b == b':',
            _ => b.is_ascii_digit(),
        });
    if !shape_ok {
        return Err(error(AtProblem::Shape));
    }
    // The shape check guarantees ASCII digits at these positions.
    let number = |range: std::ops::Range<usize>| {
        text.get(range)
            .and_then(parse_digits)
            .flatten()
            .ok_or_else(|| error(AtProblem::Shape))
    };
    let year = i32::try_from(number(0..4)?).map_err(|_| error(AtProblem::Shape))?;
    NaiveDate::from_ymd_opt(year, number(5..7)?, number(8..10)?)
        .and_then(|date| {
            date.and_hms_opt(
                number(11..13).ok()?,
                number(14..16).ok()?,
                number(17..19).ok()?,
            )
        })
        .ok_or_else(|| error(AtProblem::NoSuchTime))
}

/// The normalized text of an `at(...)` time.
pub(crate) fn display(time: &NaiveDateTime) -> String {
    format!("at({})", time.format("%Y-%m-%dT%H:%M:%S"))
}
