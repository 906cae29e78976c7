//! `rate(N unit)`: a fixed period in real time, aligned to the Unix epoch.
//!
//! Occurrences are the multiples of the period since 1970-01-01T00:00:00Z,
//! so `rate(1 hour)` fires on the hour in UTC and `rate(1 day)` at 00:00Z,
//! whatever the task's zone: rates follow real time, not the wall clock,
//! and DST never stretches or shrinks them. Alignment (rather than "N after
//! the task was created") makes the next occurrence a pure function of the
//! expression and the clock, which every part of the system can recompute.

use super::error::{clip, RateProblem, ScheduleError};
use super::field::parse_digits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Second,
    Minute,
    Hour,
    Day,
}

impl Unit {
    fn parse(text: &str) -> Option<Unit> {
        // Singular and plural are both fine for any amount: `rate(1 minutes)`
        // is an obvious intent, rejecting it would only annoy.
        match text.to_ascii_lowercase().as_str() {
            "second" | "seconds" => Some(Unit::Second),
            "minute" | "minutes" => Some(Unit::Minute),
            "hour" | "hours" => Some(Unit::Hour),
            "day" | "days" => Some(Unit::Day),
            _ => None,
        }
    }

    fn seconds(self) -> u32 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3600,
            Unit::Day => 86_400,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
        }
    }
}

/// A parsed `rate(...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    amount: u32,
    unit: Unit,
}

impl Rate {
    /// The amount and the unit's singular name (`10`, `second`).
    pub(crate) fn parts(self) -> (u32, &'static str) {
        (self.amount, self.unit.name())
    }
}

/// Longest accepted period: about 100 years, far beyond any real use and far
/// from any overflow.
const MAX_PERIOD_SECS: i64 = 100 * 366 * 86_400;

impl Rate {
    /// Parses the inside of `rate(...)`.
    pub(crate) fn parse(inner: &str) -> Result<Rate, ScheduleError> {
        let error = |token: &str, problem| ScheduleError::Rate {
            token: clip(token),
            problem,
        };
        let tokens: Vec<&str> = inner.split_whitespace().collect();
        let [amount, unit] = tokens[..] else {
            return Err(error(inner.trim(), RateProblem::Shape));
        };
        let amount = match parse_digits(amount) {
            Some(Some(n)) if n >= 1 => n,
            Some(_) if amount.bytes().any(|b| b != b'0') => {
                return Err(error(amount, RateProblem::TooLong))
            }
            _ => return Err(error(amount, RateProblem::BadAmount)),
        };
        let unit = Unit::parse(unit).ok_or_else(|| error(unit, RateProblem::BadUnit))?;
        let rate = Rate { amount, unit };
        if rate.period_secs() > MAX_PERIOD_SECS {
            return Err(error(inner.trim(), RateProblem::TooLong));
        }
        Ok(rate)
    }

    pub(crate) fn period_secs(self) -> i64 {
        i64::from(self.amount) * i64::from(self.unit.seconds())
    }

    /// The next multiple of the period strictly after Unix second `after`.
    pub(crate) fn next_after(self, after: i64) -> Option<i64> {
        let period = self.period_secs();
        after.div_euclid(period).checked_add(1)?.checked_mul(period)
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = if self.amount == 1 { "" } else { "s" };
        write!(f, "rate({} {}{plural})", self.amount, self.unit.name())
    }
}
