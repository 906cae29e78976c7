//! Poison never spreads: targets answering 200 with bodies Postgres would
//! refuse as text (a NUL byte, invalid UTF-8, gzip, an image) in the same
//! batch as healthy tasks. Real Postgres, real HTTP targets on 127.0.0.1.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, DurationRound, Utc};
use sqlx::PgPool;
use sundial::config::Settings;
use sundial::message::DispatchMessage;
use sundial::process::{Disposition, Processor};
use sundial::queue::memory::MemoryQueue;
use sundial_target::{self as target_server, TargetConfig};
use sundial_testkit::TaskBuilder;

fn processor(pool: &PgPool) -> Processor {
    let env = HashMap::from([
        (
            "SUNDIAL_ALLOW_TARGETS".to_string(),
            "127.0.0.1/32".to_string(),
        ),
        (
            "SUNDIAL_SIGNING_SECRETS".to_string(),
            "whsec_poison".to_string(),
        ),
    ]);
    let settings = Settings::from_map(&env).unwrap();
    Processor::from_settings(pool.clone(), &settings, Arc::new(MemoryQueue::default())).unwrap()
}

/// Inserts a task due at `due` and leases it, as the scanner would; returns
/// the message the scanner would send.
async fn due_task(pool: &PgPool, name: &str, url: &str, due: DateTime<Utc>) -> DispatchMessage {
    let task = TaskBuilder::new()
        .name(name)
        .schedule("rate(1 minute)")
        .url(url)
        .next_run_at(due)
        .lease_until(Utc::now() + chrono::Duration::minutes(10))
        .insert(pool)
        .await;
    DispatchMessage::new(task.id, due, task.version)
}

#[sqlx::test(migrator = "sundial::store::MIGRATOR")]
async fn binary_bodies_are_recorded_once_and_do_not_poison_the_batch(pool: PgPool) {
    // GIVEN targets whose 200 answers are not text, and healthy ones.
    let server = target_server::spawn(TargetConfig::default()).await.unwrap();
    let processor = processor(&pool);
    let due = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap();
    let cases = [
        (
            "nul",
            "/binary/nul",
            "<binary, 3 B, text/plain; charset=utf-8>",
        ),
        (
            "invalid-utf8",
            "/binary/invalid-utf8",
            "<binary, 5 B, text/plain; charset=utf-8>",
        ),
        (
            "gzip",
            "/binary/gzip",
            "<binary, 11 B, application/json, gzip>",
        ),
        ("png", "/binary/png", "<binary, 12 B, image/png>"),
        ("healthy-1", "/ok", "ok"),
        ("healthy-2", "/ok?second", "ok"),
        ("healthy-3", "/ok?third", "ok"),
    ];
    let mut batch = Vec::new();
    for (name, path, _) in cases {
        let m = due_task(&pool, name, &server.url(path), due).await;
        batch.push((name.to_string(), m.to_json()));
    }

    // WHEN they are processed in one batch.
    let (dispositions, report) = processor.process_batch(batch.clone(), None).await;

    // THEN every message is done, and every occurrence recorded once as
    // succeeded, with a sanitised excerpt.
    assert_eq!(dispositions.len(), cases.len());
    for (name, d) in &dispositions {
        assert!(*d == Disposition::Done, "{name}: {d:?}");
    }
    assert_eq!(report.succeeded, cases.len() as u64);
    assert_eq!(report.write_failures, 0);
    let runs: Vec<(String, String, Option<i32>, Option<String>)> = sqlx::query_as(
        "SELECT t.name, r.status, r.http_status, r.response_excerpt \
         FROM task_runs r JOIN tasks t ON t.id = r.task_id ORDER BY t.name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(runs.len(), cases.len());
    for (name, _, excerpt) in cases {
        let run = runs.iter().find(|r| r.0 == name).unwrap();
        assert_eq!((run.1.as_str(), run.2), ("succeeded", Some(200)), "{name}");
        assert_eq!(run.3.as_deref(), Some(excerpt), "{name}");
        let task = sundial::store::get_task_by_name(&pool, name)
            .await
            .unwrap()
            .unwrap();
        assert!(task.next_run_at > Some(due), "{name} moves on");
        // No lease left on this occurrence (the next may be chained).
        assert!(
            task.lease_until.is_none() || task.lease_until > task.next_run_at,
            "{name}"
        );
    }
    // The target was hit once per occurrence.
    assert_eq!(server.stats.requests(), cases.len() as u64);

    // A redelivery of the whole batch fires nothing again.
    let (dispositions, report) = processor.process_batch(batch, None).await;
    assert!(dispositions.iter().all(|(_, d)| *d == Disposition::Done));
    assert_eq!(report.fired, 0);
    assert_eq!(report.stale_dropped, cases.len() as u64);
    assert_eq!(server.stats.requests(), cases.len() as u64);
    server.shutdown().await.unwrap();
}
