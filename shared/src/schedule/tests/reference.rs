//! The contract asks for DST to be "tested against a reference evaluator,
//! not assumed". This is that reference: a deliberately naive evaluator that
//! walks real time minute by minute and applies the rule as written in
//! `zone.rs`, sharing no code with the fast evaluator (its own tiny
//! numeric-only cron parser). Both are run over two days around every DST
//! transition of a year in several zones and must agree exactly.

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};

use super::{schedule, zone};
use crate::schedule::Tz;

/// A numeric-only 5-field cron: which values each field allows.
struct ReferenceCron {
    minute: Vec<bool>,
    hour: Vec<bool>,
    day: Vec<bool>,
    month: Vec<bool>,
    weekday: Vec<bool>,
    either_day: bool,
    fixed_time: bool,
}

/// `*`, `n`, `a-b`, with optional `/step`, comma separated.
fn allowed(field: &str, min: usize, max: usize) -> Vec<bool> {
    let mut allowed = vec![false; max + 1];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, step.parse().expect("step")),
            None => (item, 1),
        };
        let (low, high) = match range.split_once('-') {
            _ if range == "*" => (min, max),
            Some((low, high)) => (low.parse().expect("low"), high.parse().expect("high")),
            None => (range.parse().expect("value"), range.parse().expect("value")),
        };
        for value in (low..=high).step_by(step) {
            allowed[value] = true;
        }
    }
    allowed
}

impl ReferenceCron {
    fn new(expr: &str) -> ReferenceCron {
        let fields: Vec<&str> = expr.split(' ').collect();
        let mut weekday = allowed(fields[4], 0, 7);
        weekday[0] |= weekday[7];
        let single_values = |field: &str| !field.contains(['*', '-', '/']);
        ReferenceCron {
            minute: allowed(fields[0], 0, 59),
            hour: allowed(fields[1], 0, 23),
            day: allowed(fields[2], 1, 31),
            month: allowed(fields[3], 1, 12),
            weekday,
            either_day: !fields[2].starts_with('*') && !fields[4].starts_with('*'),
            fixed_time: single_values(fields[0]) && single_values(fields[1]),
        }
    }

    fn matches(&self, local: NaiveDateTime) -> bool {
        use chrono::{Datelike, Timelike};
        let day = self.day[local.day() as usize];
        let weekday = self.weekday[local.weekday().num_days_from_sunday() as usize];
        let date = if self.either_day {
            day || weekday
        } else {
            day && weekday
        };
        date && self.minute[local.minute() as usize]
            && self.hour[local.hour() as usize]
            && self.month[local.month() as usize]
    }

    /// All occurrences in `[start, end)`, by walking every minute.
    fn occurrences(&self, tz: Tz, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let minute = TimeDelta::minutes(1);
        let reading = |instant: DateTime<Utc>| instant.with_timezone(&tz).naive_local();
        let mut found = Vec::new();
        let mut instant = start;
        while instant < end {
            let now = reading(instant);
            let fires = if self.fixed_time {
                // Fire at the first instant showing a matching reading, and at
                // the instant the clock lands after jumping over one.
                let first_showing = || (1..=180).all(|k| reading(instant - minute * k) != now);
                let before = reading(instant - minute);
                let mut skipped = before + minute;
                let mut jumped_over_match = false;
                while skipped < now {
                    jumped_over_match |= self.matches(skipped);
                    skipped += minute;
                }
                (self.matches(now) && first_showing()) || jumped_over_match
            } else {
                self.matches(now)
            };
            if fires {
                found.push(instant);
            }
            instant += minute;
        }
        found
    }
}

/// Instants in `[from, to)` where the zone's offset changes, to the hour.
fn transitions(tz: Tz, from: &str, to: &str) -> Vec<DateTime<Utc>> {
    use chrono::Offset;
    let offset = |t: DateTime<Utc>| t.with_timezone(&tz).offset().fix();
    let mut found = Vec::new();
    let mut t = super::utc(from);
    while t < super::utc(to) {
        let next = t + TimeDelta::hours(1);
        if offset(t) != offset(next) {
            found.push(next);
        }
        t = next;
    }
    found
}

fn fast_occurrences(
    expr: &str,
    tz: Tz,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let parsed = schedule(expr);
    let mut found = Vec::new();
    let mut cursor = start - TimeDelta::seconds(1);
    while let Some(next) = parsed.next_after(cursor, tz).filter(|t| *t < end) {
        found.push(next);
        cursor = next;
    }
    found
}

const EXPRESSIONS: &[&str] = &[
    "*/15 * * * *",
    "0 * * * *",
    "*/7 1-3 * * *",
    "5 0-23/2 * * *",
    "30 2 * * *",
    "45 1 * * *",
    "59 1 * * *",
    "0 0 * * *",
    "30 0 * * *",
    "0 3 * * *",
    "0,30 1,2 * * *",
    "15 2 * * 0",
    "0 2 1,15 * 0",
];

#[test]
fn fast_evaluator_agrees_with_minute_by_minute_reference_around_transitions() {
    let zones = [
        ("America/New_York", "2026-01-01T00:00:00Z"),
        ("Europe/Berlin", "2026-01-01T00:00:00Z"),
        ("Australia/Lord_Howe", "2026-01-01T00:00:00Z"),
        // Until 2019 Brazil switched at midnight, so 00:xx is the gap.
        ("America/Sao_Paulo", "2018-07-01T00:00:00Z"),
    ];
    for (zone_name, year_start) in zones {
        let tz = zone(zone_name);
        let year_end = super::utc(year_start) + TimeDelta::days(365);
        let year_end = year_end.to_rfc3339();
        let changes = transitions(tz, year_start, &year_end);
        assert_eq!(changes.len(), 2, "{zone_name} should have two transitions");
        for change in changes {
            let (start, end) = (change - TimeDelta::hours(30), change + TimeDelta::hours(30));
            for expr in EXPRESSIONS {
                let expected = ReferenceCron::new(expr).occurrences(tz, start, end);
                let got = fast_occurrences(expr, tz, start, end);
                assert_eq!(got, expected, "`{expr}` in {zone_name} around {change}");
            }
        }
    }
}

mod random {
    //! The same comparison for random expressions, zones and transitions.

    use chrono::TimeDelta;
    use proptest::prelude::*;

    use super::{fast_occurrences, transitions, ReferenceCron};
    use crate::schedule::tests::zone;

    /// Zones with unusual shifts: 30 min (Lord Howe), 45-min offsets
    /// (Chatham), midnight switches (Santiago, historic São Paulo), a skipped
    /// day (Apia, 2011), Southern-hemisphere DST.
    const ZONES: &[&str] = &[
        "America/New_York",
        "Europe/Berlin",
        "Australia/Lord_Howe",
        "Pacific/Chatham",
        "America/Santiago",
        "America/Sao_Paulo",
        "Pacific/Apia",
        "Europe/London",
    ];

    fn field(max: u32, min: u32) -> impl Strategy<Value = String> {
        prop_oneof![
            3 => Just("*".to_owned()),
            3 => (min..=max).prop_map(|v| v.to_string()),
            1 => (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            1 => (1..=max.max(2)).prop_map(|s| format!("*/{s}")),
            1 => (min..=max, min..=max).prop_map(|(a, b)| format!("{a},{b}")),
        ]
    }

    fn expression() -> impl Strategy<Value = String> {
        let day = prop_oneof![4 => Just("*".to_owned()), 1 => field(31, 1)];
        let weekday = prop_oneof![4 => Just("*".to_owned()), 1 => field(7, 0)];
        (field(59, 0), field(23, 0), day, weekday)
            .prop_map(|(m, h, d, w)| format!("{m} {h} {d} * {w}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn fast_evaluator_agrees_with_reference(
            expr in expression(),
            zone_index in 0..ZONES.len(),
            year in 2005i32..2030,
            pick in 0usize..8,
        ) {
            let tz = zone(ZONES[zone_index]);
            let changes = transitions(tz, &format!("{year}-01-01T00:00:00Z"), &format!("{}-01-01T00:00:00Z", year + 1));
            prop_assume!(!changes.is_empty());
            let change = changes[pick % changes.len()];
            let (start, end) = (change - TimeDelta::hours(14), change + TimeDelta::hours(14));
            let expected = ReferenceCron::new(&expr).occurrences(tz, start, end);
            let got = fast_occurrences(&expr, tz, start, end);
            prop_assert_eq!(got, expected, "`{}` in {} around {}", expr, ZONES[zone_index], change);
        }
    }
}
