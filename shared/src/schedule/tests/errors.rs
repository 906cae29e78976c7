//! Invalid input is rejected with a message naming the field and token.

use crate::schedule::{parse_zone, AtProblem, FieldProblem, RateProblem, Schedule, ScheduleError};

fn error(expr: &str) -> ScheduleError {
    match Schedule::parse(expr) {
        Ok(parsed) => panic!("`{expr}` should not parse, got {parsed}"),
        Err(error) => error,
    }
}

fn field_error(field: &'static str, token: &str, problem: FieldProblem) -> ScheduleError {
    ScheduleError::Field {
        field,
        token: token.to_owned(),
        problem,
    }
}

#[test]
fn messages_name_field_and_token() {
    assert_eq!(
        error("61 * * * *").to_string(),
        "invalid cron expression: field `minute` token `61`: value out of range 0-59"
    );
    assert_eq!(
        error("* * * * FOO").to_string(),
        "invalid cron expression: field `day-of-week` token `FOO`: expected a number 0-7 or a name SUN-SAT"
    );
    assert_eq!(
        parse_zone("Mars/Base").err().map(|e| e.to_string()),
        Some("unknown time zone `Mars/Base`".into())
    );
    assert_eq!(
        parse_zone("Mars/Base").err().map(|e| e.field()),
        Some("timezone")
    );
    assert_eq!(error("61 * * * *").field(), "schedule");
}

#[test]
fn cron_field_errors() {
    let out_of_range = |min, max| FieldProblem::OutOfRange { min, max };
    let table = [
        ("* 24 * * *", field_error("hour", "24", out_of_range(0, 23))),
        (
            "* * 0 * *",
            field_error("day-of-month", "0", out_of_range(1, 31)),
        ),
        (
            "* * 32 * *",
            field_error("day-of-month", "32", out_of_range(1, 31)),
        ),
        (
            "* * * 13 *",
            field_error("month", "13", out_of_range(1, 12)),
        ),
        (
            "* * * 1-13 *",
            field_error("month", "13", out_of_range(1, 12)),
        ),
        (
            "* * * * 8",
            field_error("day-of-week", "8", out_of_range(0, 7)),
        ),
        (
            "60 * * * * *",
            field_error("second", "60", out_of_range(0, 59)),
        ),
        (
            "99999999999 * * * *",
            field_error("minute", "99999999999", out_of_range(0, 59)),
        ),
        (
            "*/0 * * * *",
            field_error("minute", "*/0", FieldProblem::BadStep),
        ),
        (
            "*/x * * * *",
            field_error("minute", "*/x", FieldProblem::BadStep),
        ),
        (
            "1/ * * * *",
            field_error("minute", "1/", FieldProblem::BadStep),
        ),
        (
            "5-1 * * * *",
            field_error("minute", "5-1", FieldProblem::ReversedRange),
        ),
        (
            "1,,2 * * * *",
            field_error("minute", "1,,2", FieldProblem::EmptyItem),
        ),
        (
            "1, * * * *",
            field_error("minute", "1,", FieldProblem::EmptyItem),
        ),
        (
            "? * * * *",
            field_error("minute", "?", FieldProblem::MisplacedQuestionMark),
        ),
        (
            "* * 1,? * *",
            field_error("day-of-month", "?", FieldProblem::MisplacedQuestionMark),
        ),
        (
            "* * * * L",
            field_error("day-of-week", "L", FieldProblem::MisplacedLast),
        ),
        (
            "* * L/2 * *",
            field_error("day-of-month", "L/2", FieldProblem::MisplacedLast),
        ),
        (
            "0 0 * * 5#3",
            field_error(
                "day-of-week",
                "5#3",
                FieldProblem::Unsupported("`#` (nth weekday of the month)"),
            ),
        ),
        (
            "0 0 15W * *",
            field_error(
                "day-of-month",
                "15W",
                FieldProblem::Unsupported("`W` (nearest weekday)"),
            ),
        ),
    ];
    for (expr, expected) in table {
        assert_eq!(error(expr), expected, "`{expr}`");
    }
    let not_a_value = FieldProblem::NotAValue {
        min: 0,
        max: 59,
        names: "",
    };
    assert_eq!(
        error("+5 * * * *"),
        field_error("minute", "+5", not_a_value.clone())
    );
    assert_eq!(
        error("-5 * * * *"),
        field_error("minute", "", not_a_value.clone())
    );
    assert_eq!(
        error("MON * * * *"),
        field_error("minute", "MON", not_a_value)
    );
}

#[test]
fn eventbridge_errors() {
    let out_of_range = |min, max| FieldProblem::OutOfRange { min, max };
    let table = [
        (
            "cron(0 12 ? * 0 *)",
            field_error("day-of-week", "0", out_of_range(1, 7)),
        ),
        (
            "cron(0 0 1 1 ? 1969)",
            field_error("year", "1969", out_of_range(1970, 2199)),
        ),
        (
            "cron(0 0 1 1 ? 2200)",
            field_error("year", "2200", out_of_range(1970, 2199)),
        ),
        (
            "cron(0 12 ? * 6#3 *)",
            field_error(
                "day-of-week",
                "6#3",
                FieldProblem::Unsupported("`#` (nth weekday of the month)"),
            ),
        ),
        (
            "cron(0 12 ? * 5L *)",
            field_error(
                "day-of-week",
                "5L",
                FieldProblem::Unsupported(
                    "`L` combined with other values (only a bare `L` in day-of-month is)",
                ),
            ),
        ),
        (
            "cron(0 12 LW * ? *)",
            field_error(
                "day-of-month",
                "LW",
                FieldProblem::Unsupported("`W` (nearest weekday)"),
            ),
        ),
    ];
    for (expr, expected) in table {
        assert_eq!(error(expr), expected, "`{expr}`");
    }
    assert_eq!(
        error("cron(0 12 * * ?)"),
        ScheduleError::FieldCount {
            expr: "cron(0 12 * * ?)".into(),
            expected: "6",
            found: 5
        }
    );
    assert!(matches!(
        error("cron(0 12 * * ? *"),
        ScheduleError::Unrecognized { .. }
    ));
}

#[test]
fn field_count_errors() {
    assert_eq!(
        error("* * * *"),
        ScheduleError::FieldCount {
            expr: "* * * *".into(),
            expected: "5 or 6",
            found: 4
        }
    );
    assert!(matches!(
        error("* * * * * * *"),
        ScheduleError::FieldCount { found: 7, .. }
    ));
    assert_eq!(error(""), ScheduleError::Empty);
    assert_eq!(error(" \t\n"), ScheduleError::Empty);
}

#[test]
fn rate_at_macro_errors() {
    let rate = |token: &str, problem| ScheduleError::Rate {
        token: token.into(),
        problem,
    };
    assert_eq!(error("rate(0 minutes)"), rate("0", RateProblem::BadAmount));
    assert_eq!(
        error("rate(-5 minutes)"),
        rate("-5", RateProblem::BadAmount)
    );
    assert_eq!(
        error("rate(1.5 hours)"),
        rate("1.5", RateProblem::BadAmount)
    );
    assert_eq!(
        error("rate(5 fortnights)"),
        rate("fortnights", RateProblem::BadUnit)
    );
    assert_eq!(error("rate(5)"), rate("5", RateProblem::Shape));
    assert_eq!(error("rate()"), rate("", RateProblem::Shape));
    assert_eq!(
        error("rate(99999999999 days)"),
        rate("99999999999", RateProblem::TooLong)
    );
    assert_eq!(
        error("rate(999999 days)"),
        rate("999999 days", RateProblem::TooLong)
    );

    let at = |token: &str, problem| ScheduleError::At {
        token: token.into(),
        problem,
    };
    assert_eq!(
        error("at(2026-02-30T00:00:00)"),
        at("2026-02-30T00:00:00", AtProblem::NoSuchTime)
    );
    assert_eq!(
        error("at(2026-01-01T24:00:00)"),
        at("2026-01-01T24:00:00", AtProblem::NoSuchTime)
    );
    assert_eq!(
        error("at(2026-3-8T02:30:00)"),
        at("2026-3-8T02:30:00", AtProblem::Shape)
    );
    assert_eq!(
        error("at(2026-03-08 02:30:00)"),
        at("2026-03-08 02:30:00", AtProblem::Shape)
    );
    assert_eq!(
        error("at(2026-03-08T02:30:00Z)"),
        at("2026-03-08T02:30:00Z", AtProblem::Shape)
    );

    assert_eq!(
        error("@every 5m"),
        ScheduleError::UnknownMacro {
            name: "@every 5m".into()
        }
    );
    assert_eq!(
        error("@reboot"),
        ScheduleError::UnknownMacro {
            name: "@reboot".into()
        }
    );
    assert!(matches!(
        error("every(5 minutes)"),
        ScheduleError::Unrecognized { .. }
    ));
    assert!(matches!(
        error("* * * * * (x)"),
        ScheduleError::Unrecognized { .. }
    ));
}

#[test]
fn long_garbage_is_clipped_in_messages() {
    let garbage = "x".repeat(10_000);
    let message = error(&format!("{garbage} * * * *")).to_string();
    assert!(message.len() < 200, "{message}");
    let zone_message = parse_zone(&garbage)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(zone_message.len() < 200, "{zone_message}");
}
