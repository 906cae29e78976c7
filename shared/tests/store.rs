//! Task store against a real Postgres: each test gets a fresh migrated
//! database from `#[sqlx::test]` (DATABASE_URL points at the server).

use std::collections::HashSet;

use chrono::{DateTime, Duration, DurationRound, Utc};
use sqlx::PgPool;
use sundial::store::{
    self, Advance, ClaimOptions, Outcome, OutcomeKind, RunRecord, RunStatus, StoreError,
};
use sundial::task::{CatchUp, Overlap, TaskSpec, Timing};
use sundial_testkit::TaskBuilder;

fn minute(now: DateTime<Utc>) -> DateTime<Utc> {
    now.duration_trunc(Duration::minutes(1)).unwrap()
}

fn claim_opts(limit: i64) -> ClaimOptions {
    ClaimOptions {
        lookahead: Duration::seconds(60),
        limit,
        lease: Duration::seconds(300),
        owner: "test".into(),
    }
}

fn finished(
    task_id: i64,
    version: i64,
    occurrence: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
) -> Outcome {
    Outcome {
        task_id,
        version,
        occurrence,
        kind: OutcomeKind::Finished {
            run: RunRecord {
                status: RunStatus::Succeeded,
                attempts: 1,
                fired_at: Some(occurrence),
                finished_at: occurrence + Duration::milliseconds(20),
                http_status: Some(200),
                latency_ms: Some(20),
                error: None,
                response_excerpt: Some("ok".into()),
                pacing_ms: None,
                trigger: sundial::trigger::Trigger::Schedule,
                backfill_id: None,
                rerun: 0,
            },
            next_run_at: next,
            manual: false,
            chain_lease: None,
        },
    }
}

async fn insert_sql_tasks(pool: &PgPool, n: i64, schedule: &str, next: Option<DateTime<Utc>>) {
    TaskBuilder::new()
        .name("task-")
        .schedule(schedule)
        .next_run_at(next)
        .each(|g, task| task.url(format!("https://example.com/{g}")))
        .insert_many(pool, n)
        .await;
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn create_get_list_update_delete(pool: PgPool) {
    let now = Utc::now();
    let spec = TaskSpec::new("report", "rate(5 minutes)", "https://example.com/report");
    let task = store::create_task(&pool, &spec.clone().into_valid().unwrap(), now)
        .await
        .unwrap();
    assert_eq!(task.version, 1);
    let next = task.next_run_at.unwrap();
    assert!(next > now && next <= now + Duration::minutes(5));

    // Duplicate names are refused by the schema.
    let dup = store::create_task(&pool, &spec.clone().into_valid().unwrap(), now)
        .await
        .unwrap_err();
    assert!(
        matches!(dup, StoreError::DuplicateName(ref n) if n == "report"),
        "{dup}"
    );

    // Editing bumps the version; a new schedule recomputes the next run.
    let mut edited = spec.clone();
    edited.schedule = "rate(1 minute)".into();
    edited.url = "https://example.com/v2".into();
    let mut tx = pool.begin().await.unwrap();
    let updated = store::update_task(&mut tx, task.id, &edited.clone().into_valid().unwrap(), now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(updated.url, "https://example.com/v2");
    assert!(updated.next_run_at.unwrap() <= now + Duration::minutes(1));

    // Pause and resume.
    let mut tx = pool.begin().await.unwrap();
    let paused = store::set_enabled(&mut tx, task.id, false, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(!paused.enabled);
    assert_eq!(paused.version, 3);

    for i in 0..5 {
        let s = TaskSpec::new(format!("t{i}"), "rate(1 minute)", "https://example.com");
        store::create_task(&pool, &s.clone().into_valid().unwrap(), now)
            .await
            .unwrap();
    }
    let page1 = store::list_tasks(
        &pool,
        &store::TaskFilter {
            limit: 4,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(page1.len(), 4);
    let page2 = store::list_tasks(
        &pool,
        &store::TaskFilter {
            limit: 4,
            after_id: Some(page1[3].id),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(page2.len(), 2);
    let disabled = store::list_tasks(
        &pool,
        &store::TaskFilter {
            limit: 100,
            enabled: Some(false),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(disabled.len(), 1);

    assert!(store::delete_task(&pool, task.id).await.unwrap());
    assert!(!store::delete_task(&pool, task.id).await.unwrap());
    assert!(matches!(
        store::get_task(&pool, task.id).await,
        Err(StoreError::NotFound(_))
    ));
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn sql_inserted_rows_get_scheduled_and_invalid_ones_disabled(pool: PgPool) {
    let now = Utc::now();
    // The minimal SQL registration from the README: the builder leaves
    // every other column (next_run_at included) to its default, so it
    // sends the same `INSERT INTO tasks (name, schedule, url)`.
    TaskBuilder::new()
        .name("ok")
        .schedule("rate(1 minute)")
        .url("https://example.com/a")
        .insert(&pool)
        .await;
    TaskBuilder::new()
        .name("bad")
        .schedule("every tuesday")
        .url("https://example.com/b")
        .insert(&pool)
        .await;
    TaskBuilder::new()
        .name("badzone")
        .schedule("rate(1 minute)")
        .timezone("Mars/Olympus")
        .url("https://example.com/c")
        .insert(&pool)
        .await;

    let report = store::schedule_new(&pool, now, 100).await.unwrap();
    assert_eq!(report.scheduled, 1);
    assert_eq!(report.invalid, 2);

    let ok = store::get_task_by_name(&pool, "ok").await.unwrap().unwrap();
    assert!(ok.enabled);
    assert!(ok.next_run_at.unwrap() > now);
    let bad = store::get_task_by_name(&pool, "bad")
        .await
        .unwrap()
        .unwrap();
    assert!(!bad.enabled);
    assert!(bad.next_run_at.is_none());
    assert!(bad.schedule_error.unwrap().contains("schedule"));
    let badzone = store::get_task_by_name(&pool, "badzone")
        .await
        .unwrap()
        .unwrap();
    assert!(badzone.schedule_error.unwrap().contains("Mars/Olympus"));

    // Nothing left to schedule; fixing the row with SQL re-enables it.
    assert_eq!(
        store::schedule_new(&pool, now, 100).await.unwrap(),
        Default::default()
    );
    sqlx::query("UPDATE tasks SET schedule = 'rate(2 minutes)', enabled = true WHERE name = 'bad'")
        .execute(&pool)
        .await
        .unwrap();
    let report = store::schedule_new(&pool, now, 100).await.unwrap();
    assert_eq!(report.scheduled, 1);
    let fixed = store::get_task_by_name(&pool, "bad")
        .await
        .unwrap()
        .unwrap();
    assert!(fixed.enabled && fixed.schedule_error.is_none() && fixed.next_run_at.is_some());
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn eight_concurrent_claimers_never_claim_a_row_twice(pool: PgPool) {
    let now = Utc::now();
    insert_sql_tasks(
        &pool,
        10_000,
        "rate(1 minute)",
        Some(now - Duration::seconds(30)),
    )
    .await;

    let mut claimers = Vec::new();
    for _ in 0..8 {
        let pool = pool.clone();
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let page = store::claim_due(&pool, now, &claim_opts(97)).await.unwrap();
                if page.is_empty() {
                    return mine;
                }
                mine.extend(page.into_iter().map(|c| c.task_id));
            }
        }));
    }
    let mut all = Vec::new();
    let mut per_claimer = Vec::new();
    for c in claimers {
        let mine = c.await.unwrap();
        per_claimer.push(mine.len());
        all.extend(mine);
    }
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 10_000, "claims per claimer: {per_claimer:?}");
    assert_eq!(unique.len(), 10_000);
    assert!(
        per_claimer.iter().filter(|&&n| n > 0).count() > 1,
        "claims were not spread: {per_claimer:?}"
    );
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn leases_block_reclaiming_until_they_expire_or_are_released(pool: PgPool) {
    let now = Utc::now();
    insert_sql_tasks(&pool, 3, "rate(1 minute)", Some(now)).await;
    let first = store::claim_due(&pool, now, &claim_opts(10)).await.unwrap();
    assert_eq!(first.len(), 3);
    assert!(store::claim_due(&pool, now, &claim_opts(10))
        .await
        .unwrap()
        .is_empty());

    // Released ones come back at once.
    let released = store::release(&pool, &[(first[0].task_id, first[0].occurrence)])
        .await
        .unwrap();
    assert_eq!(released, 1);
    let again = store::claim_due(&pool, now, &claim_opts(10)).await.unwrap();
    assert_eq!(again.len(), 1);

    // Expired ones come back after the lease: timeout (30 s) + lease (300 s).
    let later = now + Duration::seconds(331);
    let expired = store::claim_due(&pool, later, &claim_opts(10))
        .await
        .unwrap();
    assert_eq!(expired.len(), 3);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn lookahead_claims_near_occurrences_only(pool: PgPool) {
    let now = minute(Utc::now());
    insert_sql_tasks(
        &pool,
        1,
        "rate(1 minute)",
        Some(now + Duration::seconds(45)),
    )
    .await;
    TaskBuilder::new()
        .name("far")
        .url("https://e.com")
        .next_run_at(now + Duration::minutes(20))
        .insert(&pool)
        .await;
    let claimed = store::claim_due(&pool, now, &claim_opts(10)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].occurrence, now + Duration::seconds(45));
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn duplicate_outcomes_record_one_run_and_advance_once(pool: PgPool) {
    let now = minute(Utc::now());
    insert_sql_tasks(&pool, 1, "rate(1 minute)", Some(now)).await;
    let c = store::claim_due(&pool, now, &claim_opts(10)).await.unwrap()[0].clone();
    let next = now + Duration::minutes(1);

    let first = store::record_outcomes(
        &pool,
        &[finished(c.task_id, c.version, c.occurrence, Some(next))],
    )
    .await
    .unwrap();
    assert_eq!((first.runs_inserted, first.advanced), (1, 1));
    // A second delivery of the same occurrence computes a later "next" (it
    // runs later): it must neither record nor advance.
    let dup = store::record_outcomes(
        &pool,
        &[finished(
            c.task_id,
            c.version,
            c.occurrence,
            Some(next + Duration::minutes(1)),
        )],
    )
    .await
    .unwrap();
    assert_eq!((dup.runs_inserted, dup.advanced), (0, 0));

    let task = store::get_task(&pool, c.task_id).await.unwrap();
    assert_eq!(task.next_run_at, Some(next));
    assert!(task.lease_until.is_none());
    assert_eq!(task.last_status.as_deref(), Some("succeeded"));
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM task_runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(runs, 1);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn concurrent_duplicate_outcomes_advance_once(pool: PgPool) {
    let now = minute(Utc::now());
    insert_sql_tasks(&pool, 50, "rate(1 minute)", Some(now)).await;
    let claimed = store::claim_due(&pool, now, &claim_opts(100))
        .await
        .unwrap();
    let mut writers = Vec::new();
    for offset in 1..=4 {
        let pool = pool.clone();
        let outcomes: Vec<Outcome> = claimed
            .iter()
            .map(|c| {
                finished(
                    c.task_id,
                    c.version,
                    c.occurrence,
                    Some(now + Duration::minutes(offset)),
                )
            })
            .collect();
        writers.push(tokio::spawn(async move {
            store::record_outcomes(&pool, &outcomes).await.unwrap()
        }));
    }
    let mut inserted = 0;
    let mut advanced = 0;
    for w in writers {
        let r = w.await.unwrap();
        inserted += r.runs_inserted;
        advanced += r.advanced;
    }
    assert_eq!(inserted, 50);
    assert_eq!(advanced, 50);
    let distinct_next: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE next_run_at > $1 AND lease_until IS NULL",
    )
    .bind(now)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(distinct_next, 50);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn version_guard_drops_stale_outcomes(pool: PgPool) {
    let now = minute(Utc::now());
    insert_sql_tasks(&pool, 1, "rate(1 minute)", Some(now)).await;
    let c = store::claim_due(&pool, now, &claim_opts(10)).await.unwrap()[0].clone();
    // The task is edited while its occurrence is in flight.
    sqlx::query("UPDATE tasks SET url = 'https://example.com/edited' WHERE id = $1")
        .bind(c.task_id)
        .execute(&pool)
        .await
        .unwrap();
    let stale = store::record_outcomes(
        &pool,
        &[finished(
            c.task_id,
            c.version,
            c.occurrence,
            Some(now + Duration::minutes(1)),
        )],
    )
    .await
    .unwrap();
    assert_eq!(stale.advanced, 0);
    let task = store::get_task(&pool, c.task_id).await.unwrap();
    assert_eq!(task.version, c.version + 1);
    assert_eq!(
        task.next_run_at,
        Some(now),
        "a stale outcome must not move the schedule"
    );

    // The retry path is guarded the same way.
    let retry = store::record_outcomes(
        &pool,
        &[Outcome {
            task_id: c.task_id,
            version: c.version,
            occurrence: c.occurrence,
            kind: OutcomeKind::Retrying {
                lease_until: now + Duration::hours(1),
            },
        }],
    )
    .await
    .unwrap();
    assert_eq!(retry.leases_changed, 0);

    // Releasing lets the scanner dispatch the current version at once, and
    // the already-recorded occurrence then moves on.
    store::record_outcomes(
        &pool,
        &[Outcome {
            task_id: c.task_id,
            version: c.version,
            occurrence: c.occurrence,
            kind: OutcomeKind::Released,
        }],
    )
    .await
    .unwrap();
    let again = store::claim_due(&pool, now, &claim_opts(10)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].version, c.version + 1);
    let healed = store::record_outcomes(
        &pool,
        &[Outcome {
            task_id: c.task_id,
            version: again[0].version,
            occurrence: c.occurrence,
            kind: OutcomeKind::AlreadyRecorded {
                next_run_at: Some(now + Duration::minutes(1)),
            },
        }],
    )
    .await
    .unwrap();
    assert_eq!(healed.advanced, 1);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn retries_keep_the_lease(pool: PgPool) {
    let now = minute(Utc::now());
    insert_sql_tasks(&pool, 1, "rate(1 minute)", Some(now)).await;
    let c = store::claim_due(&pool, now, &claim_opts(10)).await.unwrap()[0].clone();
    let until = now + Duration::minutes(30);
    let r = store::record_outcomes(
        &pool,
        &[Outcome {
            task_id: c.task_id,
            version: c.version,
            occurrence: c.occurrence,
            kind: OutcomeKind::Retrying { lease_until: until },
        }],
    )
    .await
    .unwrap();
    assert_eq!(r.leases_changed, 1);
    // Long after the original lease would have lapsed, nobody reclaims it.
    let later = now + Duration::minutes(20);
    assert!(store::claim_due(&pool, later, &claim_opts(10))
        .await
        .unwrap()
        .is_empty());
}

/// Drives one task through `minutes` of simulated scanner ticks after an
/// outage and returns how many occurrences were dispatched.
async fn firings_after_outage(pool: &PgPool, catch_up: CatchUp, max_age_secs: i32) -> usize {
    let start = minute(Utc::now()) - Duration::hours(3);
    let mut spec = TaskSpec::new(
        format!("every-minute-{catch_up:?}"),
        "rate(1 minute)",
        "https://example.com",
    );
    spec.catch_up = catch_up;
    spec.catch_up_max_age_secs = max_age_secs;
    let task = store::create_task(
        pool,
        &spec.clone().into_valid().unwrap(),
        start - Duration::seconds(1),
    )
    .await
    .unwrap();
    assert_eq!(task.next_run_at, Some(start));
    let timing = Timing::of(&task).unwrap();
    // The system comes back 3 hours later and scans once a minute.
    let back = start + Duration::hours(3);
    let mut fired = 0;
    for tick in 0..3 {
        let now = back + Duration::minutes(tick);
        loop {
            let claimed = store::claim_due(pool, now, &claim_opts(10)).await.unwrap();
            if claimed.is_empty() {
                break;
            }
            for c in claimed {
                if c.occurrence <= now {
                    fired += 1;
                }
                let next = timing.next_after_run(c.occurrence, now);
                store::record_outcomes(pool, &[finished(c.task_id, c.version, c.occurrence, next)])
                    .await
                    .unwrap();
            }
        }
    }
    fired
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn catch_up_skip_fires_once_after_a_three_hour_outage(pool: PgPool) {
    let fired = firings_after_outage(&pool, CatchUp::Skip, 3600).await;
    // Once for the outage, then once per tick for the regular occurrences.
    assert!(fired <= 3, "fired {fired} times");
    let runs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM task_runs WHERE scheduled_for < now() - interval '2 hours'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(runs, 1, "exactly one run for the whole outage");
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn catch_up_all_is_bounded_by_max_age(pool: PgPool) {
    let fired = firings_after_outage(&pool, CatchUp::All, 600).await;
    // One for the oldest, then every minute of the last 10, then the ticks.
    assert!((11..=14).contains(&fired), "fired {fired} times");
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn allow_overlap_advances_at_dispatch(pool: PgPool) {
    let now = minute(Utc::now());
    let mut spec = TaskSpec::new("overlapping", "rate(1 minute)", "https://example.com");
    spec.overlap = Overlap::Allow;
    let task = store::create_task(
        &pool,
        &spec.clone().into_valid().unwrap(),
        now - Duration::seconds(1),
    )
    .await
    .unwrap();
    let c = store::claim_due(&pool, now, &claim_opts(10)).await.unwrap()[0].clone();
    assert_eq!(c.overlap, Overlap::Allow);
    let n = store::advance_dispatched(
        &pool,
        &[Advance {
            task_id: c.task_id,
            occurrence: c.occurrence,
            version: c.version,
            next_run_at: Some(now + Duration::minutes(1)),
            lease_until: None,
        }],
    )
    .await
    .unwrap();
    assert_eq!(n, 1);
    // The next occurrence is claimable while the first still runs...
    let next = store::claim_due(&pool, now + Duration::seconds(30), &claim_opts(10))
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    // ...and the first one's outcome records a run without moving anything.
    let r = store::record_outcomes(
        &pool,
        &[finished(
            task.id,
            c.version,
            c.occurrence,
            Some(now + Duration::minutes(1)),
        )],
    )
    .await
    .unwrap();
    assert_eq!((r.runs_inserted, r.advanced), (1, 0));
    let t = store::get_task(&pool, task.id).await.unwrap();
    assert_eq!(t.last_status.as_deref(), Some("succeeded"));
    assert_eq!(t.next_run_at, Some(now + Duration::minutes(1)));
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn releasing_an_unfired_allow_occurrence_moves_the_task_back(pool: PgPool) {
    let now = minute(Utc::now());
    let mut spec = TaskSpec::new("overlapping", "rate(1 minute)", "https://example.com");
    spec.overlap = Overlap::Allow;
    let task = store::create_task(
        &pool,
        &spec.clone().into_valid().unwrap(),
        now - Duration::seconds(1),
    )
    .await
    .unwrap();
    let c = store::claim_due(&pool, now, &claim_opts(10)).await.unwrap()[0].clone();
    store::advance_dispatched(
        &pool,
        &[Advance {
            task_id: c.task_id,
            occurrence: c.occurrence,
            version: c.version,
            next_run_at: Some(now + Duration::minutes(1)),
            lease_until: None,
        }],
    )
    .await
    .unwrap();
    // The process stops before firing it: handed back, it is due again.
    assert_eq!(store::release(&pool, &[(task.id, now)]).await.unwrap(), 1);
    let t = store::get_task(&pool, task.id).await.unwrap();
    assert_eq!(t.next_run_at, Some(now));
    // A recorded occurrence is never moved back to.
    let c = store::claim_due(&pool, now, &claim_opts(10)).await.unwrap()[0].clone();
    store::record_outcomes(
        &pool,
        &[finished(
            task.id,
            c.version,
            now,
            Some(now + Duration::minutes(1)),
        )],
    )
    .await
    .unwrap();
    assert_eq!(store::release(&pool, &[(task.id, now)]).await.unwrap(), 0);
    let t = store::get_task(&pool, task.id).await.unwrap();
    assert_eq!(t.next_run_at, Some(now + Duration::minutes(1)));
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn backlog_counts_due_unclaimed_work(pool: PgPool) {
    let now = Utc::now();
    insert_sql_tasks(
        &pool,
        5,
        "rate(1 minute)",
        Some(now - Duration::seconds(90)),
    )
    .await;
    let b = store::backlog(&pool, now).await.unwrap();
    assert_eq!(b.due, 5);
    assert!((b.oldest_due_age_secs - 90.0).abs() < 1.0, "{b:?}");
    store::claim_due(&pool, now, &claim_opts(2)).await.unwrap();
    assert_eq!(store::backlog(&pool, now).await.unwrap().due, 3);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn schema_checks_invariants(pool: PgPool) {
    let task = || {
        TaskBuilder::new()
            .name("a")
            .schedule("rate(1 minute)")
            .url("https://e.com")
    };
    for (bad, row) in [
        ("timeout_ms 5", task().timeout_ms(5)),
        ("max_attempts 0", task().max_attempts(0)),
        ("method FETCH", task().method("FETCH")),
        ("url file:///etc/passwd", task().url("file:///etc/passwd")),
        ("catch_up maybe", task().catch_up("maybe")),
    ] {
        let err = row.try_insert(&pool).await.unwrap_err();
        assert!(err.to_string().contains("check constraint"), "{bad}: {err}");
    }
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn old_runs_are_purged_in_bounded_chunks(pool: PgPool) {
    let now = minute(Utc::now());
    insert_sql_tasks(&pool, 1, "rate(1 minute)", Some(now)).await;
    sqlx::query(
        "INSERT INTO task_runs (task_id, scheduled_for, finished_at, status) \
         SELECT (SELECT id FROM tasks LIMIT 1), $1 - g * interval '1 minute', \
                $1 - g * interval '1 minute', 'succeeded' \
         FROM generate_series(1, 50) g",
    )
    .bind(now - Duration::days(40))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO task_runs (task_id, scheduled_for, finished_at, status) \
         VALUES ((SELECT id FROM tasks LIMIT 1), $1, $1, 'succeeded')",
    )
    .bind(now)
    .execute(&pool)
    .await
    .unwrap();
    let cutoff = now - Duration::days(30);
    assert_eq!(store::purge_runs(&pool, cutoff, 20).await.unwrap(), 20);
    assert_eq!(store::purge_runs(&pool, cutoff, 100).await.unwrap(), 30);
    assert_eq!(store::purge_runs(&pool, cutoff, 100).await.unwrap(), 0);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM task_runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 1);
}

// ------------------------------------------------- poisoned write-back

async fn runs_by_task(pool: &PgPool) -> Vec<(i64, String, i32, Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT task_id, status, attempts, error, response_excerpt FROM task_runs ORDER BY task_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn nul_bytes_from_targets_are_stored_sanitised(pool: PgPool) {
    let now = minute(Utc::now());
    insert_sql_tasks(&pool, 1, "rate(1 minute)", Some(now)).await;
    let c = store::claim_due(&pool, now, &claim_opts(10)).await.unwrap()[0].clone();
    let mut outcome = finished(
        c.task_id,
        c.version,
        c.occurrence,
        Some(now + Duration::minutes(1)),
    );
    if let OutcomeKind::Finished { run, .. } = &mut outcome.kind {
        run.response_excerpt = Some("a\0b\u{1}c".into());
        run.error = Some(format!("bad\0{}", "x".repeat(5000)));
    }
    // The plain write, not the isolating one: sanitising alone keeps it valid.
    let r = store::record_outcomes(&pool, &[outcome]).await.unwrap();
    assert_eq!((r.runs_inserted, r.advanced), (1, 1));
    let runs = runs_by_task(&pool).await;
    assert_eq!(runs[0].4.as_deref(), Some("a\u{fffd}b\u{fffd}c"));
    let error = runs[0].3.clone().unwrap();
    assert!(
        error.starts_with("bad\u{fffd}x") && error.ends_with('…'),
        "{error}"
    );
    assert!(error.len() <= 2000);
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn one_refused_outcome_does_not_fail_the_others(pool: PgPool) {
    let now = minute(Utc::now());
    insert_sql_tasks(&pool, 9, "rate(1 minute)", Some(now)).await;
    let claimed = store::claim_due(&pool, now, &claim_opts(20)).await.unwrap();
    assert_eq!(claimed.len(), 9);
    let next = Some(now + Duration::minutes(1));
    let mut outcomes: Vec<Outcome> = claimed
        .iter()
        .map(|c| finished(c.task_id, c.version, c.occurrence, next))
        .collect();
    outcomes.sort_by_key(|o| o.task_id);
    let set_run = |o: &mut Outcome, f: &dyn Fn(&mut RunRecord)| {
        if let OutcomeKind::Finished { run, .. } = &mut o.kind {
            f(run)
        }
    };
    // Refused by CHECK (task_runs_attempts_positive): rewritten.
    set_run(&mut outcomes[2], &|r| r.attempts = 0);
    // Refused as out of Postgres' timestamp range: rewritten (finished now).
    set_run(&mut outcomes[4], &|r| {
        r.finished_at = DateTime::<Utc>::MIN_UTC
    });
    // The occurrence itself is out of range: nothing can be stored.
    outcomes[6].occurrence = DateTime::<Utc>::MIN_UTC;
    // A retry whose lease cannot be stored: no run to rewrite it as.
    outcomes[7].kind = OutcomeKind::Retrying {
        lease_until: DateTime::<Utc>::MIN_UTC,
    };

    // The plain write fails as a whole, for its data.
    let err = store::record_outcomes(&pool, &outcomes).await.unwrap_err();
    assert!(store::is_data_error(&err), "{err}");
    assert!(runs_by_task(&pool).await.is_empty());

    let write = store::record_outcomes_isolating(&pool, &outcomes)
        .await
        .unwrap();
    assert_eq!(write.rewritten, vec![2, 4]);
    assert_eq!(write.refused, vec![6, 7]);
    assert_eq!(write.recorded.runs_inserted, 7);
    assert_eq!(write.recorded.advanced, 7);

    let runs = runs_by_task(&pool).await;
    assert_eq!(runs.len(), 7);
    for (i, o) in outcomes.iter().enumerate() {
        let run = runs.iter().find(|r| r.0 == o.task_id);
        let task = store::get_task(&pool, o.task_id).await.unwrap();
        match i {
            2 | 4 => {
                let (_, status, attempts, error, excerpt) = run.unwrap().clone();
                assert_eq!((status.as_str(), attempts), ("failed", 1), "#{i}");
                let error = error.unwrap();
                assert!(error.contains("could not be stored"), "{error}");
                assert!(error.contains("succeeded, HTTP 200"), "{error}");
                assert_eq!(excerpt, None);
                assert_eq!(task.next_run_at, next, "#{i} moves on");
                assert_eq!(task.last_status.as_deref(), Some("failed"));
            }
            6 | 7 => {
                assert!(run.is_none(), "#{i}");
                assert_eq!(task.next_run_at, Some(now), "#{i} waits");
            }
            _ => {
                assert_eq!(run.unwrap().1, "succeeded", "#{i}");
                assert_eq!(task.next_run_at, next, "#{i}");
            }
        }
    }

    // Written again (a redelivery): nothing new, nothing refused twice over.
    let again = store::record_outcomes_isolating(&pool, &outcomes[..6])
        .await
        .unwrap();
    assert_eq!(again.recorded.runs_inserted, 0);
    assert!(again.refused.is_empty());
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn an_outage_is_not_isolated_but_returned(pool: PgPool) {
    let now = minute(Utc::now());
    insert_sql_tasks(&pool, 1, "rate(1 minute)", Some(now)).await;
    let c = store::claim_due(&pool, now, &claim_opts(10)).await.unwrap()[0].clone();
    let outcome = finished(c.task_id, c.version, c.occurrence, None);
    let closed = pool.clone();
    closed.close().await;
    let err = store::record_outcomes_isolating(&closed, &[outcome])
        .await
        .unwrap_err();
    assert!(!store::is_data_error(&err), "{err}");
}
