//! Missed runs and the dead-man's switch, end to end in the deployed
//! shape: `sundial scan --loop --emf` (the scanner Lambda's tick, EMF on
//! stdout), the real `aws-sdk-sqs` against the SQS emulator, and `sundial
//! process` firing at a local target; the admin API served on loopback
//! with the same settings.
//!
//! The scanner is stopped for longer than the missed grace (3 s here, via
//! `SUNDIAL_MISSED_GRACE_SECS`) and longer than catch-up `none`'s misfire
//! grace (60 s). While it is stopped the ledger says `missed` and
//! `/v1/status` says why the pipeline is unhealthy; when it returns its
//! EMF record counts the missed occurrences, and each task's catch-up
//! policy decides what runs: `skip` fires the first missed occurrence
//! once, `none` records it skipped, `all` fires every one.
//!
//! The scanner's lookahead (and so the processor's chaining horizon) is
//! 1 s, so that nothing but a scanner tick moves a task on: with the
//! default 75 s a stopped scanner would go unnoticed for that long.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use sundial_e2e::deployment::{emf_records, stop, wait_until, Deployment, Setup};
use sundial_e2e::{workspace_bin, Child};
use sundial_target::{self as target_server, TargetConfig};
use sundial_testkit::TaskBuilder;

const TOKEN: &str = "missed-test-token-0123456789";
const SCHEDULE: &str = "rate(5 seconds)";
const GRACE_SECS: i64 = 3;
/// Catch-up `none` skips what is later than this (`task::MISFIRE_GRACE`).
const MISFIRE_SECS: i64 = 60;
const POLICIES: [&str; 3] = ["skip", "none", "all"];
/// How long a driver may take to exit on SIGTERM.
const STOP: Duration = Duration::from_secs(20);

/// The services of one test, with a DLQ and the missed-run settings.
struct Harness(Deployment);

impl std::ops::Deref for Harness {
    type Target = Deployment;
    fn deref(&self) -> &Deployment {
        &self.0
    }
}

impl Harness {
    async fn start(pool: &PgPool) -> Harness {
        let setup = Setup {
            env: vec![
                ("SUNDIAL_MISSED_GRACE_SECS", GRACE_SECS.to_string()),
                ("SUNDIAL_SCANNER_STALE_SECS", "5".to_string()),
                ("SUNDIAL_LOOKAHEAD_SECS", "1".to_string()),
            ],
            dlq: true,
        };
        Harness(Deployment::start_with(pool, "missed", TOKEN, setup).await)
    }

    /// The next occurrence and lease of a task.
    async fn row(&self, id: i64) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
        let (next, lease): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
            sqlx::query_as("SELECT next_run_at, lease_until FROM tasks WHERE id = $1")
                .bind(id)
                .fetch_one(&self.pool)
                .await
                .unwrap();
        (next.expect("a scheduled task"), lease)
    }

    /// Runs of a task for occurrences in `[from, to)`.
    async fn runs(
        &self,
        id: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<(DateTime<Utc>, String)> {
        sqlx::query_as(
            "SELECT scheduled_for, status FROM task_runs \
             WHERE task_id = $1 AND scheduled_for >= $2 AND scheduled_for < $3 \
             ORDER BY scheduled_for",
        )
        .bind(id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}

/// The schedule's occurrences in `[from, to]`.
fn occurrences(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let after = from - chrono::Duration::milliseconds(1);
    sundial::schedule::preview(SCHEDULE, "UTC", after, 100)
        .unwrap()
        .into_iter()
        .filter(|t| *t <= to)
        .collect()
}

fn codes(status: &Value) -> Vec<String> {
    status["health"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap().to_string())
        .collect()
}

async fn insert_tasks(h: &Harness) -> HashMap<&'static str, i64> {
    let server = target_server::spawn(TargetConfig::default()).await.unwrap();
    let url = server.url("/ok");
    // The server lives as long as the test's runtime.
    std::mem::forget(server);
    let mut ids = HashMap::new();
    for policy in POLICIES {
        let task = TaskBuilder::new()
            .name(format!("every-5s-{policy}"))
            .schedule(SCHEDULE)
            .url(url.clone())
            .timeout_ms(5000)
            .catch_up(policy)
            .catch_up_max_age_secs(3600)
            .insert(&h.pool)
            .await;
        ids.insert(policy, task.id);
    }
    ids
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn a_stopped_scanner_leaves_missed_occurrences_and_catch_up_applies_on_its_return(
    pool: PgPool,
) {
    let h = Harness::start(&pool).await;
    let ids = insert_tasks(&h).await;
    let process = h.spawn(&["process", "--wait", "2"]);

    // GIVEN the pipeline runs: every task fires twice, nothing is missed.
    let scanner = h.spawn(&["scan", "--loop", "--every", "1", "--emf"]);
    let all_ran_twice = || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT task_id FROM task_runs WHERE status = 'succeeded' \
             GROUP BY task_id HAVING count(*) >= 2) t",
        )
        .fetch_one(&h.pool)
        .await
        .unwrap();
        n == POLICIES.len() as i64
    };
    wait_until(
        "two runs of each task",
        Duration::from_secs(40),
        all_ran_twice,
    )
    .await;
    let status = h.get("/v1/status", &[]).await;
    assert_eq!(status["health"]["healthy"], true, "{status:#}");
    assert_eq!(status["dead_letters"], 0, "{status:#}");
    let scanner = stop(scanner, STOP).await;
    let ticks = emf_records(&scanner);
    assert!(ticks.len() >= 2, "{ticks:?}");
    for record in &ticks {
        assert_eq!(record["ScannerTicks"], 1.0, "{record}");
        assert_eq!(record["MissedOccurrences"], 0.0, "{record}");
    }
    // The heartbeat counted every tick the scanner reported.
    let status = h.get("/v1/status", &[]).await;
    assert_eq!(status["scanner"]["last_tick"]["scanner"], "sundial-cli");
    assert_eq!(status["scanner"]["last_tick"]["ticks"], ticks.len() as i64);

    let first_missed = while_stopped(&h, &ids).await;
    let returned = Utc::now();
    after_return(&h, &ids, &first_missed, returned).await;
    drop(stop(process, STOP).await);
}

/// The scanner stays stopped: returns the first occurrence each task
/// missed, once the ledger, `sundial why` and `/v1/status` said so.
async fn while_stopped(
    h: &Harness,
    ids: &HashMap<&str, i64>,
) -> HashMap<&'static str, DateTime<Utc>> {
    // In-flight occurrences finish; then every task waits on one nobody holds.
    let mut first_missed = HashMap::new();
    for policy in POLICIES {
        let id = ids[policy];
        let unleased = || async { h.row(id).await.1.is_none_or(|until| until < Utc::now()) };
        wait_until(
            "in-flight runs to finish",
            Duration::from_secs(20),
            unleased,
        )
        .await;
        first_missed.insert(policy, h.row(id).await.0);
    }
    let latest = first_missed.values().max().copied().unwrap();
    let stopped_until = latest + chrono::Duration::seconds(MISFIRE_SECS + 2);
    let outlasted = || async { Utc::now() > stopped_until };
    wait_until(
        "the outage to outlast catch-up none's grace",
        Duration::from_secs(90),
        outlasted,
    )
    .await;

    // THEN the ledger says `missed` for every occurrence overdue beyond the grace
    for policy in POLICIES {
        assert_missed(h, ids[policy], first_missed[policy]).await;
    }
    // ... and so does `sundial why`, in words
    assert_why_says_missed(h, ids["skip"]).await;

    // ... and /v1/status: a stale scanner, three tasks missing runs, and a
    // dead letter (put there by hand).
    put_dead_letter(h).await;
    let status = h.get("/v1/status", &[]).await;
    assert_eq!(status["health"]["healthy"], false, "{status:#}");
    assert_eq!(
        codes(&status),
        vec!["scanner_stale", "missed_occurrences", "dead_letters"],
        "{status:#}"
    );
    assert_eq!(status["missed"], 3, "{status:#}");
    assert_eq!(status["dead_letters"], 1, "{status:#}");
    let ago = status["scanner"]["seconds_ago"].as_f64().unwrap();
    assert!(ago > MISFIRE_SECS as f64, "{status:#}");
    first_missed
}

/// Every occurrence of the task from `first` until the grace before now
/// is `missed` in the ledger.
async fn assert_missed(h: &Harness, id: i64, first: DateTime<Utc>) {
    let to = Utc::now() - chrono::Duration::seconds(GRACE_SECS + 1);
    let query = [("from", first.to_rfc3339()), ("to", to.to_rfc3339())];
    let ledger = h.get(&format!("/v1/tasks/{id}/occurrences"), &query).await;
    assert_eq!(
        ledger["grace_secs"], GRACE_SECS,
        "the admin's SUNDIAL_MISSED_GRACE_SECS"
    );
    let entries = ledger["occurrences"].as_array().unwrap();
    assert_eq!(entries.len(), occurrences(first, to).len(), "{ledger:#}");
    assert!(entries.len() >= 12, "{ledger:#}");
    for e in entries {
        assert_eq!(e["state"], "missed", "{e:#}");
    }
}

/// `sundial why` (the built binary, against the admin API) says an
/// occurrence past the grace was missed.
async fn assert_why_says_missed(h: &Harness, id: i64) {
    let mut env = h.env.clone();
    env.push(("SUNDIAL_ADMIN_TOKEN".into(), TOKEN.into()));
    let id = id.to_string();
    // (The latest due occurrence is still within the grace: ask about one before.)
    let at = (Utc::now() - chrono::Duration::seconds(GRACE_SECS + 1)).to_rfc3339();
    let args = ["why", &id, "--at", &at, "--api", &h.api];
    let why = stop_when_done(Child::spawn(&workspace_bin("sundial"), &args, &env)).await;
    let said = why.stdout_lines().join("\n");
    assert!(
        said.contains(" missed: due "),
        "{said}\n{:?}",
        why.stderr_lines()
    );
}

/// Waits for a one-shot CLI command to exit.
async fn stop_when_done(mut child: Child) -> Child {
    let status = tokio::time::timeout(Duration::from_secs(20), child.child.wait())
        .await
        .expect("the command finishes")
        .unwrap();
    assert!(status.success(), "{status:?}: {:?}", child.stderr_lines());
    tokio::time::sleep(Duration::from_millis(300)).await;
    child
}

/// One message on the dead-letter queue, as SQS's redrive would leave it.
async fn put_dead_letter(h: &Harness) {
    let url = h
        .env
        .iter()
        .find(|(k, _)| k == "SUNDIAL_DLQ_URL")
        .map(|(_, v)| v.clone())
        .unwrap();
    sundial_e2e::sqs_client()
        .await
        .send_message()
        .queue_url(url)
        .message_body(r#"{"v":1,"task_id":1}"#)
        .send()
        .await
        .unwrap();
}

/// The scanner returns at `returned`: its first tick reports the missed
/// occurrences, then each catch-up policy applies.
async fn after_return(
    h: &Harness,
    ids: &HashMap<&str, i64>,
    first_missed: &HashMap<&str, DateTime<Utc>>,
    returned: DateTime<Utc>,
) {
    let scanner = h.spawn(&["scan", "--loop", "--every", "1", "--emf"]);
    let caught_up = || async {
        let mut done = true;
        for policy in POLICIES {
            done &= h.row(ids[policy]).await.0 > returned;
        }
        done
    };
    wait_until("catch-up to finish", Duration::from_secs(60), caught_up).await;
    // The checks below need a tick after the catch-up one: on a loaded
    // machine the catch-up can finish within the first tick (every 1 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let status = h.get("/v1/status", &[]).await;
    let scanner = stop(scanner, STOP).await;

    // THEN the first tick counted one missed occurrence per task, the next none.
    let ticks = emf_records(&scanner);
    assert!(ticks.len() >= 2, "{ticks:?}");
    assert_eq!(ticks[0]["MissedOccurrences"], 3.0, "{}", ticks[0]);
    assert_eq!(ticks[0]["ScannerTicks"], 1.0, "{}", ticks[0]);
    assert_eq!(ticks[1]["MissedOccurrences"], 0.0, "{}", ticks[1]);
    // ... the pipeline is healthy again but for the dead letter
    assert_eq!(codes(&status), vec!["dead_letters"], "{status:#}");
    assert_catch_up(h, ids, first_missed, returned).await;
}

/// `skip` fired the first missed occurrence once, `none` recorded it
/// skipped, `all` fired every missed one; the ledger agrees.
async fn assert_catch_up(
    h: &Harness,
    ids: &HashMap<&str, i64>,
    first_missed: &HashMap<&str, DateTime<Utc>>,
    returned: DateTime<Utc>,
) {
    let (skip, none, all) = (
        first_missed["skip"],
        first_missed["none"],
        first_missed["all"],
    );
    let runs = h.runs(ids["skip"], skip, returned).await;
    assert_eq!(runs, vec![(skip, "succeeded".to_string())]);
    let runs = h.runs(ids["none"], none, returned).await;
    assert_eq!(runs, vec![(none, "skipped".to_string())]);
    let runs = h.runs(ids["all"], all, returned).await;
    let expected: Vec<_> = occurrences(all, returned - chrono::Duration::milliseconds(1))
        .into_iter()
        .map(|t| (t, "succeeded".to_string()))
        .collect();
    assert!(expected.len() >= 13, "{expected:?}");
    assert_eq!(runs, expected);
    // The ledger agrees: the rest of the outage was passed over under `skip`.
    let to = returned - chrono::Duration::seconds(1);
    let query = [("from", skip.to_rfc3339()), ("to", to.to_rfc3339())];
    let ledger = h
        .get(&format!("/v1/tasks/{}/occurrences", ids["skip"]), &query)
        .await;
    let states: Vec<&str> = ledger["occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states[0], "fired", "{ledger:#}");
    assert!(
        states[1..].iter().all(|s| *s == "passed_over"),
        "{ledger:#}"
    );
    assert_eq!(states.len(), occurrences(skip, to).len(), "{ledger:#}");
}
