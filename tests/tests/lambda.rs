//! The scanner and processor binaries driven through a local Lambda
//! Runtime API with real event payloads, against Postgres, the SQS
//! emulator and a local HTTP target; their EMF output is parsed and
//! checked against what happened.

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;
use sundial_e2e::runtime_api::{Answer, RuntimeApi};
use sundial_e2e::{drain_queue, driver_env, fresh_queue, workspace_bin, Child};
use sundial_target::{self as target_server, TargetConfig};
use sundial_testkit::{database_url_for, TaskBuilder};

/// `date_trunc('second', now())`.
fn whole_second_now() -> chrono::DateTime<chrono::Utc> {
    chrono::DurationRound::duration_trunc(chrono::Utc::now(), chrono::Duration::seconds(1)).unwrap()
}

/// The one EMF record a function printed for an invocation.
fn emf_record(lines: &[String]) -> Value {
    let records: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert_eq!(records.len(), 1, "expected one EMF record in {lines:#?}");
    records.into_iter().next().unwrap()
}

/// Checks the record's declarations: namespace, dimension, units, and that
/// every declared metric has a value.
fn metric(record: &Value, name: &str, unit: &str) -> Value {
    let def = &record["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(def["Namespace"], "Sundial");
    assert_eq!(def["Dimensions"], json!([["FunctionName"]]));
    let declared = def["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Name"] == name)
        .unwrap_or_else(|| panic!("{name} not declared in {record}"));
    assert_eq!(declared["Unit"], unit, "{name}");
    record
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} has no value"))
}

fn common_env(pool: &PgPool, queue_url: &str) -> Vec<(String, String)> {
    let mut env = driver_env(&database_url_for(pool), queue_url);
    env.push(("SUNDIAL_SIGNING_SECRETS".into(), "lambda-secret".into()));
    env
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn scanner_and_processor_binaries_run_under_the_runtime_api(pool: PgPool) {
    let server = target_server::spawn(TargetConfig {
        secrets: vec!["lambda-secret".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let queue = fresh_queue("lambda").await;
    let now = whole_second_now();
    TaskBuilder::new()
        .name("ok-")
        .url(server.url("/ok"))
        .next_run_at(now)
        .insert_many(&pool, 4)
        .await;
    TaskBuilder::new()
        .name("missing")
        .url(server.url("/status/404"))
        .next_run_at(now)
        .insert(&pool)
        .await;

    // Scanner: a real EventBridge scheduled event.
    let api = RuntimeApi::start().await.unwrap();
    let mut env = common_env(&pool, queue.queue_url());
    env.extend(api.env("sundial-scanner"));
    let scanner = Child::spawn(&workspace_bin("scanner"), &[], &env);
    let event = json!({
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-22T10:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/sundial-scanner"],
        "detail": {}
    });
    let answer = api.invoke(event, Duration::from_secs(60)).await;
    let Some(Answer::Response(summary)) = answer else {
        panic!(
            "scanner answered {answer:?}; init errors {:?}; stderr {:?}; stdout {:?}",
            api.init_errors(),
            scanner.stderr_lines(),
            scanner.stdout_lines()
        );
    };
    assert_eq!(summary["enqueued"], 5, "{summary}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let record = emf_record(&scanner.stdout_lines());
    assert_eq!(record["FunctionName"], "sundial-scanner");
    assert_eq!(metric(&record, "Claimed", "Count"), 5.0);
    assert_eq!(metric(&record, "Enqueued", "Count"), 5.0);
    assert_eq!(metric(&record, "EnqueueFailed", "Count"), 0.0);
    assert_eq!(metric(&record, "DueBacklog", "Count"), 0.0);
    assert_eq!(metric(&record, "OldestDueAgeSeconds", "Seconds"), 0.0);
    drop(scanner);

    // Processor: the SQS event Lambda would build from those messages.
    let received = drain_queue(&queue, 5, Duration::from_secs(20)).await;
    assert_eq!(received.len(), 5);
    let records: Vec<Value> = received
        .iter()
        .map(|(d, _)| {
            json!({
                "messageId": d.message_id,
                "receiptHandle": d.receipt_handle,
                "body": d.body,
                "attributes": {
                    "ApproximateReceiveCount": d.receive_count.to_string(),
                    "SentTimestamp": "1763805600000",
                    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                    "ApproximateFirstReceiveTimestamp": "1763805600005"
                },
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:sundial-dispatch",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    let mut env = common_env(&pool, queue.queue_url());
    env.extend(api.env("sundial-processor"));
    let processor = Child::spawn(&workspace_bin("processor"), &[], &env);
    let answer = api
        .invoke(json!({ "Records": records }), Duration::from_secs(60))
        .await;
    let Some(Answer::Response(response)) = answer else {
        panic!(
            "processor answered {answer:?}; stderr {:?}",
            processor.stderr_lines()
        );
    };
    assert_eq!(response["batchItemFailures"], json!([]), "{response}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let record = emf_record(&processor.stdout_lines());
    assert_eq!(record["FunctionName"], "sundial-processor");
    assert_eq!(metric(&record, "Fired", "Count"), 5.0);
    assert_eq!(metric(&record, "Succeeded", "Count"), 4.0);
    assert_eq!(metric(&record, "Failed", "Count"), 1.0);
    assert_eq!(metric(&record, "TimedOut", "Count"), 0.0);
    assert_eq!(metric(&record, "Retried", "Count"), 0.0);
    assert_eq!(metric(&record, "StaleDropped", "Count"), 0.0);
    let lags = metric(&record, "FireLagMs", "Milliseconds");
    assert_eq!(lags.as_array().unwrap().len(), 5);
    let latencies = metric(&record, "TargetLatencyMs", "Milliseconds");
    assert!(latencies
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v.as_f64().unwrap() >= 0.0));

    // And the logs are JSON lines, without ANSI colours.
    let logs = processor.stdout_lines();
    assert!(logs.iter().all(|l| !l.contains('\u{1b}')));
    assert!(logs
        .iter()
        .any(|l| l.contains("\"batch processed\"") || l.contains("batch processed")));
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM task_runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(runs, 5);
    assert_eq!(server.stats.bad_signatures(), 0);
}

/// A Lambda function URL request (payload format 2.0).
fn function_url_event(method: &str, path: &str, token: &str, body: Option<&str>) -> Value {
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "authorization": format!("Bearer {token}"),
            "content-type": "application/json",
            "host": "abcdefg.lambda-url.us-east-1.on.aws",
            "user-agent": "curl/8.5.0"
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdefg",
            "domainName": "abcdefg.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abcdefg",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "curl/8.5.0"
            },
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e812345678",
            "routeKey": "$default",
            "stage": "$default",
            "time": "22/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1763805600000u64
        },
        "body": body,
        "isBase64Encoded": false
    })
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn admin_binary_serves_function_url_requests(pool: PgPool) {
    let queue = fresh_queue("admin-lambda").await;
    let api = RuntimeApi::start().await.unwrap();
    let token = "admin-token-0123456789";
    let mut env = common_env(&pool, queue.queue_url());
    env.push(("SUNDIAL_ADMIN_TOKEN".into(), token.into()));
    env.extend(api.env("sundial-admin"));
    let admin = Child::spawn(&workspace_bin("admin"), &[], &env);

    let create = function_url_event(
        "POST",
        "/v1/tasks",
        token,
        Some(r#"{"name":"from-lambda","schedule":"*/5 * * * *","url":"http://127.0.0.1:9/hook"}"#),
    );
    let answer = api.invoke(create, Duration::from_secs(30)).await;
    let Some(Answer::Response(response)) = answer else {
        panic!(
            "admin answered {answer:?}; stderr {:?}",
            admin.stderr_lines()
        );
    };
    assert_eq!(response["statusCode"], 201, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["name"], "from-lambda");
    assert!(body["next_run_at"].is_string());

    // Bad input is a 400 naming the field, through Lambda too.
    let bad = function_url_event(
        "POST",
        "/v1/tasks",
        token,
        Some(r#"{"name":"x","schedule":"61 * * * *","url":"https://example.com"}"#),
    );
    let Some(Answer::Response(response)) = api.invoke(bad, Duration::from_secs(30)).await else {
        panic!("no answer");
    };
    assert_eq!(response["statusCode"], 400);
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"]["field"], "schedule");

    // Without the token: 401.
    let anonymous = function_url_event("GET", "/v1/tasks", "wrong-token", None);
    let Some(Answer::Response(response)) = api.invoke(anonymous, Duration::from_secs(30)).await
    else {
        panic!("no answer");
    };
    assert_eq!(response["statusCode"], 401);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn admin_binary_behind_iam_needs_no_bearer_token(pool: PgPool) {
    let queue = fresh_queue("admin-iam").await;
    let api = RuntimeApi::start().await.unwrap();
    let mut env = common_env(&pool, queue.queue_url());
    env.push(("SUNDIAL_ADMIN_AUTH".into(), "iam".into()));
    env.extend(api.env("sundial-admin"));
    let admin = Child::spawn(&workspace_bin("admin"), &[], &env);
    // With IAM auth the Authorization header carries a SigV4 signature.
    let mut list = function_url_event("GET", "/v1/tasks", "unused", None);
    list["headers"]["authorization"] = json!(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261122/us-east-1/lambda/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    );
    let answer = api.invoke(list, Duration::from_secs(30)).await;
    let Some(Answer::Response(response)) = answer else {
        panic!(
            "admin answered {answer:?}; stderr {:?}",
            admin.stderr_lines()
        );
    };
    assert_eq!(response["statusCode"], 200, "{response}");
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn processor_binary_hands_back_unstarted_messages_quickly(pool: PgPool) {
    let server = target_server::spawn(TargetConfig::default()).await.unwrap();
    let queue = fresh_queue("handback").await;
    TaskBuilder::new()
        .name("slow-")
        .url(server.url("/delay/1500"))
        .next_run_at(whole_second_now())
        .insert_many(&pool, 6)
        .await;
    sundial::scan::scan(
        &pool,
        &queue,
        &sundial::scan::ScanOptions {
            lookahead: Duration::from_secs(10),
            page_size: 10,
            lease: Duration::from_secs(300),
            budget: Duration::from_secs(10),
            owner: "test".into(),
            retention_days: 30,
            notifier: None,
            missed_grace: Duration::from_secs(120),
        },
    )
    .await
    .unwrap();
    // Received as Lambda's event source would: invisible for 60 s.
    let mut received = Vec::new();
    while received.len() < 6 {
        received.extend(
            queue
                .receive(10, Duration::from_secs(1), Some(Duration::from_secs(60)))
                .await
                .unwrap(),
        );
    }
    let records: Vec<Value> = received
        .iter()
        .map(|d| {
            json!({
                "messageId": d.message_id, "receiptHandle": d.receipt_handle, "body": d.body,
                "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                "eventSource": "aws:sqs", "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:sundial-dispatch"
            })
        })
        .collect();
    let mut env = common_env(&pool, queue.queue_url());
    env.push(("SUNDIAL_CONCURRENCY".into(), "2".into()));
    env.push(("SUNDIAL_DEADLINE_MARGIN_MS".into(), "200".into()));
    let api = RuntimeApi::start().await.unwrap();
    env.extend(api.env("sundial-processor"));
    let processor = Child::spawn(&workspace_bin("processor"), &[], &env);
    // 6 calls of 1.5 s, two at a time, in a 3-second invocation: some
    // cannot start.
    let answer = api
        .invoke(json!({ "Records": records }), Duration::from_secs(3))
        .await;
    let Some(Answer::Response(response)) = answer else {
        panic!(
            "processor answered {answer:?}; stderr {:?}",
            processor.stderr_lines()
        );
    };
    let failed = response["batchItemFailures"].as_array().unwrap().len();
    assert!(failed > 0, "{response}");
    // They are visible again within seconds, not after the 60 s timeout.
    let back = drain_queue(&queue, failed, Duration::from_secs(15)).await;
    assert_eq!(back.len(), failed);
}
