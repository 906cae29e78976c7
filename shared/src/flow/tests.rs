//! Flow control rules without a database (the pool is never used).

use super::*;

/// A flow control whose pool is never used by the calls under test.
fn control(settings: FlowSettings) -> FlowControl {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://127.0.0.1:1/unused")
        .expect("lazy pool");
    FlowControl::new(pool, settings)
}

fn answer(status: Option<u16>, verdict: Verdict) -> FireResult {
    FireResult {
        started_at: Utc::now(),
        latency: Duration::from_millis(5),
        verdict,
        http_status: status,
        error: None,
        response_excerpt: None,
    }
}

fn down() -> FireResult {
    answer(
        None,
        Verdict::Retryable {
            retry_after: None,
            timed_out: false,
        },
    )
}

fn throttled() -> FireResult {
    answer(
        Some(429),
        Verdict::Retryable {
            retry_after: Some(Duration::from_secs(2)),
            timed_out: false,
        },
    )
}

#[tokio::test]
async fn a_429_holds_the_flow_until_retry_after() {
    let flows = control(FlowSettings::default());
    let now = Utc::now();
    assert_eq!(flows.gate("a:443", now, 1), Gate::Go);
    flows.observe("a:443", &throttled(), Some(Duration::from_secs(2)));
    match flows.gate("a:443", now, 1) {
        Gate::Hold { until, why } => {
            assert_eq!(why, HoldReason::Backoff);
            let wait = until - now;
            assert!(wait >= chrono::Duration::milliseconds(1_900), "{wait}");
            assert!(wait <= chrono::Duration::milliseconds(2_400), "{wait}");
        }
        other => panic!("{other:?}"),
    }
    // Other flows are not affected; the flow itself goes after it.
    assert_eq!(flows.gate("b:443", now, 1), Gate::Go);
    assert_eq!(
        flows.gate("a:443", now + chrono::Duration::seconds(3), 1),
        Gate::Go
    );
    assert_eq!(flows.take_counters().throttled, 1);
}

#[tokio::test]
async fn consecutive_failures_open_the_flow_and_a_success_closes_it() {
    let flows = control(FlowSettings {
        breaker_failures: 3,
        breaker_cooldown: Duration::from_secs(10),
        ..FlowSettings::default()
    });
    let now = Utc::now();
    flows.observe("h:80", &down(), None);
    flows.observe("h:80", &down(), None);
    // A 404 is an answer: the host is up, the count starts again.
    flows.observe("h:80", &answer(Some(404), Verdict::Failed), None);
    flows.observe("h:80", &down(), None);
    flows.observe("h:80", &down(), None);
    assert_eq!(flows.gate("h:80", now, 7), Gate::Go);
    flows.observe("h:80", &down(), None);
    tokio::time::sleep(Duration::from_millis(2)).await;
    let while_open = Utc::now();
    tokio::time::sleep(Duration::from_millis(2)).await;
    match flows.gate("h:80", Utc::now(), 7) {
        Gate::Hold { why, until } => {
            assert_eq!(why, HoldReason::Open(OnOpen::FireLatest));
            assert!(until > now + chrono::Duration::seconds(9));
        }
        other => panic!("{other:?}"),
    }
    // At the probe instant, one may go.
    let later = Utc::now() + chrono::Duration::seconds(11);
    assert_eq!(flows.gate("h:80", later, 7), Gate::Probe);
    flows.observe("h:80", &answer(Some(200), Verdict::Succeeded), None);
    assert_eq!(flows.gate("h:80", later, 7), Gate::Go);
    // Occurrences of the open period are known as such afterwards.
    assert_eq!(
        flows.missed_while_open("h:80", while_open),
        Some(OnOpen::FireLatest)
    );
    assert_eq!(
        flows.missed_while_open("h:80", now - chrono::Duration::seconds(60)),
        None
    );
}

#[tokio::test]
async fn retries_beyond_the_budget_wait_for_the_next_window() {
    let flows = control(FlowSettings {
        retry_budget: 0.1,
        ..FlowSettings::default()
    });
    let now = Utc::now();
    // 50 requests: budget max(10, 5) = 10 retries in this window.
    for _ in 0..50 {
        flows.observe("busy:443", &answer(Some(500), Verdict::Failed), None);
    }
    let wanted = now + chrono::Duration::milliseconds(200);
    for k in 0..10 {
        assert_eq!(
            flows.retry_at("busy:443", wanted, now),
            (wanted, false),
            "retry {k}"
        );
    }
    let (at, delayed) = flows.retry_at("busy:443", wanted, now);
    assert!(delayed);
    assert!(
        at >= now + chrono::Duration::from_std(BUDGET_WINDOW).unwrap(),
        "{at}"
    );
    assert_eq!(flows.take_counters().budget_delayed, 1);
}

#[tokio::test]
async fn throttling_shrinks_the_flows_concurrency() {
    let flows = control(FlowSettings {
        per_flow_cap: 40,
        initial_limit: usize::MAX,
        ..FlowSettings::default()
    });
    assert_eq!(flows.in_flight_limit("x:443"), 40);
    flows.observe("x:443", &throttled(), None);
    assert_eq!(flows.in_flight_limit("x:443"), 20);
    assert_eq!(flows.in_flight_limit("y:443"), 40);
}

#[test]
fn health_of_answers() {
    assert_eq!(Health::of(&throttled()), Health::Throttled);
    assert_eq!(
        Health::of(&answer(Some(503), Verdict::Failed)),
        Health::Unavailable
    );
    assert_eq!(
        Health::of(&answer(Some(502), Verdict::Failed)),
        Health::Down
    );
    assert_eq!(Health::of(&answer(Some(404), Verdict::Failed)), Health::Up);
    assert_eq!(Health::of(&down()), Health::Down);
    assert_eq!(Health::of(&answer(None, Verdict::Refused)), Health::Neutral);
}
