//! Property test of the admin router as a tower service, against a real
//! Postgres: random methods, paths, ids, query strings, headers and bodies
//! (valid-shaped task JSON with hostile field values, and garbage) never
//! get a 5xx and never panic (a panic would surface as the panic layer's
//! 500). Bounded to a few hundred cases so it runs in seconds.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};
use sqlx::PgPool;
use sundial::admin::{self, AdminState};
use sundial::task;
use tower::ServiceExt;

mod common;

use common::{AnyTarget, CaptureQueue, TOKEN};

/// How many random requests one run sends.
const CASES: u32 = 400;

/// One random request.
#[derive(Debug, Clone)]
struct Attempt {
    method: Method,
    path: String,
    query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// Text a tester would try: empty, huge, controls, NUL, bidi, quotes,
/// percent signs, non-ASCII, and arbitrary Unicode.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("\u{0}".to_string()),
        Just("a\u{0}b".to_string()),
        Just("\u{1b}[2J\u{1b}]0;x\u{7}".to_string()),
        Just("\u{202e}txt.exe".to_string()),
        Just("\u{feff}".to_string()),
        Just("%00%ff%".to_string()),
        Just("é".repeat(1500)),
        Just("x".repeat(70_000)),
        "[ -~]{0,40}",
        any::<String>(),
    ]
}

fn url_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("https://example.com/hook".to_string()),
        Just("http:8.8.8.8".to_string()),
        Just("http:/8.8.8.8/".to_string()),
        Just("http:\\\\8.8.8.8\\".to_string()),
        Just("\u{1}http://8.8.8.8/".to_string()),
        Just("http://example.com/\u{0}".to_string()),
        Just("HTTPS://EXAMPLE.com:443/a/../b".to_string()),
        Just("http://[::1]/".to_string()),
        Just("http://u:p@example.com/".to_string()),
        Just(format!("https://example.com/{}", "é".repeat(700))),
        Just(format!("https://example.com/{}", "a".repeat(2100))),
        "https?://[a-z0-9.\\-]{1,20}(:[0-9]{1,6})?/[ -~]{0,30}",
        hostile_text(),
    ]
}

fn schedule_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("rate(1 minute)".to_string()),
        Just("*/5 * * * *".to_string()),
        Just("@daily".to_string()),
        Just("cron(0 12 * * ? *)".to_string()),
        Just("at(2999-01-01T00:00:00)".to_string()),
        Just("at(1999-01-01T00:00:00)".to_string()),
        Just("rate(99999999999999 seconds)".to_string()),
        "(rate\\([0-9]{1,12} (second|minute|hour|day)s?\\))",
        "[0-9*/,\\- ]{0,30}",
        hostile_text(),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-2i64..2_000_000).prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!(u64::MAX)),
        Just(json!(1e300)),
    ]
}

/// A number of a ranged field: mostly in range, its edges, or any number.
fn in_and_around((min, max): (i32, i32)) -> BoxedStrategy<Value> {
    prop_oneof![
        4 => (min..=max).prop_map(|n| json!(n)),
        1 => prop::sample::select(vec![min - 1, min, max, max.saturating_add(1)]).prop_map(|n| json!(n)),
        1 => number(),
    ]
    .boxed()
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        hostile_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A field of a task body: mostly a value of the right type, sometimes
/// hostile, sometimes of another type.
fn field_value(field: &'static str) -> BoxedStrategy<Value> {
    let typed: BoxedStrategy<Value> = match field {
        "name" | "body" => prop_oneof![
            4 => "[a-z0-9\\-]{1,12}".prop_map(Value::String),
            1 => hostile_text().prop_map(Value::String),
        ]
        .boxed(),
        "timezone" => prop_oneof![
            4 => Just(json!("Europe/Berlin")),
            1 => hostile_text().prop_map(Value::String),
        ]
        .boxed(),
        "schedule" => schedule_value().prop_map(Value::String).boxed(),
        "url" => prop_oneof![
            4 => "https?://[a-z]{1,10}\\.example(:[0-9]{1,5})?/[a-z0-9/._~\\-]{0,20}"
                .prop_map(Value::String),
            3 => url_value().prop_map(Value::String),
        ]
        .boxed(),
        "method" => prop_oneof![
            prop::sample::select(vec![
                "GET", "post", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"
            ])
            .prop_map(|m| json!(m)),
            hostile_text().prop_map(Value::String),
        ]
        .boxed(),
        "catch_up" => prop::sample::select(vec!["skip", "all", "none", "SKIP", "x"])
            .prop_map(|v| json!(v))
            .boxed(),
        "overlap" => prop::sample::select(vec!["allow", "forbid", "maybe"])
            .prop_map(|v| json!(v))
            .boxed(),
        "enabled" => any::<bool>().prop_map(Value::Bool).boxed(),
        "headers" => prop_oneof![
            prop::collection::btree_map("[A-Za-z\\-]{1,12}", hostile_text(), 0..3)
                .prop_map(|m| json!(m)),
            prop::collection::btree_map(hostile_text(), "[ -~]{0,10}", 0..3).prop_map(|m| json!(m)),
            Just(json!({"Idempotency-Key": "x"})),
        ]
        .boxed(),
        "schedules" | "count" => (0u64..200).prop_map(|n| json!(n)).boxed(),
        "from" => prop_oneof![
            Just(json!("2026-01-01T00:00:00Z")),
            Just(json!("-4714-11-23T00:00:00Z")),
            Just(json!("+262143-12-31T23:59:59Z")),
            Just(json!("9999-12-31T23:59:59.999999999Z")),
        ]
        .boxed(),
        "timeout_ms" => in_and_around(task::TIMEOUT_MS_RANGE),
        "max_attempts" => in_and_around(task::ATTEMPTS_RANGE),
        "retry_backoff_ms" => in_and_around(task::BACKOFF_MS_RANGE),
        "jitter_secs" => in_and_around(task::JITTER_SECS_RANGE),
        "catch_up_max_age_secs" => in_and_around(task::CATCH_UP_AGE_RANGE),
        _ => number().boxed(),
    };
    prop_oneof![8 => typed, 1 => any_json()].boxed()
}

const OPTIONAL_FIELDS: &[&str] = &[
    "timezone",
    "method",
    "headers",
    "body",
    "timeout_ms",
    "max_attempts",
    "retry_backoff_ms",
    "catch_up",
    "catch_up_max_age_secs",
    "overlap",
    "jitter_secs",
    "enabled",
];

/// A JSON object with `required` fields (each present 90% of the time) and
/// a random subset of `optional` ones.
fn object_of(
    required: &'static [&'static str],
    optional: &'static [&'static str],
) -> impl Strategy<Value = Value> {
    let fields: Vec<BoxedStrategy<Option<(&'static str, Value)>>> = required
        .iter()
        .map(|f| (f, 0.9))
        .chain(optional.iter().map(|f| (f, 0.15)))
        .map(|(f, p)| prop::option::weighted(p, field_value(f).prop_map(move |v| (*f, v))).boxed())
        .collect();
    fields.prop_map(|pairs| {
        let map: Map<String, Value> = pairs
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Value::Object(map)
    })
}

/// Bodies shaped like a create, a patch or a preview request.
fn task_shaped() -> impl Strategy<Value = Value> {
    // A create that is valid but for chance collisions of its name, so
    // that creates, edits and deletes of real rows are always exercised.
    let valid = ("[a-z]{4,12}", prop::sample::select(vec!["rate(1 minute)", "@daily", "*/5 * * * *"]))
        .prop_map(|(name, schedule)| {
            json!({"name": name, "schedule": schedule, "url": "https://example.com/hook"})
        });
    prop_oneof![
        6 => valid,
        5 => object_of(&["name", "schedule", "url"], OPTIONAL_FIELDS),
        2 => object_of(&[], &["name", "schedule", "url", "timezone", "body", "enabled", "jitter_secs"]),
        1 => object_of(&["schedule"], &["timezone", "count", "from"]),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => task_shaped().prop_map(|v| v.to_string().into_bytes()),
        1 => any_json().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => Just(Vec::new()),
        1 => Just(b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".repeat(300)),
    ]
}

/// A path segment where a task id goes.
fn id_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just("1".to_string()),
        6 => Just("2".to_string()),
        2 => (1i64..5).prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => Just("9223372036854775807".to_string()),
        1 => Just("9223372036854775808".to_string()),
        1 => Just("0".to_string()),
        1 => Just("-1".to_string()),
        1 => Just("+3".to_string()),
        1 => Just("1e3".to_string()),
        1 => Just("%00".to_string()),
        1 => Just("%FF%FE".to_string()),
        1 => "[A-Za-z0-9%._~\\-]{0,12}",
    ]
}

/// A method and path: mostly a route that exists, sometimes anything.
fn route() -> impl Strategy<Value = (Method, String)> {
    let id_routes = prop::sample::select(vec![
        (Method::GET, ""),
        (Method::PATCH, ""),
        (Method::PATCH, ""),
        (Method::DELETE, ""),
        (Method::POST, "/pause"),
        (Method::POST, "/resume"),
        (Method::POST, "/trigger"),
        (Method::GET, "/runs"),
    ]);
    let plain_routes = prop::sample::select(vec![
        (Method::POST, "/v1/tasks"),
        (Method::GET, "/v1/tasks"),
        (Method::GET, "/v1/status"),
        (Method::GET, "/v1/flows"),
        (Method::POST, "/v1/schedules/preview"),
        (Method::GET, "/healthz"),
        (Method::GET, "/openapi.json"),
    ]);
    let flow_methods = prop::sample::select(vec![Method::GET, Method::PUT, Method::DELETE]);
    let any_method = prop::sample::select(vec![
        Method::GET,
        Method::POST,
        Method::PATCH,
        Method::DELETE,
        Method::PUT,
        Method::HEAD,
        Method::OPTIONS,
    ]);
    let odd_paths = prop_oneof![
        prop::sample::select(vec![
            "/v1/tasks/",
            "/v1",
            "/",
            "//v1/tasks",
            "/v1/tasks/1/runs/2",
            "/v1/tasks/1/",
        ])
        .prop_map(str::to_string),
        "/[A-Za-z0-9%/._~\\-]{0,30}",
    ];
    prop_oneof![
        4 => (id_routes, id_segment())
            .prop_map(|((m, tail), id)| (m, format!("/v1/tasks/{id}{tail}"))),
        1 => Just((Method::POST, "/v1/tasks".to_string())),
        // A key segment is as wild as an id one: anything percent-encoded.
        1 => (flow_methods, id_segment())
            .prop_map(|(m, key)| (m, format!("/v1/flows/{key}"))),
        3 => plain_routes.prop_map(|(m, p)| (m, p.to_string())),
        1 => (any_method.clone(), id_segment()).prop_map(|(m, id)| (m, format!("/v1/tasks/{id}"))),
        1 => (any_method, odd_paths),
    ]
}

fn query_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (-5i64..300).prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        Just("2026-01-01T00:00:00Z".to_string()),
        Just("-4714-11-23T00:00:00Z".to_string()),
        Just("%2B262143-12-31T23:59:59Z".to_string()),
        Just("0001-01-01T00:00:00Z".to_string()),
        Just("%00".to_string()),
        Just("%FF".to_string()),
        "[A-Za-z0-9%+:._~\\-]{0,20}",
    ]
}

fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => prop::sample::select(vec!["limit", "cursor", "enabled", "failing", "before", "after"])
            .prop_map(str::to_string),
        1 => "[A-Za-z0-9%._\\-]{0,8}",
    ];
    prop::collection::vec((key, query_value()), 0..4).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let auth = prop_oneof![
        8 => Just(format!("Bearer {TOKEN}").into_bytes()),
        1 => Just(b"Bearer wrong".to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..20),
    ];
    let content_type = prop::option::of(prop::sample::select(vec![
        "application/json",
        "application/json; charset=utf-8",
        "application/merge-patch+json",
        "text/plain",
        "",
        "application/x-www-form-urlencoded",
    ]));
    let idempotency = prop::option::weighted(
        0.3,
        prop_oneof![
            "[!-~]{1,20}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..300),
        ],
    );
    (auth, content_type, idempotency).prop_map(|(auth, content_type, key)| {
        let mut headers = vec![("authorization".to_string(), auth)];
        if let Some(ct) = content_type {
            headers.push(("content-type".to_string(), ct.as_bytes().to_vec()));
        }
        if let Some(key) = key {
            headers.push(("idempotency-key".to_string(), key));
        }
        headers
    })
}

fn attempt() -> impl Strategy<Value = Attempt> {
    (route(), query(), headers(), body()).prop_map(|((method, path), query, headers, body)| {
        Attempt {
            method,
            path,
            query,
            headers,
            body,
        }
    })
}

/// Sends one attempt; `None` when the request cannot even be built (the
/// HTTP layer would refuse it before the router).
async fn send(router: &Router, a: &Attempt) -> Option<(u16, Vec<u8>)> {
    let uri = if a.query.is_empty() {
        a.path.clone()
    } else {
        format!("{}?{}", a.path, a.query)
    };
    let mut req = Request::builder().method(a.method.clone()).uri(uri);
    for (name, value) in &a.headers {
        req = req.header(name.as_str(), value.as_slice());
    }
    let req = req.body(Body::from(a.body.clone())).ok()?;
    let response = router.clone().oneshot(req).await.ok()?;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 4 << 20)
        .await
        .unwrap_or_default();
    Some((status, bytes.to_vec()))
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn random_requests_never_get_a_5xx(pool: PgPool) {
    let state = AdminState::new(
        pool,
        Arc::new(CaptureQueue::default()),
        Arc::new(AnyTarget),
        TOKEN,
    );
    let router = admin::router(state);
    // Ids 1 and 2 exist, so some requests reach real rows.
    for name in ["first", "second"] {
        let body =
            json!({"name": name, "schedule": "rate(1 minute)", "url": "https://example.com/"});
        let attempt = Attempt {
            method: Method::POST,
            path: "/v1/tasks".into(),
            query: String::new(),
            headers: vec![(
                "authorization".into(),
                format!("Bearer {TOKEN}").into_bytes(),
            )],
            body: body.to_string().into_bytes(),
        };
        let (status, _) = send(&router, &attempt).await.expect("seed request");
        assert_eq!(status, 201);
    }

    let handle = tokio::runtime::Handle::current();
    let seen = Arc::new(std::sync::Mutex::new(
        std::collections::BTreeMap::<u16, u32>::new(),
    ));
    let tally = seen.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases: CASES,
            max_shrink_iters: 200,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&attempt(), |a| {
                let Some((status, body)) = handle.block_on(send(&router, &a)) else {
                    return Ok(());
                };
                if let Ok(mut seen) = tally.lock() {
                    *seen.entry(status).or_default() += 1;
                }
                if status >= 500 {
                    return Err(TestCaseError::fail(format!(
                        "{status}: {}",
                        String::from_utf8_lossy(&body)
                    )));
                }
                // Every answer with a body is JSON (HEAD has none).
                if !body.is_empty() && serde_json::from_slice::<Value>(&body).is_err() {
                    return Err(TestCaseError::fail(format!(
                        "{status} with a body that is not JSON: {}",
                        String::from_utf8_lossy(&body)
                    )));
                }
                Ok(())
            })
            .map_err(|err| err.to_string())
    })
    .await
    .expect("the property runner panicked");
    if let Err(failure) = result {
        panic!("{failure}");
    }
    // The generators reach past the validation too, not only into it.
    let seen = seen.lock().unwrap().clone();
    eprintln!("statuses: {seen:?}");
    let ok = seen.range(200..300).map(|(_, n)| n).sum::<u32>();
    let refused = seen.get(&400).copied().unwrap_or(0);
    let created = seen.get(&201).copied().unwrap_or(0);
    assert!(ok >= 10 && created >= 2 && refused >= 10, "{seen:?}");
}
