//! Every supported syntax: parses, and yields hand-computed occurrences.
//! 2026-01-01 is a Thursday.

use chrono::{DateTime, Utc};

use super::{assert_all, assert_upcoming, schedule, utc, zone};
use crate::schedule::{preview, Schedule};

const NEW_YEAR: &str = "2026-01-01T00:00:00Z";

#[test]
fn five_field_cron() {
    let table: &[(&str, &[&str])] = &[
        (
            "*/15 * * * *",
            &[
                "2026-01-01T00:15:00Z",
                "2026-01-01T00:30:00Z",
                "2026-01-01T00:45:00Z",
            ],
        ),
        (
            "0 9 * * MON-FRI",
            &[
                "2026-01-01T09:00:00Z",
                "2026-01-02T09:00:00Z",
                "2026-01-05T09:00:00Z",
            ],
        ),
        (
            "0 9 * * mon-fri",
            &[
                "2026-01-01T09:00:00Z",
                "2026-01-02T09:00:00Z",
                "2026-01-05T09:00:00Z",
            ],
        ),
        (
            "30 8 1,15 * *",
            &[
                "2026-01-01T08:30:00Z",
                "2026-01-15T08:30:00Z",
                "2026-02-01T08:30:00Z",
            ],
        ),
        (
            "0 0 1 jan,JUL *",
            &[
                "2026-07-01T00:00:00Z",
                "2027-01-01T00:00:00Z",
                "2027-07-01T00:00:00Z",
            ],
        ),
        (
            "0 12 * * 7",
            &["2026-01-04T12:00:00Z", "2026-01-11T12:00:00Z"],
        ),
        (
            "0 12 * * 0",
            &["2026-01-04T12:00:00Z", "2026-01-11T12:00:00Z"],
        ),
        (
            "0 12 * * Sun",
            &["2026-01-04T12:00:00Z", "2026-01-11T12:00:00Z"],
        ),
        (
            "0 12 * * 5-7",
            &[
                "2026-01-02T12:00:00Z",
                "2026-01-03T12:00:00Z",
                "2026-01-04T12:00:00Z",
                "2026-01-09T12:00:00Z",
            ],
        ),
        (
            "0 10-16/3 * * *",
            &[
                "2026-01-01T10:00:00Z",
                "2026-01-01T13:00:00Z",
                "2026-01-01T16:00:00Z",
                "2026-01-02T10:00:00Z",
            ],
        ),
        (
            "5/20 * * * *",
            &[
                "2026-01-01T00:05:00Z",
                "2026-01-01T00:25:00Z",
                "2026-01-01T00:45:00Z",
                "2026-01-01T01:05:00Z",
            ],
        ),
        (
            "0 0 * feb-mar/1 *",
            &["2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z"],
        ),
        (
            "59 23 31 12 *",
            &["2026-12-31T23:59:00Z", "2027-12-31T23:59:00Z"],
        ),
        ("  0   9  *  *  *  ", &["2026-01-01T09:00:00Z"]),
    ];
    for (expr, expected) in table {
        assert_upcoming(expr, "UTC", NEW_YEAR, expected);
    }
}

#[test]
fn six_field_cron_has_leading_seconds() {
    assert_upcoming(
        "*/10 * * * * *",
        "UTC",
        NEW_YEAR,
        &[
            "2026-01-01T00:00:10Z",
            "2026-01-01T00:00:20Z",
            "2026-01-01T00:00:30Z",
        ],
    );
    assert_upcoming(
        "30 0 12 * * *",
        "UTC",
        NEW_YEAR,
        &["2026-01-01T12:00:30Z", "2026-01-02T12:00:30Z"],
    );
    assert_upcoming(
        "58-59 59 23 31 12 *",
        "UTC",
        NEW_YEAR,
        &[
            "2026-12-31T23:59:58Z",
            "2026-12-31T23:59:59Z",
            "2027-12-31T23:59:58Z",
        ],
    );
}

#[test]
fn day_of_month_and_day_of_week_are_ored_when_both_restricted() {
    // The 13th or any Friday.
    assert_upcoming(
        "0 0 13 * FRI",
        "UTC",
        NEW_YEAR,
        &[
            "2026-01-02T00:00:00Z",
            "2026-01-09T00:00:00Z",
            "2026-01-13T00:00:00Z",
            "2026-01-16T00:00:00Z",
        ],
    );
    // The last day or any Monday.
    assert_upcoming(
        "0 0 L * 1",
        "UTC",
        "2026-01-20T00:00:00Z",
        &[
            "2026-01-26T00:00:00Z",
            "2026-01-31T00:00:00Z",
            "2026-02-02T00:00:00Z",
        ],
    );
}

#[test]
fn a_day_field_starting_with_star_makes_it_an_and() {
    // Vixie: `*/2` starts with `*`, so odd days AND Mondays.
    assert_upcoming(
        "0 0 */2 * MON",
        "UTC",
        NEW_YEAR,
        &[
            "2026-01-05T00:00:00Z",
            "2026-01-19T00:00:00Z",
            "2026-02-09T00:00:00Z",
        ],
    );
    assert_upcoming(
        "0 0 * * MON",
        "UTC",
        NEW_YEAR,
        &["2026-01-05T00:00:00Z", "2026-01-12T00:00:00Z"],
    );
    assert_upcoming(
        "0 0 1 * *",
        "UTC",
        NEW_YEAR,
        &["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"],
    );
    assert_upcoming(
        "0 0 1 * */1",
        "UTC",
        NEW_YEAR,
        &["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"],
    );
}

#[test]
fn l_is_the_last_day_of_the_month() {
    assert_upcoming(
        "0 0 L * *",
        "UTC",
        NEW_YEAR,
        &[
            "2026-01-31T00:00:00Z",
            "2026-02-28T00:00:00Z",
            "2026-03-31T00:00:00Z",
            "2026-04-30T00:00:00Z",
        ],
    );
    assert_upcoming(
        "0 0 L 2 *",
        "UTC",
        "2027-06-01T00:00:00Z",
        &["2028-02-29T00:00:00Z", "2029-02-28T00:00:00Z"],
    );
    assert_upcoming(
        "0 0 15,L * *",
        "UTC",
        NEW_YEAR,
        &[
            "2026-01-15T00:00:00Z",
            "2026-01-31T00:00:00Z",
            "2026-02-15T00:00:00Z",
            "2026-02-28T00:00:00Z",
        ],
    );
    assert_upcoming(
        "0 0 L 12 *",
        "UTC",
        NEW_YEAR,
        &["2026-12-31T00:00:00Z", "2027-12-31T00:00:00Z"],
    );
}

#[test]
fn leap_days() {
    assert_upcoming(
        "0 0 29 2 *",
        "UTC",
        NEW_YEAR,
        &[
            "2028-02-29T00:00:00Z",
            "2032-02-29T00:00:00Z",
            "2036-02-29T00:00:00Z",
        ],
    );
    // 2100 is not a leap year: eight years between leap days.
    assert_upcoming(
        "0 0 29 2 *",
        "UTC",
        "2097-01-01T00:00:00Z",
        &["2104-02-29T00:00:00Z"],
    );
    assert_upcoming(
        "0 0 29 2 *",
        "Asia/Tokyo",
        NEW_YEAR,
        &["2028-02-28T15:00:00Z"],
    );
}

#[test]
fn end_of_month_days_skip_short_months() {
    assert_upcoming(
        "0 0 31 * *",
        "UTC",
        NEW_YEAR,
        &[
            "2026-01-31T00:00:00Z",
            "2026-03-31T00:00:00Z",
            "2026-05-31T00:00:00Z",
            "2026-07-31T00:00:00Z",
        ],
    );
    assert_upcoming(
        "0 0 30 * *",
        "UTC",
        "2026-01-30T00:00:00Z",
        &["2026-03-30T00:00:00Z"],
    );
}

#[test]
fn impossible_dates_have_no_occurrence() {
    for expr in ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 30,31 2 *"] {
        assert_all(expr, "UTC", NEW_YEAR, &[]);
    }
}

#[test]
fn eventbridge_cron() {
    let table: &[(&str, &[&str])] = &[
        (
            "cron(0 12 * * ? *)",
            &["2026-01-01T12:00:00Z", "2026-01-02T12:00:00Z"],
        ),
        (
            "cron(0 18 ? * MON-FRI *)",
            &[
                "2026-01-01T18:00:00Z",
                "2026-01-02T18:00:00Z",
                "2026-01-05T18:00:00Z",
            ],
        ),
        // EventBridge counts days of the week 1-7 = SUN-SAT.
        ("cron(0 9 ? * 1 *)", &["2026-01-04T09:00:00Z"]),
        (
            "cron(0 9 ? * 2 *)",
            &["2026-01-05T09:00:00Z", "2026-01-12T09:00:00Z"],
        ),
        ("cron(0 9 ? * 7 *)", &["2026-01-03T09:00:00Z"]),
        (
            "cron(0 9 ? * 2-6 *)",
            &[
                "2026-01-01T09:00:00Z",
                "2026-01-02T09:00:00Z",
                "2026-01-05T09:00:00Z",
            ],
        ),
        (
            "cron(0/30 8 1 * ? *)",
            &[
                "2026-01-01T08:00:00Z",
                "2026-01-01T08:30:00Z",
                "2026-02-01T08:00:00Z",
            ],
        ),
        (
            "cron(0 0 L * ? *)",
            &["2026-01-31T00:00:00Z", "2026-02-28T00:00:00Z"],
        ),
        ("cron(15 10 ? * 6 2026)", &["2026-01-02T10:15:00Z"]),
        (" cron( 0 12 * * ? * ) ", &["2026-01-01T12:00:00Z"]),
    ];
    for (expr, expected) in table {
        assert_upcoming(expr, "UTC", NEW_YEAR, expected);
    }
    // Both day fields restricted (AWS would insist on a `?`): Vixie OR, the
    // 13th or any Friday (6 in EventBridge).
    assert_upcoming(
        "cron(0 0 13 * 6 *)",
        "UTC",
        NEW_YEAR,
        &[
            "2026-01-02T00:00:00Z",
            "2026-01-09T00:00:00Z",
            "2026-01-13T00:00:00Z",
        ],
    );
    // The same digit means Tuesday in Unix cron.
    assert_upcoming("0 9 * * 2", "UTC", NEW_YEAR, &["2026-01-06T09:00:00Z"]);
}

#[test]
fn eventbridge_year_field() {
    assert_all(
        "cron(0 0 1 1 ? 2028)",
        "UTC",
        NEW_YEAR,
        &["2028-01-01T00:00:00Z"],
    );
    assert_all(
        "cron(0 0 1 1 ? 2027-2029)",
        "UTC",
        NEW_YEAR,
        &[
            "2027-01-01T00:00:00Z",
            "2028-01-01T00:00:00Z",
            "2029-01-01T00:00:00Z",
        ],
    );
    assert_all("cron(0 0 1 1 ? 2020)", "UTC", NEW_YEAR, &[]);
    // Far beyond the search horizon: the year field is jumped to, not searched.
    assert_all(
        "cron(0 0 1 1 ? 2150)",
        "UTC",
        NEW_YEAR,
        &["2150-01-01T00:00:00Z"],
    );
    assert_upcoming(
        "cron(0 0 1 1 ? */50)",
        "UTC",
        NEW_YEAR,
        &["2070-01-01T00:00:00Z", "2120-01-01T00:00:00Z"],
    );
    assert_all("cron(0 0 1 1 ? 2199)", "UTC", "2199-01-01T00:00:00Z", &[]);
}

#[test]
fn rate_is_aligned_to_the_unix_epoch() {
    assert_upcoming(
        "rate(5 minutes)",
        "UTC",
        "2026-01-01T00:02:30Z",
        &[
            "2026-01-01T00:05:00Z",
            "2026-01-01T00:10:00Z",
            "2026-01-01T00:15:00Z",
        ],
    );
    // 2026-01-01T00:00:00Z is 1767225600, which is 120 s past a multiple of 780.
    assert_upcoming(
        "rate(13 minutes)",
        "UTC",
        NEW_YEAR,
        &[
            "2026-01-01T00:02:00Z",
            "2026-01-01T00:15:00Z",
            "2026-01-01T00:28:00Z",
        ],
    );
    assert_upcoming("rate(1 hour)", "UTC", NEW_YEAR, &["2026-01-01T01:00:00Z"]);
    assert_upcoming(
        "rate(1 minutes)",
        "UTC",
        "2026-01-01T00:00:59.999Z",
        &["2026-01-01T00:01:00Z"],
    );
    assert_upcoming(
        "rate(30 seconds)",
        "UTC",
        "2026-01-01T00:00:30Z",
        &["2026-01-01T00:01:00Z"],
    );
    assert_upcoming("RATE(2 Hours)", "UTC", NEW_YEAR, &["2026-01-01T02:00:00Z"]);
    // Real time, whatever the zone and DST: still 00:00Z.
    assert_upcoming(
        "rate(1 day)",
        "America/New_York",
        "2026-03-07T12:00:00Z",
        &["2026-03-08T00:00:00Z", "2026-03-09T00:00:00Z"],
    );
    assert_upcoming(
        "rate(1 second)",
        "UTC",
        "1969-12-31T23:59:58.5Z",
        &["1969-12-31T23:59:59Z"],
    );
}

#[test]
fn at_fires_once_in_the_task_zone() {
    assert_all(
        "at(2026-06-01T09:30:00)",
        "Europe/Berlin",
        NEW_YEAR,
        &["2026-06-01T07:30:00Z"],
    );
    assert_all(
        "at(2026-06-01T09:30:00)",
        "Europe/Berlin",
        "2026-06-01T07:30:00Z",
        &[],
    );
    assert_all(
        "at(2026-06-01T09:30:00)",
        "UTC",
        NEW_YEAR,
        &["2026-06-01T09:30:00Z"],
    );
    assert!(schedule("at(2026-06-01T09:30:00)").is_one_shot());
    assert!(!schedule("@daily").is_one_shot());
    assert!(!schedule("rate(1 day)").is_one_shot());
}

#[test]
fn macros() {
    let table: &[(&str, &[&str])] = &[
        ("@yearly", &["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"]),
        ("@annually", &["2027-01-01T00:00:00Z"]),
        (
            "@monthly",
            &["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"],
        ),
        ("@weekly", &["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"]),
        ("@daily", &["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"]),
        ("@midnight", &["2026-01-02T00:00:00Z"]),
        ("@DAILY", &["2026-01-02T00:00:00Z"]),
        ("@hourly", &["2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"]),
    ];
    for (expr, expected) in table {
        assert_upcoming(expr, "UTC", NEW_YEAR, expected);
    }
    assert_upcoming(
        "@daily",
        "Europe/Berlin",
        NEW_YEAR,
        &["2026-01-01T23:00:00Z"],
    );
}

#[test]
fn display_is_normalized_and_round_trips() {
    let table = [
        ("0  9 * * mon-fri", "0 9 * * MON-FRI"),
        (" */5 * * * * * ", "*/5 * * * * *"),
        ("cron(0 12 ? * mon-fri *)", "cron(0 12 ? * MON-FRI *)"),
        ("CRON( 0 12 L * ? 2026-2030 )", "cron(0 12 L * ? 2026-2030)"),
        ("rate(1 minutes)", "rate(1 minute)"),
        ("rate(5 minute)", "rate(5 minutes)"),
        ("RATE( 2  HOURS )", "rate(2 hours)"),
        ("@annually", "@yearly"),
        ("@midnight", "@daily"),
        ("@Hourly", "@hourly"),
        ("at(2026-03-08t02:30:00)", "at(2026-03-08T02:30:00)"),
    ];
    for (input, normalized) in table {
        let parsed = schedule(input);
        assert_eq!(parsed.to_string(), normalized, "display of `{input}`");
        assert_eq!(schedule(normalized), parsed, "round trip of `{input}`");
        let via_from_str: Schedule = input.parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(via_from_str, parsed);
    }
}

#[test]
fn serde_uses_the_normalized_text() {
    let parsed = schedule("0 9 * * mon");
    let json = serde_json::to_string(&parsed).unwrap_or_default();
    assert_eq!(json, "\"0 9 * * MON\"");
    let back: Schedule = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, parsed);
    assert!(serde_json::from_str::<Schedule>("\"61 * * * *\"").is_err());
}

#[test]
fn min_interval() {
    let secs = |expr: &str| schedule(expr).min_interval().map(|d| d.num_seconds());
    assert_eq!(secs("* * * * * *"), Some(1));
    assert_eq!(secs("0,50 * * * * *"), Some(10));
    assert_eq!(secs("*/15 * * * *"), Some(900));
    assert_eq!(secs("0 9,17 * * *"), Some(8 * 3600));
    assert_eq!(secs("@hourly"), Some(3600));
    assert_eq!(secs("rate(90 seconds)"), Some(90));
    assert_eq!(secs("@daily"), None);
    assert_eq!(secs("at(2026-01-01T00:00:00)"), None);
}

#[test]
fn preview_parses_zone_and_expression() {
    let got = preview("30 2 * * *", "Asia/Tokyo", utc(NEW_YEAR), 2).unwrap_or_default();
    assert_eq!(
        got,
        vec![utc("2026-01-01T17:30:00Z"), utc("2026-01-02T17:30:00Z")]
    );
    let zone_error = preview("@daily", "Mars/Base", utc(NEW_YEAR), 2).err();
    assert_eq!(zone_error.map(|e| e.field()), Some("timezone"));
    let expr_error = preview("@sometimes", "UTC", utc(NEW_YEAR), 2).err();
    assert_eq!(expr_error.map(|e| e.field()), Some("schedule"));
    assert!(preview("@daily", "UTC", utc(NEW_YEAR), 0).is_ok_and(|v| v.is_empty()));
}

#[test]
fn extreme_instants_do_not_panic() {
    let tz = zone("Pacific/Apia");
    for expr in [
        "* * * * * *",
        "30 2 * * *",
        "rate(1 day)",
        "at(2026-01-01T00:00:00)",
        "cron(0 0 L * ? *)",
    ] {
        let parsed = schedule(expr);
        for after in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            let _ = parsed.next_after(after, tz);
        }
    }
}

#[test]
fn far_and_impossible_schedules_end_the_search() {
    // Real-time search that crosses many transitions before its match.
    assert_upcoming(
        "*/5 * 29 2 *",
        "America/New_York",
        "2097-03-01T00:00:00Z",
        &["2104-02-29T05:00:00Z"],
    );
    for zone_name in [
        "UTC",
        "America/New_York",
        "Australia/Lord_Howe",
        "Pacific/Apia",
    ] {
        for expr in [
            "* * 30 2 *",
            "0 0 31 2 *",
            "* * * * * *",
            "cron(* * 31 4 ? 2030)",
        ] {
            let _ = schedule(expr).upcoming(utc(NEW_YEAR), zone(zone_name), 3);
        }
    }
}
