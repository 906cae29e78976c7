//! The flow routes of the admin API (`/v1/flows`), the flow limits in the
//! store, and the `flow` every task gets, against a real Postgres
//! (`#[sqlx::test]`: a fresh migrated database per test), the router
//! called as a tower service.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use sundial::store::{self, FlowLimits, OnOpen};
use sundial_testkit::TaskBuilder;
use tower::ServiceExt;

mod common;

use common::{Api, TOKEN};

/// Asserts a 400 naming `field`.
#[track_caller]
fn assert_invalid(status: StatusCode, body: &Value, field: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_field", "{body}");
    assert_eq!(body["error"]["field"], field, "{body}");
    assert!(
        !body["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{body}"
    );
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .to_utc()
}

async fn flow_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM flows")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn flow_limits_round_trip(pool: PgPool) {
    let api = Api::new(pool.clone());
    let path = "/v1/flows/127.0.0.1%3A8080";

    // GIVEN no flow by that key: nothing to show or remove
    let (status, err) = api.call("GET", path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    assert_eq!(err["error"]["code"], "flow_not_found");
    let (status, err) = api.call("DELETE", path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    assert_eq!(err["error"]["code"], "flow_not_found");

    // WHEN every limit is set
    let limits = json!({
        "rate_per_sec": 50.5, "burst": 5, "max_in_flight": 8, "retry_budget": 0.2,
        "breaker_failures": 5, "breaker_window_secs": 60, "breaker_cooldown_secs": 30,
        "on_open": "skip"
    });
    let (status, put) = api.call("PUT", path, Some(limits.clone())).await;
    assert_eq!(status, StatusCode::OK, "{put}");

    // THEN the answer is the flow view: limits, no engine state, no tasks
    assert_eq!(put["key"], "127.0.0.1:8080");
    assert_eq!(put["tasks"], 0);
    assert!(put["state"].is_null(), "{put}");
    let config = &put["config"];
    assert_eq!(config["key"], "127.0.0.1:8080");
    for (field, value) in limits.as_object().unwrap() {
        assert_eq!(&config[field], value, "{field}");
    }
    let created = time(&config["created_at"]);
    assert_eq!(time(&config["updated_at"]), created);

    // AND it is shown and listed alike
    let (status, shown) = api.call("GET", path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown, put);
    let (status, page) = api.call("GET", "/v1/flows", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["flows"], json!([put]));
    assert!(page["next_after"].is_null());

    // WHEN put again with one limit, the others go back to their defaults
    let (status, replaced) = api
        .call("PUT", path, Some(json!({"max_in_flight": 2})))
        .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    let config = &replaced["config"];
    assert_eq!(config["max_in_flight"], 2);
    assert_eq!(config["burst"], 1);
    assert_eq!(config["on_open"], "fire_latest");
    for field in [
        "rate_per_sec",
        "retry_budget",
        "breaker_failures",
        "breaker_window_secs",
        "breaker_cooldown_secs",
    ] {
        assert!(config[field].is_null(), "{field}: {config}");
    }
    assert_eq!(time(&config["created_at"]), created);
    assert!(time(&config["updated_at"]) >= created);
    // Explicit nulls are the defaults too; an empty body is all defaults.
    let (status, nulls) = api
        .call(
            "PUT",
            path,
            Some(json!({"rate_per_sec": null, "burst": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{nulls}");
    assert_eq!(nulls["config"]["burst"], 1);
    let (status, empty) = api.call("PUT", path, Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{empty}");
    assert!(empty["config"]["max_in_flight"].is_null());
    assert_eq!(flow_rows(&pool).await, 1);

    // WHEN removed, the flow is gone (it had neither state nor tasks)
    let (status, body) = api.call("DELETE", path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(body.is_null());
    let (status, _) = api.call("GET", path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.call("DELETE", path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(flow_rows(&pool).await, 0);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn keys_arrive_percent_encoded(pool: PgPool) {
    let api = Api::new(pool.clone());
    for (encoded, key) in [
        ("127.0.0.1%3A8080", "127.0.0.1:8080"),
        ("%5B%3A%3A1%5D%3A9", "[::1]:9"),
        ("[::1]:10", "[::1]:10"),
        ("api.internal:443", "api.internal:443"),
        ("billing%2Fv2", "billing/v2"),
        ("caf%C3%A9%20api", "café api"),
        ("%20padded%20", "padded"),
        ("100%25", "100%"),
    ] {
        let path = format!("/v1/flows/{encoded}");
        let (status, put) = api
            .call("PUT", &path, Some(json!({"rate_per_sec": 1})))
            .await;
        assert_eq!(status, StatusCode::OK, "{encoded}: {put}");
        assert_eq!(put["key"], key, "{encoded}");
        assert_eq!(put["config"]["rate_per_sec"], 1.0, "{encoded}");
        let (status, shown) = api.call("GET", &path, None).await;
        assert_eq!(status, StatusCode::OK, "{encoded}: {shown}");
        assert_eq!(shown["key"], key, "{encoded}");
        let stored = store::get_flow(&pool, key).await.unwrap();
        assert_eq!(stored.map(|c| c.key).as_deref(), Some(key), "{encoded}");
    }
    let (_, page) = api.call("GET", "/v1/flows", None).await;
    let keys: Vec<&str> = page["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 8, "{page}");
    let (status, _) = api
        .call("DELETE", "/v1/flows/%5B%3A%3A1%5D%3A9", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(store::get_flow(&pool, "[::1]:9").await.unwrap().is_none());
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn bad_limits_are_a_400_naming_the_field(pool: PgPool) {
    let api = Api::new(pool.clone());
    let path = "/v1/flows/api.internal%3A443";
    for (body, field) in [
        (json!({"rate_per_sec": 0}), "rate_per_sec"),
        (json!({"rate_per_sec": -1.5}), "rate_per_sec"),
        (json!({"rate_per_sec": 100000.5}), "rate_per_sec"),
        (json!({"rate_per_sec": "50"}), "rate_per_sec"),
        (json!({"burst": 0}), "burst"),
        (json!({"burst": 100001}), "burst"),
        (json!({"burst": 1.5}), "burst"),
        (json!({"burst": 4294967296_i64}), "burst"),
        (json!({"max_in_flight": 0}), "max_in_flight"),
        (json!({"max_in_flight": 10001}), "max_in_flight"),
        (json!({"retry_budget": -0.1}), "retry_budget"),
        (json!({"retry_budget": 10.01}), "retry_budget"),
        (json!({"breaker_failures": 0}), "breaker_failures"),
        (json!({"breaker_failures": 10001}), "breaker_failures"),
        (json!({"breaker_window_secs": 0}), "breaker_window_secs"),
        (json!({"breaker_window_secs": 86401}), "breaker_window_secs"),
        (
            json!({"breaker_cooldown_secs": -1}),
            "breaker_cooldown_secs",
        ),
        (
            json!({"breaker_cooldown_secs": 86401}),
            "breaker_cooldown_secs",
        ),
        (json!({"on_open": "explode"}), "on_open"),
        (json!({"on_open": null}), "on_open"),
        (json!({"on_open": true}), "on_open"),
        (json!({"rate": 50}), "rate"),
        (json!({"key": "other"}), "key"),
    ] {
        let (status, err) = api.call("PUT", path, Some(body.clone())).await;
        assert_invalid(status, &err, field);
        assert!(
            err["error"]["message"].as_str().unwrap().len() > 3,
            "{body}: {err}"
        );
    }
    // The bounds themselves are accepted.
    for body in [
        json!({"rate_per_sec": 100000, "burst": 100000, "max_in_flight": 10000,
               "retry_budget": 10, "breaker_failures": 10000,
               "breaker_window_secs": 86400, "breaker_cooldown_secs": 86400}),
        json!({"rate_per_sec": 0.001, "burst": 1, "max_in_flight": 1, "retry_budget": 0,
               "breaker_failures": 1, "breaker_window_secs": 1, "breaker_cooldown_secs": 1}),
    ] {
        let (status, put) = api.call("PUT", path, Some(body.clone())).await;
        assert_eq!(status, StatusCode::OK, "{body}: {put}");
    }
    let (_, before) = api.call("GET", path, None).await;

    // Not JSON, not an object, not JSON at all.
    for body in ["", "{", "[]", "null", "\"x\"", "{\"burst\": 1} x"] {
        let (status, err) = api.raw("PUT", path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}: {err}");
        assert!(
            ["malformed_json", "invalid_field"].contains(&err["error"]["code"].as_str().unwrap()),
            "{body:?}: {err}"
        );
    }
    let req = Request::builder()
        .method("PUT")
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    let response = api.router.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Bad keys, on every route that takes one.
    let long = "k".repeat(201);
    let bad_keys = [
        "%20",
        "%20%20%09",
        "a%01b",
        "a%7Fb",
        "%E2%80%AEx",
        "%FF%FE",
        long.as_str(),
    ];
    for key in bad_keys {
        for method in ["GET", "PUT", "DELETE"] {
            let body = (method == "PUT").then(|| json!({"burst": 2}));
            let (status, err) = api.call(method, &format!("/v1/flows/{key}"), body).await;
            assert_invalid(status, &err, "key");
        }
    }
    let (_, after) = api.call("GET", path, None).await;
    assert_eq!(after, before, "a refused request changed the flow");
    assert_eq!(flow_rows(&pool).await, 1);

    // The list's parameters.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("after=", "after"),
        ("after=%01", "after"),
        ("cursor=1", "cursor"),
    ] {
        let (status, err) = api.call("GET", &format!("/v1/flows?{query}"), None).await;
        assert_invalid(status, &err, field);
    }
}

/// The store refuses what the API refuses, and the `flows` table's CHECKs
/// agree with `FlowLimits::validate` at every bound.
#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn validation_matches_the_table(pool: PgPool) {
    let err = store::put_flow(
        &pool,
        "k",
        &FlowLimits {
            burst: Some(0),
            ..FlowLimits::default()
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().starts_with("burst:"), "{err}");
    let err = store::put_flow(&pool, " \t", &FlowLimits::default())
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("key:"), "{err}");
    let saved = store::put_flow(&pool, " k ", &FlowLimits::default())
        .await
        .unwrap();
    assert_eq!((saved.key.as_str(), saved.burst), ("k", 1));
    assert_eq!(saved.on_open, OnOpen::FireLatest);

    let floats = [
        -1.0,
        0.0,
        f64::MIN_POSITIVE,
        0.5,
        9.999,
        10.0,
        10.0001,
        99_999.9,
        100_000.0,
        100_000.01,
    ];
    let ints = [
        i32::MIN,
        -1,
        0,
        1,
        9_999,
        10_000,
        10_001,
        86_400,
        86_401,
        100_000,
        100_001,
        i32::MAX,
    ];
    let mut limits = Vec::new();
    for &f in &floats {
        limits.push(FlowLimits {
            rate_per_sec: Some(f),
            ..FlowLimits::default()
        });
        limits.push(FlowLimits {
            retry_budget: Some(f),
            ..FlowLimits::default()
        });
    }
    for &i in &ints {
        for set in [
            |l: &mut FlowLimits, i| l.burst = Some(i),
            |l: &mut FlowLimits, i| l.max_in_flight = Some(i),
            |l: &mut FlowLimits, i| l.breaker_failures = Some(i),
            |l: &mut FlowLimits, i| l.breaker_window_secs = Some(i),
            |l: &mut FlowLimits, i| l.breaker_cooldown_secs = Some(i),
        ] {
            let mut l = FlowLimits::default();
            set(&mut l, i);
            limits.push(l);
        }
    }
    for l in limits {
        // Straight into the table, past the store's validation.
        let stored = sqlx::query(
            "INSERT INTO flows (key, rate_per_sec, burst, max_in_flight, retry_budget, \
                 breaker_failures, breaker_window_secs, breaker_cooldown_secs) \
             VALUES ('bounds', $1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(l.rate_per_sec)
        .bind(l.burst.unwrap_or(1))
        .bind(l.max_in_flight)
        .bind(l.retry_budget)
        .bind(l.breaker_failures)
        .bind(l.breaker_window_secs)
        .bind(l.breaker_cooldown_secs)
        .execute(&pool)
        .await;
        assert_eq!(
            l.validate().is_ok(),
            stored.is_ok(),
            "{l:?}: validate {:?}, table {:?}",
            l.validate(),
            stored
        );
        sqlx::query("DELETE FROM flows WHERE key = 'bounds'")
            .execute(&pool)
            .await
            .unwrap();
    }
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let l = FlowLimits {
            rate_per_sec: Some(bad),
            retry_budget: Some(bad),
            ..FlowLimits::default()
        };
        assert!(l.validate().is_err(), "{bad}");
    }
}

async fn flow_of(pool: &PgPool, id: i64) -> (Option<String>, String) {
    sqlx::query_as("SELECT flow_key, flow FROM tasks WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn every_task_gets_its_flow(pool: PgPool) {
    let api = Api::new(pool.clone());

    // Through the API: the URL's host:port, or the flow_key given.
    let spec =
        |name: &str, url: &str| json!({"name": name, "schedule": "rate(1 minute)", "url": url});
    let (status, plain) = api
        .call(
            "POST",
            "/v1/tasks",
            Some(spec("plain", "https://Hooks.Example/run")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plain}");
    assert!(plain["flow_key"].is_null());
    assert_eq!(plain["flow"], "hooks.example:443");
    let mut keyed = spec("keyed", "http://a.example:8080/x");
    keyed["flow_key"] = json!("  billing  ");
    let (status, keyed) = api.call("POST", "/v1/tasks", Some(keyed)).await;
    assert_eq!(status, StatusCode::CREATED, "{keyed}");
    assert_eq!(keyed["flow_key"], "billing");
    assert_eq!(keyed["flow"], "billing");
    let mut bad = spec("bad", "http://a.example/");
    for (key, why) in [
        (json!(""), "empty"),
        (json!("a\u{1}"), "control"),
        (json!(7), "number"),
    ] {
        bad["flow_key"] = key;
        let (status, err) = api.call("POST", "/v1/tasks", Some(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {err}");
        assert_eq!(err["error"]["field"], "flow_key", "{why}: {err}");
    }

    // PATCH sets it, moves it with the URL, and null resets it.
    let id = plain["id"].as_i64().unwrap();
    let path = format!("/v1/tasks/{id}");
    let (_, edited) = api
        .call("PATCH", &path, Some(json!({"flow_key": "billing"})))
        .await;
    assert_eq!(
        (&edited["flow_key"], &edited["flow"]),
        (&json!("billing"), &json!("billing"))
    );
    let (_, edited) = api
        .call(
            "PATCH",
            &path,
            Some(json!({"flow_key": null, "url": "http://b.example:81/"})),
        )
        .await;
    assert!(edited["flow_key"].is_null(), "{edited}");
    assert_eq!(edited["flow"], "b.example:81");

    // Rows written with plain SQL get theirs from the trigger.
    for (url, flow) in [
        ("http://plain.example/x", "plain.example:80"),
        ("https://secure.example/x", "secure.example:443"),
        ("http://ported.example:8080/x", "ported.example:8080"),
        ("https://ported.example:80/x", "ported.example:80"),
        ("HTTP://UPPER.Example:9000/Path", "upper.example:9000"),
        ("https://MiXeD.example", "mixed.example:443"),
        ("http://[::1]:9/", "[::1]:9"),
        ("http://[::1]/", "[::1]:80"),
        ("http://127.0.0.1:8080/hook?x=1", "127.0.0.1:8080"),
        (
            "https://user:secret@auth.example:8443/",
            "auth.example:8443",
        ),
        ("http://q.example?x=1", "q.example:80"),
    ] {
        let task = TaskBuilder::new().url(url).insert(&pool).await;
        assert_eq!(
            flow_of(&pool, task.id).await,
            (None, flow.to_string()),
            "{url}"
        );
    }
    let task = TaskBuilder::new()
        .url("http://plain.example/y")
        .insert(&pool)
        .await;
    sqlx::query("UPDATE tasks SET flow_key = 'shared' WHERE id = $1")
        .bind(task.id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        flow_of(&pool, task.id).await,
        (Some("shared".into()), "shared".into())
    );
    sqlx::query("UPDATE tasks SET flow_key = NULL, url = 'https://moved.example/' WHERE id = $1")
        .bind(task.id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        flow_of(&pool, task.id).await,
        (None, "moved.example:443".into())
    );

    // A flow with tasks only is shown (no limits, no state), not listed.
    let (status, shown) = api.call("GET", "/v1/flows/plain.example%3A80", None).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(
        shown,
        json!({"key": "plain.example:80", "config": null, "state": null, "tasks": 1})
    );
    let (_, shown) = api.call("GET", "/v1/flows/billing", None).await;
    assert_eq!(shown["tasks"], 1, "{shown}");
    let (_, page) = api.call("GET", "/v1/flows", None).await;
    assert_eq!(page["flows"], json!([]));
    // Limits set for it count its tasks.
    let (_, put) = api
        .call(
            "PUT",
            "/v1/flows/%5B%3A%3A1%5D%3A9",
            Some(json!({"rate_per_sec": 5})),
        )
        .await;
    assert_eq!(put["tasks"], 1, "{put}");
}

async fn insert_state(pool: &PgPool, key: &str, breaker: &str, not_before: Option<DateTime<Utc>>) {
    sqlx::query(
        "INSERT INTO flow_state (key, breaker, not_before, failures, opened_at, probe_at, \
             throttled_total, opened_total) \
         VALUES ($1, $2, $3, \
                 CASE WHEN $2 = 'open' THEN 5 ELSE 0 END, \
                 CASE WHEN $2 = 'open' THEN now() - interval '1 minute' END, \
                 CASE WHEN $2 = 'open' THEN now() + interval '30 seconds' END, \
                 7, CASE WHEN $2 = 'open' THEN 1 ELSE 0 END)",
    )
    .bind(key)
    .bind(breaker)
    .bind(not_before)
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn list_shows_limits_and_state_by_key(pool: PgPool) {
    let api = Api::new(pool.clone());
    let soon = Utc::now() + Duration::seconds(30);
    // GIVEN flows with limits only, state only, both; and tasks in some
    insert_state(&pool, "b.example:443", "open", None).await;
    insert_state(&pool, "d.example:80", "closed", Some(soon)).await;
    for key in ["a.example%3A443", "d.example%3A80", "e.example%3A443"] {
        let (status, _) = api
            .call(
                "PUT",
                &format!("/v1/flows/{key}"),
                Some(json!({"rate_per_sec": 10})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    TaskBuilder::new()
        .url("https://b.example/")
        .insert_many(&pool, 3)
        .await;
    TaskBuilder::new()
        .url("http://d.example/")
        .insert(&pool)
        .await;
    // A flow with tasks only is not listed.
    TaskBuilder::new()
        .url("http://c.example/")
        .insert(&pool)
        .await;

    // WHEN listed in one page
    let (status, page) = api.call("GET", "/v1/flows", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let flows = page["flows"].as_array().unwrap();
    let keys: Vec<&str> = flows.iter().map(|f| f["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "a.example:443",
            "b.example:443",
            "d.example:80",
            "e.example:443"
        ]
    );
    // THEN each has what is known of it
    let b = &flows[1];
    assert!(b["config"].is_null(), "{b}");
    assert_eq!(b["tasks"], 3);
    let state = &b["state"];
    assert_eq!(state["breaker"], "open");
    assert_eq!(state["failures"], 5);
    assert_eq!(state["throttled_total"], 7);
    assert_eq!(state["opened_total"], 1);
    assert!(time(&state["probe_at"]) > time(&state["opened_at"]));
    assert!(state["not_before"].is_null());
    let d = &flows[2];
    assert_eq!(d["config"]["rate_per_sec"], 10.0);
    assert_eq!(d["state"]["breaker"], "closed");
    assert_eq!(
        time(&d["state"]["not_before"]).timestamp_micros(),
        soon.timestamp_micros()
    );
    assert_eq!(d["tasks"], 1);
    assert!(flows[0]["state"].is_null());
    assert_eq!(flows[0]["tasks"], 0);
    // AND a flow with state only is shown too
    let (status, shown) = api.call("GET", "/v1/flows/b.example%3A443", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&shown, b);

    // WHEN paged two at a time, every flow comes once, in order
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..5 {
        let query = match &after {
            Some(a) => format!(
                "?limit=2&after={}",
                url::form_urlencoded::byte_serialize(a.as_bytes()).collect::<String>()
            ),
            None => "?limit=2".into(),
        };
        let (status, page) = api.call("GET", &format!("/v1/flows{query}"), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let flows = page["flows"].as_array().unwrap();
        assert!(flows.len() <= 2);
        seen.extend(flows.iter().map(|f| f["key"].as_str().unwrap().to_string()));
        after = page["next_after"].as_str().map(str::to_string);
        if after.is_none() {
            break;
        }
    }
    assert_eq!(seen, keys);
    // Past the last key, an empty page.
    let (_, page) = api.call("GET", "/v1/flows?after=zzz", None).await;
    assert_eq!(page, json!({"flows": [], "next_after": null}));

    // WHEN the limits of a flow with state are removed, it stays listed
    let (status, _) = api.call("DELETE", "/v1/flows/d.example%3A80", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, shown) = api.call("GET", "/v1/flows/d.example%3A80", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        shown["config"].is_null() && shown["state"].is_object(),
        "{shown}"
    );
    // ...and a flow with state but no limits has none to remove
    let (status, err) = api.call("DELETE", "/v1/flows/b.example%3A443", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn status_shows_open_and_backing_off_flows(pool: PgPool) {
    let api = Api::new(pool.clone());
    let (_, st) = api.call("GET", "/v1/status", None).await;
    assert_eq!(
        st["flows"],
        json!({"open": 0, "backing_off": 0, "open_flows": []})
    );
    let now = Utc::now();
    insert_state(&pool, "down.example:443", "open", None).await;
    insert_state(
        &pool,
        "busy.example:443",
        "closed",
        Some(now + Duration::minutes(1)),
    )
    .await;
    insert_state(
        &pool,
        "calm.example:443",
        "closed",
        Some(now - Duration::minutes(1)),
    )
    .await;
    insert_state(
        &pool,
        "both.example:443",
        "open",
        Some(now + Duration::minutes(1)),
    )
    .await;
    let (status, st) = api.call("GET", "/v1/status", None).await;
    assert_eq!(status, StatusCode::OK, "{st}");
    let flows = &st["flows"];
    assert_eq!(flows["open"], 2, "{flows}");
    assert_eq!(flows["backing_off"], 2, "{flows}");
    let open = flows["open_flows"].as_array().unwrap();
    let keys: Vec<&str> = open.iter().map(|f| f["key"].as_str().unwrap()).collect();
    // Longest open first: `down` opened a statement earlier.
    assert_eq!(keys, ["down.example:443", "both.example:443"]);
    for flow in open {
        assert!(time(&flow["probe_at"]) > time(&flow["opened_at"]), "{flow}");
    }
    // The list is bounded; the count is not.
    for i in 0..60 {
        insert_state(&pool, &format!("many-{i:02}"), "open", None).await;
    }
    let (_, st) = api.call("GET", "/v1/status", None).await;
    assert_eq!(st["flows"]["open"], 62);
    assert_eq!(
        st["flows"]["open_flows"].as_array().unwrap().len() as i64,
        store::MAX_OPEN_FLOWS_SHOWN
    );
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn flow_routes_need_the_token(pool: PgPool) {
    let api = Api::new(pool);
    for (method, path) in [
        ("GET", "/v1/flows"),
        ("GET", "/v1/flows/a%3A1"),
        ("PUT", "/v1/flows/a%3A1"),
        ("DELETE", "/v1/flows/a%3A1"),
    ] {
        for auth in [None, Some("Bearer wrong-token"), Some("Basic abc")] {
            let mut req = Request::builder().method(method).uri(path);
            if let Some(auth) = auth {
                req = req.header(header::AUTHORIZATION, auth);
            }
            let req = req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))
                .unwrap();
            let response = api.router.clone().oneshot(req).await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} {auth:?}"
            );
            assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
        }
    }
    let (status, err) = api.call("POST", "/v1/flows/a%3A1", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{err}");
    let (status, err) = api.call("PATCH", "/v1/flows", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{err}");
}

/// Requests no client should send: none may get a 500.
#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn malformed_flow_requests_never_500(pool: PgPool) {
    let api = Api::new(pool);
    let bodies = [
        String::new(),
        "null".into(),
        "{".into(),
        "[1]".into(),
        "{\"rate_per_sec\": 1e308}".into(),
        "{\"rate_per_sec\": 1e400}".into(),
        "{\"rate_per_sec\": -0.0}".into(),
        "{\"burst\": 9223372036854775808}".into(),
        "{\"retry_budget\": 5e-324}".into(),
        "{\"on_open\": {}}".into(),
        "{\"burst\": 1, \"burst\": 2}".into(),
        "\u{feff}{}".into(),
        "[".repeat(10_000),
    ];
    let keys = [
        "a%3A1".to_string(),
        "%00".into(),
        "%C0%80".into(),
        "%ED%A0%80".into(),
        "%".into(),
        "%zz".into(),
        "%2F%2F".into(),
        "%E2%81%A6".into(),
        "x".repeat(5000),
        "%F0%9F%A6%80".repeat(200),
    ];
    let mut calls = 0;
    for key in &keys {
        for method in ["GET", "PUT", "DELETE"] {
            for body in &bodies {
                let req = Request::builder()
                    .method(method)
                    .uri(format!("/v1/flows/{key}"))
                    .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                    .body(Body::from(body.clone()));
                let Ok(req) = req else { continue };
                let response = api.router.clone().oneshot(req).await.unwrap();
                assert!(
                    !response.status().is_server_error(),
                    "{method} {key} {:?}: {}",
                    body.chars().take(40).collect::<String>(),
                    response.status()
                );
                calls += 1;
            }
        }
    }
    for query in [
        "?limit=-1",
        "?limit=1&limit=2",
        "?=&&=",
        "?after",
        "?limit=99999999999999999999",
    ] {
        let (status, body) = api.call("GET", &format!("/v1/flows{query}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        calls += 1;
    }
    // Query strings are decoded lossily (as for the task routes): `%FF`
    // is U+FFFD, a key like any other.
    let (status, page) = api.call("GET", "/v1/flows?after=%FF", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(calls > 300, "{calls}");
}

/// The OpenAPI document states the flow routes and their rules, from the
/// constants the validation uses.
#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn openapi_states_the_flow_rules(pool: PgPool) {
    use sundial::store::flow_config as fc;
    let api = Api::new(pool);
    let (_, doc) = api.call("GET", "/openapi.json", None).await;
    let one = &doc["paths"]["/v1/flows/{key}"];
    for method in ["get", "put", "delete"] {
        let op = &one[method];
        let key = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "key")
            .unwrap();
        assert_eq!(key["in"], "path");
        assert_eq!(key["schema"]["maxLength"], 200, "{method}");
        for status in ["400", "401", "500"] {
            assert!(op["responses"][status].is_object(), "{method} {status}");
        }
    }
    assert!(one["get"]["responses"]["404"].is_object());
    assert!(one["delete"]["responses"]["404"].is_object());
    assert!(one["put"]["responses"]["415"].is_object());
    let limit = doc["paths"]["/v1/flows"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()
        .clone();
    assert_eq!(limit["schema"]["maximum"], store::MAX_FLOW_PAGE);
    let props = &doc["components"]["schemas"]["FlowLimits"]["properties"];
    assert_eq!(
        doc["components"]["schemas"]["FlowLimits"]["additionalProperties"],
        false
    );
    assert_eq!(
        props["rate_per_sec"]["exclusiveMinimum"],
        fc::RATE_PER_SEC_RANGE.0
    );
    assert_eq!(props["rate_per_sec"]["maximum"], fc::RATE_PER_SEC_RANGE.1);
    assert_eq!(props["retry_budget"]["maximum"], fc::RETRY_BUDGET_RANGE.1);
    for (field, (min, max)) in [
        ("burst", fc::BURST_RANGE),
        ("max_in_flight", fc::MAX_IN_FLIGHT_RANGE),
        ("breaker_failures", fc::BREAKER_FAILURES_RANGE),
        ("breaker_window_secs", fc::BREAKER_SECS_RANGE),
        ("breaker_cooldown_secs", fc::BREAKER_SECS_RANGE),
    ] {
        assert_eq!(props[field]["minimum"], min, "{field}");
        assert_eq!(props[field]["maximum"], max, "{field}");
        assert_eq!(props[field]["type"], json!(["integer", "null"]), "{field}");
    }
    assert_eq!(props["on_open"]["enum"], json!(["fire_latest", "skip"]));
    let task = &doc["components"]["schemas"]["TaskSpec"]["properties"]["flow_key"];
    assert_eq!(task["maxLength"], 200);
    assert_eq!(task["type"], json!(["string", "null"]));
}
