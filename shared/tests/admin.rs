//! The admin API against a real Postgres (`#[sqlx::test]` gives each test a
//! fresh migrated database), called as a tower service and, once, over a
//! real socket.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use sundial::admin::{self, TargetCheck};
use sundial::store;
use sundial_testkit::TaskBuilder;
use tower::ServiceExt;

mod common;

use common::{Api, TOKEN};

/// Refuses literal loopback, link-local and 10/8 hosts, like the real
/// guard does for what they resolve to.
struct LiteralGuard;

#[async_trait]
impl TargetCheck for LiteralGuard {
    async fn check(&self, url: &str) -> Result<(), String> {
        let host = url::Url::parse(url)
            .map_err(|e| e.to_string())?
            .host_str()
            .unwrap_or("")
            .to_string();
        if host == "127.0.0.1"
            || host == "localhost"
            || host == "169.254.169.254"
            || host.starts_with("10.")
        {
            return Err(format!("target `{host}` is a private or loopback address"));
        }
        Ok(())
    }
}

/// The API with [`LiteralGuard`].
fn api(pool: PgPool) -> Api {
    Api::with_guard(pool, Arc::new(LiteralGuard))
}

fn spec(name: &str) -> Value {
    json!({"name": name, "schedule": "rate(1 minute)", "url": "https://example.com/hook"})
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .to_utc()
}

/// Asserts a 400 naming `field`.
fn assert_invalid(status: StatusCode, body: &Value, field: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_field", "{body}");
    assert_eq!(body["error"]["field"], field, "{body}");
    assert!(
        !body["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{body}"
    );
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn full_lifecycle(pool: PgPool) {
    let api = api(pool.clone());

    // GIVEN a task created through the API
    let before = Utc::now();
    let (status, task) = api.call("POST", "/v1/tasks", Some(spec("hook"))).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let id = task["id"].as_i64().unwrap();
    let next = time(&task["next_run_at"]);
    assert!(next > before && next <= before + Duration::minutes(1) + Duration::seconds(1));
    assert_eq!(task["enabled"], true);

    // THEN it is listed and shown with its next occurrences
    let (status, page) = api.call("GET", "/v1/tasks", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["tasks"][0]["id"], id);
    assert!(page["next_cursor"].is_null());
    let (status, shown) = api.call("GET", &format!("/v1/tasks/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let occ: Vec<_> = shown["next_occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .map(time)
        .collect();
    assert_eq!(occ.len(), 5);
    assert_eq!(occ[0], next);
    assert!(occ.windows(2).all(|w| w[1] - w[0] == Duration::minutes(1)));

    // WHEN paused, it stops being scheduled and shows no occurrences
    let (status, paused) = api
        .call("POST", &format!("/v1/tasks/{id}/pause"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(paused["enabled"], false);
    assert!(paused["version"].as_i64().unwrap() > task["version"].as_i64().unwrap());
    let (_, page) = api.call("GET", "/v1/tasks?enabled=false", None).await;
    assert_eq!(page["tasks"].as_array().unwrap().len(), 1);
    let (_, page) = api.call("GET", "/v1/tasks?enabled=true", None).await;
    assert_eq!(page["tasks"].as_array().unwrap().len(), 0);
    let (status, err) = api
        .call("POST", &format!("/v1/tasks/{id}/trigger"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "task_paused");

    // WHEN resumed, it runs again from after now
    let (status, resumed) = api
        .call("POST", &format!("/v1/tasks/{id}/resume"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resumed["enabled"], true);
    assert!(time(&resumed["next_run_at"]) > before);

    // WHEN triggered, a manual message goes on the queue at once
    let (status, fired) = api
        .call("POST", &format!("/v1/tasks/{id}/trigger"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{fired}");
    let sent = api.queue.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    let msg = &sent[0].message;
    assert!(msg.manual);
    assert_eq!(msg.task_id, id);
    assert_eq!(msg.task_version, resumed["version"].as_i64().unwrap());
    assert_eq!(sent[0].delay, std::time::Duration::ZERO);
    assert_eq!(time(&fired["occurrence"]), msg.occurrence);
    assert_eq!(msg.occurrence.timestamp_subsec_nanos() % 1_000_000, 0);
    assert_eq!(fired["idempotency_key"], msg.idempotency_key());

    // THEN its run history is listed, newest first, page by page
    for minutes in 1..=3 {
        sqlx::query(
            "INSERT INTO task_runs (task_id, scheduled_for, fired_at, status, http_status, latency_ms) \
             VALUES ($1, $2, $2, 'succeeded', 200, 12)",
        )
        .bind(id)
        .bind(before - Duration::minutes(minutes))
        .execute(&pool)
        .await
        .unwrap();
    }
    let (status, runs) = api
        .call("GET", &format!("/v1/tasks/{id}/runs?limit=2"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{runs}");
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2);
    assert_eq!(runs["runs"][0]["http_status"], 200);
    let cursor = runs["next_before"].as_str().unwrap();
    let (_, rest) = api
        .call(
            "GET",
            &format!("/v1/tasks/{id}/runs?limit=2&before={}", urlencode(cursor)),
            None,
        )
        .await;
    assert_eq!(rest["runs"].as_array().unwrap().len(), 1, "{rest}");
    assert!(rest["next_before"].is_null());

    // THEN the status reflects the hour's runs
    let (status, st) = api.call("GET", "/v1/status", None).await;
    assert_eq!(status, StatusCode::OK, "{st}");
    assert_eq!(st["last_hour"]["runs"], 3);
    assert_eq!(st["tasks"]["total"], 1);

    // WHEN deleted, it is gone
    let (status, _) = api.call("DELETE", &format!("/v1/tasks/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, err) = api.call("GET", &format!("/v1/tasks/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["code"], "task_not_found");
    let (status, _) = api.call("DELETE", &format!("/v1/tasks/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn patch_edits_some_fields(pool: PgPool) {
    let api = api(pool);
    let mut body = spec("edit-me");
    body["body"] = json!("{\"a\":1}");
    let (_, task) = api.call("POST", "/v1/tasks", Some(body)).await;
    let id = task["id"].as_i64().unwrap();
    let path = format!("/v1/tasks/{id}");

    // An edit that does not touch timing keeps the next run.
    let (status, edited) = api
        .call(
            "PATCH",
            &path,
            Some(json!({"timeout_ms": 5000, "body": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["timeout_ms"], 5000);
    assert!(edited["body"].is_null());
    assert_eq!(edited["name"], "edit-me");
    assert_eq!(edited["version"], task["version"].as_i64().unwrap() + 1);
    assert_eq!(edited["next_run_at"], task["next_run_at"]);

    // A new schedule recomputes it.
    let (status, retimed) = api
        .call("PATCH", &path, Some(json!({"schedule": "rate(7 seconds)"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{retimed}");
    let next = time(&retimed["next_run_at"]);
    assert!(next <= Utc::now() + Duration::seconds(8));
    assert_eq!(next.timestamp() % 7, 0);

    // An empty patch changes nothing, not even the version.
    let (_, same) = api.call("PATCH", &path, Some(json!({}))).await;
    assert_eq!(same["version"], retimed["version"]);

    // Bad edits name their field and change nothing.
    for (patch, field) in [
        (json!({"schedule": "every tuesday"}), "schedule"),
        (json!({"timezone": "Mars/Olympus"}), "timezone"),
        (json!({"url": "http://127.0.0.1/x"}), "url"),
        (json!({"timeout_ms": 1}), "timeout_ms"),
        (json!({"colour": "red"}), "colour"),
        (json!({"enabled": "yes"}), "enabled"),
    ] {
        let (status, err) = api.call("PATCH", &path, Some(patch)).await;
        assert_invalid(status, &err, field);
    }
    let (_, after) = api.call("GET", &path, None).await;
    assert_eq!(after["version"], retimed["version"]);

    // Renaming onto another task's name is a conflict.
    api.call("POST", "/v1/tasks", Some(spec("other"))).await;
    let (status, err) = api
        .call("PATCH", &path, Some(json!({"name": "other"})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn auth_is_required_except_for_healthz(pool: PgPool) {
    let api = api(pool);
    for auth in [
        None,
        Some("Bearer wrong-token"),
        Some(TOKEN),
        Some("Basic abc"),
    ] {
        let mut req = Request::builder().uri("/v1/tasks");
        if let Some(auth) = auth {
            req = req.header(header::AUTHORIZATION, auth);
        }
        let (status, body) = api.send(req.body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    // Even a bad body gets 401, not 400: nothing is parsed before auth.
    let req = Request::builder()
        .method("POST")
        .uri("/v1/tasks")
        .body(Body::from("{"))
        .unwrap();
    assert_eq!(api.send(req).await.0, StatusCode::UNAUTHORIZED);
    let req = Request::builder()
        .uri("/openapi.json")
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.send(req).await.0, StatusCode::UNAUTHORIZED);

    let req = Request::builder()
        .uri("/healthz")
        .body(Body::empty())
        .unwrap();
    let (status, body) = api.send(req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");

    // The scheme is case-insensitive.
    let req = Request::builder()
        .uri("/v1/status")
        .header(header::AUTHORIZATION, format!("bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.send(req).await.0, StatusCode::OK);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn bad_input_is_a_400_naming_the_field(pool: PgPool) {
    let api = api(pool);
    let with = |key: &str, value: Value| {
        let mut s = spec("bad");
        s[key] = value;
        s
    };
    let cases = [
        (with("schedule", json!("every tuesday")), "schedule"),
        (with("schedule", json!("")), "schedule"),
        (with("timezone", json!("Mars/Olympus")), "timezone"),
        (with("url", json!("not a url")), "url"),
        (with("url", json!("ftp://example.com/x")), "url"),
        (with("url", json!("http://127.0.0.1:8080/x")), "url"),
        (
            with("url", json!("http://169.254.169.254/latest/meta-data")),
            "url",
        ),
        (with("url", json!("http://10.1.2.3/x")), "url"),
        (with("timeout_ms", json!(10)), "timeout_ms"),
        (with("timeout_ms", json!(900_001)), "timeout_ms"),
        (with("timeout_ms", json!("soon")), "timeout_ms"),
        (with("timeout_ms", json!(1e12)), "timeout_ms"),
        (with("method", json!("FETCH")), "method"),
        (with("name", json!("")), "name"),
        (with("max_attempts", json!(0)), "max_attempts"),
        (with("catch_up", json!("sometimes")), "catch_up"),
        (with("overlap", json!(true)), "overlap"),
        (with("headers", json!({"Bad Name": "x"})), "headers"),
        (with("headers", json!({"X-Count": 3})), "headers"),
        (with("colour", json!("red")), "colour"),
        (
            json!({"schedule": "rate(1 minute)", "url": "https://x.io"}),
            "name",
        ),
    ];
    for (body, field) in cases {
        let (status, err) = api.call("POST", "/v1/tasks", Some(body.clone())).await;
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
        assert_invalid(status, &err, field);
    }
    let (_, err) = api
        .call("POST", "/v1/tasks", Some(with("colour", json!("red"))))
        .await;
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field"),
        "{err}"
    );

    // Malformed JSON, wrong content type, bad ids and query parameters.
    let (status, err) = api.raw("POST", "/v1/tasks", "{\"name\": ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["code"], "malformed_json");
    let req = Request::builder()
        .method("POST")
        .uri("/v1/tasks")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(spec("x").to_string()))
        .unwrap();
    assert_eq!(api.send(req).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A body without Content-Type is read as JSON.
    let req = Request::builder()
        .method("POST")
        .uri("/v1/tasks")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from(spec("no-content-type").to_string()))
        .unwrap();
    assert_eq!(api.send(req).await.0, StatusCode::CREATED);

    for path in [
        "/v1/tasks/abc",
        "/v1/tasks/0",
        "/v1/tasks/-4",
        "/v1/tasks/99999999999999999999",
    ] {
        let (status, err) = api.call("GET", path, None).await;
        assert_invalid(status, &err, "id");
    }
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("limit=1000", "limit"),
        ("enabled=maybe", "enabled"),
        ("failing=2", "failing"),
        ("cursor=zzz", "cursor"),
        ("colour=red", "colour"),
    ] {
        let (status, err) = api.call("GET", &format!("/v1/tasks?{query}"), None).await;
        assert_invalid(status, &err, field);
    }
}

/// Text Postgres cannot store, URL spellings the parser accepts but other
/// readers (and the table's CHECK) do not, and instants out of range: each
/// was a 500 once, and must be a 400 naming the field.
#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn hostile_input_is_a_400_naming_the_field(pool: PgPool) {
    let api = api(pool.clone());
    let with = |key: &str, value: Value| {
        let mut s = spec("hostile");
        s[key] = value;
        s
    };
    let cases = [
        (with("body", json!("a\u{0}b")), "body"),
        (with("body", json!("\u{1b}[2J")), "body"),
        (with("url", json!("https://example.com/a\u{0}b")), "url"),
        (with("url", json!("http:8.8.8.8")), "url"),
        (with("url", json!("http:/8.8.8.8/")), "url"),
        (with("url", json!("http:\\\\8.8.8.8\\")), "url"),
        (with("url", json!("\u{1}http://8.8.8.8/")), "url"),
        (with("url", json!("http://example.com/\u{1b}[2J")), "url"),
        (with("name", json!("a\u{0}b")), "name"),
        (with("name", json!("\u{1b}]0;owned\u{7}")), "name"),
        (with("schedule", json!("rate(1 minute)\u{0}")), "schedule"),
        (with("timezone", json!("UTC\u{0}")), "timezone"),
        (with("method", json!("GET\u{0}")), "method"),
        (with("headers", json!({"X-A": "a\u{0}b"})), "headers"),
        (with("headers", json!({"X-\u{0}": "a"})), "headers"),
    ];
    for (body, field) in &cases {
        let (status, err) = api.call("POST", "/v1/tasks", Some(body.clone())).await;
        assert_invalid(status, &err, field);
        // The same with an Idempotency-Key (another code path).
        let req = Request::builder()
            .method("POST")
            .uri("/v1/tasks")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", "hostile-1")
            .body(Body::from(body.to_string()))
            .unwrap();
        let (status, err) = api.send(req).await;
        assert_invalid(status, &err, field);
    }
    let (status, task) = api.call("POST", "/v1/tasks", Some(spec("target"))).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let id = task["id"].as_i64().unwrap();
    for (body, field) in &cases {
        let key = *field;
        let patch = json!({ key: body[key] });
        let (status, err) = api
            .call("PATCH", &format!("/v1/tasks/{id}"), Some(patch.clone()))
            .await;
        assert_invalid(status, &err, field);
    }
    for query in [
        "before=-4714-11-23T00:00:00Z",
        "before=-0001-06-01T00:00:00Z",
        "before=%2B10001-01-01T00:00:00Z",
    ] {
        let (status, err) = api
            .call("GET", &format!("/v1/tasks/{id}/runs?{query}"), None)
            .await;
        assert_invalid(status, &err, "before");
    }
    // Every RFC 3339 timestamp is in range, whatever its offset.
    for before in [
        "0000-01-01T00:00:00%2B23:59",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999999-23:59",
    ] {
        let (status, page) = api
            .call("GET", &format!("/v1/tasks/{id}/runs?before={before}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{before}: {page}");
    }
    let (status, preview) = api
        .call(
            "POST",
            "/v1/schedules/preview",
            Some(json!({"schedule": "@yearly", "from": "9999-06-01T00:00:00Z", "count": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["occurrences"], json!([]), "{preview}");
    for cursor in ["-1", "%2B1", "1234567890123456789", "", "1.0"] {
        let (status, err) = api
            .call("GET", &format!("/v1/tasks?cursor={cursor}"), None)
            .await;
        assert_invalid(status, &err, "cursor");
    }
    let (status, err) = api
        .call(
            "POST",
            "/v1/schedules/preview",
            Some(json!({"schedule": "rate(1 minute)", "from": "-0002-01-01T00:00:00Z"})),
        )
        .await;
    assert_invalid(status, &err, "from");
    // Nothing of the above reached the table.
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

/// What the target guard checked is what is stored and fired: the URL in
/// its parsed, canonical form.
#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn urls_are_stored_in_canonical_form(pool: PgPool) {
    let api = api(pool.clone());
    let mut body = spec("canonical");
    body["url"] = json!(" HTTPS://Example.COM:443/a/./b/../c?q=é ");
    let (status, task) = api.call("POST", "/v1/tasks", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    assert_eq!(task["url"], "https://example.com/a/c?q=%C3%A9");
    let id = task["id"].as_i64().unwrap();
    let stored: String = sqlx::query_scalar("SELECT url FROM tasks WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, "https://example.com/a/c?q=%C3%A9");
    let (status, task) = api
        .call(
            "PATCH",
            &format!("/v1/tasks/{id}"),
            Some(json!({"url": "http://EXAMPLE.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert_eq!(task["url"], "http://example.com/");
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn conflicts_sizes_and_unknowns(pool: PgPool) {
    let api = api(pool);
    let (status, _) = api.call("POST", "/v1/tasks", Some(spec("dup"))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, err) = api.call("POST", "/v1/tasks", Some(spec("dup"))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["error"]["code"], "duplicate_name");

    // A task body at the limit is fine; a request past the limit is a 413.
    let mut big = spec("big");
    big["body"] = json!("x".repeat(sundial::task::MAX_BODY_BYTES));
    let (status, task) = api.call("POST", "/v1/tasks", Some(big)).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let mut huge = spec("huge");
    huge["body"] = json!("x".repeat(admin::MAX_REQUEST_BYTES + 1));
    let (status, err) = api.call("POST", "/v1/tasks", Some(huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{err}");
    assert_eq!(err["error"]["code"], "payload_too_large");
    // So on the routes whose body is optional (they read it raw).
    let id = task["id"].as_i64().expect("task id");
    for action in ["pause", "trigger", "backfill"] {
        let path = format!("/v1/tasks/{id}/{action}");
        let huge = json!({"reason": "x".repeat(admin::MAX_REQUEST_BYTES + 1)});
        let (status, err) = api.call("POST", &path, Some(huge)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path}: {err}");
        assert_eq!(err["error"]["code"], "payload_too_large", "{path}");
    }
    // Just over the task's own body limit but within the request limit.
    let mut over = spec("over");
    over["body"] = json!("x".repeat(sundial::task::MAX_BODY_BYTES + 1));
    let (status, err) = api.call("POST", "/v1/tasks", Some(over)).await;
    assert_invalid(status, &err, "body");

    for path in ["/v1/tasks/424242", "/v1/tasks/424242/runs"] {
        let (status, err) = api.call("GET", path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {err}");
    }
    for path in [
        "/v1/tasks/424242/pause",
        "/v1/tasks/424242/resume",
        "/v1/tasks/424242/trigger",
    ] {
        let (status, _) = api.call("POST", path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _) = api
        .call(
            "PATCH",
            "/v1/tasks/424242",
            Some(json!({"timeout_ms": 1000})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, err) = api.call("GET", "/v1/nothing-here", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["code"], "not_found");

    for (method, path) in [
        ("PUT", "/v1/tasks"),
        ("DELETE", "/v1/tasks"),
        ("GET", "/v1/tasks/1/pause"),
        ("POST", "/v1/status"),
        ("GET", "/v1/schedules/preview"),
    ] {
        let (status, err) = api.call(method, path, None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(err["error"]["code"], "method_not_allowed");
    }
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn trigger_reports_a_refusing_queue(pool: PgPool) {
    let api = api(pool);
    let (_, task) = api.call("POST", "/v1/tasks", Some(spec("q"))).await;
    api.queue.refuse.store(true, Ordering::SeqCst);
    let (status, err) = api
        .call("POST", &format!("/v1/tasks/{}/trigger", task["id"]), None)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err["error"]["code"], "queue_unavailable");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("queue is down"));
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn tasks_registered_with_sql_show_up(pool: PgPool) {
    let api = api(pool.clone());
    // Rows as plain SQL registers them: next_run_at left NULL.
    TaskBuilder::new()
        .name("from-sql")
        .schedule("rate(5 minutes)")
        .url("https://example.com/sql")
        .insert(&pool)
        .await;
    TaskBuilder::new()
        .name("broken")
        .schedule("whenever")
        .url("https://example.com/b")
        .insert(&pool)
        .await;

    // Before the scanner ran, the preview of its occurrences is computed.
    let (_, page) = api.call("GET", "/v1/tasks", None).await;
    let id = page["tasks"][0]["id"].as_i64().unwrap();
    let (_, shown) = api.call("GET", &format!("/v1/tasks/{id}"), None).await;
    assert!(shown["next_run_at"].is_null());
    assert_eq!(shown["next_occurrences"].as_array().unwrap().len(), 5);

    let now = Utc::now();
    let report = store::schedule_new(&pool, now, 100).await.unwrap();
    assert_eq!((report.scheduled, report.invalid), (1, 1));
    let (status, shown) = api.call("GET", &format!("/v1/tasks/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let next = time(&shown["next_run_at"]);
    assert!(next > now && next <= now + Duration::minutes(5));
    assert_eq!(time(&shown["next_occurrences"][0]), next);

    // The invalid one is listed as such, paused, with its reason.
    let (_, st) = api.call("GET", "/v1/status", None).await;
    assert_eq!(st["tasks"]["invalid"], 1);
    let (_, paused) = api.call("GET", "/v1/tasks?enabled=false", None).await;
    assert_eq!(paused["tasks"][0]["name"], "broken");
    assert!(paused["tasks"][0]["schedule_error"].is_string());
    // Resuming it names the bad field instead of failing.
    let broken = paused["tasks"][0]["id"].as_i64().unwrap();
    let (status, err) = api
        .call("POST", &format!("/v1/tasks/{broken}/resume"), None)
        .await;
    assert_invalid(status, &err, "schedule");
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn list_is_paginated_and_filtered(pool: PgPool) {
    let api = api(pool.clone());
    for i in 0..7 {
        api.call("POST", "/v1/tasks", Some(spec(&format!("t{i}"))))
            .await;
    }
    sqlx::query("UPDATE tasks SET consecutive_failures = 2 WHERE name IN ('t1', 't5')")
        .execute(&pool)
        .await
        .unwrap();
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tasks?limit=3&cursor={c}"),
            None => "/v1/tasks?limit=3".to_string(),
        };
        let (status, page) = api.call("GET", &path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let tasks = page["tasks"].as_array().unwrap();
        assert!(tasks.len() <= 3);
        names.extend(
            tasks
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(names, ["t0", "t1", "t2", "t3", "t4", "t5", "t6"]);
    let (_, failing) = api.call("GET", "/v1/tasks?failing=true", None).await;
    let failing: Vec<_> = failing["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(failing, [json!("t1"), json!("t5")]);
    let (_, healthy) = api
        .call("GET", "/v1/tasks?failing=false&enabled=true", None)
        .await;
    assert_eq!(healthy["tasks"].as_array().unwrap().len(), 5);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn idempotent_create(pool: PgPool) {
    let api = api(pool.clone());
    let create = |key: &str, body: Value| {
        Request::builder()
            .method("POST")
            .uri("/v1/tasks")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", key)
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let (status, first) = api.send(create("k-1", spec("once"))).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    // The same body with fields in another order is the same request.
    let reordered =
        json!({"url": "https://example.com/hook", "name": "once", "schedule": "rate(1 minute)"});
    let (status, again) = api.send(create("k-1", reordered)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], first["id"]);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 1);

    // The same key with another body is refused.
    let (status, err) = api.send(create("k-1", spec("twice"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["code"], "idempotency_key_reused");

    // A failed create does not burn the key.
    let mut bad = spec("later");
    bad["timezone"] = json!("Nowhere/Special");
    let (status, _) = api.send(create("k-2", bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api.send(create("k-2", spec("later"))).await;
    assert_eq!(status, StatusCode::CREATED);

    // Concurrent retries with one key create one task.
    let results =
        futures::future::join_all((0..6).map(|_| api.send(create("k-3", spec("racy"))))).await;
    let ids: std::collections::HashSet<_> = results
        .iter()
        .map(|(status, task)| {
            assert!(status.is_success(), "{status}: {task}");
            task["id"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 1);

    // After the task is deleted, its key cannot silently recreate it.
    let id = first["id"].as_i64().unwrap();
    api.call("DELETE", &format!("/v1/tasks/{id}"), None).await;
    let (status, err) = api.send(create("k-1", spec("once"))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");

    // Bad keys are named.
    let (status, err) = api.send(create(&"k".repeat(300), spec("long-key"))).await;
    assert_invalid(status, &err, "Idempotency-Key");
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn schedule_preview(pool: PgPool) {
    let api = api(pool);
    let (status, preview) = api
        .call(
            "POST",
            "/v1/schedules/preview",
            Some(
                json!({"schedule": "rate(15 minutes)", "count": 3, "from": "2026-03-08T06:59:00Z"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(
        preview["occurrences"],
        json!([
            "2026-03-08T07:00:00Z",
            "2026-03-08T07:15:00Z",
            "2026-03-08T07:30:00Z"
        ])
    );
    assert_eq!(preview["timezone"], "UTC");
    for (body, field) in [
        (json!({"schedule": "sometimes"}), "schedule"),
        (
            json!({"schedule": "rate(1 minute)", "timezone": "Atlantis/Capital"}),
            "timezone",
        ),
        (json!({"schedule": "rate(1 minute)", "count": 0}), "count"),
        (
            json!({"schedule": "rate(1 minute)", "count": 1000}),
            "count",
        ),
        (json!({"schedule": "rate(1 minute)", "count": -1}), "count"),
        (
            json!({"schedule": "rate(1 minute)", "from": "yesterday"}),
            "from",
        ),
        (json!({"schedule": "rate(1 minute)", "colour": 1}), "colour"),
        (json!({"timezone": "UTC"}), "schedule"),
    ] {
        let (status, err) = api.call("POST", "/v1/schedules/preview", Some(body)).await;
        assert_invalid(status, &err, field);
    }
}

/// Every route in `/openapi.json`, as (method, path template).
fn documented_routes(doc: &Value) -> Vec<(String, String)> {
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                routes.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn openapi_lists_every_route_and_each_answers(pool: PgPool) {
    let api = api(pool);
    let (status, doc) = api.call("GET", "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let mut routes = documented_routes(&doc);
    let expected = [
        ("POST", "/v1/tasks"),
        ("GET", "/v1/tasks"),
        ("GET", "/v1/tasks/{id}"),
        ("PATCH", "/v1/tasks/{id}"),
        ("DELETE", "/v1/tasks/{id}"),
        ("POST", "/v1/tasks/{id}/pause"),
        ("POST", "/v1/tasks/{id}/resume"),
        ("POST", "/v1/tasks/{id}/trigger"),
        ("POST", "/v1/tasks/{id}/backfill"),
        ("GET", "/v1/backfills/{id}"),
        ("GET", "/v1/tasks/{id}/runs"),
        ("GET", "/v1/tasks/{id}/occurrences"),
        ("GET", "/v1/flows"),
        ("GET", "/v1/flows/{key}"),
        ("PUT", "/v1/flows/{key}"),
        ("DELETE", "/v1/flows/{key}"),
        ("GET", "/v1/status"),
        ("POST", "/v1/schedules/preview"),
        ("GET", "/healthz"),
        ("GET", "/openapi.json"),
    ];
    let mut want: Vec<_> = expected
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    want.sort();
    routes.sort();
    assert_eq!(routes, want);

    let (_, task) = api.call("POST", "/v1/tasks", Some(spec("doc"))).await;
    let id = task["id"].to_string();
    let (status, _) = api
        .call("PUT", "/v1/flows/example.com%3A443", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let range = json!({"from": Utc::now() - chrono::Duration::hours(1),
                       "to": Utc::now() - chrono::Duration::minutes(30)});
    let (status, backfill) = api
        .call(
            "POST",
            &format!("/v1/tasks/{id}/backfill"),
            Some(range.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{backfill}");
    let backfill_id = backfill["id"].to_string();
    // Deletion last, so the other calls find the task and the flow.
    routes.sort_by_key(|(m, _)| m == "DELETE");
    for (method, template) in routes {
        let path = template
            .replace(
                "/v1/backfills/{id}",
                &format!("/v1/backfills/{backfill_id}"),
            )
            .replace("{id}", &id)
            .replace("{key}", "example.com%3A443");
        let body = match (method.as_str(), template.as_str()) {
            ("POST", "/v1/tasks/{id}/backfill") => Some(range.clone()),
            ("POST", "/v1/tasks") => Some(spec("doc-2")),
            ("PATCH", _) => Some(json!({"jitter_secs": 5})),
            ("PUT", _) => Some(json!({"rate_per_sec": 10, "burst": 2})),
            ("POST", "/v1/schedules/preview") => Some(json!({"schedule": "rate(1 minute)"})),
            _ => None,
        };
        let (status, body) = api.call(&method, &path, body).await;
        assert!(
            status.is_success(),
            "{method} {path} answered {status}: {body}"
        );
    }
}

/// The document states what the API enforces: the statuses every route
/// can answer, the ranges of the validation's own constants, the enums.
#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn openapi_states_the_rules(pool: PgPool) {
    use sundial::task;
    let api = api(pool);
    let (_, doc) = api.call("GET", "/openapi.json", None).await;
    for (method, path) in documented_routes(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let responses = op["responses"].as_object().unwrap();
        let has = |status: &str| responses.contains_key(status);
        let label = format!("{method} {path}");
        if path != "/healthz" {
            assert!(has("401"), "{label}: no 401");
        }
        if path.contains("{id}") {
            assert!(has("400") && has("404"), "{label}: no 400/404");
            let id = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "id")
                .unwrap();
            assert_eq!(id["schema"]["minimum"], 1, "{label}");
        }
        if op.get("requestBody").is_some() {
            assert!(has("400") && has("413") && has("415"), "{label}");
        }
        assert!(has("408") && has("500"), "{label}");
        for (status, response) in responses {
            if !status.starts_with('2') {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{label} {status}"
                );
            }
        }
    }
    let spec = &doc["components"]["schemas"]["TaskSpec"]["properties"];
    for (field, (min, max)) in [
        ("timeout_ms", task::TIMEOUT_MS_RANGE),
        ("max_attempts", task::ATTEMPTS_RANGE),
        ("retry_backoff_ms", task::BACKOFF_MS_RANGE),
        ("jitter_secs", task::JITTER_SECS_RANGE),
        ("catch_up_max_age_secs", task::CATCH_UP_AGE_RANGE),
    ] {
        assert_eq!(spec[field]["minimum"], min, "{field}");
        assert_eq!(spec[field]["maximum"], max, "{field}");
        let patched = &doc["components"]["schemas"]["TaskPatch"]["properties"][field];
        assert_eq!(patched["maximum"], max, "{field}");
        assert_eq!(patched["type"], json!(["integer", "null"]), "{field}");
    }
    assert_eq!(spec["catch_up"]["enum"], json!(["skip", "all", "none"]));
    assert_eq!(spec["overlap"]["enum"], json!(["allow", "forbid", "skip"]));
    assert_eq!(spec["method"]["enum"], json!(task::METHODS));
    assert!(spec["timezone"]["enum"]
        .as_array()
        .unwrap()
        .contains(&json!("Europe/Paris")));
    let preview = &doc["components"]["schemas"]["PreviewRequest"]["properties"];
    assert_eq!(preview["count"]["minimum"], 1);
    assert_eq!(preview["count"]["maximum"], 100);
    let limit = doc["paths"]["/v1/tasks"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()
        .clone();
    assert_eq!(
        (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
        (&json!(1), &json!(200))
    );
    assert_eq!(
        doc["paths"]["/v1/tasks"]["post"]["responses"]["201"]["description"],
        "Created"
    );

    // The patterns promise acceptance: their documented examples pass.
    for (schedule, url) in [
        ("rate(5 minutes)", "https://hooks.example/run"),
        ("@daily", "http://a.example:8080/x?y=1"),
        ("30 2 28 2 6", "https://example.com/"),
    ] {
        let mut body = spec_json(schedule, url);
        body["headers"] = json!({"X-Env": "prod\tone"});
        let (status, task) = api.call("POST", "/v1/tasks", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{schedule} {url}: {task}");
    }
}

fn spec_json(schedule: &str, url: &str) -> Value {
    json!({"name": format!("{schedule} {url}"), "schedule": schedule, "url": url})
}

/// Requests no client should send: none may get a 500 or kill the service.
#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn malformed_requests_never_500(pool: PgPool) {
    let api = api(pool);
    let (_, task) = api.call("POST", "/v1/tasks", Some(spec("target"))).await;
    let id = task["id"].to_string();
    let bodies: Vec<String> = vec![
        String::new(),
        "null".into(),
        "[]".into(),
        "{}".into(),
        "{".into(),
        "\"str\"".into(),
        "123".into(),
        "{\"name\": null}".into(),
        "{\"name\": {}}".into(),
        "{\"schedule\": []}".into(),
        "{\"name\":\"a\",\"schedule\":\"rate(1 minute)\",\"url\":\"https://x.io\",\"headers\":[]}".into(),
        "{\"name\":\"\\u0000\",\"schedule\":\"rate(1 minute)\",\"url\":\"https://x.io\"}".into(),
        "{\"name\":\"a\",\"schedule\":\"rate(99999999999999 seconds)\",\"url\":\"https://x.io\"}".into(),
        "{\"name\":\"a\",\"schedule\":\"rate(1 minute)\",\"url\":\"https://x.io\",\"timeout_ms\":9223372036854775807}".into(),
        "{\"schedule\":\"rate(1 minute)\",\"count\":18446744073709551616}".into(),
        "{\"schedule\":\"rate(1 minute)\",\"from\":\"+275760-09-13T00:00:00Z\"}".into(),
        "{\"enabled\": 1, \"body\": 5}".into(),
        "\u{feff}{}".into(),
        "\u{0}\u{1}\u{2}".into(),
        "[".repeat(10_000),
        format!("{{\"name\":\"{}\"}}", "é".repeat(500)),
    ];
    let ids = [
        id.as_str(),
        "x",
        "0",
        "-1",
        "1.5",
        "%00",
        "%FF%FE",
        "9223372036854775808",
        "1e3",
        "",
    ];
    let routes = [
        ("POST", "/v1/tasks"),
        ("GET", "/v1/tasks"),
        ("GET", "/v1/tasks/{id}"),
        ("PATCH", "/v1/tasks/{id}"),
        ("POST", "/v1/tasks/{id}/pause"),
        ("POST", "/v1/tasks/{id}/resume"),
        ("POST", "/v1/tasks/{id}/trigger"),
        ("GET", "/v1/tasks/{id}/runs"),
        ("GET", "/v1/status"),
        ("POST", "/v1/schedules/preview"),
        ("DELETE", "/v1/tasks/{id}"),
    ];
    let queries = [
        "",
        "?limit=-1",
        "?before=2026-13-45",
        "?cursor=%FF",
        "?limit=1&limit=2",
        "?=&&=",
        "?enabled",
    ];
    let mut calls = 0;
    for (method, template) in routes {
        for target in ids {
            if !template.contains("{id}") && target != ids[0] {
                continue;
            }
            for query in queries {
                for body in &bodies {
                    let path = format!("{}{query}", template.replace("{id}", target));
                    let req = Request::builder()
                        .method(Method::from_bytes(method.as_bytes()).unwrap())
                        .uri(&path)
                        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                        .body(Body::from(body.clone()));
                    let Ok(req) = req else { continue };
                    let response = api.router.clone().oneshot(req).await.unwrap();
                    let status = response.status();
                    assert!(
                        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
                        "{method} {path} with {:?} answered {status}",
                        body.chars().take(60).collect::<String>()
                    );
                    calls += 1;
                }
            }
        }
    }
    assert!(calls > 1000, "{calls}");
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn serves_over_a_real_socket(pool: PgPool) {
    let api = api(pool);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = api.router.clone();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");

    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let created = client
        .post(format!("{base}/v1/tasks"))
        .bearer_auth(TOKEN)
        .json(&spec("socket"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let task: Value = created.json().await.unwrap();
    let shown: Value = client
        .get(format!("{base}/v1/tasks/{}", task["id"]))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["name"], "socket");
    let unauthorised = client.get(format!("{base}/v1/tasks")).send().await.unwrap();
    assert_eq!(unauthorised.status(), 401);
    assert!(unauthorised.headers().contains_key("www-authenticate"));
    // An oversize body is refused without reading it all.
    let oversize = client
        .post(format!("{base}/v1/tasks"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(vec![b' '; admin::MAX_REQUEST_BYTES * 4])
        .send()
        .await
        .unwrap();
    assert_eq!(oversize.status(), 413);
    server.abort();
}
