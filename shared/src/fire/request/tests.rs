use super::*;
use chrono::TimeZone;

#[test]
fn retry_after_delta_and_date() {
    let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).unwrap();
    assert_eq!(
        parse_retry_after("120", now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
    assert_eq!(parse_retry_after("100000", now), Some(MAX_RETRY_AFTER));
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(
        parse_retry_after("Thu, 22 Oct 2015 07:28:00 GMT", now),
        Some(MAX_RETRY_AFTER)
    );
    assert_eq!(parse_retry_after("soon", now), None);
    assert_eq!(parse_retry_after("-5", now), None);
}

#[test]
fn retry_delay_is_bounded_jittered_and_honours_retry_after() {
    let base = Duration::from_millis(100);
    let max = Duration::from_secs(10);
    for attempt in 0..40 {
        let ceiling = if attempt < 7 {
            base * 2u32.pow(attempt)
        } else {
            max
        };
        for _ in 0..50 {
            let d = retry_delay(attempt, base, max, None);
            assert!(d <= ceiling, "attempt {attempt}: {d:?} > {ceiling:?}");
        }
    }
    // Full jitter: samples spread out, not all at the ceiling.
    let samples: Vec<_> = (0..100).map(|_| retry_delay(5, base, max, None)).collect();
    assert!(samples.iter().any(|d| *d < Duration::from_millis(1600)));
    // Retry-After is a floor, even above `max`.
    let ra = Some(Duration::from_secs(30));
    for attempt in 0..10 {
        assert!(retry_delay(attempt, base, max, ra) >= Duration::from_secs(30));
    }
    assert_eq!(retry_delay(0, Duration::ZERO, max, None), Duration::ZERO);
}

#[test]
fn status_classification() {
    let s = |c| Verdict::from_status(StatusCode::from_u16(c).unwrap(), None);
    assert_eq!(s(200), Verdict::Succeeded);
    assert_eq!(s(204), Verdict::Succeeded);
    assert!(s(500).is_retryable());
    assert!(s(503).is_retryable());
    assert!(s(429).is_retryable());
    assert!(s(408).is_retryable());
    assert_eq!(s(404), Verdict::Failed);
    assert_eq!(s(400), Verdict::Failed);
    assert_eq!(s(302), Verdict::Failed);
    assert_eq!(s(304), Verdict::Failed);
}

#[test]
fn truncation_respects_char_boundaries() {
    assert_eq!(truncate_utf8("héllo".into(), 2), "h");
    assert_eq!(truncate_utf8("abc".into(), 10), "abc");
}
