//! `sundial bench lambda-path`: the deployed shape. The scanner ticks at
//! EventBridge's cadence (once a minute, first at a fractional second)
//! through [`sundial::scan::run_ticks`], the code of the scanner Lambda;
//! messages go through the SQS adapter to the emulator
//! (`AWS_ENDPOINT_URL_SQS`); the consumer is the worker of
//! `sundial process` (20 s long poll). Tasks due on whole seconds measure
//! "never early, on the second"; two `rate(10 seconds)` tasks (`forbid`
//! and `allow`) measure sub-minute schedules between ticks.
//!
//! The target runs in this process with request recording on (arrival
//! times are the measure); this scenario measures timing, not CPU.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, DurationRound, Utc};
use clap::Args;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sundial::process::{ProcessReport, Processor};
use sundial::queue::sqs::{client_from_env, create_queue, delete_queue, SqsQueue};
use sundial::scan::{run_ticks, ScanOptions};
use sundial::worker::{run_worker, SqsInbox, WorkerOptions};
use sundial_target::{self as target_server, TargetConfig};
use tokio::sync::watch;

use super::env;
use super::measure::{round2, Dist, Meter, Progress, Resources};
use super::report::{num, Table};
use super::{Common, Ctx};

#[derive(Debug, Args)]
pub struct LambdaPathArgs {
    /// Tasks due on whole seconds [default: 300, --quick: 100].
    #[arg(long)]
    pub tasks: Option<u64>,
    /// Seconds to run [default: 150, --quick: 75]; the scanner ticks every
    /// 60 s from the start.
    #[arg(long)]
    pub seconds: Option<u64>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LambdaPathResults {
    pub tasks: u64,
    pub seconds: u64,
    pub ticks: u64,
    /// Requests that reached the target before their occurrence.
    pub early: u64,
    /// Whole-second occurrences fired / expected.
    pub fired: u64,
    pub expected: u64,
    /// Arrival at the target − occurrence, ms (whole-second tasks).
    pub lag_ms: Dist,
    /// Sub-minute (`rate(10 seconds)`) occurrences fired / expected.
    pub sub_minute_fired: u64,
    pub sub_minute_expected: u64,
    /// How late the queue delivered messages after their fire instant, ms
    /// (0 for those that came early and were held).
    pub delivery_late_ms: Dist,
    /// Sundial's own delay: request start − max(fire instant, arrival), ms.
    pub start_delay_ms: Dist,
    /// Messages held by the processor until their time (came early).
    pub held: u64,
    /// Next occurrences chained by the processor (no scanner involved).
    pub chained: u64,
    pub resources: Resources,
}

pub async fn run(args: LambdaPathArgs) -> Result<()> {
    let ctx = Ctx::new(&args.common)?;
    let tasks = args
        .tasks
        .unwrap_or(if ctx.quick { 100 } else { 300 })
        .max(1);
    let seconds = args
        .seconds
        .unwrap_or(if ctx.quick { 75 } else { 150 })
        .max(20);
    std::env::var("AWS_ENDPOINT_URL_SQS").context(
        "lambda-path needs the SQS emulator: run it through `make bench` (or `eval \"$(make -s services)\"`)",
    )?;
    let settings = env::settings(200, 75)?;
    let pool = ctx.db.fresh(settings.db_pool_size.max(10)).await?;
    let server = target_server::spawn(TargetConfig::default()).await?;
    let client = client_from_env().await;
    // A fresh queue (deep queues slow the emulator down).
    let name = format!("sundial-bench-lambda-path-{}", std::process::id());
    let url = create_queue(&client, &name)
        .await
        .context("cannot create a queue on the SQS emulator")?;
    let queue = SqsQueue::new(client.clone(), &url, settings.send_concurrency);

    // Whole-second occurrences spread over the first 50 s (or the run).
    let spread = (seconds - 15).min(50) as i32;
    let base =
        Utc::now().duration_trunc(chrono::Duration::seconds(1))? + chrono::Duration::seconds(3);
    insert_tasks(&pool, &server.url("/ok"), base, spread, tasks).await?;

    let meter = Meter::start(None);
    let run = drive(&pool, &settings, &queue, &server, seconds).await?;
    let resources = meter.finish_without_postgres();

    let (arrivals, early) = arrivals(&server.stats.records());
    let mut lags = whole_second_lags(&pool, &arrivals, base, spread).await?;
    let (sub_minute_fired, sub_minute_expected) =
        sub_minute(&pool, &arrivals, run.started, run.ended).await?;
    let results = LambdaPathResults {
        tasks,
        seconds,
        ticks: run.ticks,
        early,
        fired: lags.len() as u64,
        expected: tasks,
        lag_ms: Dist::of(&mut lags),
        sub_minute_fired,
        sub_minute_expected,
        delivery_late_ms: Dist::of(&mut run.report.delivery_late_ms.clone()),
        start_delay_ms: Dist::of(&mut run.report.start_delay_ms.clone()),
        held: run.report.held,
        chained: run.report.chained,
        resources,
    };
    println!("{}", table(&results).text());
    let _ = delete_queue(&client, &url).await;
    ctx.finish(
        "lambda-path",
        "in-process (recording)",
        results.resources.clone(),
        &results,
    )?;
    ctx.db.drop_database().await?;
    Ok(())
}

/// `second-<g>` tasks due at `base + (g % spread)` s, and two
/// `rate(10 seconds)` tasks, `ten-forbid` and `ten-allow`.
async fn insert_tasks(
    pool: &PgPool,
    url: &str,
    base: DateTime<Utc>,
    spread: i32,
    tasks: u64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO tasks (name, schedule, url, next_run_at, timeout_ms) \
         SELECT 'second-' || g, 'rate(1 hour)', $1, $2 + (g % $3) * interval '1 second', 5000 \
         FROM generate_series(1, $4) g",
    )
    .bind(url)
    .bind(base)
    .bind(spread)
    .bind(tasks as i64)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO tasks (name, schedule, url, overlap, timeout_ms) VALUES \
         ('ten-forbid', 'rate(10 seconds)', $1, 'forbid', 5000), \
         ('ten-allow', 'rate(10 seconds)', $1, 'allow', 5000)",
    )
    .bind(url)
    .execute(pool)
    .await?;
    Ok(())
}

/// What one drive of the pipeline did.
struct Drive {
    report: ProcessReport,
    ticks: u64,
    started: DateTime<Utc>,
    ended: DateTime<Utc>,
}

/// The consumer (the worker of `sundial process`, 20 s long poll) and the
/// scanner (`run_ticks` every 60 s, first tick at x.55 s) for `seconds`.
async fn drive(
    pool: &PgPool,
    settings: &sundial::config::Settings,
    queue: &SqsQueue,
    server: &target_server::TargetServer,
    seconds: u64,
) -> Result<Drive> {
    let processor = Processor::from_settings(pool.clone(), settings, Arc::new(queue.clone()))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let inbox = Arc::new(SqsInbox::new(queue.clone(), Duration::from_secs(20), None));
    let worker = WorkerOptions::default();
    let consumer = run_worker(&processor, inbox, &worker, stop_rx.clone());
    // An EventBridge tick lands anywhere in a second.
    let into = Utc::now().timestamp_subsec_millis() as f64 / 1000.0;
    tokio::time::sleep(Duration::from_secs_f64((1.55 - into) % 1.0)).await;
    let started = Utc::now();
    let opts = ScanOptions::from_settings(settings, "sundial-bench");
    let scanner = run_ticks(pool, queue, &opts, Duration::from_secs(60), stop_rx, |_| {});
    let mut progress = Progress::new("lambda-path");
    let clock = async {
        for s in 0..seconds {
            progress.update(|| format!("{s}/{seconds} s, {} requests", server.stats.requests()));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let _ = stop_tx.send(true);
    };
    let (report, totals, ()) = tokio::join!(consumer, scanner, clock);
    progress.done(&format!("{} requests", server.stats.requests()));
    Ok(Drive {
        report,
        ticks: totals.ticks,
        started,
        ended: Utc::now(),
    })
}

/// Occurrences seen at the target → first arrival (the Idempotency-Key is
/// `<task id>:<occurrence>`), and how many requests came early.
type Arrivals = HashMap<(i64, DateTime<Utc>), DateTime<Utc>>;

fn arrivals(records: &[target_server::RequestRecord]) -> (Arrivals, u64) {
    let mut arrivals = Arrivals::new();
    let mut early = 0;
    for r in records {
        let Some((id, at)) = r.idempotency_key.as_deref().and_then(parse_key) else {
            continue;
        };
        if r.received_at < at {
            early += 1;
        }
        arrivals.entry((id, at)).or_insert(r.received_at);
    }
    (arrivals, early)
}

/// Arrival − occurrence of every whole-second task that fired, ms.
async fn whole_second_lags(
    pool: &PgPool,
    arrivals: &Arrivals,
    base: DateTime<Utc>,
    spread: i32,
) -> Result<Vec<f64>> {
    let due: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, $1 + ((substring(name from 8)::int) % $2) * interval '1 second' \
         FROM tasks WHERE name LIKE 'second-%'",
    )
    .bind(base)
    .bind(spread)
    .fetch_all(pool)
    .await?;
    Ok(due
        .iter()
        .filter_map(|occ| {
            arrivals
                .get(occ)
                .map(|at| (*at - occ.1).num_microseconds().unwrap_or(0) as f64 / 1000.0)
        })
        .collect())
}

/// (fired, expected) occurrences of the two `rate(10 seconds)` tasks, from
/// the first 10 s boundary after the start to 3 s before the end.
async fn sub_minute(
    pool: &PgPool,
    arrivals: &Arrivals,
    started: DateTime<Utc>,
    ended: DateTime<Utc>,
) -> Result<(u64, u64)> {
    let (mut fired, mut expected) = (0, 0);
    let first =
        started.duration_trunc(chrono::Duration::seconds(10))? + chrono::Duration::seconds(10);
    let last = ended - chrono::Duration::seconds(3);
    let due: HashSet<DateTime<Utc>> = (0..)
        .map(|k| first + chrono::Duration::seconds(10 * k))
        .take_while(|t| *t <= last)
        .collect();
    for name in ["ten-forbid", "ten-allow"] {
        let id: i64 = sqlx::query_scalar("SELECT id FROM tasks WHERE name = $1")
            .bind(name)
            .fetch_one(pool)
            .await?;
        expected += due.len() as u64;
        fired += due
            .iter()
            .filter(|t| arrivals.contains_key(&(id, **t)))
            .count() as u64;
    }
    Ok((fired, expected))
}

pub(super) fn parse_key(key: &str) -> Option<(i64, DateTime<Utc>)> {
    let (id, at) = key.split_once(':')?;
    Some((
        id.parse().ok()?,
        DateTime::parse_from_rfc3339(at).ok()?.to_utc(),
    ))
}

/// The scenario's table.
pub fn table(r: &LambdaPathResults) -> Table {
    let mut t = Table::new(["measure", "value", "target"]);
    t.row([
        "early requests".to_string(),
        r.early.to_string(),
        "0".into(),
    ]);
    t.row([
        "whole-second occurrences fired".to_string(),
        format!("{} / {}", r.fired, r.expected),
        "all".into(),
    ]);
    t.row([
        "lag p50 (ms)".to_string(),
        num(round2(r.lag_ms.p50)),
        String::new(),
    ]);
    t.row([
        "lag p99 (ms)".to_string(),
        num(round2(r.lag_ms.p99)),
        String::new(),
    ]);
    t.row([
        "lag max (ms)".to_string(),
        num(round2(r.lag_ms.max)),
        String::new(),
    ]);
    t.row([
        "queue delivered late p99 / max (ms)".to_string(),
        format!(
            "{} / {}",
            num(r.delivery_late_ms.p99),
            num(r.delivery_late_ms.max)
        ),
        String::new(),
    ]);
    t.row([
        "Sundial's own delay p99 (ms)".to_string(),
        num(r.start_delay_ms.p99),
        "≤ 100".into(),
    ]);
    t.row([
        "sub-minute occurrences fired".to_string(),
        format!("{} / {}", r.sub_minute_fired, r.sub_minute_expected),
        "100 %".into(),
    ]);
    t.row([
        "scanner ticks".to_string(),
        r.ticks.to_string(),
        String::new(),
    ]);
    t.row([
        "held until due (came early)".to_string(),
        r.held.to_string(),
        String::new(),
    ]);
    t.row([
        "chained by the processor".to_string(),
        r.chained.to_string(),
        String::new(),
    ]);
    t
}
