//! One cron field (`*/15`, `MON-FRI`, `1,15,L`) parsed into the set of values
//! it allows, plus the facts the evaluator needs about how it was written.

use super::error::{clip, FieldProblem, ScheduleError};

/// A set of small integers (0..256), one bit each: cheap to test and to
/// search for "the next allowed value at or after x", which is what lets the
/// evaluator jump field by field instead of ticking second by second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ValueSet([u64; 4]);

impl ValueSet {
    const CAPACITY: u32 = 256;

    fn insert(&mut self, value: u32) {
        if value < Self::CAPACITY {
            self.0[(value / 64) as usize] |= 1 << (value % 64);
        }
    }

    /// The set holding only `value`.
    pub(crate) fn single(value: u32) -> ValueSet {
        let mut set = ValueSet::default();
        set.insert(value);
        set
    }

    pub(crate) fn contains(&self, value: u32) -> bool {
        value < Self::CAPACITY && self.0[(value / 64) as usize] & (1 << (value % 64)) != 0
    }

    /// The smallest member `>= value`.
    pub(crate) fn next_at_or_after(&self, value: u32) -> Option<u32> {
        let mut word = (value / 64) as usize;
        let mut bits = *self.0.get(word)? & (u64::MAX << (value % 64));
        loop {
            if bits != 0 {
                return Some(word as u32 * 64 + bits.trailing_zeros());
            }
            word += 1;
            bits = *self.0.get(word)?;
        }
    }

    pub(crate) fn first(&self) -> Option<u32> {
        self.next_at_or_after(0)
    }

    pub(crate) fn len(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    /// Smallest distance between consecutive members when the values repeat
    /// every `cycle` (so 50 and 10 in a 60-cycle are 20 apart). None for an
    /// empty set; a single member is `cycle` away from itself.
    pub(crate) fn min_cyclic_gap(&self, cycle: u32) -> Option<u32> {
        let first = self.first()?;
        let mut previous = first;
        let mut gap = cycle;
        while let Some(next) = self.next_at_or_after(previous + 1) {
            gap = gap.min(next - previous);
            previous = next;
        }
        Some(gap.min(cycle + first - previous))
    }
}

/// What a field accepts, and how its values are stored.
pub(crate) struct FieldSpec {
    pub(crate) name: &'static str,
    pub(crate) min: u32,
    pub(crate) max: u32,
    /// Names for consecutive values starting at `names_start` (JAN=1, SUN=0…).
    pub(crate) names: &'static [&'static str],
    pub(crate) names_start: u32,
    /// Suffix for "not a value" errors, e.g. ` or a name JAN-DEC`.
    pub(crate) names_hint: &'static str,
    pub(crate) allow_last: bool,
    pub(crate) allow_question: bool,
    /// Maps an accepted value to its stored bit: day-of-week dialects agree
    /// on Sunday = 0 internally, years are stored relative to 1970.
    pub(crate) normalize: fn(u32) -> u32,
}

const MONTH_NAMES: &[&str] = &[
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Earliest and latest year of the EventBridge year field.
pub(crate) const FIRST_YEAR: u32 = 1970;
pub(crate) const LAST_YEAR: u32 = 2199;

const fn plain(name: &'static str, min: u32, max: u32) -> FieldSpec {
    FieldSpec {
        name,
        min,
        max,
        names: &[],
        names_start: 0,
        names_hint: "",
        allow_last: false,
        allow_question: false,
        normalize: |v| v,
    }
}

pub(crate) const SECOND: FieldSpec = plain("second", 0, 59);
pub(crate) const MINUTE: FieldSpec = plain("minute", 0, 59);
pub(crate) const HOUR: FieldSpec = plain("hour", 0, 23);
pub(crate) const DAY_OF_MONTH: FieldSpec = FieldSpec {
    allow_last: true,
    allow_question: true,
    ..plain("day-of-month", 1, 31)
};
pub(crate) const MONTH: FieldSpec = FieldSpec {
    names: MONTH_NAMES,
    names_start: 1,
    names_hint: " or a name JAN-DEC",
    ..plain("month", 1, 12)
};
/// Unix: 0-7 with both 0 and 7 meaning Sunday.
pub(crate) const DAY_OF_WEEK_UNIX: FieldSpec = FieldSpec {
    names: DAY_NAMES,
    names_start: 0,
    names_hint: " or a name SUN-SAT",
    allow_question: true,
    normalize: |v| v % 7,
    ..plain("day-of-week", 0, 7)
};
/// EventBridge: 1-7 = SUN-SAT, one more than Unix.
pub(crate) const DAY_OF_WEEK_EVENTBRIDGE: FieldSpec = FieldSpec {
    names: DAY_NAMES,
    names_start: 1,
    names_hint: " or a name SUN-SAT",
    allow_question: true,
    normalize: |v| v - 1,
    ..plain("day-of-week", 1, 7)
};
pub(crate) const YEAR: FieldSpec = FieldSpec {
    normalize: |v| v - FIRST_YEAR,
    ..plain("year", FIRST_YEAR, LAST_YEAR)
};

/// A parsed field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    pub(crate) values: ValueSet,
    /// `L` appeared (day-of-month only).
    pub(crate) last_day: bool,
    /// Written starting with `*` (or as `?`): Vixie cron uses exactly this
    /// textual test to decide between AND and OR of the two day fields.
    pub(crate) star: bool,
    /// Only single values (one or a list), no `*`, range or step: decides
    /// whether a schedule is a fixed-time job for DST purposes.
    pub(crate) fixed: bool,
    /// Normalized text: trimmed, names upper-cased.
    pub(crate) text: String,
}

impl Field {
    /// A field allowing exactly `value`, for implicit fields (seconds of a
    /// 5-field expression).
    pub(crate) fn single(value: u32) -> Field {
        let mut values = ValueSet::default();
        values.insert(value);
        Field {
            values,
            last_day: false,
            star: false,
            fixed: true,
            text: value.to_string(),
        }
    }
}

impl FieldSpec {
    /// Parses one whitespace-free field. Names and `L` are case-insensitive;
    /// error tokens quote the input as written.
    pub(crate) fn parse(&self, text: &str) -> Result<Field, ScheduleError> {
        let mut field = Field {
            values: ValueSet::default(),
            last_day: false,
            star: text.starts_with('*') || text == "?",
            fixed: true,
            text: text.to_ascii_uppercase(),
        };
        if text == "?" {
            if !self.allow_question {
                return Err(self.error(text, FieldProblem::MisplacedQuestionMark));
            }
            self.insert_range(&mut field, self.min, self.max, 1);
            field.fixed = false;
            return Ok(field);
        }
        for item in text.split(',') {
            self.parse_item(text, item, &mut field)?;
        }
        Ok(field)
    }

    /// One list item: `*`, `v`, `a-b`, each optionally `/step`, or `L`.
    fn parse_item(&self, text: &str, item: &str, field: &mut Field) -> Result<(), ScheduleError> {
        if item.is_empty() {
            return Err(self.error(text, FieldProblem::EmptyItem));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(self.parse_step(item, step)?)),
            None => (item, None),
        };
        if range.eq_ignore_ascii_case("L") {
            if !self.allow_last || step.is_some() {
                return Err(self.error(item, FieldProblem::MisplacedLast));
            }
            field.last_day = true;
            field.fixed = false;
            return Ok(());
        }
        if range == "?" {
            return Err(self.error(item, FieldProblem::MisplacedQuestionMark));
        }
        let (low, high) = if range == "*" {
            (self.min, self.max)
        } else if let Some((low, high)) = range.split_once('-') {
            let (low, high) = (self.parse_value(low)?, self.parse_value(high)?);
            if low > high {
                return Err(self.error(item, FieldProblem::ReversedRange));
            }
            (low, high)
        } else {
            let value = self.parse_value(range)?;
            // `a/n` means "from a to the end of the range, every n" (Vixie).
            (value, if step.is_some() { self.max } else { value })
        };
        // `5-5` is as repetitive as `0-59` for DST purposes: only a bare
        // value is a fixed time.
        if step.is_some() || range == "*" || range.contains('-') {
            field.fixed = false;
        }
        self.insert_range(field, low, high, step.unwrap_or(1));
        Ok(())
    }

    fn insert_range(&self, field: &mut Field, low: u32, high: u32, step: u32) {
        // At most `max - min + 1` rounds: fields are small.
        let mut value = low;
        while value <= high {
            field.values.insert((self.normalize)(value));
            value = match value.checked_add(step) {
                Some(next) => next,
                None => break,
            };
        }
    }

    fn parse_step(&self, item: &str, step: &str) -> Result<u32, ScheduleError> {
        match parse_digits(step) {
            Some(Some(step)) if step >= 1 => Ok(step),
            _ => Err(self.error(item, FieldProblem::BadStep)),
        }
    }

    fn parse_value(&self, token: &str) -> Result<u32, ScheduleError> {
        let out_of_range = FieldProblem::OutOfRange {
            min: self.min,
            max: self.max,
        };
        match parse_digits(token) {
            Some(Some(value)) if (self.min..=self.max).contains(&value) => return Ok(value),
            // All digits but too big for u32: still just out of range.
            Some(_) => return Err(self.error(token, out_of_range)),
            None => {}
        }
        let name = self
            .names
            .iter()
            .position(|name| name.eq_ignore_ascii_case(token));
        if let Some(index) = name {
            return Ok(self.names_start + index as u32);
        }
        Err(self.error(token, self.value_problem(token)))
    }

    /// Names the Quartz extensions people paste from other schedulers, so
    /// they learn it is unsupported rather than merely "not a number".
    fn value_problem(&self, token: &str) -> FieldProblem {
        let token = token.to_ascii_uppercase();
        if token.contains('#') {
            FieldProblem::Unsupported("`#` (nth weekday of the month)")
        } else if token.contains('W') && self.allow_last {
            FieldProblem::Unsupported("`W` (nearest weekday)")
        } else if token.contains('L') && (self.allow_last || self.allow_question) {
            FieldProblem::Unsupported(
                "`L` combined with other values (only a bare `L` in day-of-month is)",
            )
        } else {
            FieldProblem::NotAValue {
                min: self.min,
                max: self.max,
                names: self.names_hint,
            }
        }
    }

    fn error(&self, token: &str, problem: FieldProblem) -> ScheduleError {
        ScheduleError::Field {
            field: self.name,
            token: clip(token),
            problem,
        }
    }
}

/// `None` if `text` is not a non-empty run of ASCII digits; `Some(None)` if
/// it is but overflows. (`str::parse` alone would accept a leading `+`.)
pub(crate) fn parse_digits(text: &str) -> Option<Option<u32>> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().ok())
}
