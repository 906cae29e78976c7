//! Tests of the schedule module: syntax tables, DST, errors, a brute-force
//! reference evaluator, and property tests for robustness.

mod dst;
mod errors;
mod props;
mod reference;
mod syntax;

use chrono::{DateTime, Utc};

use super::{parse_zone, Schedule, Tz};

/// `2026-01-01T00:00:00Z` → instant. Test input, so panicking is fine.
fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("bad test instant {text}: {e}"))
        .with_timezone(&Utc)
}

fn zone(name: &str) -> Tz {
    parse_zone(name).unwrap_or_else(|e| panic!("{e}"))
}

fn schedule(expr: &str) -> Schedule {
    Schedule::parse(expr).unwrap_or_else(|e| panic!("`{expr}` should parse: {e}"))
}

/// GIVEN `expr` in `zone_name`, WHEN asking for as many occurrences after
/// `after` as `expected` lists, THEN they are exactly those (RFC 3339, UTC).
fn assert_upcoming(expr: &str, zone_name: &str, after: &str, expected: &[&str]) {
    let got: Vec<String> = schedule(expr)
        .upcoming(utc(after), zone(zone_name), expected.len())
        .iter()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .collect();
    assert_eq!(got, expected, "`{expr}` in {zone_name} after {after}");
}

/// Like `assert_upcoming`, and then asserts there is nothing further.
fn assert_all(expr: &str, zone_name: &str, after: &str, expected: &[&str]) {
    assert_upcoming(expr, zone_name, after, expected);
    let all = schedule(expr).upcoming(utc(after), zone(zone_name), expected.len() + 1);
    assert_eq!(
        all.len(),
        expected.len(),
        "`{expr}` should end after {expected:?}"
    );
}
