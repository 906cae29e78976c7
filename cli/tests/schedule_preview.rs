//! `sundial schedule preview` as a user runs it.

use std::process::Command;

fn sundial(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sundial"))
        .args(args)
        .output()
        .expect("run sundial");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn prints_next_occurrences_in_utc() {
    let (ok, out, err) = sundial(&[
        "schedule",
        "preview",
        "30 2 * * *",
        "--tz",
        "America/New_York",
        "--from",
        "2026-03-07T12:00:00Z",
        "--count",
        "3",
    ]);
    assert!(ok, "{err}");
    // 8 March 2026 is spring-forward day: 02:30 does not exist and fires at
    // the jump (03:00 EDT = 07:00Z).
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![
            "2026-03-08T07:00:00Z",
            "2026-03-09T06:30:00Z",
            "2026-03-10T06:30:00Z"
        ]
    );
}

#[test]
fn json_output_is_an_array() {
    let (ok, out, _) = sundial(&[
        "schedule",
        "preview",
        "rate(15 minutes)",
        "--from",
        "2026-01-01T00:07:00Z",
        "--count",
        "2",
        "--json",
    ]);
    assert!(ok);
    let v: Vec<String> = serde_json::from_str(&out).unwrap();
    assert_eq!(v, vec!["2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z"]);
}

#[test]
fn invalid_expression_or_zone_fails_clearly() {
    let (ok, out, err) = sundial(&["schedule", "preview", "61 * * * *"]);
    assert!(!ok);
    assert!(out.is_empty());
    assert!(err.contains("minute") && err.contains("61"), "{err}");
    let (ok, _, err) = sundial(&["schedule", "preview", "@daily", "--tz", "Mars/Base"]);
    assert!(!ok);
    assert!(err.contains("Mars/Base"), "{err}");
    let (ok, _, err) = sundial(&["schedule", "preview", "@daily", "--from", "yesterday"]);
    assert!(!ok);
    assert!(err.contains("--from"), "{err}");
}
