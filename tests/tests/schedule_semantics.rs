//! Schedule semantics in the deployed shape: `sundial scan --loop --every
//! 60` (the scanner Lambda's tick at EventBridge's cadence), the real
//! `aws-sdk-sqs` against the SQS emulator, `sundial process` (the
//! long-polling consumer) firing at a local target, and the admin API as
//! the admin Lambda builds it.
//!
//! * the active window bounds the occurrences and disables the task after
//!   its end, and the ledger and `sundial why` say so;
//! * an exclusion skips the occurrences it matches (`skipped (excluded)`);
//! * overlap `skip` records the occurrences that come due while a slow
//!   run is in flight, and a manual trigger respects it unless forced.

use std::time::Duration;

use chrono::{DateTime, DurationRound, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::PgPool;
use sundial_e2e::deployment::{occurrence_of, sigterm, Deployment};
use sundial_e2e::{workspace_bin, Child};
use sundial_target::{self as target_server, TargetConfig, TargetServer};
use sundial_testkit::TaskBuilder;

const TOKEN: &str = "semantics-test-token-0123456789";

/// The services of one test, its target and its drivers.
struct Harness {
    deployment: Deployment,
    target: TargetServer,
    drivers: Vec<Child>,
}

impl std::ops::Deref for Harness {
    type Target = Deployment;
    fn deref(&self) -> &Deployment {
        &self.deployment
    }
}

impl Harness {
    async fn start(pool: &PgPool, prefix: &str) -> Harness {
        Harness {
            deployment: Deployment::start(pool, prefix, TOKEN).await,
            target: target_server::spawn(TargetConfig::default()).await.unwrap(),
            drivers: Vec::new(),
        }
    }

    /// `sundial process` and `sundial scan --loop --every 60`, as deployed.
    fn run_drivers(&mut self) {
        let process = self.spawn(&["process", "--wait", "20"]);
        let scanner = self.spawn(&["scan", "--loop", "--every", "60"]);
        self.drivers.extend([process, scanner]);
    }

    fn stop_drivers(&self) {
        self.drivers.iter().for_each(sigterm);
    }

    /// The occurrences the target was called for, per task.
    fn fired(&self, id: i64) -> Vec<DateTime<Utc>> {
        let mut out: Vec<DateTime<Utc>> = self
            .target
            .stats
            .records()
            .iter()
            .filter_map(occurrence_of)
            .filter(|(task, _)| *task == id)
            .map(|(_, at)| at)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// `(occurrence, status, error, manual)` of every run of a task.
    async fn runs(&self, id: i64) -> Vec<(DateTime<Utc>, String, Option<String>, bool)> {
        sqlx::query_as(
            "SELECT scheduled_for, status, error, manual FROM task_runs \
             WHERE task_id = $1 ORDER BY scheduled_for",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// The ledger entries of `[from, to]`.
    async fn ledger(&self, id: i64, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Value> {
        let query = [("from", rfc3339(from)), ("to", rfc3339(to))];
        let body = self
            .get(&format!("/v1/tasks/{id}/occurrences"), &query)
            .await;
        body["occurrences"].as_array().cloned().unwrap_or_default()
    }

    async fn trigger(&self, id: i64, body: Option<Value>) -> (u16, Value) {
        let path = format!("/v1/tasks/{id}/trigger");
        self.send(reqwest::Method::POST, &path, body).await
    }

    /// What `sundial why ID --at T` (the built binary) prints.
    async fn why(&self, id: i64, at: DateTime<Utc>) -> String {
        let mut env = self.env.clone();
        env.push(("SUNDIAL_ADMIN_TOKEN".into(), TOKEN.into()));
        let (id, at) = (id.to_string(), rfc3339(at));
        let args = ["why", &id, "--at", &at, "--api", &self.api];
        let mut child = Child::spawn(&workspace_bin("sundial"), &args, &env);
        let status = tokio::time::timeout(Duration::from_secs(20), child.child.wait())
            .await
            .expect("sundial why finishes")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(status.success(), "{:?}", child.stderr_lines());
        child.stdout_lines().join("\n")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop_drivers();
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A whole ten seconds, at least 15 s from now: the first occurrence of the
/// tasks under test, late enough for the drivers to be up.
fn base() -> DateTime<Utc> {
    Utc::now()
        .duration_trunc(chrono::Duration::seconds(10))
        .unwrap()
        + chrono::Duration::seconds(20)
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

async fn sleep_until(t: DateTime<Utc>) {
    let wait = (t - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn the_window_bounds_occurrences_and_ends_the_task_and_exclusions_skip(pool: PgPool) {
    let mut h = Harness::start(&pool, "window").await;
    let base = base();
    // GIVEN two `rate(5 seconds)` tasks registered with plain SQL: one
    // active from `base` for 20 s, one for 30 s that excludes every
    // occurrence on a whole ten seconds (`*/10 * * * * *`).
    let windowed = TaskBuilder::new()
        .name("windowed")
        .schedule("rate(5 seconds)")
        .url(h.target.url("/ok"))
        .start_at(base)
        .end_at(base + secs(20))
        .insert(&pool)
        .await
        .id;
    // The same window for an `overlap = allow` task: the scanner queues its
    // whole window at once, and the last occurrences must still fire.
    let windowed_allow = TaskBuilder::new()
        .name("windowed-allow")
        .schedule("rate(5 seconds)")
        .url(h.target.url("/ok"))
        .overlap("allow")
        .start_at(base)
        .end_at(base + secs(20))
        .insert(&pool)
        .await
        .id;
    let excluding = TaskBuilder::new()
        .name("excluding")
        .schedule("rate(5 seconds)")
        .url(h.target.url("/ok"))
        .exclude("*/10 * * * * *")
        .start_at(base)
        .end_at(base + secs(30))
        .insert(&pool)
        .await
        .id;

    // WHEN the scanner and the processor run past both windows.
    h.run_drivers();
    sleep_until(base + secs(36)).await;
    h.stop_drivers();

    // THEN the windowed task fired exactly the occurrences of its window,
    // none before `start_at`, none at `end_at` ...
    let window: Vec<_> = (0..4).map(|k| base + secs(5 * k)).collect();
    assert_eq!(h.fired(windowed), window);
    assert_eq!(h.fired(windowed_allow), window);
    for id in [windowed, windowed_allow] {
        let runs = h.runs(id).await;
        assert_eq!(runs.iter().map(|r| r.0).collect::<Vec<_>>(), window);
        assert!(runs.iter().all(|r| r.1 == "succeeded"), "{runs:?}");
        // ... and then disabled itself, saying why.
        let (enabled, next): (bool, Option<DateTime<Utc>>) =
            sqlx::query_as("SELECT enabled, next_run_at FROM tasks WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(!enabled && next.is_none(), "task {id}");
    }
    let (kind, actor, reason): (String, String, Option<String>) = sqlx::query_as(
        "SELECT kind, actor, reason FROM task_events WHERE task_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(windowed)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((kind.as_str(), actor.as_str()), ("disabled", "sundial"));
    let end = (base + secs(20)).format("%Y-%m-%d %H:%M:%SZ");
    assert_eq!(reason, Some(format!("active window ended at {end}")));
    let why = h.why(windowed, base + secs(25)).await;
    assert!(
        why.contains("did not fire: the task was disabled")
            && why.contains(&format!("by sundial (active window ended at {end})")),
        "{why}"
    );
    let before = h.ledger(windowed, base - secs(5), base - secs(5)).await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0]["state"], "not_scheduled", "{before:?}");

    // THEN the excluding task fired only the occurrences off the tens, and
    // its ledger shows the others as skipped (excluded).
    let kept: Vec<_> = [5, 15, 25].iter().map(|k| base + secs(*k)).collect();
    assert_eq!(h.fired(excluding), kept);
    let ledger = h.ledger(excluding, base, base + secs(29)).await;
    let states: Vec<(String, String)> = ledger
        .iter()
        .map(|e| {
            (
                e["state"].as_str().unwrap_or("").to_string(),
                e["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let skipped = ("skipped".to_string(), "excluded".to_string());
    assert_eq!(states.len(), 6, "{ledger:#?}");
    for (k, state) in states.iter().enumerate() {
        if k % 2 == 0 {
            assert_eq!(state, &skipped, "{ledger:#?}");
        } else {
            assert_eq!(state.0, "fired", "{ledger:#?}");
        }
    }
    let why = h.why(excluding, base + secs(10)).await;
    assert!(why.contains("did not fire: skipped (excluded)"), "{why}");
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn overlap_skip_records_what_comes_due_during_a_slow_run_and_manual_triggers_respect_it(
    pool: PgPool,
) {
    let mut h = Harness::start(&pool, "overlap-skip").await;
    let base = base();
    // GIVEN a `rate(5 seconds)` task with overlap `skip` whose endpoint
    // takes 12 s, active for 30 s from `base`.
    let id = TaskBuilder::new()
        .name("slow-skip")
        .schedule("rate(5 seconds)")
        .url(h.target.url("/delay/12000"))
        .overlap("skip")
        .timeout_ms(20_000)
        .max_attempts(1)
        .start_at(base)
        .end_at(base + secs(30))
        .insert(&pool)
        .await
        .id;

    // WHEN the drivers run, and while the first run is in flight the task
    // is triggered by hand, first plainly, then with `force`.
    h.run_drivers();
    sleep_until(base + secs(3)).await;
    let (status, refused) = h.trigger(id, None).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "run_in_flight", "{refused}");
    let (status, forced) = h
        .trigger(id, Some(serde_json::json!({"force": true})))
        .await;
    assert_eq!(status, 202, "{forced}");
    let forced_at: DateTime<Utc> = serde_json::from_value(forced["occurrence"].clone()).unwrap();
    sleep_until(base + secs(44)).await;
    h.stop_drivers();

    // THEN only the occurrences that found the task idle fired, plus the
    // forced trigger ...
    let scheduled_fired = vec![base, base + secs(15)];
    let mut expected = scheduled_fired.clone();
    expected.push(forced_at);
    expected.sort();
    assert_eq!(h.fired(id), expected);
    // ... those due while a run was in flight are recorded as skipped, not
    // delayed, and so is the plain trigger.
    let runs = h.runs(id).await;
    let scheduled: Vec<_> = runs.iter().filter(|r| !r.3).collect();
    let want: Vec<(DateTime<Utc>, &str)> = [0, 5, 10, 15, 20, 25]
        .iter()
        .map(|k| {
            let status = if k % 15 == 0 { "succeeded" } else { "skipped" };
            (base + secs(*k), status)
        })
        .collect();
    assert_eq!(
        scheduled
            .iter()
            .map(|r| (r.0, r.1.as_str()))
            .collect::<Vec<_>>(),
        want,
        "{runs:?}"
    );
    for r in scheduled.iter().filter(|r| r.1 == "skipped") {
        let error = r.2.as_deref().unwrap_or("");
        assert!(error.starts_with("overlap: the run of "), "{r:?}");
    }
    let manual: Vec<_> = runs.iter().filter(|r| r.3).collect();
    assert_eq!(manual.len(), 2, "{runs:?}");
    assert!(
        manual.iter().any(|r| r.1 == "skipped"
            && r.2
                .as_deref()
                .unwrap_or("")
                .starts_with("overlap: manual trigger")),
        "{runs:?}"
    );
    assert!(
        manual
            .iter()
            .any(|r| r.0 == forced_at && r.1 == "succeeded"),
        "{runs:?}"
    );
    let why = h.why(id, base + secs(5)).await;
    assert!(
        why.contains("did not fire: skipped (overlap: the run of"),
        "{why}"
    );
}
