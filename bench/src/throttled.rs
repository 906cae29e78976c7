//! `sundial bench throttled`: N tasks due at the same instant against a
//! target that admits R requests per wall-clock second and answers 429
//! (`Retry-After: 1`) beyond (the target server's `/admit/{R}/{variant}`).
//!
//! Two variants, each on a fresh database and a fresh queue:
//! (a) `limited`: a `flows` row limits the target's flow to R/s (burst 1),
//! so pacing at dispatch should keep every request within the limit;
//! (b) `unlimited`: no row, so adaptive concurrency and the shared backoff
//! must find the rate from the 429s, with the default slow start
//! (`SUNDIAL_FLOW_SLOW_START`, `--slow-start-window`);
//! (b, informational) `no-slow-start`: as (b) with slow start off, so the
//! report shows what the ramp buys against the first wave (no targets).
//!
//! The deployed shape ([`super::sqs_path`]): the scanner's tick, SQS
//! (emulator; `--queue memory` for runs beyond a few hundred tasks), two
//! long-polling processors. Tasks get enough attempts
//! (`--max-attempts`) that 429s are retried rather than failed.
//!
//! Measured at the target (recording on): requests, 429 share, drain
//! time (first to last admitted request) against N / R, occurrences
//! admitted twice; from the database: occurrences without a succeeded
//! run at the end (lost).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sundial::config::defaults;
use sundial_target::{self as target_server, RequestRecord, TargetConfig, TargetServer};

use super::env::{self, TaskBatch};
use super::measure::{round3, Dist, Meter, Progress, Resources};
use super::report::{num, Table};
use super::sqs_path::{self, Check, QueueKind, RunQueue};
use super::{Common, Ctx};

/// How far ahead of the due time the tasks are inserted: the first tick
/// claims and enqueues them before they are due.
const LEAD: Duration = Duration::from_secs(3);

/// How a variant treats the target's flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// (a) A `flows` row limits the flow to R/s, burst 1.
    Limited,
    /// (b) No `flows` row: adaptive concurrency and shared backoff.
    Unlimited,
    /// (b) again with slow start off (`SUNDIAL_FLOW_SLOW_START=off`).
    #[serde(rename = "no-slow-start")]
    NoSlowStart,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Limited => "limited",
            Variant::Unlimited => "unlimited",
            Variant::NoSlowStart => "no-slow-start",
        }
    }

    fn label(self, rate: u64, window: usize) -> String {
        match self {
            Variant::Limited => format!("(a) flow limit {rate}/s, burst 1"),
            Variant::Unlimited => format!("(b) no flow limit, slow start from {window}"),
            Variant::NoSlowStart => "(b) no flow limit, slow start off".to_string(),
        }
    }

    /// The targets: 429 share at most, drain at most × N / R
    /// (none for the informational variant).
    fn goals(self) -> Option<(f64, f64)> {
        match self {
            Variant::Limited => Some((0.0, 1.05)),
            Variant::Unlimited => Some((0.05, 1.3)),
            Variant::NoSlowStart => None,
        }
    }
}

#[derive(Debug, Args)]
pub struct ThrottledArgs {
    /// Requests per second the target admits, R [default: 50, --quick: 20].
    #[arg(long)]
    pub rate: Option<u64>,
    /// Tasks due at the same instant, N [default: 500, --quick: 200].
    #[arg(long)]
    pub tasks: Option<u64>,
    /// Variants to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "limited,unlimited,no-slow-start"
    )]
    pub variants: Vec<Variant>,
    /// Long-polling processors sharing the queue.
    #[arg(long, default_value_t = 2)]
    pub processors: usize,
    /// The queue between scanner and processors: SQS (the emulator, the
    /// deployed shape) or the in-process queue (runs beyond a few hundred
    /// occurrences, where the emulator is the bottleneck).
    #[arg(long, value_enum, default_value_t = QueueKind::Sqs)]
    pub queue: QueueKind,
    /// Requests in flight per processor at most (global; the per-host cap
    /// is the default, `SUNDIAL_PER_HOST_CONCURRENCY`).
    #[arg(long, default_value_t = defaults::CONCURRENCY)]
    pub concurrency: usize,
    /// Attempts per occurrence (429s are retried while attempts are left).
    #[arg(long, default_value_t = 10)]
    pub max_attempts: i32,
    /// Slow start's window in (b): requests in flight per flow and
    /// processor a new flow starts from (`SUNDIAL_FLOW_SLOW_START`).
    #[arg(long, default_value_t = defaults::FLOW_SLOW_START)]
    pub slow_start_window: usize,
    /// Give up waiting for the drain this long after the due time
    /// [default: max(30 s, 4 × N / R)].
    #[arg(long)]
    pub deadline_secs: Option<u64>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThrottledResults {
    /// R: requests per second the target admits.
    pub rate: u64,
    /// N: tasks due at once.
    pub tasks: u64,
    pub processors: usize,
    /// The queue between scanner and processors.
    #[serde(default)]
    pub queue: QueueKind,
    pub concurrency: usize,
    pub per_host_concurrency: usize,
    pub max_attempts: i32,
    /// Where slow start's window started in (a) and (b).
    #[serde(default)]
    pub slow_start_window: usize,
    pub runs: Vec<ThrottledRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThrottledRun {
    pub variant: Variant,
    pub label: String,
    /// Requests the target received.
    pub requests: u64,
    pub admitted: u64,
    /// Answered 429.
    pub throttled: u64,
    /// throttled / requests.
    pub throttled_share: f64,
    /// First to last admitted request, seconds (none admitted: `None`).
    pub drain_s: Option<f64>,
    /// N / R, seconds.
    pub ideal_s: f64,
    /// drain / (N / R).
    pub drain_ratio: Option<f64>,
    /// Occurrences with a succeeded run.
    pub succeeded: u64,
    /// Occurrences recorded, but not as succeeded (attempts exhausted).
    pub failed: u64,
    /// Occurrences with no run recorded when the run ended.
    pub unfinished: u64,
    /// failed + unfinished: occurrences with no succeeded run.
    pub lost: u64,
    /// Occurrences the target admitted more than once.
    pub duplicates: u64,
    /// Requests in the target's busiest wall-clock second (any answer).
    pub busiest_second: u64,
    /// Admitted in the busiest second (at most R by construction).
    pub busiest_second_admitted: u64,
    /// Due time → first request, ms.
    pub first_request_ms: Option<f64>,
    /// Pacing delay recorded per run (`task_runs.pacing_ms`), where recorded.
    pub pacing_ms: Dist,
    /// Retries the processors sent.
    pub retried: u64,
    /// Messages the flow held (shared backoff) and sent again.
    pub flow_held: u64,
    /// Retries the retry budget delayed to a later window.
    pub budget_delayed: u64,
    /// Whether the deadline ended the run before every occurrence settled.
    pub deadline_hit: bool,
    /// Requests per wall-clock second at the target, from the due time's second.
    pub per_second: Vec<SecondCount>,
    /// Occurrences with no run at the end (at most 10), for diagnosis.
    pub unfinished_tasks: Vec<Unfinished>,
    /// The flow's `flow_state` row at the end.
    pub flow_state: Option<serde_json::Value>,
    pub checks: Vec<Check>,
    pub resources: Resources,
}

pub async fn run(args: ThrottledArgs) -> Result<()> {
    let ctx = Ctx::new(&args.common)?;
    let rate = args.rate.unwrap_or(if ctx.quick { 20 } else { 50 });
    let tasks = args.tasks.unwrap_or(if ctx.quick { 200 } else { 500 });
    if rate == 0 || tasks == 0 {
        bail!("--rate and --tasks must be at least 1");
    }
    let ideal = Duration::from_secs_f64(tasks as f64 / rate as f64);
    let deadline = args
        .deadline_secs
        .map(Duration::from_secs)
        .unwrap_or_else(|| (ideal * 4).max(Duration::from_secs(30)));
    // One target for every variant: each fires at a path of its own, and
    // `/admit` counts each path apart.
    let server = target_server::spawn(TargetConfig::default()).await?;
    let meter = Meter::start(None);
    let mut runs = Vec::new();
    for &variant in &args.variants {
        let shape = Shape {
            rate,
            tasks,
            processors: args.processors,
            queue: args.queue,
            concurrency: args.concurrency,
            max_attempts: args.max_attempts.clamp(1, 20),
            slow_start_window: args.slow_start_window.max(1),
            deadline,
        };
        runs.push(run_variant(&ctx, &server, &shape, variant).await?);
    }
    let resources = meter.finish_without_postgres();
    let results = ThrottledResults {
        rate,
        tasks,
        processors: args.processors,
        queue: args.queue,
        concurrency: args.concurrency,
        per_host_concurrency: defaults::PER_HOST_CONCURRENCY,
        max_attempts: args.max_attempts.clamp(1, 20),
        slow_start_window: args.slow_start_window.max(1),
        runs,
    };
    println!("{}", table(&results).text());
    println!("{}", checks_table(&results).text());
    ctx.db.drop_database().await?;
    ctx.finish("throttled", "in-process (recording)", resources, &results)
}

/// One wall-clock second at the target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecondCount {
    /// Seconds after the due time's second.
    pub second: i64,
    pub requests: u64,
    pub admitted: u64,
}

/// An occurrence that had no run when the variant ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unfinished {
    pub name: String,
    pub next_run_at: Option<DateTime<Utc>>,
    pub lease_until: Option<DateTime<Utc>>,
    /// Requests the target received for it.
    pub requests: u64,
}

/// What every variant shares.
struct Shape {
    rate: u64,
    tasks: u64,
    processors: usize,
    queue: QueueKind,
    concurrency: usize,
    max_attempts: i32,
    slow_start_window: usize,
    deadline: Duration,
}

async fn run_variant(
    ctx: &Ctx,
    server: &TargetServer,
    shape: &Shape,
    variant: Variant,
) -> Result<ThrottledRun> {
    let mut settings = env::settings_per_host(
        shape.concurrency,
        defaults::PER_HOST_CONCURRENCY.min(shape.concurrency),
        75,
    )?;
    settings.flow.initial_limit = match variant {
        Variant::NoSlowStart => usize::MAX,
        Variant::Limited | Variant::Unlimited => shape.slow_start_window,
    };
    let pool = ctx.db.fresh(settings.db_pool_size.max(10)).await?;
    let label = format!("throttled-{}", variant.name());
    let queue = RunQueue::create(shape.queue, &label, &settings).await?;
    let path = format!("/admit/{}/{}", shape.rate, variant.name());
    let url = server.url(&path);
    if variant == Variant::Limited {
        let flow = sqs_path::flow_of(&pool, &url).await?;
        sqlx::query("INSERT INTO flows (key, rate_per_sec, burst) VALUES ($1, $2, 1)")
            .bind(&flow)
            .bind(shape.rate as f64)
            .execute(&pool)
            .await?;
    }
    let due = env::due_in(LEAD);
    let prefix = format!("throttled-{}-", variant.name());
    env::insert_tasks(
        &pool,
        &TaskBatch {
            prefix: &prefix,
            count: shape.tasks as i64,
            first_due: due,
            spacing: Duration::ZERO,
            url: &url,
            every_nth: None,
            timeout_ms: 10_000,
            max_attempts: shape.max_attempts,
        },
    )
    .await?;

    let meter = Meter::start(None);
    let (admitted_before, throttled_before) = (server.stats.admitted(), server.stats.throttled());
    let give_up = Instant::now() + LEAD + shape.deadline;
    let mut progress = Progress::new(format!("throttled {}", variant.name()));
    let mut deadline_hit = false;
    let until = async {
        loop {
            let recorded = recorded_runs(&pool).await.unwrap_or(0);
            progress.update(|| {
                format!(
                    "{}/{} admitted, {} throttled, {recorded} recorded",
                    server.stats.admitted() - admitted_before,
                    shape.tasks,
                    server.stats.throttled() - throttled_before,
                )
            });
            if recorded >= shape.tasks {
                break;
            }
            if Instant::now() >= give_up {
                deadline_hit = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let driven = sqs_path::drive(&pool, &settings, &queue, shape.processors, until).await?;
    let resources = meter.finish_without_postgres();
    queue.delete().await;

    let records: Vec<RequestRecord> = server
        .stats
        .records()
        .into_iter()
        .filter(|r| r.path == path)
        .collect();
    let at_target = AtTarget::of(&records, due);
    let settled = settled(&pool).await?;
    let mut pacing = pacing_ms(&pool).await?;
    let unfinished_tasks = unfinished(&pool, &records).await?;
    let flow_state = sqs_path::flow_state(&pool, &sqs_path::flow_of(&pool, &url).await?).await?;
    pool.close().await;

    let ideal_s = shape.tasks as f64 / shape.rate as f64;
    let drain_ratio = at_target.drain_s.map(|d| round3(d / ideal_s));
    let throttled_share = if at_target.requests > 0 {
        at_target.throttled as f64 / at_target.requests as f64
    } else {
        0.0
    };
    let unfinished = shape
        .tasks
        .saturating_sub(settled.succeeded + settled.failed);
    let mut run = ThrottledRun {
        variant,
        label: variant.label(shape.rate, shape.slow_start_window),
        requests: at_target.requests,
        admitted: at_target.admitted,
        throttled: at_target.throttled,
        throttled_share: round3(throttled_share),
        drain_s: at_target.drain_s.map(round3),
        ideal_s: round3(ideal_s),
        drain_ratio,
        succeeded: settled.succeeded,
        failed: settled.failed,
        unfinished,
        lost: settled.failed + unfinished,
        duplicates: at_target.duplicates,
        busiest_second: at_target.busiest_second,
        busiest_second_admitted: at_target.busiest_second_admitted,
        first_request_ms: at_target.first_request_ms,
        pacing_ms: Dist::of(&mut pacing),
        retried: driven.report.retried,
        flow_held: driven.report.flow_held,
        budget_delayed: driven.report.budget_delayed,
        deadline_hit,
        per_second: per_second(&records, due),
        unfinished_tasks,
        flow_state,
        checks: Vec::new(),
        resources,
    };
    run.checks = checks(&run, shape.tasks);
    progress.done(&format!(
        "{}: {} requests, {:.1} % throttled, drain {} s ({} × N/R), {} lost",
        run.label,
        run.requests,
        run.throttled_share * 100.0,
        run.drain_s.map_or("—".into(), num),
        run.drain_ratio.map_or("—".into(), |r| format!("{r:.2}")),
        run.lost
    ));
    Ok(run)
}

/// Runs recorded so far (each task has one occurrence in this scenario).
async fn recorded_runs(pool: &PgPool) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM task_runs")
        .fetch_one(pool)
        .await?;
    Ok(n.max(0) as u64)
}

/// Requests per wall-clock second, from the due time's second to the last.
fn per_second(records: &[RequestRecord], due: DateTime<Utc>) -> Vec<SecondCount> {
    let mut counts: std::collections::BTreeMap<i64, (u64, u64)> = Default::default();
    for r in records {
        let c = counts
            .entry(r.received_at.timestamp() - due.timestamp())
            .or_default();
        c.0 += 1;
        c.1 += u64::from(r.status == Some(200));
    }
    counts
        .into_iter()
        .map(|(second, (requests, admitted))| SecondCount {
            second,
            requests,
            admitted,
        })
        .collect()
}

/// Up to 10 occurrences with no run, and what the target saw of them.
async fn unfinished(pool: &PgPool, records: &[RequestRecord]) -> Result<Vec<Unfinished>> {
    type Row = (i64, String, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT t.id, t.name, t.next_run_at, t.lease_until FROM tasks t \
         WHERE NOT EXISTS (SELECT 1 FROM task_runs r WHERE r.task_id = t.id) \
         ORDER BY t.id LIMIT 10",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, next_run_at, lease_until)| {
            let prefix = format!("{id}:");
            Unfinished {
                name,
                next_run_at,
                lease_until,
                requests: records
                    .iter()
                    .filter(|r| {
                        r.idempotency_key
                            .as_deref()
                            .is_some_and(|k| k.starts_with(&prefix))
                    })
                    .count() as u64,
            }
        })
        .collect())
}

/// How the occurrences ended.
struct Settled {
    succeeded: u64,
    /// Recorded with another status (attempts exhausted).
    failed: u64,
}

async fn settled(pool: &PgPool) -> Result<Settled> {
    let (succeeded, other): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'succeeded'), \
                count(*) FILTER (WHERE status <> 'succeeded') \
         FROM task_runs",
    )
    .fetch_one(pool)
    .await?;
    Ok(Settled {
        succeeded: succeeded.max(0) as u64,
        failed: other.max(0) as u64,
    })
}

/// The pacing delay recorded per run, where the engine records one.
async fn pacing_ms(pool: &PgPool) -> Result<Vec<f64>> {
    Ok(
        sqlx::query_scalar("SELECT pacing_ms::float8 FROM task_runs WHERE pacing_ms IS NOT NULL")
            .fetch_all(pool)
            .await?,
    )
}

/// What the target saw of one variant.
#[derive(Debug, Default)]
struct AtTarget {
    requests: u64,
    admitted: u64,
    throttled: u64,
    drain_s: Option<f64>,
    duplicates: u64,
    busiest_second: u64,
    busiest_second_admitted: u64,
    first_request_ms: Option<f64>,
}

impl AtTarget {
    fn of(records: &[RequestRecord], due: DateTime<Utc>) -> AtTarget {
        let ok = |r: &&RequestRecord| r.status == Some(200);
        let admitted_at: Vec<DateTime<Utc>> =
            records.iter().filter(ok).map(|r| r.received_at).collect();
        let secs = |d: chrono::Duration| d.num_microseconds().unwrap_or(0) as f64 / 1e6;
        let drain_s = admitted_at
            .iter()
            .min()
            .zip(admitted_at.iter().max())
            .map(|(first, last)| secs(*last - *first));
        let mut per_key: HashMap<&str, u64> = HashMap::new();
        for r in records.iter().filter(ok) {
            if let Some(key) = r.idempotency_key.as_deref() {
                *per_key.entry(key).or_default() += 1;
            }
        }
        let mut per_second: HashMap<i64, (u64, u64)> = HashMap::new();
        for r in records {
            let slot = per_second.entry(r.received_at.timestamp()).or_default();
            slot.0 += 1;
            slot.1 += u64::from(r.status == Some(200));
        }
        AtTarget {
            requests: records.len() as u64,
            admitted: admitted_at.len() as u64,
            throttled: records.iter().filter(|r| r.status == Some(429)).count() as u64,
            drain_s,
            duplicates: per_key.values().filter(|n| **n > 1).count() as u64,
            busiest_second: per_second.values().map(|s| s.0).max().unwrap_or(0),
            busiest_second_admitted: per_second.values().map(|s| s.1).max().unwrap_or(0),
            first_request_ms: records
                .iter()
                .map(|r| r.received_at)
                .min()
                .map(|t| secs(t - due) * 1000.0),
        }
    }
}

/// The targets for a variant (if it has them), and none lost or
/// doubled.
fn checks(run: &ThrottledRun, tasks: u64) -> Vec<Check> {
    let mut checks = match run.variant.goals() {
        Some((share_goal, drain_goal)) => goal_checks(run, tasks, share_goal, drain_goal),
        None => Vec::new(),
    };
    checks.push(Check::new(
        "none lost (every occurrence has a succeeded run)",
        format!(
            "{} lost ({} failed, {} unfinished)",
            run.lost, run.failed, run.unfinished
        ),
        run.lost == 0,
    ));
    checks.push(Check::new(
        "none admitted twice",
        format!("{} duplicates", run.duplicates),
        run.duplicates == 0,
    ));
    checks
}

/// The 429 share and the drain time against the variant's goals.
fn goal_checks(run: &ThrottledRun, tasks: u64, share_goal: f64, drain_goal: f64) -> Vec<Check> {
    let share = if share_goal == 0.0 {
        Check::new(
            "0 % 429s at the target",
            format!(
                "{:.1} % ({} of {})",
                run.throttled_share * 100.0,
                run.throttled,
                run.requests
            ),
            run.requests > 0 && run.throttled == 0,
        )
    } else {
        Check::new(
            format!("429 share ≤ {:.0} %", share_goal * 100.0),
            format!(
                "{:.1} % ({} of {})",
                run.throttled_share * 100.0,
                run.throttled,
                run.requests
            ),
            run.requests > 0 && run.throttled_share <= share_goal,
        )
    };
    let drained = run.succeeded == tasks;
    let drain = Check::new(
        format!(
            "drain ≤ {drain_goal} × N / R ({} s)",
            num(run.ideal_s * drain_goal)
        ),
        match (run.drain_s, run.drain_ratio) {
            (Some(d), Some(r)) if drained => format!("{} s = {r:.2} × N / R", num(d)),
            (Some(d), Some(r)) => format!(
                "not drained: {} of {tasks} succeeded ({} s = {r:.2} × N / R so far)",
                run.succeeded,
                num(d)
            ),
            _ => "nothing admitted".to_string(),
        },
        drained && run.drain_ratio.is_some_and(|r| r <= drain_goal),
    );
    vec![share, drain]
}

/// The figures per variant.
pub fn table(r: &ThrottledResults) -> Table {
    let mut t = Table::new([
        "variant",
        "requests",
        "429s",
        "429 share",
        "drain s",
        "N/R s",
        "× N/R",
        "succeeded",
        "lost",
        "duplicates",
        "busiest second (admitted)",
        "pacing p99 ms",
        "retries",
        "held (backoff)",
    ]);
    for run in &r.runs {
        t.row([
            run.label.clone(),
            run.requests.to_string(),
            run.throttled.to_string(),
            format!("{:.1} %", run.throttled_share * 100.0),
            run.drain_s.map_or("—".into(), num),
            num(run.ideal_s),
            run.drain_ratio.map_or("—".into(), |x| format!("{x:.2}")),
            format!("{} / {}", run.succeeded, r.tasks),
            run.lost.to_string(),
            run.duplicates.to_string(),
            format!("{} ({})", run.busiest_second, run.busiest_second_admitted),
            if run.pacing_ms.count > 0 {
                num(run.pacing_ms.p99)
            } else {
                "—".into()
            },
            run.retried.to_string(),
            run.flow_held.to_string(),
        ]);
    }
    t
}

/// PASS/FAIL per variant and target.
pub fn checks_table(r: &ThrottledResults) -> Table {
    let mut t = Table::new(["variant", "target", "measured", "status"]);
    for run in &r.runs {
        for c in &run.checks {
            t.row([
                run.label.clone(),
                c.target.clone(),
                c.measured.clone(),
                c.verdict().to_string(),
            ]);
        }
    }
    t
}
