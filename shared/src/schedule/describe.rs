//! A schedule in plain words, for `sundial schedule preview` and
//! `POST /v1/schedules/preview`: "every 10 seconds", "at 09:00 on Monday
//! to Friday, Europe/Berlin", "every 15 minutes from 09:00 to 17:59 on
//! Monday to Friday, UTC".
//!
//! The text is built from the parsed value sets, not the source text, so
//! `*/15`, `0,15,30,45` and `0-59/15` read alike, and the EventBridge and
//! Unix day-of-week numberings agree. What has no short phrase is listed
//! ("at minutes 5, 7 and 50 past hours 1, 4 and 9").

use super::cron::Cron;
use super::field::ValueSet;
use super::{Kind, Schedule};

const DAY_NAMES: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The schedule in words; wall-clock schedules name `zone` at the end
/// (rates follow real time, so no zone applies to them).
pub fn describe(schedule: &Schedule, zone: &str) -> String {
    match &schedule.kind {
        Kind::Rate(rate) => {
            let (amount, unit) = rate.parts();
            match (amount, unit) {
                (1, "day") => "every day at 00:00 UTC".to_string(),
                (1, unit) => format!("every {unit}"),
                (n, unit) => format!("every {n} {unit}s"),
            }
        }
        Kind::At(local) => format!(
            "once, at {} on {}, {zone}",
            clock(local.format("%H").to_string(), local),
            local.format("%Y-%m-%d")
        ),
        Kind::Cron(cron) => format!("{}, {zone}", describe_cron(cron)),
    }
}

fn clock(hour: String, local: &chrono::NaiveDateTime) -> String {
    use chrono::Timelike;
    if local.second() == 0 {
        format!("{hour}:{:02}", local.minute())
    } else {
        format!("{hour}:{:02}:{:02}", local.minute(), local.second())
    }
}

fn describe_cron(cron: &Cron) -> String {
    let (time, fixed) = time_phrase(cron);
    let days = day_phrase(cron);
    let mut out = time;
    match days {
        Some(days) => {
            out.push(' ');
            out.push_str(&days);
        }
        None if fixed => out.push_str(" every day"),
        None => {}
    }
    if let Some(months) = month_phrase(cron) {
        out.push_str(" in ");
        out.push_str(&months);
    }
    if let Some(years) = &cron.years {
        let years: Vec<u32> = members(years).into_iter().map(|y| y + 1970).collect();
        out.push_str(" in ");
        out.push_str(&join(&runs(&years, |y| y.to_string())));
    }
    out
}

/// The members of a set, in order.
fn members(set: &ValueSet) -> Vec<u32> {
    let mut out = Vec::new();
    let mut next = set.first();
    while let Some(v) = next {
        out.push(v);
        next = set.next_at_or_after(v + 1);
    }
    out
}

/// Does `set` hold every value of `min..=max`?
fn full(set: &ValueSet, min: u32, max: u32) -> bool {
    set.len() == max - min + 1
}

/// `Some(n)` when `set` is every `n`th value from `min`, `n` > 1 dividing
/// the cycle (so the spacing holds across the wrap too).
fn step(set: &ValueSet, min: u32, cycle: u32) -> Option<u32> {
    let values = members(set);
    let n = values.get(1)?.checked_sub(*values.first()?)?;
    let regular = values.first() == Some(&min)
        && n > 1
        && cycle.is_multiple_of(n)
        && values.len() as u32 == cycle / n
        && values.windows(2).all(|w| w[1] - w[0] == n);
    regular.then_some(n)
}

/// `[1, 2, 3, 5]` → `["1 to 3", "5"]` (runs of three or more as ranges).
fn runs(values: &[u32], name: impl Fn(u32) -> String) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let mut j = i;
        while j + 1 < values.len() && values[j + 1] == values[j] + 1 {
            j += 1;
        }
        if j - i >= 2 {
            out.push(format!("{} to {}", name(values[i]), name(values[j])));
        } else {
            out.extend(values[i..=j].iter().map(|&v| name(v)));
        }
        i = j + 1;
    }
    out
}

/// `a`, `a and b`, `a, b and c`.
fn join(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        one.to_string()
    } else {
        many.to_string()
    }
}

/// The time-of-day phrase, and whether it names fixed times (which read
/// better with "every day" when no day is restricted).
fn time_phrase(cron: &Cron) -> (String, bool) {
    let times = Times::of(cron);
    if let Some(phrase) = repeating_phrase(cron, &times) {
        return (phrase, false);
    }
    if let Some(phrase) = fixed_phrase(&times) {
        return (phrase, true);
    }
    (listed_phrase(&times), false)
}

/// The members of the time fields, and which are complete.
struct Times {
    seconds: Vec<u32>,
    minutes: Vec<u32>,
    hours: Vec<u32>,
    all_seconds: bool,
    all_minutes: bool,
    all_hours: bool,
    zero_seconds: bool,
}

impl Times {
    fn of(cron: &Cron) -> Times {
        let seconds = members(&cron.seconds);
        Times {
            zero_seconds: seconds == [0],
            seconds,
            minutes: members(&cron.minutes),
            hours: members(&cron.hours),
            all_seconds: full(&cron.seconds, 0, 59),
            all_minutes: full(&cron.minutes, 0, 59),
            all_hours: full(&cron.hours, 0, 23),
        }
    }
}

/// `:MM` past the hour, or `on the hour`.
fn past_the_hour(m: u32) -> String {
    if m == 0 {
        "on the hour".to_string()
    } else {
        format!("at :{m:02}")
    }
}

/// "every 10 seconds", "every 15 minutes from 09:00 to 17:59", "every 2
/// hours at :15": schedules with a short phrase for their repetition.
fn repeating_phrase(cron: &Cron, t: &Times) -> Option<String> {
    if t.all_hours && t.all_minutes {
        if t.all_seconds {
            return Some("every second".into());
        }
        if let Some(n) = step(&cron.seconds, 0, 60) {
            return Some(format!("every {n} seconds"));
        }
        if t.zero_seconds {
            return Some("every minute".into());
        }
    }
    if !t.zero_seconds {
        return None;
    }
    if t.all_hours {
        if let Some(n) = step(&cron.minutes, 0, 60) {
            return Some(format!("every {n} minutes"));
        }
        if let [m] = t.minutes[..] {
            return Some(format!("every hour {}", past_the_hour(m)));
        }
        return None;
    }
    // Only a few fixed times read better as a list.
    if t.minutes.len() * t.hours.len() <= 6 {
        return None;
    }
    let within = hour_span(&t.hours);
    if t.all_minutes {
        return Some(format!("every minute {within}"));
    }
    if let Some(n) = step(&cron.minutes, 0, 60) {
        return Some(format!("every {n} minutes {within}"));
    }
    match (&t.minutes[..], step(&cron.hours, 0, 24)) {
        ([m], Some(n)) => Some(format!("every {n} hours {}", past_the_hour(*m))),
        _ => None,
    }
}

/// "at 09:00", "at 09:00 and 17:30", "at 12:00:30": up to six fixed times.
fn fixed_phrase(t: &Times) -> Option<String> {
    let [s] = t.seconds[..] else {
        return None;
    };
    if t.minutes.len() * t.hours.len() > 6 {
        return None;
    }
    let mut times = Vec::new();
    for &h in &t.hours {
        for &m in &t.minutes {
            times.push(if s == 0 {
                format!("{h:02}:{m:02}")
            } else {
                format!("{h:02}:{m:02}:{s:02}")
            });
        }
    }
    Some(format!("at {}", join(&times)))
}

/// Anything else, listed field by field.
fn listed_phrase(t: &Times) -> String {
    let list = |values: &[u32], one: &str, many: &str| {
        format!(
            "{} {}",
            plural(values.len(), one, many),
            join(&runs(values, |v| v.to_string()))
        )
    };
    let mut parts = Vec::new();
    if !t.zero_seconds {
        parts.push(if t.all_seconds {
            "every second".to_string()
        } else {
            format!("at {}", list(&t.seconds, "second", "seconds"))
        });
    }
    parts.push(if t.all_minutes {
        "every minute".to_string()
    } else {
        format!("at {}", list(&t.minutes, "minute", "minutes"))
    });
    if !t.all_hours {
        parts.push(format!("past {}", list(&t.hours, "hour", "hours")));
    }
    parts.join(" ")
}

/// `from 09:00 to 17:59` for one run of hours, else `during hours 1 and 4`.
fn hour_span(hours: &[u32]) -> String {
    let contiguous = hours.windows(2).all(|w| w[1] == w[0] + 1);
    match (hours.first(), hours.last()) {
        (Some(first), Some(last)) if contiguous => format!("from {first:02}:00 to {last:02}:59"),
        _ => format!(
            "during hours {}",
            join(&runs(hours, |v| format!("{v:02}:00")))
        ),
    }
}

fn day_name(v: u32) -> String {
    DAY_NAMES[(v % 7) as usize].to_string()
}

fn month_name(v: u32) -> String {
    MONTH_NAMES[(v.clamp(1, 12) - 1) as usize].to_string()
}

fn ordinal_day(v: u32) -> String {
    v.to_string()
}

/// `on Monday to Friday`, `on day 1 of the month`, `on 25 December`, ...
fn day_phrase(cron: &Cron) -> Option<String> {
    let dom = members(&cron.days_of_month);
    let dow = members(&cron.days_of_week);
    let dom_restricted = !full(&cron.days_of_month, 1, 31) || cron.last_day_of_month;
    let dow_restricted = !full(&cron.days_of_week, 0, 6);
    let weekdays = || {
        // Sunday-first sets read better Monday-first: `Saturday and Sunday`.
        let monday_first: Vec<u32> = dow.iter().map(|&d| (d + 6) % 7).collect();
        let mut sorted = monday_first;
        sorted.sort_unstable();
        join(&runs(&sorted, |d| day_name((d + 1) % 7)))
    };
    let month_days = || {
        let mut items = if full(&cron.days_of_month, 1, 31) {
            Vec::new()
        } else {
            runs(&dom, ordinal_day)
        };
        if cron.last_day_of_month {
            items.push("the last day".to_string());
        }
        let single_month = members(&cron.months);
        match (&dom[..], cron.last_day_of_month, &single_month[..]) {
            ([d], false, [m]) if dom.len() == 1 => format!("{d} {}", month_name(*m)),
            _ if items == ["the last day"] => "the last day of the month".to_string(),
            _ => format!(
                "{} {} of the month",
                plural(dom.len(), "day", "days"),
                join(&items)
            ),
        }
    };
    match (dom_restricted, dow_restricted) {
        (false, false) => None,
        (false, true) => Some(format!("on {}", weekdays())),
        (true, false) => Some(format!("on {}", month_days())),
        (true, true) if cron.days_or => Some(format!("on {} or on {}", month_days(), weekdays())),
        (true, true) => Some(format!("on {} if it is a {}", month_days(), weekdays())),
    }
}

/// `December`, `January to March`; `None` for every month, or when the day
/// phrase names the one month already (`25 December`).
fn month_phrase(cron: &Cron) -> Option<String> {
    if full(&cron.months, 1, 12) {
        return None;
    }
    let months = members(&cron.months);
    let dom = members(&cron.days_of_month);
    let named_in_day = months.len() == 1
        && dom.len() == 1
        && !cron.last_day_of_month
        && full(&cron.days_of_week, 0, 6);
    (!named_in_day).then(|| join(&runs(&months, month_name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_of_expressions_in_words() {
        let cases = [
            ("rate(10 seconds)", "UTC", "every 10 seconds"),
            ("rate(1 minute)", "UTC", "every minute"),
            ("rate(2 hours)", "Europe/Berlin", "every 2 hours"),
            ("rate(1 day)", "UTC", "every day at 00:00 UTC"),
            (
                "0 9 * * MON-FRI",
                "Europe/Berlin",
                "at 09:00 on Monday to Friday, Europe/Berlin",
            ),
            (
                "cron(0 9 ? * MON-FRI *)",
                "Europe/Berlin",
                "at 09:00 on Monday to Friday, Europe/Berlin",
            ),
            ("*/10 * * * * *", "UTC", "every 10 seconds, UTC"),
            ("* * * * *", "UTC", "every minute, UTC"),
            ("*/15 * * * *", "UTC", "every 15 minutes, UTC"),
            (
                "*/15 9-17 * * MON-FRI",
                "America/New_York",
                "every 15 minutes from 09:00 to 17:59 on Monday to Friday, America/New_York",
            ),
            ("30 0 12 * * *", "UTC", "at 12:00:30 every day, UTC"),
            ("0 9,17 * * *", "UTC", "at 09:00 and 17:00 every day, UTC"),
            ("0 0 25 12 *", "UTC", "at 00:00 on 25 December, UTC"),
            (
                "cron(* * ? * SAT,SUN *)",
                "UTC",
                "every minute on Saturday and Sunday, UTC",
            ),
            (
                "0 0 1,15 * *",
                "UTC",
                "at 00:00 on days 1 and 15 of the month, UTC",
            ),
            (
                "cron(0 18 L * ? *)",
                "UTC",
                "at 18:00 on the last day of the month, UTC",
            ),
            ("@daily", "UTC", "at 00:00 every day, UTC"),
            ("@hourly", "UTC", "every hour on the hour, UTC"),
            ("@weekly", "UTC", "at 00:00 on Sunday, UTC"),
            ("@yearly", "UTC", "at 00:00 on 1 January, UTC"),
            ("15 */2 * * *", "UTC", "every 2 hours at :15, UTC"),
            (
                "0 12 * 1-3 *",
                "UTC",
                "at 12:00 every day in January to March, UTC",
            ),
            (
                "cron(0 12 1 * ? 2027-2029)",
                "UTC",
                "at 12:00 on day 1 of the month in 2027 to 2029, UTC",
            ),
            (
                "0 0 1 * MON",
                "UTC",
                "at 00:00 on day 1 of the month or on Monday, UTC",
            ),
            (
                "at(2026-03-08T02:30:00)",
                "America/New_York",
                "once, at 02:30 on 2026-03-08, America/New_York",
            ),
            (
                "5,7,50 1,4,9 * * *",
                "UTC",
                "at minutes 5, 7 and 50 past hours 1, 4 and 9, UTC",
            ),
        ];
        for (expr, zone, want) in cases {
            let schedule = Schedule::parse(expr).unwrap();
            assert_eq!(describe(&schedule, zone), want, "{expr}");
        }
    }
}
