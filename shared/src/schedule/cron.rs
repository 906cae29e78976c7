//! Cron expressions (Unix 5/6-field, EventBridge `cron(...)`, `@macros`):
//! parsing, and the search for the next matching *local wall-clock* time.
//! Mapping wall-clock times to instants (and DST) is `zone.rs`'s job.

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

use super::error::{clip, ScheduleError};
use super::field::{self, Field, ValueSet, FIRST_YEAR, LAST_YEAR};

/// How far past the start (in years) a search goes before concluding that a
/// schedule has no further occurrence. Nine, not five: `0 0 29 2 *` waits
/// eight years across 2100, which is not a leap year.
const HORIZON_YEARS: i32 = 9;

/// Where the expression came from; only affects how it is displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dialect {
    /// `min hour dom month dow` or `sec min hour dom month dow`.
    Unix,
    /// `cron(min hour dom month dow year)`.
    EventBridge,
    /// `@daily` and friends, shown by their canonical name.
    Macro(&'static str),
}

/// A compiled cron expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cron {
    dialect: Dialect,
    /// Normalized field texts, for display.
    text: String,
    pub(super) seconds: ValueSet,
    pub(super) minutes: ValueSet,
    pub(super) hours: ValueSet,
    pub(super) days_of_month: ValueSet,
    pub(super) last_day_of_month: bool,
    pub(super) months: ValueSet,
    /// Sunday = 0.
    pub(super) days_of_week: ValueSet,
    /// Years relative to 1970; `None` means every year.
    pub(super) years: Option<ValueSet>,
    /// Both day fields restricted: a day matches if either does (Vixie).
    pub(super) days_or: bool,
    /// Seconds, minutes and hours are all single values or lists of them.
    fixed_time: bool,
}

impl Cron {
    /// A bare `min hour dom month dow`, optionally with leading seconds.
    pub(crate) fn parse_unix(expr: &str) -> Result<Cron, ScheduleError> {
        let tokens: Vec<&str> = expr.split_whitespace().collect();
        let (second, rest) = match tokens.len() {
            5 => (None, &tokens[..]),
            6 => (Some(field::SECOND.parse(tokens[0])?), &tokens[1..]),
            found => return Err(field_count(expr, "5 or 6", found)),
        };
        let second = second.unwrap_or_else(zero_seconds);
        let [minute, hour, dom, month, dow] = rest else {
            return Err(field_count(expr, "5 or 6", tokens.len()));
        };
        Self::build(
            Dialect::Unix,
            [
                second,
                field::MINUTE.parse(minute)?,
                field::HOUR.parse(hour)?,
                field::DAY_OF_MONTH.parse(dom)?,
                field::MONTH.parse(month)?,
                field::DAY_OF_WEEK_UNIX.parse(dow)?,
            ],
            None,
            tokens.len() == 6,
        )
    }

    /// The inside of EventBridge `cron(min hour dom month dow year)`.
    pub(crate) fn parse_eventbridge(inner: &str) -> Result<Cron, ScheduleError> {
        let tokens: Vec<&str> = inner.split_whitespace().collect();
        let [minute, hour, dom, month, dow, year] = tokens[..] else {
            return Err(field_count(&format!("cron({inner})"), "6", tokens.len()));
        };
        let year = field::YEAR.parse(year)?;
        Self::build(
            Dialect::EventBridge,
            [
                zero_seconds(),
                field::MINUTE.parse(minute)?,
                field::HOUR.parse(hour)?,
                field::DAY_OF_MONTH.parse(dom)?,
                field::MONTH.parse(month)?,
                field::DAY_OF_WEEK_EVENTBRIDGE.parse(dow)?,
            ],
            Some(year),
            false,
        )
    }

    /// `@daily` and friends (case-insensitive), `name` including the `@`.
    pub(crate) fn parse_macro(name: &str) -> Result<Cron, ScheduleError> {
        let (canonical, expr) = match name.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => ("@yearly", "0 0 1 1 *"),
            "@monthly" => ("@monthly", "0 0 1 * *"),
            "@weekly" => ("@weekly", "0 0 * * 0"),
            "@daily" | "@midnight" => ("@daily", "0 0 * * *"),
            "@hourly" => ("@hourly", "0 * * * *"),
            _ => return Err(ScheduleError::UnknownMacro { name: clip(name) }),
        };
        let mut cron = Self::parse_unix(expr)?;
        cron.dialect = Dialect::Macro(canonical);
        Ok(cron)
    }

    fn build(
        dialect: Dialect,
        [second, minute, hour, dom, month, dow]: [Field; 6],
        year: Option<Field>,
        show_seconds: bool,
    ) -> Result<Cron, ScheduleError> {
        let mut shown: Vec<&str> = Vec::with_capacity(7);
        if show_seconds {
            shown.push(&second.text);
        }
        shown.extend(
            [&minute.text, &hour.text, &dom.text, &month.text, &dow.text].map(|s| s.as_str()),
        );
        if let Some(year) = &year {
            shown.push(&year.text);
        }
        let text = shown.join(" ");
        Ok(Cron {
            dialect,
            text,
            fixed_time: second.fixed && minute.fixed && hour.fixed,
            days_or: !dom.star && !dow.star,
            seconds: second.values,
            minutes: minute.values,
            hours: hour.values,
            days_of_month: dom.values,
            last_day_of_month: dom.last_day,
            months: month.values,
            days_of_week: dow.values,
            // A bare `*` year is "every year", not 1970-2199.
            years: year.filter(|y| y.text != "*").map(|y| y.values),
        })
    }

    /// How much wall-clock time one match of this expression stands for
    /// when it is used as an exclusion: a second only when it names seconds
    /// other than 0; else the minute, or the hour when every minute
    /// matches, or the day when every hour does too.
    pub(super) fn span(&self) -> Span {
        let seconds_any = self.seconds.len() == 60 || self.seconds == ValueSet::single(0);
        if !seconds_any {
            Span::Second
        } else if self.minutes.len() < 60 {
            Span::Minute
        } else if self.hours.len() < 24 {
            Span::Hour
        } else {
            Span::Day
        }
    }

    /// Does the wall-clock time `local` fall in a match of this expression,
    /// at the resolution of [`Cron::span`]?
    pub(super) fn covers(&self, local: NaiveDateTime) -> bool {
        let start = self.span().start_of(local);
        self.next_match(start, start.year()) == Some(start)
    }

    /// Whether this is a fixed-time job in the DST sense (see `zone.rs`).
    pub(crate) fn is_fixed_time(&self) -> bool {
        self.fixed_time
    }

    /// Wall-clock lower bound on the spacing of occurrences, for sub-daily
    /// schedules; daily-or-rarer ones report `None` ("not easily known").
    pub(crate) fn min_wall_interval_secs(&self) -> Option<i64> {
        let gap = if self.seconds.len() > 1 {
            self.seconds.min_cyclic_gap(60)?
        } else if self.minutes.len() > 1 {
            self.minutes.min_cyclic_gap(60)? * 60
        } else if self.hours.len() > 1 {
            self.hours.min_cyclic_gap(24)? * 3600
        } else {
            return None;
        };
        Some(i64::from(gap))
    }

    /// The last year a search starting in `start_year` may look at: the
    /// horizon counts allowed years only, so `cron(0 0 1 1 ? */50)` still
    /// finds 2120 from 2070. None when no allowed year remains at all.
    pub(crate) fn horizon_year(&self, start_year: i32) -> Option<i32> {
        let mut year = self.next_allowed_year(start_year)?;
        for _ in 0..HORIZON_YEARS {
            match year
                .checked_add(1)
                .and_then(|next| self.next_allowed_year(next))
            {
                Some(next) => year = next,
                None => break,
            }
        }
        Some(year)
    }

    /// The first local wall-clock time `>= from` that matches every field,
    /// not looking past the end of `last_year`. `from` is taken to the second.
    pub(crate) fn next_match(&self, from: NaiveDateTime, last_year: i32) -> Option<NaiveDateTime> {
        let mut date = from.date();
        let mut earliest = Some(from.time());
        loop {
            if date.year() > last_year {
                return None;
            }
            let year = self.next_allowed_year(date.year())?;
            if year != date.year() {
                date = NaiveDate::from_ymd_opt(year, 1, 1)?;
                earliest = None;
                continue;
            }
            if !self.months.contains(date.month()) {
                date = self.first_day_of_next_month(date)?;
                earliest = None;
                continue;
            }
            if self.day_matches(date) {
                let time = self.first_time_at_or_after(earliest.unwrap_or(NaiveTime::MIN));
                if let Some(time) = time {
                    return Some(date.and_time(time));
                }
            }
            date = date.succ_opt()?;
            earliest = None;
        }
    }

    /// First allowed year `>= year`.
    fn next_allowed_year(&self, year: i32) -> Option<i32> {
        let Some(years) = &self.years else {
            return Some(year);
        };
        let offset = u32::try_from(year.max(FIRST_YEAR as i32) - FIRST_YEAR as i32).ok()?;
        let found = years.next_at_or_after(offset)?;
        i32::try_from(found + FIRST_YEAR)
            .ok()
            .filter(|y| *y <= LAST_YEAR as i32)
    }

    fn first_day_of_next_month(&self, date: NaiveDate) -> Option<NaiveDate> {
        match self.months.next_at_or_after(date.month() + 1) {
            Some(month) => NaiveDate::from_ymd_opt(date.year(), month, 1),
            None => NaiveDate::from_ymd_opt(date.year().checked_add(1)?, self.months.first()?, 1),
        }
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let by_month_day = self.days_of_month.contains(date.day())
            || (self.last_day_of_month && is_last_day_of_month(date));
        let by_week_day = self
            .days_of_week
            .contains(date.weekday().num_days_from_sunday());
        if self.days_or {
            by_month_day || by_week_day
        } else {
            by_month_day && by_week_day
        }
    }

    /// The first matching time of day `>= from` (to the second), if any
    /// remains on this day.
    fn first_time_at_or_after(&self, from: NaiveTime) -> Option<NaiveTime> {
        let (h, m, s) = (from.hour(), from.minute(), from.second());
        let hour = self.hours.next_at_or_after(h)?;
        if hour > h {
            return NaiveTime::from_hms_opt(hour, self.minutes.first()?, self.seconds.first()?);
        }
        if let Some(minute) = self.minutes.next_at_or_after(m) {
            if minute > m {
                return NaiveTime::from_hms_opt(h, minute, self.seconds.first()?);
            }
            if let Some(second) = self.seconds.next_at_or_after(s) {
                return NaiveTime::from_hms_opt(h, m, second);
            }
            if let Some(minute) = self.minutes.next_at_or_after(m + 1) {
                return NaiveTime::from_hms_opt(h, minute, self.seconds.first()?);
            }
        }
        let hour = self.hours.next_at_or_after(h + 1)?;
        NaiveTime::from_hms_opt(hour, self.minutes.first()?, self.seconds.first()?)
    }
}

impl std::fmt::Display for Cron {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.dialect {
            Dialect::Unix => f.write_str(&self.text),
            Dialect::EventBridge => write!(f, "cron({})", self.text),
            Dialect::Macro(name) => f.write_str(name),
        }
    }
}

/// The wall-clock resolution of an exclusion's match (see [`Cron::span`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Span {
    Second,
    Minute,
    Hour,
    Day,
}

impl Span {
    /// The start of the span that holds `local`.
    pub(super) fn start_of(self, local: NaiveDateTime) -> NaiveDateTime {
        let date = local.date();
        let (h, m, s) = (local.hour(), local.minute(), local.second());
        let time = match self {
            Span::Second => NaiveTime::from_hms_opt(h, m, s),
            Span::Minute => NaiveTime::from_hms_opt(h, m, 0),
            Span::Hour => NaiveTime::from_hms_opt(h, 0, 0),
            Span::Day => Some(NaiveTime::MIN),
        };
        date.and_time(time.unwrap_or(NaiveTime::MIN))
    }

    /// The start of the next span after the one that holds `local`.
    pub(super) fn end_of(self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        let step = match self {
            Span::Second => chrono::TimeDelta::seconds(1),
            Span::Minute => chrono::TimeDelta::minutes(1),
            Span::Hour => chrono::TimeDelta::hours(1),
            Span::Day => chrono::TimeDelta::days(1),
        };
        self.start_of(local).checked_add_signed(step)
    }
}

/// The implicit seconds field of 5-field and EventBridge expressions: `0`.
fn zero_seconds() -> Field {
    Field::single(0)
}

fn field_count(expr: &str, expected: &'static str, found: usize) -> ScheduleError {
    ScheduleError::FieldCount {
        expr: clip(expr),
        expected,
        found,
    }
}

fn is_last_day_of_month(date: NaiveDate) -> bool {
    date.succ_opt()
        .is_none_or(|next| next.month() != date.month())
}
