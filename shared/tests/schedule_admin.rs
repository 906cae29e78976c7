//! The admin API's side of the schedule semantics, against a real Postgres
//! and called as a tower service: the window and exclusion fields (checked,
//! named in errors, stored, patched, removed with `null`), overlap `skip`,
//! the trigger's `force` body, the explained preview, the OpenAPI document,
//! and what the table itself enforces for plain SQL.

use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use sundial_testkit::TaskBuilder;

mod common;

use common::Api;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn spec(extra: Value) -> Value {
    let mut body =
        json!({"name": "sem", "schedule": "rate(1 hour)", "url": "https://example.com/hook"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn window_and_exclusion_fields_are_checked_stored_and_patched(pool: PgPool) {
    let api = Api::new(pool.clone());
    // Bad input: 400 naming the field, never a 500.
    let soon = Utc::now() + Duration::days(1);
    let cases = [
        (json!({"start_at": soon, "end_at": soon}), "end_at"),
        (
            json!({"start_at": soon, "end_at": soon - Duration::hours(1)}),
            "end_at",
        ),
        (json!({"end_at": "2020-01-01T00:00:00Z"}), "end_at"),
        (json!({"start_at": "yesterday"}), "start_at"),
        (json!({"exclude": "weekends"}), "exclude"),
        (json!({"exclude": ""}), "exclude"),
        (json!({"exclude": "x".repeat(201)}), "exclude"),
        (json!({"exclude": "* * * * *"}), "exclude"),
        (json!({"exclude": 5}), "exclude"),
        (json!({"overlap": "sometimes"}), "overlap"),
    ];
    for (extra, field) in cases {
        let (status, body) = api
            .call("POST", "/v1/tasks", Some(spec(extra.clone())))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{extra}: {body}");
        assert_eq!(body["error"]["field"], field, "{extra}: {body}");
    }

    // A window in the future: the first run is its start.
    let start = t("2030-01-01T10:30:00Z");
    let (status, task) = api
        .call(
            "POST",
            "/v1/tasks",
            Some(spec(json!({
                "start_at": start, "end_at": "2030-02-01T00:00:00Z",
                "exclude": " 0 11 * * * ", "overlap": "skip"
            }))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    assert_eq!(
        task["next_run_at"], "2030-01-01T12:00:00Z",
        "11:00 is excluded: {task}"
    );
    assert_eq!(task["exclude"], "0 11 * * *");
    assert_eq!(task["overlap"], "skip");
    let id = task["id"].as_i64().unwrap();

    // A patch moves the window and recomputes; `null` removes the fields.
    let (status, task) = api
        .call(
            "PATCH",
            &format!("/v1/tasks/{id}"),
            Some(json!({"start_at": "2031-01-01T00:00:00Z", "end_at": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert_eq!(task["next_run_at"], "2031-01-01T00:00:00Z");
    assert!(task["end_at"].is_null());
    let (status, task) = api
        .call(
            "PATCH",
            &format!("/v1/tasks/{id}"),
            Some(json!({"start_at": null, "exclude": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert!(task["exclude"].is_null() && task["start_at"].is_null());
    let next: DateTime<Utc> = serde_json::from_value(task["next_run_at"].clone()).unwrap();
    assert!(next - Utc::now() <= Duration::hours(1));
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn a_manual_trigger_follows_the_overlap_policy_unless_forced(pool: PgPool) {
    let api = Api::new(pool.clone());
    let due = Utc::now() - Duration::seconds(2);
    let lease = Utc::now() + Duration::minutes(5);
    let mut ids = Vec::new();
    for overlap in ["forbid", "skip", "allow"] {
        let task = TaskBuilder::new()
            .name(format!("busy-{overlap}"))
            .overlap(overlap)
            .next_run_at(due)
            .lease_until(lease)
            .insert(&pool)
            .await;
        ids.push(task.id);
    }
    let [forbid, skip, allow] = ids[..] else {
        unreachable!()
    };
    for id in [forbid, skip] {
        let (status, body) = api
            .call("POST", &format!("/v1/tasks/{id}/trigger"), None)
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "run_in_flight", "{body}");
    }
    // `skip` recorded the refused trigger; `forbid` did not.
    let skipped: Vec<(i64, String, bool)> = sqlx::query_as(
        "SELECT task_id, error, manual FROM task_runs WHERE status = 'skipped' ORDER BY task_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].0, skip);
    assert!(
        skipped[0].1.starts_with("overlap: manual trigger"),
        "{skipped:?}"
    );
    assert!(skipped[0].2);
    assert!(api.queue.sent.lock().unwrap().is_empty());

    // `allow` fires; `force` fires the others; the body is checked.
    let (status, _) = api
        .call("POST", &format!("/v1/tasks/{allow}/trigger"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    for id in [forbid, skip] {
        let path = format!("/v1/tasks/{id}/trigger");
        let (status, body) = api.call("POST", &path, Some(json!({"force": true}))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    assert_eq!(api.queue.sent.lock().unwrap().len(), 3);
    let path = format!("/v1/tasks/{forbid}/trigger");
    for (body, field) in [
        (r#"{"force": "yes"}"#, "force"),
        (r#"{"forse": true}"#, "forse"),
        ("[1]", "body"),
    ] {
        let (status, answer) = api.raw("POST", &path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    // Without a run in flight (no lease), a plain trigger fires.
    let idle = TaskBuilder::new().overlap("skip").insert(&pool).await.id;
    let (status, _) = api
        .call(
            "POST",
            &format!("/v1/tasks/{idle}/trigger"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn the_preview_explains(pool: PgPool) {
    let api = Api::new(pool);
    let (status, body) = api
        .call(
            "POST",
            "/v1/schedules/preview",
            Some(json!({
                "schedule": "30 2 * * *", "timezone": "America/New_York", "count": 3,
                "from": "2026-03-06T12:00:00Z", "exclude": "0-59 2 9 3 *",
                "end_at": "2026-03-11T00:00:00Z"
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["description"], "at 02:30 every day, America/New_York");
    assert_eq!(
        body["occurrences"],
        json!([
            "2026-03-07T07:30:00Z",
            "2026-03-08T07:00:00Z",
            "2026-03-10T06:30:00Z"
        ])
    );
    let entries = body["entries"].as_array().unwrap();
    assert_eq!(entries[1]["dst"]["kind"], "moved", "{body:#}");
    assert_eq!(entries[1]["local"], "2026-03-08T03:00:00-04:00");
    assert_eq!(entries[2]["fires"], false);
    assert_eq!(entries[2]["skipped"], "excluded");
    assert!(
        body["exclude_description"]
            .as_str()
            .unwrap()
            .contains("on 9 March"),
        "{body:#}"
    );

    for (extra, field) in [
        (json!({"exclude": "nope"}), "exclude"),
        (
            json!({"start_at": "2026-03-02T00:00:00Z", "end_at": "2026-03-01T00:00:00Z"}),
            "end_at",
        ),
        (json!({"start_at": 7}), "start_at"),
    ] {
        let mut req = json!({"schedule": "@daily"});
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        let (status, body) = api.call("POST", "/v1/schedules/preview", Some(req)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn the_openapi_document_describes_the_new_fields(pool: PgPool) {
    let api = Api::new(pool);
    let (status, doc) = api.call("GET", "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let schemas = &doc["components"]["schemas"];
    for component in ["TaskSpec", "TaskPatch"] {
        let props = &schemas[component]["properties"];
        for field in ["start_at", "end_at", "exclude"] {
            assert!(props[field].is_object(), "{component}.{field}");
        }
        assert_eq!(props["overlap"]["enum"][2], "skip", "{component}");
    }
    for field in ["exclude", "start_at", "end_at"] {
        assert!(
            schemas["PreviewRequest"]["properties"][field].is_object(),
            "{field}"
        );
    }
    for field in ["description", "entries", "notes"] {
        assert!(
            schemas["Preview"]["properties"][field].is_object(),
            "{field}"
        );
    }
    assert!(schemas["TriggerRequest"]["properties"]["force"].is_object());
    let trigger = &doc["paths"]["/v1/tasks/{id}/trigger"]["post"];
    assert!(trigger["requestBody"].is_object(), "{trigger:#}");
    assert!(trigger["responses"]["409"].is_object());
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn the_table_checks_the_window_and_sql_rows_get_it_applied(pool: PgPool) {
    // CHECKs for what plain SQL may write.
    let bad = TaskBuilder::new()
        .start_at(t("2030-01-02T00:00:00Z"))
        .end_at(t("2030-01-01T00:00:00Z"))
        .try_insert(&pool)
        .await;
    assert!(bad.is_err());
    assert!(TaskBuilder::new()
        .overlap("bogus")
        .try_insert(&pool)
        .await
        .is_err());
    assert!(TaskBuilder::new()
        .exclude("")
        .try_insert(&pool)
        .await
        .is_err());

    // Rows registered with SQL: the scanner applies the window, and one
    // whose window is over is disabled (not invalid) with the reason.
    let future = TaskBuilder::new()
        .schedule("rate(1 hour)")
        .start_at(t("2030-01-01T10:30:00Z"))
        .insert(&pool)
        .await
        .id;
    let over = TaskBuilder::new()
        .schedule("rate(1 hour)")
        .end_at(t("2020-01-01T00:00:00Z"))
        .insert(&pool)
        .await
        .id;
    let unreadable = TaskBuilder::new()
        .exclude("sometimes")
        .insert(&pool)
        .await
        .id;
    let report = sundial::store::schedule_new(&pool, Utc::now(), 100)
        .await
        .unwrap();
    assert_eq!((report.scheduled, report.ended, report.invalid), (1, 1, 1));
    let row = |id: i64| {
        let pool = pool.clone();
        async move {
            let r: (bool, Option<DateTime<Utc>>, Option<String>) = sqlx::query_as(
                "SELECT enabled, next_run_at, schedule_error FROM tasks WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
            r
        }
    };
    assert_eq!(
        row(future).await,
        (true, Some(t("2030-01-01T11:00:00Z")), None)
    );
    assert_eq!(row(over).await, (false, None, None));
    let (enabled, _, error) = row(unreadable).await;
    assert!(!enabled && error.unwrap_or_default().starts_with("exclude:"));
    let (kind, actor, reason): (String, String, Option<String>) = sqlx::query_as(
        "SELECT kind, actor, reason FROM task_events WHERE task_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(over)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((kind.as_str(), actor.as_str()), ("disabled", "sundial"));
    assert_eq!(
        reason.as_deref(),
        Some("active window ended at 2020-01-01 00:00:00Z")
    );

    // A plain SQL edit of the window bumps the version and recomputes.
    let version: i64 = sqlx::query_scalar("SELECT version FROM tasks WHERE id = $1")
        .bind(future)
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE tasks SET start_at = '2031-01-01T00:00:00Z' WHERE id = $1")
        .bind(future)
        .execute(&pool)
        .await
        .unwrap();
    let (v, next): (i64, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT version, next_run_at FROM tasks WHERE id = $1")
            .bind(future)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((v, next), (version + 1, None));
}
