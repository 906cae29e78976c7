//! Backfill's limits and its recovery, against real Postgres through the
//! admin router and the in-process queue adapter (the scale is the
//! queue's, not the emulator's): the 10,000-occurrence cap, input errors
//! that name the field, and a dispatch that stops half-way (the queue
//! refused, or the dispatcher died holding its lease) and is finished by
//! the scanner's round with nothing lost.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, DurationRound, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use sundial::queue::memory::MemoryQueue;
use sundial_testkit::TaskBuilder;
use tower::ServiceExt;

const TOKEN: &str = "backfill-limits-token";

fn router(pool: &PgPool, queue: Arc<MemoryQueue>) -> axum::Router {
    let guard = sundial::fire::TargetGuard::new(&["127.0.0.1/32".to_string()]).unwrap();
    let state = sundial::admin::AdminState::new(pool.clone(), queue, Arc::new(guard), TOKEN);
    sundial::admin::router(state)
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A per-second task whose own schedule stays out of the way.
async fn per_second_task(pool: &PgPool, name: &str) -> i64 {
    TaskBuilder::new()
        .name(name)
        .schedule("rate(1 second)")
        .url("http://127.0.0.1:9/never")
        .next_run_at(Utc::now() + chrono::Duration::days(1))
        .insert(pool)
        .await
        .id
}

fn start() -> DateTime<Utc> {
    (Utc::now() - chrono::Duration::days(2))
        .duration_trunc(chrono::Duration::hours(1))
        .unwrap()
}

fn occurrences_of(messages: &[sundial::message::DispatchMessage]) -> BTreeSet<DateTime<Utc>> {
    messages.iter().map(|m| m.occurrence).collect()
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn the_cap_is_10000_occurrences_and_bad_input_names_the_field(pool: PgPool) {
    let queue = Arc::new(MemoryQueue::new(20_000));
    let app = router(&pool, queue.clone());
    let task = per_second_task(&pool, "every-second").await;
    let from = start();
    let path = format!("/v1/tasks/{task}/backfill");
    let at = |secs: i64| from + chrono::Duration::seconds(secs);

    // 10,001 occurrences: a 400 naming the range, and nothing stored or sent.
    let (status, body) = call(
        &app,
        "POST",
        &path,
        Some(json!({"from": from, "to": at(10_001)})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "to");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("more than 10000 occurrences"), "{message}");
    assert!(
        message.contains(&from.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        "{message}"
    );
    assert!(queue.is_empty());
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM backfills")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);

    // Bad input: each a 400 (or 404/409) naming what is wrong.
    let cases = [
        (json!({"to": at(10)}), StatusCode::BAD_REQUEST, Some("from")),
        (
            json!({"from": "yesterday", "to": at(10)}),
            StatusCode::BAD_REQUEST,
            Some("from"),
        ),
        (
            json!({"from": at(10), "to": at(10)}),
            StatusCode::BAD_REQUEST,
            Some("to"),
        ),
        (
            json!({"from": at(0), "to": Utc::now() + chrono::Duration::hours(1)}),
            StatusCode::BAD_REQUEST,
            Some("to"),
        ),
        (
            json!({"from": at(0), "to": at(10), "mode": "sometimes"}),
            StatusCode::BAD_REQUEST,
            Some("mode"),
        ),
        (
            json!({"from": at(0), "to": at(10), "colour": "red"}),
            StatusCode::BAD_REQUEST,
            Some("colour"),
        ),
        (
            json!([at(0), at(10)]),
            StatusCode::BAD_REQUEST,
            Some("body"),
        ),
    ];
    for (body, expected, field) in cases {
        let (status, answer) = call(&app, "POST", &path, Some(body.clone())).await;
        assert_eq!(status, expected, "{body} → {answer}");
        assert_eq!(
            answer["error"]["field"].as_str(),
            field,
            "{body} → {answer}"
        );
    }
    let (status, _) = call(
        &app,
        "POST",
        "/v1/tasks/999999/backfill",
        Some(json!({"from": at(0), "to": at(10)})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, answer) = call(&app, "GET", "/v1/backfills/999999", None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("backfill_not_found"))
    );
    let (status, answer) = call(&app, "GET", "/v1/backfills/abc", None).await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id"))
    );
    sqlx::query("UPDATE tasks SET enabled = false WHERE id = $1")
        .bind(task)
        .execute(&pool)
        .await
        .unwrap();
    let (status, _) = call(
        &app,
        "POST",
        &path,
        Some(json!({"from": at(0), "to": at(10)})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    sqlx::query(
        "UPDATE tasks SET enabled = true, next_run_at = now() + interval '1 day' WHERE id = $1",
    )
    .bind(task)
    .execute(&pool)
    .await
    .unwrap();

    // Exactly 10,000: accepted, and every one dispatched once, in chunks
    // (what the request did not finish, the scanner's round does).
    let (status, body) = call(
        &app,
        "POST",
        &path,
        Some(json!({"from": from, "to": at(10_000), "mode": "all"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["requested"], 10_000);
    let id = body["id"].as_i64().unwrap();
    let mut rounds = 0;
    loop {
        let (_, progress) = call(&app, "GET", &format!("/v1/backfills/{id}"), None).await;
        if progress["state"] != "dispatching" {
            assert_eq!(progress["dispatched"], 10_000, "{progress}");
            break;
        }
        rounds += 1;
        assert!(rounds < 100, "the backfill does not finish: {progress}");
        sundial::backfill::continue_backfills(&pool, queue.as_ref(), Duration::from_secs(10)).await;
    }
    let sent = queue.drain();
    assert_eq!(sent.len(), 10_000);
    assert_eq!(occurrences_of(&sent), (0..10_000).map(at).collect());
    assert!(sent
        .iter()
        .all(|m| m.backfill.is_some_and(|b| b.id == id && !b.rerun)));
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn a_backfill_stopped_half_way_is_finished_by_the_scanner_with_nothing_lost(pool: PgPool) {
    // GIVEN a queue that takes 250 messages and refuses the rest.
    let small = Arc::new(MemoryQueue::new(250));
    let app = router(&pool, small.clone());
    let task = per_second_task(&pool, "interrupted").await;
    let from = start();
    let to = from + chrono::Duration::seconds(1000);

    // WHEN a backfill of 1000 occurrences is asked for.
    let body = json!({"from": from, "to": to});
    let (status, progress) = call(
        &app,
        "POST",
        &format!("/v1/tasks/{task}/backfill"),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{progress}");
    let id = progress["id"].as_i64().unwrap();

    // THEN it stops at the refusal, with the cursor just before it and
    // the reason noted, still `dispatching`.
    assert_eq!(progress["state"], "dispatching", "{progress}");
    assert_eq!(progress["dispatched"], 250, "{progress}");
    assert!(
        progress["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("queue is full"),
        "{progress}"
    );
    let first_part = small.drain();

    // WHEN a dispatcher then dies holding the lease (it is in the future),
    // the scanner's round leaves it alone ...
    let big = Arc::new(MemoryQueue::new(20_000));
    sqlx::query("UPDATE backfills SET lease_until = now() + interval '1 hour' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let round =
        sundial::backfill::continue_backfills(&pool, big.as_ref(), Duration::from_secs(10)).await;
    assert_eq!(round.dispatched, 0);
    // ... and once the lease has expired, it finishes the rest.
    sqlx::query("UPDATE backfills SET lease_until = now() - interval '1 second' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let round =
        sundial::backfill::continue_backfills(&pool, big.as_ref(), Duration::from_secs(10)).await;
    assert!(round.finished);
    assert_eq!(round.dispatched, 750);

    // THEN every occurrence was sent, none twice.
    let rest = big.drain();
    let all: Vec<_> = first_part.iter().chain(&rest).cloned().collect();
    assert_eq!(all.len(), 1000);
    let expected: BTreeSet<_> = (0..1000)
        .map(|s| from + chrono::Duration::seconds(s))
        .collect();
    assert_eq!(occurrences_of(&all), expected);
    let (_, progress) = call(&app, "GET", &format!("/v1/backfills/{id}"), None).await;
    assert_eq!(progress["state"], "dispatched", "{progress}");
    assert_eq!(progress["dispatched"], 1000);
    assert!(progress["last_error"].is_null(), "{progress}");
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn a_backfill_is_paced_by_its_flow_and_waits_while_the_flow_is_booked(pool: PgPool) {
    // GIVEN a task whose flow is limited to 2 requests per second.
    let queue = Arc::new(MemoryQueue::new(20_000));
    let app = router(&pool, queue.clone());
    let task = per_second_task(&pool, "paced").await;
    sqlx::query("INSERT INTO flows (key, rate_per_sec, burst) VALUES ('127.0.0.1:9', 2, 1)")
        .execute(&pool)
        .await
        .unwrap();
    let from = start();
    let to = from + chrono::Duration::seconds(300);

    // WHEN 300 occurrences are backfilled.
    let body = json!({"from": from, "to": to});
    let (status, progress) = call(
        &app,
        "POST",
        &format!("/v1/tasks/{task}/backfill"),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{progress}");

    // THEN its chunks take the flow's slots, half a second apart: after the
    // first the flow is booked 50 s ahead (within the 60 s a backfill may
    // book), after the second 100 s, so the third waits for a later round.
    let (_, progress) = call(
        &app,
        "GET",
        &format!("/v1/backfills/{}", progress["id"]),
        None,
    )
    .await;
    assert_eq!(progress["state"], "dispatching", "{progress}");
    assert_eq!(progress["dispatched"], 200, "{progress}");
    let mut sent = queue.drain();
    sent.sort_by_key(|m| m.fire_at);
    let fire_at: Vec<DateTime<Utc>> = sent.iter().filter_map(|m| m.fire_at).collect();
    assert_eq!(fire_at.len(), 200);
    for pair in fire_at.windows(2) {
        // (The flow's slot is kept to the microsecond between chunks.)
        let gap = (pair[1] - pair[0]).num_microseconds().unwrap();
        assert!((499_999..=500_001).contains(&gap), "{gap} µs");
    }
    assert!(sent.iter().skip(1).all(|m| m.paced_ms > 0));
    let round =
        sundial::backfill::continue_backfills(&pool, queue.as_ref(), Duration::from_secs(10)).await;
    assert_eq!(round.dispatched, 0, "the flow is still booked ahead");
}
