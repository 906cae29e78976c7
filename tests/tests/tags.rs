//! Task tags and per-task lateness, end to end in the deployed shape: the
//! scanner ticking at EventBridge's cadence (`sundial scan --loop --every
//! 60`), the real `aws-sdk-sqs` against the SQS emulator, `sundial process
//! --emf` firing at a local target, and the admin API on loopback.
//!
//! Three tasks: one whose occurrence is 40 s overdue when the scanner
//! first runs (catch-up `skip` fires it once, 40 s late), one whose target
//! answers 500, and one that is fine. The processor's EMF output must
//! carry per-tag records (dimension `Tag`, never the task), and
//! `/v1/status` and `sundial status` must name the late task and the
//! failing one.

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;
use sundial_e2e::deployment::{emf_records, stop, Deployment};
use sundial_e2e::{workspace_bin, Child};
use sundial_target::{self as target_server, TargetConfig};

const TOKEN: &str = "tags-test-token-0123456789";
const LATE_SECS: i64 = 40;
/// How long a driver may take to exit on SIGTERM.
const STOP: Duration = Duration::from_secs(30);

struct Harness(Deployment);

impl std::ops::Deref for Harness {
    type Target = Deployment;
    fn deref(&self) -> &Deployment {
        &self.0
    }
}

impl Harness {
    async fn start(pool: &PgPool) -> Harness {
        Harness(Deployment::start(pool, "tags", TOKEN).await)
    }

    async fn create(&self, body: Value) -> i64 {
        let (status, task) = self
            .send(reqwest::Method::POST, "/v1/tasks", Some(body))
            .await;
        assert_eq!(status, 201, "{task:#}");
        task["id"].as_i64().unwrap()
    }

    async fn runs(&self, id: i64) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM task_runs WHERE task_id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

fn task_body(name: &str, url: &str, tags: &[&str]) -> Value {
    json!({
        "name": name,
        "schedule": "rate(5 seconds)",
        "url": url,
        "max_attempts": 1,
        "timeout_ms": 5000,
        "tags": tags,
    })
}

/// The per-tag records, by tag, summed over the records printed.
fn tagged(records: &[Value]) -> std::collections::BTreeMap<String, (f64, f64, Vec<f64>)> {
    let mut out = std::collections::BTreeMap::new();
    for r in records {
        let dims = &r["_aws"]["CloudWatchMetrics"][0]["Dimensions"];
        if *dims != json!([["FunctionName", "Tag"]]) {
            assert_eq!(*dims, json!([["FunctionName"]]), "{r}");
            assert!(r.get("Tag").is_none(), "{r}");
            continue;
        }
        let tag = r["Tag"].as_str().unwrap().to_string();
        let entry = out.entry(tag).or_insert((0.0, 0.0, Vec::new()));
        entry.0 += r["Fired"].as_f64().unwrap();
        entry.1 += r["Failed"].as_f64().unwrap();
        if let Some(lags) = r["FireLagMs"].as_array() {
            entry.2.extend(lags.iter().filter_map(Value::as_f64));
        }
    }
    out
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn tags_reach_emf_and_status_names_the_latest_and_the_most_failing_tasks(pool: PgPool) {
    let h = Harness::start(&pool).await;
    let server = target_server::spawn(TargetConfig::default()).await.unwrap();
    let late = h
        .create(task_body("late-report", &server.url("/ok"), &["team:late"]))
        .await;
    let failing = h
        .create(task_body(
            "failing-sync",
            &server.url("/status/500"),
            &["team:fail", "billing", "team:fail"],
        ))
        .await;
    let fine = h.create(task_body("fine", &server.url("/ok"), &[])).await;
    // The late task's occurrence came due 40 s before any scanner ran.
    sqlx::query("UPDATE tasks SET next_run_at = now() - make_interval(secs => $2) WHERE id = $1")
        .bind(late)
        .bind(LATE_SECS as f64)
        .execute(&h.pool)
        .await
        .unwrap();

    // WHEN the pipeline runs as deployed until every task has runs
    let process = h.spawn(&["process", "--wait", "2", "--emf"]);
    let scanner = h.spawn(&["scan", "--loop", "--every", "60", "--emf"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if h.runs(late).await >= 2 && h.runs(failing).await >= 3 && h.runs(fine).await >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "runs: {} {} {}",
            h.runs(late).await,
            h.runs(failing).await,
            h.runs(fine).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(stop(scanner, STOP).await);
    let process = stop(process, STOP).await;

    // THEN the processor's EMF output has one record per tag, and none per task
    let figures = tagged(&emf_records(&process));
    assert_eq!(
        figures.keys().collect::<Vec<_>>(),
        vec!["billing", "team:fail", "team:late"],
        "{figures:?}"
    );
    let fail_runs = h.runs(failing).await as f64;
    for tag in ["team:fail", "billing"] {
        // (A message the emulator delivers twice may be counted twice.)
        let (fired, failed, _) = &figures[tag];
        assert!(*failed >= fail_runs, "{tag}: every run failed: {figures:?}");
        assert_eq!(*fired, *failed, "{tag}: every request failed: {figures:?}");
    }
    let (_, late_failed, late_lag) = &figures["team:late"];
    assert_eq!(*late_failed, 0.0, "{figures:?}");
    let worst = late_lag.iter().copied().fold(0.0, f64::max);
    assert!(
        worst >= (LATE_SECS as f64 - 1.0) * 1000.0,
        "the overdue occurrence shows its lateness: {late_lag:?}"
    );

    // ... and /v1/status names the late task first and the failing one
    let (code, status) = h.send(reqwest::Method::GET, "/v1/status", None).await;
    assert_eq!(code, 200, "{status:#}");
    let figures = &status["last_hour_tasks"];
    let latest = &figures["worst_lateness"][0];
    assert_eq!(latest["task_id"], late, "{figures:#}");
    assert_eq!(latest["tags"], json!(["team:late"]), "{figures:#}");
    assert!(
        latest["lag_max_ms"].as_f64().unwrap() >= (LATE_SECS as f64 - 1.0) * 1000.0,
        "{figures:#}"
    );
    let most = figures["most_failures"].as_array().unwrap();
    assert_eq!(most.len(), 1, "only the failing task failed: {figures:#}");
    assert_eq!(most[0]["task_id"], failing, "{figures:#}");
    assert_eq!(most[0]["name"], "failing-sync");
    assert_eq!(most[0]["tags"], json!(["team:fail", "billing"]));
    assert_eq!(most[0]["failed"].as_f64().unwrap(), fail_runs);
    assert!(
        most[0]["last_error"].as_str().unwrap_or("").contains("500"),
        "{figures:#}"
    );

    // ... and so does `sundial status` (the built binary)
    let mut env = h.env.clone();
    env.push(("SUNDIAL_ADMIN_TOKEN".into(), TOKEN.into()));
    let mut cli = Child::spawn(
        &workspace_bin("sundial"),
        &["status", "--api", &h.api],
        &env,
    );
    let exit = tokio::time::timeout(Duration::from_secs(20), cli.child.wait())
        .await
        .expect("sundial status finishes")
        .unwrap();
    assert!(exit.success(), "{:?}", cli.stderr_lines());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let said = cli.stdout_lines().join("\n");
    let late_line = said
        .lines()
        .find(|l| l.contains(&format!("#{late} late-report [team:late]")))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(late_line.trim_start().starts_with("p99"), "{said}");
    let failing_line = said
        .lines()
        .find(|l| {
            l.contains(&format!(
                "failed  #{failing} failing-sync [team:fail, billing]"
            ))
        })
        .unwrap_or_else(|| panic!("{said}"));
    assert!(
        failing_line.contains(&format!("{fail_runs} of {fail_runs}")),
        "{said}"
    );
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn tags_are_validated_listed_and_kept_to_the_same_rules_in_sql(pool: PgPool) {
    let h = Harness::start(&pool).await;
    let url = "http://127.0.0.1:9/ok";
    // Bad tags are refused, naming the field.
    for tags in [
        json!(["with space"]),
        json!([""]),
        json!(["a".repeat(65)]),
        json!((0..11).map(|i| format!("t{i}")).collect::<Vec<_>>()),
        json!([1]),
    ] {
        let mut body = task_body("bad-tags", url, &[]);
        body["tags"] = tags.clone();
        let (status, answer) = h.send(reqwest::Method::POST, "/v1/tasks", Some(body)).await;
        assert_eq!(status, 400, "{tags}: {answer:#}");
        assert!(answer.to_string().contains("tags"), "{tags}: {answer:#}");
    }
    let a = h.create(task_body("a", url, &["team:a", "env=prod"])).await;
    let b = h.create(task_body("b", url, &["team:b"])).await;
    let (_, listed) = h
        .send(reqwest::Method::GET, "/v1/tasks?tag=team:a", None)
        .await;
    let ids: Vec<i64> = listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![a]);
    let (status, answer) = h
        .send(reqwest::Method::GET, "/v1/tasks?tag=no%20spaces", None)
        .await;
    assert_eq!(status, 400, "{answer:#}");
    assert!(answer.to_string().contains("\"tag\""), "{answer:#}");

    // A patch replaces the tags; `[]` removes them.
    let (status, patched) = h
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/tasks/{b}"),
            Some(json!({"tags": ["team:a"]})),
        )
        .await;
    assert_eq!(status, 200, "{patched:#}");
    assert_eq!(patched["tags"], json!(["team:a"]));
    let (_, listed) = h
        .send(reqwest::Method::GET, "/v1/tasks?tag=team:a", None)
        .await;
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 2);
    let (_, patched) = h
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/tasks/{b}"),
            Some(json!({"tags": []})),
        )
        .await;
    assert_eq!(patched["tags"], json!([]));

    // Plain SQL is held to the same rules by the CHECK.
    for bad in ["{\"with space\"}", "{\"\"}", "{a,b,c,d,e,f,g,h,i,j,k}"] {
        let err = sqlx::query("UPDATE tasks SET tags = $2::text[] WHERE id = $1")
            .bind(a)
            .bind(bad)
            .execute(&h.pool)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("tasks_tags_valid"), "{bad}: {err}");
    }
    sqlx::query("UPDATE tasks SET tags = '{ops,\"team:x\"}' WHERE id = $1")
        .bind(a)
        .execute(&h.pool)
        .await
        .unwrap();
}
