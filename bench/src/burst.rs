//! `sundial bench burst`: N tasks due at the same instant, through the
//! whole dev-mode pipeline (one scan into the in-process queue, then the
//! real processor), against a target that answers in `--delay-ms`.
//!
//! Throughput is compared with the Little's-law limit: with C requests in
//! flight and latency L, nothing can beat C / L, so N tasks need at least
//! ceil(N / C) · L. Fire lag is `fired_at − scheduled_for` as recorded in
//! `task_runs`.

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use serde::{Deserialize, Serialize};
use sundial::config::defaults;

use super::env::{self, Completion, Pipeline};
use super::measure::{self, round2, round3, Dist, Meter, Progress, Resources};
use super::report::{num, Table};
use super::target::{Proto, Target, TargetShape};
use super::{Common, Ctx};

#[derive(Debug, Args)]
pub struct BurstArgs {
    /// Burst sizes: tasks due at the same instant, one run each.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,50,100,500,1000,10000"
    )]
    pub sizes: Vec<u64>,
    /// Requests in flight at most (processor concurrency, also per host).
    #[arg(long, default_value_t = 500)]
    pub concurrency: usize,
    /// The target answers after this many milliseconds.
    #[arg(long, default_value_t = 50)]
    pub delay_ms: u64,
    /// Open C connections to the target before the burst (a warm,
    /// long-running processor) instead of starting with none (a cold one).
    #[arg(long)]
    pub warm: bool,
    /// Slow start's window: requests in flight a new flow starts from
    /// (`SUNDIAL_FLOW_SLOW_START`), or `off` to start at the cap and see
    /// what the ramp costs a burst.
    #[arg(long, default_value_t = defaults::FLOW_SLOW_START.to_string(), value_parser = window)]
    pub slow_start: String,
    #[command(flatten)]
    pub shape: TargetShape,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BurstResults {
    pub concurrency: usize,
    pub delay_ms: u64,
    /// Connections to the target opened before each burst.
    #[serde(default)]
    pub warm: bool,
    /// Protocol of the target.
    #[serde(default)]
    pub proto: Proto,
    /// Local ports the tasks were spread over.
    #[serde(default = "one")]
    pub hosts: u16,
    /// Slow start's window (`None`: off, or a report from before it).
    #[serde(default)]
    pub slow_start: Option<usize>,
    pub runs: Vec<BurstRun>,
}

/// `--slow-start`: `off`, or a window of at least 1.
fn window(raw: &str) -> std::result::Result<String, String> {
    if raw.eq_ignore_ascii_case("off") || raw.parse::<usize>().is_ok_and(|w| w >= 1) {
        Ok(raw.to_string())
    } else {
        Err(format!("{raw:?} is not `off` or a window of at least 1"))
    }
}

/// The window `--slow-start` asks for (`None`: off).
fn slow_start(raw: &str) -> Option<usize> {
    raw.parse::<usize>().ok()
}

fn one() -> u16 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BurstRun {
    pub tasks: u64,
    /// How far ahead of the due time the scan started, ms.
    pub lead_ms: u64,
    /// Time of the scan that claimed and enqueued them, ms.
    pub scan_ms: f64,
    pub enqueued: u64,
    /// Runs recorded in `task_runs`.
    pub recorded: u64,
    pub succeeded: u64,
    /// Due time → last request finished, seconds.
    pub fire_window_s: f64,
    /// Due time → last outcome written back, seconds.
    pub drain_s: f64,
    /// tasks / fire_window.
    pub throughput_per_s: f64,
    /// Little's-law limit for this size: tasks / (ceil(tasks / C) · L).
    pub limit_per_s: f64,
    /// throughput / limit.
    pub limit_ratio: f64,
    /// fired_at − scheduled_for.
    pub lag_ms: Dist,
    /// Target latency as seen by the processor.
    pub latency_ms: Dist,
    /// Requests the target received during the run.
    pub target_requests: u64,
    /// Bench-process CPU per firing (scan + processor + write-back), ms.
    pub cpu_ms_per_firing: f64,
    /// TCP connections the target accepted during the run.
    #[serde(default)]
    pub target_connections: u64,
    /// TLS handshakes the target completed during the run, per 1,000
    /// recorded firings.
    #[serde(default)]
    pub handshakes_per_1000: f64,
    pub resources: Resources,
}

pub async fn run(args: BurstArgs) -> Result<()> {
    let ctx = Ctx::new(&args.common)?;
    let target = Target::start(ctx.in_process_target, &args.shape).await?;
    let meter = Meter::start(target.pid());
    let mut runs = Vec::new();
    for &n in &args.sizes {
        let one = run_size(&ctx, &target, &args, n.max(1)).await?;
        runs.push(one);
    }
    let results = BurstResults {
        concurrency: args.concurrency,
        delay_ms: args.delay_ms,
        warm: args.warm,
        proto: args.shape.proto,
        hosts: args.shape.hosts,
        slow_start: slow_start(&args.slow_start),
        runs,
    };
    println!("{}", table(&results).text());
    ctx.db.drop_database().await?;
    ctx.finish(
        &args
            .shape
            .scenario_name(if args.warm { "burst-warm" } else { "burst" }),
        target.placement(),
        meter.finish_without_postgres(),
        &results,
    )
}

async fn run_size(ctx: &Ctx, target: &Target, args: &BurstArgs, n: u64) -> Result<BurstRun> {
    let mut settings = target.settings(args.concurrency, 75)?;
    settings.flow.initial_limit = slow_start(&args.slow_start).unwrap_or(usize::MAX);
    let pool = ctx.db.fresh(settings.db_pool_size).await?;
    // Leave the scan time to claim and enqueue everything before the due time.
    let lead = Duration::from_millis(2000 + n / 5);
    let due = env::due_in(lead);
    env::insert_over_hosts(
        &pool,
        target,
        "burst-",
        &format!("/delay/{}", args.delay_ms),
        n,
        due,
        30_000,
    )
    .await?;
    let pipeline = Pipeline::new(pool.clone(), &settings)?;
    if args.warm {
        let hosts = target.hosts().max(1);
        let per_host = (args.concurrency.min(n as usize) / hosts).max(1);
        for host in 0..hosts {
            pipeline
                .warm_up(&target.url_on(host, "/ok"), per_host)
                .await;
        }
    }
    let before = target.counters().await?;
    measure::trim_heap();
    let meter = Meter::start(target.pid());
    let lead_ms = (due - chrono::Utc::now()).num_milliseconds().max(0) as u64;
    let due_instant = Instant::now() + Duration::from_millis(lead_ms);

    let scan_started = Instant::now();
    let summary = pipeline.scan_once().await?;
    let scan_ms = scan_started.elapsed().as_secs_f64() * 1000.0;

    let completion = Completion::new(summary.enqueued);
    let deadline = due_instant + Duration::from_secs(120);
    let mut progress = Progress::new(format!("burst {n}"));
    let watch = async {
        while !completion.stopped() {
            progress.update(|| format!("{}/{} settled", completion.settled(), n));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (_report, ()) = tokio::join!(pipeline.consume(completion.clone(), deadline), watch);
    let resources = meter.finish();
    let after = target.counters().await?;

    let rows = env::recorded_runs(&pool).await?;
    let mut lag: Vec<f64> = rows.iter().filter_map(|r| r.lag_ms).collect();
    let mut latency: Vec<f64> = rows.iter().filter_map(|r| r.latency_ms).collect();
    let last_finish = rows.iter().map(|r| r.finished_at).max();
    let fire_window_s = last_finish
        .map(|t| (t - due).num_microseconds().unwrap_or(0) as f64 / 1e6)
        .unwrap_or(0.0);
    let drain_s = completion
        .last_settled()
        .map(|t| t.saturating_duration_since(due_instant).as_secs_f64())
        .unwrap_or(0.0);
    let waves = n.div_ceil(args.concurrency.max(1) as u64);
    let ideal_s = waves as f64 * args.delay_ms as f64 / 1000.0;
    let recorded = rows.len() as u64;
    let throughput = if fire_window_s > 0.0 {
        recorded as f64 / fire_window_s
    } else {
        0.0
    };
    let limit = if ideal_s > 0.0 {
        n as f64 / ideal_s
    } else {
        0.0
    };
    progress.done(&format!(
        "{n} tasks: {} recorded, {:.0}/s ({:.2} of the limit), p99 lag {:.1} ms",
        recorded,
        throughput,
        if limit > 0.0 { throughput / limit } else { 0.0 },
        Dist::of(&mut lag.clone()).p99
    ));
    pipeline.pool.close().await;
    Ok(BurstRun {
        tasks: n,
        lead_ms,
        scan_ms: round2(scan_ms),
        enqueued: summary.enqueued,
        recorded,
        succeeded: rows.iter().filter(|r| r.status == "succeeded").count() as u64,
        fire_window_s: round3(fire_window_s),
        drain_s: round3(drain_s),
        throughput_per_s: round2(throughput),
        limit_per_s: round2(limit),
        limit_ratio: if limit > 0.0 {
            round3(throughput / limit)
        } else {
            0.0
        },
        lag_ms: Dist::of(&mut lag),
        latency_ms: Dist::of(&mut latency),
        target_requests: after.requests.saturating_sub(before.requests),
        cpu_ms_per_firing: if recorded > 0 {
            round3(resources.cpu_s * 1000.0 / recorded as f64)
        } else {
            0.0
        },
        target_connections: after.connections.saturating_sub(before.connections),
        handshakes_per_1000: if recorded > 0 {
            round2(
                after.tls_handshakes.saturating_sub(before.tls_handshakes) as f64 * 1000.0
                    / recorded as f64,
            )
        } else {
            0.0
        },
        resources,
    })
}

/// The terminal / Markdown table of a burst result.
pub fn table(r: &BurstResults) -> Table {
    let mut t = Table::new([
        "tasks",
        "recorded",
        "fire window s",
        "drain s",
        "throughput/s",
        "limit/s",
        "ratio",
        "lag p50 ms",
        "lag p95",
        "lag p99",
        "lag max",
        "latency p50 ms",
        "latency p99",
        "CPU ms/firing",
        "connections",
        "handshakes/1000",
        "RSS max MiB",
    ]);
    for run in &r.runs {
        t.row([
            run.tasks.to_string(),
            run.recorded.to_string(),
            num(run.fire_window_s),
            num(run.drain_s),
            num(run.throughput_per_s),
            num(run.limit_per_s),
            format!("{:.2}", run.limit_ratio),
            num(run.lag_ms.p50),
            num(run.lag_ms.p95),
            num(run.lag_ms.p99),
            num(run.lag_ms.max),
            num(run.latency_ms.p50),
            num(run.latency_ms.p99),
            format!("{:.3}", run.cpu_ms_per_firing),
            run.target_connections.to_string(),
            num(run.handshakes_per_1000),
            num(run.resources.rss_max_mib),
        ]);
    }
    t
}
