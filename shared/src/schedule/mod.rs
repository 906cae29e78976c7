//! Schedule expressions (cron, rate, at, macros) and their evaluation in a time zone.
//! TEMPORARY STUB: replaced by the schedule engine branch.
use chrono::{DateTime, Utc};
pub use chrono_tz::Tz;

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    secs: i64,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ScheduleError {
    #[error("invalid schedule `{0}`")]
    Invalid(String),
    #[error("unknown time zone `{0}`")]
    UnknownZone(String),
}

impl ScheduleError {
    pub fn field(&self) -> &'static str {
        match self {
            ScheduleError::UnknownZone(_) => "timezone",
            _ => "schedule",
        }
    }
}

impl Schedule {
    pub fn parse(expr: &str) -> Result<Schedule, ScheduleError> {
        let e = expr.trim();
        let inner = e
            .strip_prefix("rate(")
            .and_then(|r| r.strip_suffix(")"))
            .ok_or_else(|| ScheduleError::Invalid(e.to_string()))?;
        let mut it = inner.split_whitespace();
        let n: i64 = it
            .next()
            .and_then(|n| n.parse().ok())
            .filter(|n: &i64| *n > 0)
            .ok_or_else(|| ScheduleError::Invalid(e.to_string()))?;
        let unit = match it.next() {
            Some("second" | "seconds") => 1,
            Some("minute" | "minutes") => 60,
            _ => return Err(ScheduleError::Invalid(e.to_string())),
        };
        Ok(Schedule { secs: n * unit })
    }
    pub fn next_after(&self, after: DateTime<Utc>, _tz: Tz) -> Option<DateTime<Utc>> {
        let t = after.timestamp();
        DateTime::from_timestamp((t.div_euclid(self.secs) + 1) * self.secs, 0)
    }
    pub fn upcoming(&self, after: DateTime<Utc>, tz: Tz, count: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = after;
        while out.len() < count {
            match self.next_after(t, tz) {
                Some(n) => {
                    out.push(n);
                    t = n
                }
                None => break,
            }
        }
        out
    }
    pub fn is_one_shot(&self) -> bool {
        false
    }
}

pub fn parse_zone(name: &str) -> Result<Tz, ScheduleError> {
    name.parse::<Tz>()
        .map_err(|_| ScheduleError::UnknownZone(name.to_string()))
}

/// The next `count` occurrences of `expr` read in `zone`, after `after`.
pub fn preview(
    expr: &str,
    zone: &str,
    after: DateTime<Utc>,
    count: usize,
) -> Result<Vec<DateTime<Utc>>, ScheduleError> {
    let schedule = Schedule::parse(expr)?;
    let tz = parse_zone(zone)?;
    Ok(schedule.upcoming(after, tz, count))
}
