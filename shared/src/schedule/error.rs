//! Errors of the schedule module: every message names what is wrong and where
//! (the field and the offending token), so an API can hand it to a user as is.

/// Why a schedule expression or a time zone was rejected.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    /// The expression is empty or only whitespace.
    #[error("empty schedule expression")]
    Empty,

    /// A bare cron expression does not have 5 fields (`min hour dom month
    /// dow`) or 6 (with leading seconds); EventBridge `cron(...)` needs 6.
    #[error("invalid cron expression `{expr}`: expected {expected} fields, found {found}")]
    FieldCount {
        /// The expression as given (clipped).
        expr: String,
        /// Human description of the accepted counts, e.g. `5 or 6`.
        expected: &'static str,
        /// How many whitespace-separated fields were found.
        found: usize,
    },

    /// One token of one cron field is malformed or out of range.
    #[error("invalid cron expression: field `{field}` token `{token}`: {problem}")]
    Field {
        /// Field name: `second`, `minute`, `hour`, `day-of-month`, `month`,
        /// `day-of-week` or `year`.
        field: &'static str,
        /// The offending token (clipped).
        token: String,
        /// What is wrong with it.
        problem: FieldProblem,
    },

    /// An `@name` macro that is not one of the supported ones.
    #[error(
        "unknown schedule macro `{name}`: expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"
    )]
    UnknownMacro {
        /// The macro as given (clipped).
        name: String,
    },

    /// A malformed `rate(N unit)` expression.
    #[error("invalid rate expression: token `{token}`: {problem}")]
    Rate {
        /// The offending token (clipped).
        token: String,
        /// What is wrong with it.
        problem: RateProblem,
    },

    /// A malformed `at(yyyy-mm-ddThh:mm:ss)` expression.
    #[error("invalid at expression: token `{token}`: {problem}")]
    At {
        /// The offending token (clipped).
        token: String,
        /// What is wrong with it.
        problem: AtProblem,
    },

    /// Something shaped like `name(...)` that is none of `cron`, `rate`, `at`.
    #[error(
        "unrecognised schedule expression `{expr}`: expected cron fields, cron(...), rate(...), at(...) or an @macro"
    )]
    Unrecognized {
        /// The expression as given (clipped).
        expr: String,
    },

    /// The time zone is not an IANA zone name known to this build.
    #[error("unknown time zone `{zone}`")]
    UnknownZone {
        /// The zone as given (clipped).
        zone: String,
    },
}

impl ScheduleError {
    /// The request field this error is about: `"timezone"` for zone errors,
    /// `"schedule"` for everything else. Lets an API answer 400 naming it.
    pub fn field(&self) -> &'static str {
        match self {
            ScheduleError::UnknownZone { .. } => "timezone",
            _ => "schedule",
        }
    }
}

/// What is wrong with a cron field token.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FieldProblem {
    /// A number outside the field's range.
    #[error("value out of range {min}-{max}")]
    OutOfRange {
        /// Smallest accepted value.
        min: u32,
        /// Largest accepted value.
        max: u32,
    },
    /// Neither a number nor a name this field accepts.
    #[error("expected a number {min}-{max}{names}")]
    NotAValue {
        /// Smallest accepted value.
        min: u32,
        /// Largest accepted value.
        max: u32,
        /// Either empty or ` or a name A-B`.
        names: &'static str,
    },
    /// The part after `/` is not a number of at least 1.
    #[error("step must be a number of at least 1")]
    BadStep,
    /// `a-b` with `a > b` (wrap-around ranges are not supported).
    #[error("range start is greater than its end")]
    ReversedRange,
    /// Two commas in a row, or a leading/trailing comma.
    #[error("empty list item")]
    EmptyItem,
    /// `?` inside a list or in a field other than day-of-month/day-of-week.
    #[error("`?` must stand alone, in day-of-month or day-of-week")]
    MisplacedQuestionMark,
    /// `L` with a step or in a field other than day-of-month.
    #[error("`L` (last day of month) is only allowed in day-of-month, without a step")]
    MisplacedLast,
    /// A Quartz/EventBridge extension we do not evaluate.
    #[error("{0} is not supported")]
    Unsupported(&'static str),
}

/// What is wrong with a `rate(...)` expression.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RateProblem {
    /// Not of the form `rate(N unit)`.
    #[error("expected rate(N unit), e.g. rate(5 minutes)")]
    Shape,
    /// N is not a whole number of at least 1.
    #[error("the amount must be a whole number of at least 1")]
    BadAmount,
    /// The period does not fit in the supported range.
    #[error("the period is too long")]
    TooLong,
    /// The unit is not a known one.
    #[error("unknown unit, expected second(s), minute(s), hour(s) or day(s)")]
    BadUnit,
}

/// What is wrong with an `at(...)` expression.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AtProblem {
    /// Not of the form `yyyy-mm-ddThh:mm:ss`.
    #[error("expected at(yyyy-mm-ddThh:mm:ss), e.g. at(2026-03-08T02:30:00)")]
    Shape,
    /// Well formed but no such calendar date or time of day.
    #[error("no such date or time")]
    NoSuchTime,
}

/// Caps user text echoed in messages, so a megabyte of garbage does not come
/// back as a megabyte of error.
pub(crate) fn clip(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    if text.chars().count() <= MAX_CHARS {
        text.to_owned()
    } else {
        let mut clipped: String = text.chars().take(MAX_CHARS).collect();
        clipped.push('…');
        clipped
    }
}
