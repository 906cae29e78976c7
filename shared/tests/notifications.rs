//! The notification outbox and auto-pause against a real Postgres: the
//! events the write-back statement raises (one `task.failing` and one
//! `task.recovered` per incident, `task.paused` at the threshold), and
//! the scanner's `task.missed` and `flow.opened` events, once each.

use chrono::{DateTime, Duration, DurationRound, Utc};
use sqlx::PgPool;
use sundial::store::{self, Outcome, OutcomeKind, RunRecord, RunStatus};
use sundial_testkit::TaskBuilder;

fn second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::seconds(1)).unwrap()
}

/// A finished run of the task's current occurrence, moving it on by a minute.
async fn finish(pool: &PgPool, id: i64, status: RunStatus, http: i32) -> store::Recorded {
    let task = store::get_task(pool, id).await.unwrap();
    let occurrence = task.next_run_at.unwrap();
    let outcome = Outcome {
        task_id: id,
        version: task.version,
        occurrence,
        kind: OutcomeKind::Finished {
            run: RunRecord {
                status,
                attempts: 3,
                fired_at: Some(occurrence),
                finished_at: Utc::now(),
                http_status: Some(http),
                latency_ms: Some(5),
                error: (status != RunStatus::Succeeded).then(|| format!("HTTP {http}")),
                response_excerpt: None,
                pacing_ms: None,
                trigger: sundial::trigger::Trigger::Schedule,
                backfill_id: None,
                rerun: 0,
            },
            next_run_at: Some(occurrence + Duration::minutes(1)),
            manual: false,
            chain_lease: None,
        },
    };
    store::record_outcomes(pool, &[outcome]).await.unwrap()
}

async fn kinds(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT kind FROM notifications ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn one_failing_and_one_recovered_event_per_incident(pool: PgPool) {
    let task = TaskBuilder::new()
        .name("flaky")
        .next_run_at(second(Utc::now()))
        .insert(&pool)
        .await;
    let first = finish(&pool, task.id, RunStatus::Failed, 500).await;
    assert_eq!(
        first.notifications.len(),
        1,
        "the write reports the event it raised"
    );
    for _ in 0..3 {
        let again = finish(&pool, task.id, RunStatus::TimedOut, 504).await;
        assert!(again.notifications.is_empty());
    }
    finish(&pool, task.id, RunStatus::Succeeded, 200).await;
    finish(&pool, task.id, RunStatus::Succeeded, 200).await;
    assert_eq!(kinds(&pool).await, ["task.failing", "task.recovered"]);
    // A new incident gets its own pair.
    finish(&pool, task.id, RunStatus::Failed, 500).await;
    finish(&pool, task.id, RunStatus::Succeeded, 200).await;
    assert_eq!(
        kinds(&pool).await,
        [
            "task.failing",
            "task.recovered",
            "task.failing",
            "task.recovered"
        ]
    );
    let payload: serde_json::Value =
        sqlx::query_scalar("SELECT payload FROM notifications ORDER BY id LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(payload["task"]["name"], "flaky");
    assert_eq!(payload["run"]["http_status"], 500);
    assert_eq!(payload["run"]["attempts"], 3);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn the_threshold_failure_pauses_the_task_and_says_why(pool: PgPool) {
    let task = TaskBuilder::new()
        .name("doomed")
        .next_run_at(second(Utc::now()))
        .insert(&pool)
        .await;
    sqlx::query("UPDATE tasks SET pause_after_failures = 2 WHERE id = $1")
        .bind(task.id)
        .execute(&pool)
        .await
        .unwrap();
    finish(&pool, task.id, RunStatus::Failed, 503).await;
    assert!(store::get_task(&pool, task.id).await.unwrap().enabled);
    finish(&pool, task.id, RunStatus::TimedOut, 504).await;
    let row = store::get_task(&pool, task.id).await.unwrap();
    assert!(!row.enabled);
    assert_eq!(row.alerting.paused_by.as_deref(), Some("sundial"));
    assert_eq!(
        row.alerting.paused_reason.as_deref(),
        Some("2 consecutive failures; last: HTTP 504")
    );
    assert!(row.lease_until.is_none());
    assert_eq!(kinds(&pool).await, ["task.failing", "task.paused"]);

    // A resume clears the pause and the count, not the open incident.
    let mut tx = pool.begin().await.unwrap();
    let resumed = store::set_enabled(&mut tx, task.id, true, Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(resumed.consecutive_failures, 0);
    assert!(resumed.alerting.paused_at.is_none() && resumed.alerting.paused_reason.is_none());
    assert!(resumed.alerting.failing_since.is_some());
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn a_plain_sql_pause_records_who_and_why(pool: PgPool) {
    let task = TaskBuilder::new()
        .name("by-hand")
        .next_run_at(second(Utc::now()))
        .insert(&pool)
        .await;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('sundial.actor', 'ops@example', true), set_config('sundial.reason', 'maintenance', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE tasks SET enabled = false WHERE id = $1")
        .bind(task.id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let row = store::get_task(&pool, task.id).await.unwrap();
    assert_eq!(row.alerting.paused_by.as_deref(), Some("ops@example"));
    assert_eq!(row.alerting.paused_reason.as_deref(), Some("maintenance"));
    assert!(row.alerting.paused_at.is_some());
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn missed_occurrences_and_flow_openings_are_raised_once_each(pool: PgPool) {
    let now = Utc::now();
    let stuck = TaskBuilder::new()
        .name("stuck")
        .next_run_at(second(now - Duration::minutes(10)))
        .insert(&pool)
        .await;
    TaskBuilder::new()
        .name("on-time")
        .next_run_at(second(now + Duration::minutes(1)))
        .insert(&pool)
        .await;
    sqlx::query("INSERT INTO flow_state (key, breaker, opened_at, probe_at) VALUES ('api:443', 'open', $1, $1)")
        .bind(now)
        .execute(&pool)
        .await
        .unwrap();
    store::raise_missed(&pool, Utc::now(), Duration::seconds(120))
        .await
        .unwrap();
    store::raise_flow_opened(&pool, Utc::now()).await.unwrap();
    sundial::notify::raise_scanner_events(&pool).await;
    assert_eq!(kinds(&pool).await, ["task.missed", "flow.opened"]);

    // The next stuck occurrence, and the next opening, are new incidents.
    sqlx::query("UPDATE tasks SET next_run_at = next_run_at + interval '1 minute' WHERE id = $1")
        .bind(stuck.id)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE flow_state SET opened_at = opened_at + interval '1 minute'")
        .execute(&pool)
        .await
        .unwrap();
    sundial::notify::raise_scanner_events(&pool).await;
    assert_eq!(
        kinds(&pool).await,
        ["task.missed", "flow.opened", "task.missed", "flow.opened"]
    );
    let payload: serde_json::Value = sqlx::query_scalar(
        "SELECT payload FROM notifications WHERE kind = 'flow.opened' ORDER BY id LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(payload["flow"]["key"], "api:443");
}
