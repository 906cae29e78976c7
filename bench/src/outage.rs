//! `sundial bench outage`: one host down for a while among ten healthy
//! ones, every host with recurring tasks (`rate(1 second)`), run once
//! without the outage (baseline) and once with it.
//!
//! The down host is a target server that stops listening on its port
//! (`--down refuse`: connections are refused, as when the service is gone)
//! or resets every connection it accepts (`--down reset`), and comes back
//! on the same port. Its flow gets an explicit breaker in `flows`
//! (`--breaker-failures` N, `--breaker-cooldown-secs`), so the bound the
//! issue sets is known: requests at the down host while it is down ≤
//! probes + N, probes = ceil(outage / cooldown).
//!
//! Refused connections never reach a server, so they are counted as the
//! processors' calls minus the requests all eleven servers received (the
//! baseline shows the difference is 0 when nothing is down); in `reset`
//! mode the down server counts them itself as well.
//!
//! Also measured: fire lag (arrival − occurrence) of the healthy hosts'
//! occurrences due while the host is down, against the same window of the
//! baseline; and that every occurrence of the down host pending when it
//! came back gets a run recorded (fired after close, or skipped).
//!
//! The deployed shape ([`super::sqs_path`]): the scanner's tick, SQS
//! (emulator), two long-polling processors; the processors chain the
//! per-second occurrences between the scanner's ticks.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sundial::config::defaults;
use sundial_target::{self as target_server, Down, RequestRecord, TargetConfig, TargetServer};

use super::env;
use super::lambda_path::parse_key;
use super::measure::{round2, Dist, Meter, Progress, Resources};
use super::report::{num, Table};
use super::sqs_path::{self, Check, QueueKind, RunQueue};
use super::{Common, Ctx};

/// The healthy hosts' lag p99 with the outage may exceed the baseline's by
/// this factor plus [`LAG_NOISE_MS`] and still count as unchanged: two
/// runs on a shared 2-core machine differ by that much with nothing down.
const LAG_NOISE_FACTOR: f64 = 1.25;
const LAG_NOISE_MS: f64 = 50.0;

/// Longest wait after the recovery phase for the down host's pending
/// occurrences to be recorded (a scanner tick, 60 s, may be what
/// releases them).
const SETTLE_MAX: Duration = Duration::from_secs(65);

/// How the down host fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DownMode {
    /// Nothing listens: connections are refused.
    Refuse,
    /// Connections are accepted and reset at once (counted at the server).
    Reset,
}

impl DownMode {
    fn down(self) -> Down {
        match self {
            DownMode::Refuse => Down::Refuse,
            DownMode::Reset => Down::Reset,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DownMode::Refuse => "refuse",
            DownMode::Reset => "reset",
        }
    }
}

#[derive(Debug, Args)]
pub struct OutageArgs {
    /// Healthy hosts (local ports) besides the one that goes down.
    #[arg(long, default_value_t = 10)]
    pub healthy: usize,
    /// `rate(1 second)` tasks per host.
    #[arg(long, default_value_t = 2)]
    pub tasks_per_host: u64,
    /// How long the host is down [default: 60, --quick: 20].
    #[arg(long)]
    pub outage_secs: Option<u64>,
    /// Seconds of normal running before the outage [default: 15, --quick: 10].
    #[arg(long)]
    pub warmup_secs: Option<u64>,
    /// Seconds of running after the host is back [default: 20, --quick: 15].
    #[arg(long)]
    pub recovery_secs: Option<u64>,
    /// How the down host fails: refused connections, or reset ones.
    #[arg(long, value_enum, default_value_t = DownMode::Refuse)]
    pub down: DownMode,
    /// Breaker of the down host's flow: consecutive failures that open it (N).
    #[arg(long, default_value_t = 5)]
    pub breaker_failures: u32,
    /// Breaker window: the failures must fall within this many seconds.
    #[arg(long, default_value_t = 30)]
    pub breaker_window_secs: u32,
    /// Seconds between probes while the flow is open.
    #[arg(long, default_value_t = 5)]
    pub breaker_cooldown_secs: u32,
    /// Long-polling processors sharing the queue.
    #[arg(long, default_value_t = 2)]
    pub processors: usize,
    /// The queue between scanner and processors: SQS (the emulator, the
    /// deployed shape) or the in-process queue (runs beyond a few hundred
    /// occurrences, where the emulator is the bottleneck).
    #[arg(long, value_enum, default_value_t = QueueKind::Sqs)]
    pub queue: QueueKind,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutageResults {
    pub healthy_hosts: usize,
    pub tasks_per_host: u64,
    pub outage_s: u64,
    pub warmup_s: u64,
    pub recovery_s: u64,
    /// Whether `--quick` shortened the outage below the 60 s.
    pub shortened: bool,
    pub down: DownMode,
    pub breaker_failures: u32,
    pub breaker_window_s: u32,
    pub breaker_cooldown_s: u32,
    /// ceil(outage / cooldown).
    pub probes: u64,
    /// probes + N.
    pub bound: u64,
    pub processors: usize,
    /// The queue between scanner and processors.
    #[serde(default)]
    pub queue: QueueKind,
    pub baseline: OutageRun,
    pub outage: OutageRun,
    /// Healthy lag p99, outage run / baseline.
    pub lag_p99_ratio: Option<f64>,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutageRun {
    pub with_outage: bool,
    /// Length of the window (host down, or the same phase of the baseline), s.
    pub window_s: f64,
    /// Arrival − occurrence of the healthy hosts' occurrences due in the window, ms.
    pub healthy_lag_ms: Dist,
    /// Healthy occurrences due in the window that reached their host.
    pub healthy_fired: u64,
    pub healthy_expected: u64,
    /// Calls the processors made (every attempt).
    pub calls: u64,
    /// Requests the eleven servers received.
    pub requests: u64,
    /// calls − requests: attempts that reached no server (refused or reset).
    pub unanswered: u64,
    /// Connections the down server reset (`reset` mode).
    pub reset_counted: u64,
    /// Requests the down server received while down (an open connection
    /// finishing), counted with the attempts.
    pub down_requests_in_window: u64,
    /// Attempts at the down host while it was down.
    pub down_attempts: u64,
    /// Requests the down host received after it came back.
    pub down_requests_after: u64,
    /// The down host's runs of occurrences due in the window, by status.
    pub down_runs_in_window: BTreeMap<String, u64>,
    /// Occurrences of the down host pending when it came back.
    pub held_at_close: u64,
    /// How those were recorded, by status (missing: not recorded).
    pub held_by_status: BTreeMap<String, u64>,
    /// Held occurrences with no run recorded at the end.
    pub held_unaccounted: u64,
    /// Down-host tasks with a succeeded run fired after the host came back.
    pub down_recovered: u64,
    pub down_tasks: u64,
    /// Occurrences answered 2xx more than once (any host; at-least-once
    /// delivery allows them, the emulator delivers to concurrent receivers
    /// twice as SQS may).
    pub duplicates: u64,
    /// Of those, at the down host.
    pub down_duplicates: u64,
    /// Probes of the open flow the processors sent.
    pub probes: u64,
    /// Times the processors saw a flow open / close.
    pub flows_opened: u64,
    pub flows_closed: u64,
    /// Messages a flow held (open breaker, backoff) and sent again.
    pub flow_held: u64,
    /// Occurrences recorded skipped because their flow was open.
    pub flow_skipped: u64,
    pub ticks: u64,
    /// The down host's `flow_state` row when it came back, and at the end.
    pub flow_state_at_close: Option<serde_json::Value>,
    pub flow_state_at_end: Option<serde_json::Value>,
    /// Occurrences answered 2xx more than once (at most 10), for diagnosis.
    pub duplicate_keys: Vec<Duplicate>,
    /// When the processors and the scanner started (its ticks are 60 s
    /// apart from here), the host went down and came back.
    pub started_at: DateTime<Utc>,
    pub down_at: DateTime<Utc>,
    pub up_at: DateTime<Utc>,
    /// The healthy hosts' occurrences per second of the run, for diagnosis.
    pub healthy_by_second: Vec<SecondLag>,
    pub resources: Resources,
}

/// The healthy hosts' occurrences due in one second of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecondLag {
    /// Seconds after the start of the run.
    pub second: i64,
    /// Occurrences that reached their host.
    pub fired: u64,
    /// Largest arrival − occurrence among them, ms.
    pub max_lag_ms: f64,
}

/// An occurrence a host answered 2xx more than once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Duplicate {
    /// `healthy-<i>` or `down`.
    pub host: String,
    /// `<task id>:<occurrence>`.
    pub key: String,
    /// Arrival − occurrence of each 2xx request, ms.
    pub arrivals_ms: Vec<f64>,
}

/// The scenario's parameters.
struct Plan {
    healthy: usize,
    tasks_per_host: u64,
    outage: Duration,
    warmup: Duration,
    recovery: Duration,
    down: DownMode,
    breaker_failures: u32,
    breaker_window_secs: u32,
    breaker_cooldown_secs: u32,
    processors: usize,
    queue: QueueKind,
}

pub async fn run(args: OutageArgs) -> Result<()> {
    let ctx = Ctx::new(&args.common)?;
    let secs = |given: Option<u64>, full: u64, quick: u64| {
        Duration::from_secs(given.unwrap_or(if ctx.quick { quick } else { full }))
    };
    let plan = Plan {
        healthy: args.healthy,
        tasks_per_host: args.tasks_per_host.max(1),
        outage: secs(args.outage_secs, 60, 20),
        warmup: secs(args.warmup_secs, 15, 10),
        recovery: secs(args.recovery_secs, 20, 15),
        down: args.down,
        breaker_failures: args.breaker_failures.max(1),
        breaker_window_secs: args.breaker_window_secs.max(1),
        breaker_cooldown_secs: args.breaker_cooldown_secs.max(1),
        processors: args.processors,
        queue: args.queue,
    };
    if plan.outage.is_zero() {
        bail!("--outage-secs must be at least 1");
    }
    let meter = Meter::start(None);
    let baseline = run_once(&ctx, &plan, false).await?;
    let outage = run_once(&ctx, &plan, true).await?;
    let resources = meter.finish_without_postgres();
    ctx.db.drop_database().await?;

    let probes = plan
        .outage
        .as_secs()
        .div_ceil(u64::from(plan.breaker_cooldown_secs));
    let bound = probes + u64::from(plan.breaker_failures);
    let lag_p99_ratio = (baseline.healthy_lag_ms.p99 > 0.0)
        .then(|| round2(outage.healthy_lag_ms.p99 / baseline.healthy_lag_ms.p99));
    let checks = checks(&plan, &baseline, &outage, bound);
    let results = OutageResults {
        healthy_hosts: plan.healthy,
        tasks_per_host: plan.tasks_per_host,
        outage_s: plan.outage.as_secs(),
        warmup_s: plan.warmup.as_secs(),
        recovery_s: plan.recovery.as_secs(),
        shortened: plan.outage < Duration::from_secs(60),
        down: plan.down,
        breaker_failures: plan.breaker_failures,
        breaker_window_s: plan.breaker_window_secs,
        breaker_cooldown_s: plan.breaker_cooldown_secs,
        probes,
        bound,
        processors: plan.processors,
        queue: plan.queue,
        baseline,
        outage,
        lag_p99_ratio,
        checks,
    };
    println!("{}", table(&results).text());
    println!("{}", checks_table(&results).text());
    ctx.finish("outage", "in-process (recording)", resources, &results)
}

/// When the phases of a run began and ended, and what was pending.
#[derive(Default)]
struct Timeline {
    down_at: Option<DateTime<Utc>>,
    up_at: Option<DateTime<Utc>>,
    /// Occurrences of the down host pending when it came back.
    held: Vec<(i64, DateTime<Utc>)>,
    /// The down host's `flow_state` row then.
    flow_state_at_close: Option<serde_json::Value>,
}

async fn run_once(ctx: &Ctx, plan: &Plan, with_outage: bool) -> Result<OutageRun> {
    let label = if with_outage { "outage" } else { "baseline" };
    let settings =
        env::settings_per_host(defaults::CONCURRENCY, defaults::PER_HOST_CONCURRENCY, 75)?;
    let pool = ctx.db.fresh(settings.db_pool_size.max(10)).await?;
    let queue = RunQueue::create(plan.queue, &format!("outage-{label}"), &settings).await?;
    let mut servers = Vec::new();
    for _ in 0..=plan.healthy {
        servers.push(target_server::spawn(TargetConfig::default()).await?);
    }
    let (healthy, down) = servers.split_at(plan.healthy);
    let down = &down[0];
    for (i, server) in healthy.iter().enumerate() {
        insert_tasks(&pool, &format!("healthy-{i}-"), &server.url("/ok"), plan).await?;
    }
    insert_tasks(&pool, "down-", &down.url("/ok"), plan).await?;
    let flow = sqs_path::flow_of(&pool, &down.url("/ok")).await?;
    sqlx::query(
        "INSERT INTO flows (key, breaker_failures, breaker_window_secs, breaker_cooldown_secs) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(&flow)
    .bind(plan.breaker_failures as i32)
    .bind(plan.breaker_window_secs as i32)
    .bind(plan.breaker_cooldown_secs as i32)
    .execute(&pool)
    .await?;

    let meter = Meter::start(None);
    let started_at = Utc::now();
    let mut timeline = Timeline::default();
    let mut progress = Progress::new(format!("outage {label}"));
    let until = clock(
        &pool,
        plan,
        &servers,
        &flow,
        with_outage,
        &mut timeline,
        &mut progress,
    );
    let driven = sqs_path::drive(&pool, &settings, &queue, plan.processors, until).await?;
    let resources = meter.finish_without_postgres();
    queue.delete().await;

    let (Some(down_at), Some(up_at)) = (timeline.down_at, timeline.up_at) else {
        bail!("the {label} run ended before its outage window");
    };
    let records: Vec<Vec<RequestRecord>> = servers.iter().map(|s| s.stats.records()).collect();
    let (healthy_records, down_records) = records.split_at(plan.healthy);
    let down_records = &down_records[0];
    let mut lags = Vec::new();
    let mut healthy_fired = 0;
    let mut by_second: BTreeMap<i64, SecondLag> = BTreeMap::new();
    for host in healthy_records {
        for (occurrence, arrived) in first_arrivals(host) {
            let lag_ms = (arrived - occurrence).num_microseconds().unwrap_or(0) as f64 / 1000.0;
            let second = by_second
                .entry(occurrence.timestamp() - started_at.timestamp())
                .or_insert(SecondLag {
                    second: occurrence.timestamp() - started_at.timestamp(),
                    fired: 0,
                    max_lag_ms: 0.0,
                });
            second.fired += 1;
            second.max_lag_ms = second.max_lag_ms.max(round2(lag_ms));
            if occurrence >= down_at && occurrence < up_at {
                healthy_fired += 1;
                lags.push((arrived - occurrence).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
        }
    }
    let whole_seconds = ceil_second(up_at) - ceil_second(down_at);
    let healthy_expected = plan.healthy as u64 * plan.tasks_per_host * whole_seconds.max(0) as u64;
    let requests: u64 = servers.iter().map(|s| s.stats.requests()).sum();
    let calls = driven.report.fired;
    let unanswered = calls.saturating_sub(requests);
    let down_requests_in_window = down_records
        .iter()
        .filter(|r| r.received_at >= down_at && r.received_at < up_at)
        .count() as u64;
    let reset_counted = down.stats.refused();
    let down_attempts = down_requests_in_window
        + match plan.down {
            DownMode::Refuse => unanswered,
            DownMode::Reset => reset_counted,
        };
    let held_by_status = held_by_status(&pool, &timeline.held).await?;
    let held_unaccounted = held_by_status.get(MISSING).copied().unwrap_or(0);
    let run = OutageRun {
        with_outage,
        window_s: round2((up_at - down_at).num_milliseconds() as f64 / 1000.0),
        healthy_lag_ms: Dist::of(&mut lags),
        healthy_fired,
        healthy_expected,
        calls,
        requests,
        unanswered,
        reset_counted,
        down_requests_in_window,
        down_attempts,
        down_requests_after: down_records
            .iter()
            .filter(|r| r.received_at >= up_at)
            .count() as u64,
        down_runs_in_window: down_runs_in_window(&pool, down_at, up_at).await?,
        held_at_close: timeline.held.len() as u64,
        held_by_status,
        held_unaccounted,
        down_recovered: down_recovered(&pool, up_at).await?,
        down_tasks: plan.tasks_per_host,
        duplicates: records.iter().map(|r| duplicates(r).len() as u64).sum(),
        down_duplicates: duplicates(down_records).len() as u64,
        probes: driven.report.probes,
        flows_opened: driven.report.flows_opened,
        flows_closed: driven.report.flows_closed,
        flow_held: driven.report.flow_held,
        flow_skipped: driven.report.flow_skipped,
        ticks: driven.ticks.ticks,
        flow_state_at_close: timeline.flow_state_at_close.take(),
        flow_state_at_end: sqs_path::flow_state(&pool, &flow).await?,
        duplicate_keys: duplicate_keys(&records, plan.healthy),
        started_at,
        down_at,
        up_at,
        healthy_by_second: by_second.into_values().collect(),
        resources,
    };
    progress.done(&format!(
        "healthy lag p99 {} ms; {} attempts at the down host while down; {} held at close, {} unaccounted",
        num(run.healthy_lag_ms.p99),
        run.down_attempts,
        run.held_at_close,
        run.held_unaccounted
    ));
    pool.close().await;
    for server in servers {
        let _ = server.shutdown().await;
    }
    Ok(run)
}

/// `rate(1 second)` tasks `<prefix>1..` at `url`, first run computed by
/// the scanner; the other columns keep their defaults (3 attempts,
/// `forbid`, catch-up `skip`).
async fn insert_tasks(pool: &PgPool, prefix: &str, url: &str, plan: &Plan) -> Result<()> {
    sqlx::query(
        "INSERT INTO tasks (name, schedule, url, timeout_ms) \
         SELECT $1 || g, 'rate(1 second)', $2, 5000 FROM generate_series(1, $3::bigint) g",
    )
    .bind(prefix)
    .bind(url)
    .bind(plan.tasks_per_host as i64)
    .execute(pool)
    .await?;
    Ok(())
}

/// The phases of a run: warm-up; the outage (or, in the baseline, the
/// same span with nothing down); recovery; then, if occurrences of the
/// down host are still pending, up to [`SETTLE_MAX`] for them to be
/// recorded.
async fn clock(
    pool: &PgPool,
    plan: &Plan,
    servers: &[TargetServer],
    down_flow: &str,
    with_outage: bool,
    timeline: &mut Timeline,
    progress: &mut Progress,
) {
    let down = &servers[plan.healthy];
    phase("warm-up", plan.warmup, servers, progress).await;
    if with_outage {
        down.set_down(Some(plan.down.down()));
    }
    timeline.down_at = Some(Utc::now());
    let name = if with_outage {
        "host down"
    } else {
        "no outage"
    };
    phase(name, plan.outage, servers, progress).await;
    if with_outage {
        down.set_down(None);
    }
    let up_at = Utc::now();
    timeline.up_at = Some(up_at);
    timeline.held = pending(pool, up_at).await.unwrap_or_default();
    timeline.flow_state_at_close = sqs_path::flow_state(pool, down_flow)
        .await
        .unwrap_or_default();
    phase("recovery", plan.recovery, servers, progress).await;
    let settling = Instant::now();
    while settling.elapsed() < SETTLE_MAX {
        let left = held_by_status(pool, &timeline.held)
            .await
            .map(|s| s.get(MISSING).copied().unwrap_or(0))
            .unwrap_or(0);
        if left == 0 {
            break;
        }
        progress.update(|| format!("waiting for {left} held occurrences to be recorded"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits `length`, showing progress.
async fn phase(name: &str, length: Duration, servers: &[TargetServer], progress: &mut Progress) {
    let started = Instant::now();
    while started.elapsed() < length {
        progress.update(|| {
            format!(
                "{name} {}/{} s, {} requests",
                started.elapsed().as_secs(),
                length.as_secs(),
                servers.iter().map(|s| s.stats.requests()).sum::<u64>()
            )
        });
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The down host's occurrences due before `at` and not yet recorded.
async fn pending(pool: &PgPool, at: DateTime<Utc>) -> Result<Vec<(i64, DateTime<Utc>)>> {
    Ok(sqlx::query_as(
        "SELECT id, next_run_at FROM tasks \
         WHERE name LIKE 'down-%' AND next_run_at IS NOT NULL AND next_run_at < $1",
    )
    .bind(at)
    .fetch_all(pool)
    .await?)
}

/// The status key of held occurrences with no run.
const MISSING: &str = "not recorded";

/// How the held occurrences were recorded, by status.
async fn held_by_status(
    pool: &PgPool,
    held: &[(i64, DateTime<Utc>)],
) -> Result<BTreeMap<String, u64>> {
    let (ids, ats): (Vec<i64>, Vec<DateTime<Utc>>) = held.iter().copied().unzip();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT coalesce(r.status, $3), count(*) \
         FROM unnest($1::bigint[], $2::timestamptz[]) AS h(id, at) \
         LEFT JOIN task_runs r ON r.task_id = h.id AND r.scheduled_for = h.at \
         GROUP BY 1",
    )
    .bind(&ids)
    .bind(&ats)
    .bind(MISSING)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(s, n)| (s, n.max(0) as u64))
        .collect())
}

/// The down host's runs of occurrences due in `[from, to)`, by status.
async fn down_runs_in_window(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<BTreeMap<String, u64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT r.status, count(*) FROM task_runs r JOIN tasks t ON t.id = r.task_id \
         WHERE t.name LIKE 'down-%' AND r.scheduled_for >= $1 AND r.scheduled_for < $2 \
         GROUP BY 1",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(s, n)| (s, n.max(0) as u64))
        .collect())
}

/// Down-host tasks with a succeeded run fired at or after `up_at`.
async fn down_recovered(pool: &PgPool, up_at: DateTime<Utc>) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT t.id) FROM tasks t JOIN task_runs r ON r.task_id = t.id \
         WHERE t.name LIKE 'down-%' AND r.status = 'succeeded' AND r.fired_at >= $1",
    )
    .bind(up_at)
    .fetch_one(pool)
    .await?;
    Ok(n.max(0) as u64)
}

/// (occurrence, first arrival) of every occurrence that reached this host.
fn first_arrivals(records: &[RequestRecord]) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut first: HashMap<(i64, DateTime<Utc>), DateTime<Utc>> = HashMap::new();
    for r in records {
        if let Some(key) = r.idempotency_key.as_deref().and_then(parse_key) {
            let at = first.entry(key).or_insert(r.received_at);
            *at = (*at).min(r.received_at);
        }
    }
    first
        .into_iter()
        .map(|((_, occurrence), arrived)| (occurrence, arrived))
        .collect()
}

/// Occurrences answered 2xx more than once at this host: key → arrivals.
fn duplicates(records: &[RequestRecord]) -> Vec<(&str, Vec<DateTime<Utc>>)> {
    let mut per_key: HashMap<&str, Vec<DateTime<Utc>>> = HashMap::new();
    for r in records
        .iter()
        .filter(|r| r.status.is_some_and(|s| (200..300).contains(&s)))
    {
        if let Some(key) = r.idempotency_key.as_deref() {
            per_key.entry(key).or_default().push(r.received_at);
        }
    }
    per_key.into_iter().filter(|(_, at)| at.len() > 1).collect()
}

/// Up to 10 duplicates over all hosts, for the results file.
fn duplicate_keys(records: &[Vec<RequestRecord>], healthy: usize) -> Vec<Duplicate> {
    let mut out = Vec::new();
    for (i, host) in records.iter().enumerate() {
        for (key, arrivals) in duplicates(host) {
            let occurrence = parse_key(key).map(|(_, at)| at);
            out.push(Duplicate {
                host: if i < healthy {
                    format!("healthy-{i}")
                } else {
                    "down".to_string()
                },
                key: key.to_string(),
                arrivals_ms: arrivals
                    .iter()
                    .map(|at| {
                        occurrence.map_or(0.0, |o| {
                            round2((*at - o).num_microseconds().unwrap_or(0) as f64 / 1000.0)
                        })
                    })
                    .collect(),
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out.truncate(10);
    out
}

/// The first whole second at or after `t`, as a Unix second.
fn ceil_second(t: DateTime<Utc>) -> i64 {
    let s = t.timestamp();
    if t.timestamp_subsec_nanos() > 0 {
        s + 1
    } else {
        s
    }
}

fn checks(plan: &Plan, baseline: &OutageRun, outage: &OutageRun, bound: u64) -> Vec<Check> {
    let how = match plan.down {
        DownMode::Refuse => "refused: processor calls − requests received",
        DownMode::Reset => "reset connections counted at the host",
    };
    let attempts = Check::new(
        format!(
            "requests at the down host while down ≤ probes + N = {bound} ({} s outage, cooldown {} s, N = {})",
            plan.outage.as_secs(),
            plan.breaker_cooldown_secs,
            plan.breaker_failures
        ),
        format!("{} ({how})", outage.down_attempts),
        outage.down_attempts <= bound,
    );
    let (b, o) = (baseline.healthy_lag_ms.p99, outage.healthy_lag_ms.p99);
    let allowed = b * LAG_NOISE_FACTOR + LAG_NOISE_MS;
    let lag = Check::new(
        format!(
            "healthy lag p99 unchanged (≤ {LAG_NOISE_FACTOR} × baseline + {LAG_NOISE_MS} ms = {} ms)",
            num(allowed)
        ),
        format!("{} ms against {} ms without the outage", num(o), num(b)),
        outage.healthy_lag_ms.count > 0 && o <= allowed,
    );
    let held = Check::new(
        "every pending occurrence of the down host recorded (fired after close or skipped)",
        format!(
            "{} pending when it came back: {}",
            outage.held_at_close,
            describe(&outage.held_by_status)
        ),
        outage.held_unaccounted == 0,
    );
    let recovered = Check::new(
        "the down host is fired at again once back",
        format!(
            "{} of {} tasks succeeded after it came back",
            outage.down_recovered, outage.down_tasks
        ),
        outage.down_recovered == outage.down_tasks,
    );
    let doubled = Check::new(
        "no occurrence of the down host answered twice",
        format!("{} duplicates", outage.down_duplicates),
        outage.down_duplicates == 0,
    );
    vec![attempts, lag, held, recovered, doubled]
}

/// `3 succeeded, 1 skipped`; `none` for an empty map.
fn describe(by_status: &BTreeMap<String, u64>) -> String {
    if by_status.is_empty() {
        return "none".into();
    }
    by_status
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The figures of both runs.
pub fn table(r: &OutageResults) -> Table {
    let mut t = Table::new(["measure", "baseline", "with outage"]);
    let (b, o) = (&r.baseline, &r.outage);
    let mut row = |name: &str, f: &dyn Fn(&OutageRun) -> String| {
        t.row([name.to_string(), f(b), f(o)]);
    };
    row("window (s)", &|x| num(x.window_s));
    row("healthy lag p50 (ms)", &|x| num(x.healthy_lag_ms.p50));
    row("healthy lag p99 (ms)", &|x| num(x.healthy_lag_ms.p99));
    row("healthy lag max (ms)", &|x| num(x.healthy_lag_ms.max));
    row("healthy occurrences fired in the window", &|x| {
        format!("{} / {}", x.healthy_fired, x.healthy_expected)
    });
    row(
        "requests or attempts at the down host in the window",
        &|x| x.down_attempts.to_string(),
    );
    row("processor calls − requests received", &|x| {
        x.unanswered.to_string()
    });
    row("down host: runs due in the window", &|x| {
        describe(&x.down_runs_in_window)
    });
    row("down host: requests after it came back", &|x| {
        x.down_requests_after.to_string()
    });
    row("down host: pending when it came back", &|x| {
        format!("{}: {}", x.held_at_close, describe(&x.held_by_status))
    });
    row("down host: tasks succeeding after", &|x| {
        format!("{} / {}", x.down_recovered, x.down_tasks)
    });
    row("duplicates (2xx twice): all hosts / down host", &|x| {
        format!("{} / {}", x.duplicates, x.down_duplicates)
    });
    row("processor calls / requests received", &|x| {
        format!("{} / {}", x.calls, x.requests)
    });
    row(
        "probes sent / flow opened / closed (as seen per processor)",
        &|x| format!("{} / {} / {}", x.probes, x.flows_opened, x.flows_closed),
    );
    row("messages held by their flow", &|x| x.flow_held.to_string());
    row("scanner ticks", &|x| x.ticks.to_string());
    t
}

/// PASS/FAIL per target.
pub fn checks_table(r: &OutageResults) -> Table {
    let mut t = Table::new(["target", "measured", "status"]);
    for c in &r.checks {
        t.row([
            c.target.clone(),
            c.measured.clone(),
            c.verdict().to_string(),
        ]);
    }
    t
}
