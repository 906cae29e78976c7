//! The shared flow state in Postgres: pacing slots under concurrent
//! claim transactions, the processors' sync (breaker moves, backoff,
//! retry-budget window) and the one probe per cooldown.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;
use sundial::store::{self, FlowDelta};

fn delta(key: &str) -> FlowDelta {
    FlowDelta {
        key: key.into(),
        requests: 0,
        retries: 0,
        successes: 0,
        failures: 0,
        trailing: 0,
        throttled: 0,
        admitted: 0,
        not_before: None,
        threshold: 3,
        window_secs: 60.0,
        cooldown_secs: 5.0,
    }
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-01T09:00:00Z")
        .unwrap()
        .to_utc()
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn failures_open_the_breaker_across_processors_and_a_success_closes_it(pool: PgPool) {
    let key = "api.internal:443".to_string();
    store::ensure_flow_states(&pool, std::slice::from_ref(&key))
        .await
        .unwrap();
    // Two processors see two failures each: four in a row, threshold 3.
    let two = FlowDelta {
        requests: 2,
        failures: 2,
        trailing: 2,
        ..delta(&key)
    };
    let rows = store::sync_flows(
        &pool,
        t0(),
        10.0,
        std::slice::from_ref(&two),
        std::slice::from_ref(&key),
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].breaker.as_str(), rows[0].failures), ("closed", 2));
    let now = t0() + Duration::seconds(1);
    let rows = store::sync_flows(&pool, now, 10.0, &[two], std::slice::from_ref(&key))
        .await
        .unwrap();
    assert_eq!(rows[0].breaker, "open");
    assert_eq!(rows[0].was_breaker.as_deref(), Some("closed"));
    assert_eq!(rows[0].opened_at, Some(now));
    assert_eq!(rows[0].probe_at, Some(now + Duration::seconds(5)));

    // One probe per cooldown, whoever asks.
    let early = now + Duration::seconds(4);
    assert!(!store::claim_probe(&pool, &key, early, 5.0).await.unwrap());
    let due = now + Duration::seconds(5);
    assert!(store::claim_probe(&pool, &key, due, 5.0).await.unwrap());
    assert!(!store::claim_probe(&pool, &key, due, 5.0).await.unwrap());

    // The probe answers: closed for everyone.
    let ok = FlowDelta {
        requests: 1,
        successes: 1,
        ..delta(&key)
    };
    let later = due + Duration::milliseconds(100);
    let rows = store::sync_flows(&pool, later, 10.0, &[ok], std::slice::from_ref(&key))
        .await
        .unwrap();
    assert_eq!(rows[0].breaker, "closed");
    assert_eq!(rows[0].was_breaker.as_deref(), Some("open"));
    assert_eq!(rows[0].closed_at, Some(later));
    assert_eq!(rows[0].failures, 0);
    // A watcher with nothing to push sees the same.
    let rows = store::sync_flows(&pool, later, 10.0, &[], std::slice::from_ref(&key))
        .await
        .unwrap();
    assert_eq!(rows[0].breaker, "closed");
    assert_eq!(rows[0].was_breaker, None);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn failures_outside_the_window_do_not_add_up(pool: PgPool) {
    let key = "slow.internal:80".to_string();
    store::ensure_flow_states(&pool, std::slice::from_ref(&key))
        .await
        .unwrap();
    let two = FlowDelta {
        requests: 2,
        failures: 2,
        trailing: 2,
        ..delta(&key)
    };
    store::sync_flows(&pool, t0(), 10.0, std::slice::from_ref(&two), &[])
        .await
        .unwrap();
    // Two more, two minutes later: the window (60 s) started afresh.
    let rows = store::sync_flows(
        &pool,
        t0() + Duration::minutes(2),
        10.0,
        &[two],
        std::slice::from_ref(&key),
    )
    .await
    .unwrap();
    assert_eq!((rows[0].breaker.as_str(), rows[0].failures), ("closed", 2));
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn backoff_and_budget_windows_are_shared(pool: PgPool) {
    let key = "busy.internal:443".to_string();
    store::ensure_flow_states(&pool, std::slice::from_ref(&key))
        .await
        .unwrap();
    let until = t0() + Duration::seconds(2);
    let throttled = FlowDelta {
        requests: 10,
        retries: 2,
        successes: 10,
        throttled: 1,
        not_before: Some(until),
        ..delta(&key)
    };
    let rows = store::sync_flows(
        &pool,
        t0(),
        10.0,
        std::slice::from_ref(&throttled),
        std::slice::from_ref(&key),
    )
    .await
    .unwrap();
    assert_eq!(rows[0].not_before, Some(until));
    assert_eq!((rows[0].window_requests, rows[0].window_retries), (10, 2));
    // An earlier backoff never shortens a later one.
    let shorter = FlowDelta {
        not_before: Some(t0() + Duration::seconds(1)),
        ..throttled.clone()
    };
    let rows = store::sync_flows(
        &pool,
        t0() + Duration::seconds(1),
        10.0,
        &[shorter],
        std::slice::from_ref(&key),
    )
    .await
    .unwrap();
    assert_eq!(rows[0].not_before, Some(until));
    assert_eq!((rows[0].window_requests, rows[0].window_retries), (20, 4));
    // The window turns after 10 s.
    let rows = store::sync_flows(
        &pool,
        t0() + Duration::seconds(11),
        10.0,
        &[throttled],
        std::slice::from_ref(&key),
    )
    .await
    .unwrap();
    assert_eq!((rows[0].window_requests, rows[0].window_retries), (10, 2));
    let (total,): (i64,) = sqlx::query_as("SELECT throttled_total FROM flow_state WHERE key = $1")
        .bind(&key)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(total, 3);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn concurrent_claim_transactions_share_one_pacing_schedule(pool: PgPool) {
    let key = "paced.internal:443";
    sqlx::query("INSERT INTO flows (key, rate_per_sec, burst) VALUES ($1, 10, 1)")
        .bind(key)
        .execute(&pool)
        .await
        .unwrap();
    let wants: Vec<(&str, DateTime<Utc>)> = (0..20).map(|_| (key, t0())).collect();
    // Two scanners pace 20 requests each, in overlapping transactions.
    let run = |pool: PgPool, wants: Vec<(&'static str, DateTime<Utc>)>| async move {
        let mut tx = pool.begin().await.unwrap();
        let at = store::pace_dispatch(&mut tx, t0(), &wants).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        tx.commit().await.unwrap();
        at
    };
    let (a, b) = tokio::join!(run(pool.clone(), wants.clone()), run(pool.clone(), wants));
    let mut all: Vec<DateTime<Utc>> = a.into_iter().chain(b).collect();
    all.sort();
    let expected: Vec<DateTime<Utc>> = (0..40)
        .map(|k| t0() + Duration::milliseconds(100 * k))
        .collect();
    assert_eq!(all, expected, "one slot every 100 ms, none shared");
    // A flow without limits keeps its instants (and gets no state row).
    let mut tx = pool.begin().await.unwrap();
    let free = store::pace_dispatch(&mut tx, t0(), &[("free.internal:80", t0())])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(free, vec![t0()]);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn tasks_get_their_flow_by_trigger(pool: PgPool) {
    let rows: Vec<(String,)> = sqlx::query_as(
        "INSERT INTO tasks (name, schedule, url, flow_key) VALUES \
           ('a', 'rate(1 minute)', 'http://Example.COM/x', NULL), \
           ('b', 'rate(1 minute)', 'https://example.com/x', NULL), \
           ('c', 'rate(1 minute)', 'http://127.0.0.1:8080/x', NULL), \
           ('d', 'rate(1 minute)', 'http://[::1]:9/x', NULL), \
           ('e', 'rate(1 minute)', 'https://user:pw@api.example.com/x', NULL), \
           ('f', 'rate(1 minute)', 'https://h1.example.com/x', 'shared-api') \
         RETURNING flow",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let flows: Vec<&str> = rows.iter().map(|(f,)| f.as_str()).collect();
    assert_eq!(
        flows,
        [
            "example.com:80",
            "example.com:443",
            "127.0.0.1:8080",
            "[::1]:9",
            "api.example.com:443",
            "shared-api"
        ]
    );
    let (flow,): (String,) =
        sqlx::query_as("UPDATE tasks SET url = 'http://other:81/' WHERE name = 'a' RETURNING flow")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(flow, "other:81");
}

/// Syncs one processor's delta at `at` and returns the flow's learned rate.
async fn learned_after(pool: &PgPool, at: DateTime<Utc>, d: FlowDelta) -> Option<f64> {
    let key = d.key.clone();
    let rows = store::sync_flows(pool, at, 10.0, &[d], &[key])
        .await
        .unwrap();
    rows[0].learned_rate
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn a_429_teaches_the_flow_the_rate_its_target_admitted(pool: PgPool) {
    use sundial::flow::learn;
    let key = "fast.internal:80".to_string();
    store::ensure_flow_states(&pool, std::slice::from_ref(&key))
        .await
        .unwrap();
    let admitted = |n: i64| FlowDelta {
        requests: n,
        successes: n,
        admitted: n,
        ..delta(&key)
    };
    let throttled = |n: i64, ok: i64| FlowDelta {
        requests: n + ok,
        successes: n + ok,
        admitted: ok,
        throttled: n,
        ..delta(&key)
    };
    let at = |ms: i64| t0() + Duration::milliseconds(ms);
    // Calm traffic teaches nothing.
    assert_eq!(learned_after(&pool, at(100), admitted(12)).await, None);
    // Processor A: 8 more admitted, then 429s: 0.9 × 20 admitted this second.
    assert_eq!(
        learned_after(&pool, at(300), throttled(5, 8)).await,
        Some(18.0)
    );
    // Processor B's admissions of the same second arrive within the episode:
    // they raise it (the target admitted 30 in that second).
    let raised = learned_after(&pool, at(500), throttled(3, 10)).await;
    assert_eq!(raised, Some(27.0));
    // A later 429 in the same episode does not lower it again.
    assert_eq!(
        learned_after(&pool, at(900), throttled(4, 0)).await,
        Some(27.0)
    );
    // A 429 after the episode: a new one, from the busier of this second and
    // the last (30 in second 0; 15 so far in second 2 ⇒ second 1 had none).
    let next = learned_after(&pool, at(2_100), throttled(2, 15)).await;
    assert_eq!(next, Some(13.5));
    // Calm but idle seconds do not grow it …
    assert_eq!(
        learned_after(&pool, at(9_000), admitted(0)).await,
        Some(13.5)
    );
    // … a calm second that used the rate does (after GROW_AFTER), once per second.
    assert_eq!(
        learned_after(&pool, at(9_500), admitted(14)).await,
        Some(13.5)
    );
    let grown = learned_after(&pool, at(10_100), admitted(1)).await;
    assert_eq!(grown, Some(14.5), "13.5 + max(1, 5 %)");
    assert_eq!(
        learned_after(&pool, at(10_600), admitted(1)).await,
        Some(14.5)
    );
    // A minute without a 429 forgets it.
    let forget = 2_100 + learn::FORGET_AFTER.as_millis() as i64 + 1_000;
    assert_eq!(learned_after(&pool, at(forget), admitted(3)).await, None);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn a_learned_rate_paces_dispatch_like_an_operators_rate(pool: PgPool) {
    let key = "fast.internal:80".to_string();
    store::ensure_flow_states(&pool, std::slice::from_ref(&key))
        .await
        .unwrap();
    let taught = FlowDelta {
        requests: 30,
        successes: 30,
        admitted: 10,
        throttled: 20,
        ..delta(&key)
    };
    assert_eq!(learned_after(&pool, t0(), taught).await, Some(9.0));
    let wants: Vec<(&str, DateTime<Utc>)> = (0..10).map(|_| (key.as_str(), t0())).collect();
    let mut tx = pool.begin().await.unwrap();
    let slots = store::pace_dispatch(&mut tx, t0(), &wants).await.unwrap();
    tx.commit().await.unwrap();
    let last = slots.iter().max().copied().unwrap();
    // Ten requests at 9/s, burst 1: the last one 9 intervals after the first.
    let gap = (last - t0()).num_milliseconds();
    assert!(
        (999..=1_001).contains(&gap),
        "last slot {gap} ms after the first"
    );
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn a_429_among_a_handful_of_requests_teaches_no_rate(pool: PgPool) {
    use sundial::flow::learn;
    let key = "few.internal:80".to_string();
    store::ensure_flow_states(&pool, std::slice::from_ref(&key))
        .await
        .unwrap();
    let few = FlowDelta {
        requests: 3,
        successes: 3,
        admitted: learn::MIN_ADMITTED - 1,
        throttled: 1,
        ..delta(&key)
    };
    assert_eq!(learned_after(&pool, t0(), few).await, None);
    let enough = FlowDelta {
        requests: 2,
        successes: 2,
        admitted: 1,
        throttled: 1,
        ..delta(&key)
    };
    // With the second's earlier admissions it is enough: 0.9 × 5.
    let rate = learned_after(&pool, t0() + Duration::milliseconds(100), enough).await;
    assert_eq!(rate, Some(0.9 * learn::MIN_ADMITTED as f64));
}
