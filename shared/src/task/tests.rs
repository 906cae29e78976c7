use super::*;
use chrono::Duration;

fn spec() -> TaskSpec {
    TaskSpec::new("t", "rate(1 minute)", "https://example.com/hook")
}

#[test]
fn defaults_validate() {
    let mut s = spec();
    s.method = "post".into();
    s.validate().unwrap();
    assert_eq!(s.method, "POST");
}

#[test]
fn each_bad_field_is_named() {
    type Mutation = Box<dyn Fn(&mut TaskSpec)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("name", Box::new(|s| s.name = " ".into())),
        ("schedule", Box::new(|s| s.schedule = "every day".into())),
        ("timezone", Box::new(|s| s.timezone = "Mars/Base".into())),
        ("method", Box::new(|s| s.method = "FETCH".into())),
        ("url", Box::new(|s| s.url = "ftp://example.com".into())),
        ("url", Box::new(|s| s.url = "not a url".into())),
        ("url", Box::new(|s| s.url = "http://u:p@example.com".into())),
        ("timeout_ms", Box::new(|s| s.timeout_ms = 10)),
        ("timeout_ms", Box::new(|s| s.timeout_ms = 1_000_000)),
        ("max_attempts", Box::new(|s| s.max_attempts = 0)),
        ("jitter_secs", Box::new(|s| s.jitter_secs = -1)),
        (
            "headers",
            Box::new(|s| {
                s.headers.insert("Bad Name".into(), "x".into());
            }),
        ),
        (
            "headers",
            Box::new(|s| {
                s.headers.insert("Idempotency-Key".into(), "x".into());
            }),
        ),
        ("body", Box::new(|s| s.body = Some("x".repeat(70_000)))),
    ];
    for (field, mutate) in cases {
        let mut s = spec();
        mutate(&mut s);
        let err = s.validate().unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
}

#[test]
fn ambiguous_url_spellings_are_refused() {
    for raw in [
        "http:8.8.8.8",
        "http:/8.8.8.8/",
        "http:\\\\8.8.8.8\\",
        "http://8.8.8.8\\x",
        "\u{1}http://8.8.8.8/",
        "http://8.8.8.8/\u{0}",
        "http://example.com/\u{1b}[2J",
        "http://exa mple.com/",
        "http://example.com/a\tb",
        "http://example.com/\u{202e}",
        "javascript:alert(1)",
        "//example.com/",
    ] {
        let err = validate_url(raw).unwrap_err();
        assert_eq!(err.field, "url", "{raw:?}");
    }
}

#[test]
fn the_stored_url_is_the_canonical_one() {
    let mut s = spec();
    s.url = "  HTTPS://Example.COM:443/a/../b?q=é  ".into();
    s.validate().unwrap();
    assert_eq!(s.url, "https://example.com/b?q=%C3%A9");
    // Long once percent-encoded: refused, not cut.
    let long = format!("https://example.com/{}", "é".repeat(700));
    assert!(long.len() <= MAX_URL_CHARS);
    assert_eq!(validate_url(&long).unwrap_err().field, "url");
}

#[test]
fn text_fields_refuse_control_characters() {
    type Mutation = Box<dyn Fn(&mut TaskSpec)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("name", Box::new(|s| s.name = "a\u{0}b".into())),
        ("name", Box::new(|s| s.name = "a\u{1b}[2Jb".into())),
        ("name", Box::new(|s| s.name = "a\u{9b}b".into())),
        (
            "schedule",
            Box::new(|s| s.schedule = "rate(1 minute)\u{0}".into()),
        ),
        ("timezone", Box::new(|s| s.timezone = "UTC\u{0}".into())),
        ("body", Box::new(|s| s.body = Some("a\u{0}b".into()))),
        ("body", Box::new(|s| s.body = Some("\u{1b}[2J".into()))),
        (
            "headers",
            Box::new(|s| {
                s.headers.insert("X-A".into(), "a\u{0}".into());
            }),
        ),
        (
            "headers",
            Box::new(|s| {
                s.headers.insert("X-A".into(), "a\u{85}".into());
            }),
        ),
    ];
    for (field, mutate) in cases {
        let mut s = spec();
        mutate(&mut s);
        let err = s.validate().unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
    let mut s = spec();
    s.body = Some("line 1\r\n\tline 2\n".into());
    s.headers.insert("X-A".into(), "a\tb".into());
    s.validate().unwrap();
}

#[test]
fn unknown_fields_are_rejected() {
    let err = serde_json::from_str::<TaskSpec>(
        r#"{"name":"a","schedule":"rate(1 minute)","url":"https://x.io","colour":"red"}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("colour"), "{err}");
}

#[test]
fn stored_headers_must_be_strings() {
    let bad = sqlx::types::Json(serde_json::json!({"X-Count": 3}));
    assert_eq!(header_map(&bad).unwrap_err().field, "headers");
    let good = sqlx::types::Json(serde_json::json!({"X-Env": "prod"}));
    assert_eq!(header_map(&good).unwrap()["X-Env"], "prod");
}

#[test]
fn skip_catch_up_continues_from_now() {
    let t = Timing::parse("rate(1 minute)", "UTC", CatchUp::Skip, 3600).unwrap();
    let occ = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let now = occ + Duration::hours(3) + Duration::seconds(5);
    let next = t.next_after_run(occ, now).unwrap();
    assert!(next > now && next - now <= Duration::minutes(1));
}

#[test]
fn all_catch_up_walks_missed_occurrences_within_max_age() {
    let t = Timing::parse("rate(1 minute)", "UTC", CatchUp::All, 600).unwrap();
    let occ = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    // Shortly after: the very next minute.
    let next = t.next_after_run(occ, occ + Duration::seconds(90)).unwrap();
    assert_eq!(next, occ + Duration::minutes(1));
    // After 3 hours: no older than 10 minutes.
    let now = occ + Duration::hours(3);
    let next = t.next_after_run(occ, now).unwrap();
    assert_eq!(next, now - Duration::minutes(10));
}

#[test]
fn none_catch_up_skips_late_occurrences() {
    let t = Timing::parse("rate(1 minute)", "UTC", CatchUp::None, 0).unwrap();
    let occ = Utc::now();
    assert!(!t.should_skip(occ, occ + Duration::seconds(5)));
    assert!(t.should_skip(occ, occ + Duration::minutes(5)));
}
