//! `sundial bench memory`: hold 1,000 and 2,000 requests in flight (the
//! target answers only after `--hold-ms`) and report the resident memory
//! they add over the idle process, per request.
//!
//! The baseline is sampled just before the due time, with the pipeline
//! built and the messages queued, after handing freed heap back to the OS;
//! the plateau is the highest RSS sampled while the target reports every
//! request in flight. Each level gets a fresh database and processor (a
//! fresh HTTP connection pool).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sundial::fire::FireRequest;

use super::env::{self, Completion, Pipeline};
use super::measure::{self, mib, round2, Meter, Progress, Resources};
use super::report::{num, Table};
use super::target::{Proto, Target, TargetShape};
use super::{Common, Ctx};

#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// Requests held in flight, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000")]
    pub in_flight: Vec<u64>,
    /// How long the target holds each request, ms [default: 15000, --quick: 6000].
    #[arg(long)]
    pub hold_ms: Option<u64>,
    /// Internal: measure one level in this process and print it as JSON
    /// (each measurement runs in a fresh process, so memory freed by an
    /// earlier one cannot be reused and hide what a later one needs).
    #[arg(long, hide = true, value_parser = ["processor", "http"])]
    pub single: Option<String>,
    #[command(flatten)]
    pub shape: TargetShape,
    #[command(flatten)]
    pub common: Common,
}

/// Prefix of the line a `--single` run prints its result on.
const SINGLE_PREFIX: &str = "memory-result ";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryResults {
    pub hold_ms: u64,
    /// Protocol of the target.
    #[serde(default)]
    pub proto: Proto,
    /// Local ports the requests were spread over.
    #[serde(default = "one")]
    pub hosts: u16,
    pub runs: Vec<MemoryRun>,
}

fn one() -> u16 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryRun {
    /// Requests meant to be in flight at once.
    pub in_flight: u64,
    /// Most requests the target saw in flight at once.
    pub reached: u64,
    /// RSS of the idle, fully built process, MiB.
    pub baseline_rss_mib: f64,
    /// Highest RSS while all were in flight, MiB.
    pub plateau_rss_mib: f64,
    /// (plateau − baseline) / in flight, KiB.
    pub per_request_kib: f64,
    /// Peak RSS of the process so far (`VmHWM`), MiB.
    pub peak_rss_mib: f64,
    pub recorded: u64,
    /// TCP connections the target accepted.
    #[serde(default)]
    pub target_connections: u64,
    /// The same number of requests held by the bare HTTP client (the
    /// processor's `Firer`, no database, no queue): what the connections
    /// themselves cost.
    #[serde(default)]
    pub http_only: Option<HttpOnly>,
    pub resources: Resources,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpOnly {
    pub reached: u64,
    pub baseline_rss_mib: f64,
    pub plateau_rss_mib: f64,
    pub per_request_kib: f64,
    /// TCP connections the target accepted.
    #[serde(default)]
    pub target_connections: u64,
}

pub async fn run(args: MemoryArgs) -> Result<()> {
    let ctx = Ctx::new(&args.common)?;
    let hold_ms = args
        .hold_ms
        .unwrap_or(if ctx.quick { 6000 } else { 15000 })
        .max(1000);
    if let Some(mode) = &args.single {
        let n = args.in_flight.first().copied().unwrap_or(1000).max(1);
        let target = Target::start(ctx.in_process_target, &args.shape).await?;
        let line = if mode == "http" {
            serde_json::to_string(&http_only(&target, n, hold_ms).await?)?
        } else {
            let run = run_level(&ctx, &target, n, hold_ms).await?;
            ctx.db.drop_database().await?;
            serde_json::to_string(&run)?
        };
        println!("{SINGLE_PREFIX}{line}");
        return Ok(());
    }
    let meter = Meter::start(None);
    let mut runs = Vec::new();
    for &n in &args.in_flight {
        let bare: HttpOnly = single(&args, n.max(1), hold_ms, "http").await?;
        let mut run: MemoryRun = single(&args, n.max(1), hold_ms, "processor").await?;
        run.http_only = Some(bare);
        runs.push(run);
    }
    let results = MemoryResults {
        hold_ms,
        proto: args.shape.proto,
        hosts: args.shape.hosts,
        runs,
    };
    println!("{}", table(&results).text());
    ctx.db.drop_database().await?;
    let placement = if ctx.in_process_target {
        "in-process"
    } else {
        "child process"
    };
    ctx.finish(
        &args.shape.scenario_name("memory"),
        placement,
        meter.finish_without_postgres(),
        &results,
    )
}

/// Runs one measurement in a fresh `sundial bench memory --single` process.
async fn single<T: serde::de::DeserializeOwned>(
    args: &MemoryArgs,
    n: u64,
    hold_ms: u64,
    mode: &str,
) -> Result<T> {
    let common = &args.common;
    let exe = std::env::current_exe().context("cannot find the sundial binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["bench", "memory", "--single", mode])
        .args(args.shape.args())
        .args(["--in-flight", &n.to_string()])
        .args(["--hold-ms", &hold_ms.to_string()])
        .args(["--bench-db", &common.bench_db])
        .stderr(std::process::Stdio::inherit());
    if common.in_process_target {
        cmd.arg("--in-process-target");
    }
    if let Some(url) = &common.database_url {
        cmd.env("DATABASE_URL", url);
    }
    let output = tokio::task::spawn_blocking(move || cmd.output()).await??;
    if !output.status.success() {
        bail!("`sundial bench memory --single {mode}` failed");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix(SINGLE_PREFIX)) else {
        bail!("`sundial bench memory --single {mode}` printed no result");
    };
    Ok(serde_json::from_str(line)?)
}

async fn run_level(ctx: &Ctx, target: &Target, n: u64, hold_ms: u64) -> Result<MemoryRun> {
    let settings = target.settings(n as usize, 75)?;
    let pool = ctx.db.fresh(settings.db_pool_size).await?;
    let due = env::due_in(Duration::from_millis(2500 + n / 2));
    env::insert_over_hosts(
        &pool,
        target,
        "mem-",
        &format!("/delay/{hold_ms}"),
        n,
        due,
        (hold_ms + 30_000).min(900_000) as i32,
    )
    .await?;
    let pipeline = Pipeline::new(pool.clone(), &settings)?;
    let meter = Meter::start(target.pid());
    let lead = (due - chrono::Utc::now()).to_std().unwrap_or_default();
    let due_instant = Instant::now() + lead;
    let summary = pipeline.scan_once().await?;
    let completion = Completion::new(summary.enqueued);
    let deadline = due_instant + Duration::from_millis(hold_ms) + Duration::from_secs(120);
    let mut progress = Progress::new(format!("memory {n}"));

    let observe = async {
        // Baseline: built, queued, idle.
        tokio::time::sleep_until((due_instant - Duration::from_millis(300).min(lead)).into()).await;
        let baseline = idle_rss_kib().await;
        // Plateau: every request in flight (or as many as got there).
        let give_up = due_instant + Duration::from_millis(hold_ms * 3 / 4);
        let (plateau, reached) = plateau_kib(target, n, give_up, &mut progress).await;
        (baseline, plateau, reached)
    };
    let (_report, (baseline, plateau, reached)) =
        tokio::join!(pipeline.consume(completion.clone(), deadline), observe);
    let resources = meter.finish();
    let connections = target.counters().await.unwrap_or_default().connections;
    let recorded = env::recorded_runs(&pool).await?.len() as u64;
    let per_request_kib = plateau.saturating_sub(baseline) as f64 / n as f64;
    progress.done(&format!(
        "{reached} in flight: {:.1} KiB per request over a {:.1} MiB baseline",
        per_request_kib,
        mib(baseline)
    ));
    pipeline.pool.close().await;
    Ok(MemoryRun {
        in_flight: n,
        reached,
        baseline_rss_mib: mib(baseline),
        plateau_rss_mib: mib(plateau),
        per_request_kib: round2(per_request_kib),
        peak_rss_mib: mib(measure::peak_rss_kib()),
        recorded,
        target_connections: connections,
        http_only: None,
        resources,
    })
}

/// Baseline RSS (median of a few samples after trimming the heap), KiB.
async fn idle_rss_kib() -> u64 {
    measure::trim_heap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut samples: Vec<u64> = Vec::new();
    for _ in 0..5 {
        samples.push(measure::rss_kib());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Waits until the target holds `n` requests (or `give_up`), then samples
/// RSS for half a second; returns (highest RSS KiB, most in flight seen).
async fn plateau_kib(
    target: &Target,
    n: u64,
    give_up: Instant,
    progress: &mut Progress,
) -> (u64, u64) {
    let mut reached = 0;
    let mut plateau = 0;
    while Instant::now() < give_up {
        let c = target.counters().await.unwrap_or_default();
        reached = reached.max(c.in_flight);
        progress.update(|| format!("{} of {n} in flight", c.in_flight));
        if c.in_flight >= n {
            let until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < until {
                plateau = plateau.max(measure::rss_kib());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            break;
        }
        plateau = plateau.max(measure::rss_kib());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (plateau, reached)
}

/// `n` requests held by the bare firer, with a client built as the
/// processor builds it.
async fn http_only(target: &Target, n: u64, hold_ms: u64) -> Result<HttpOnly> {
    let settings = target.settings(n as usize, 75)?;
    let firer = env::firer(&settings)?;
    let path = format!("/delay/{hold_ms}");
    let requests: Vec<FireRequest> = (0..n)
        .map(|i| FireRequest {
            method: "POST".into(),
            url: target.url_on(i as usize, &path),
            headers: Vec::new(),
            body: None,
            timeout: Duration::from_millis(hold_ms + 30_000),
            idempotency_key: format!("{i}:memory"),
            flow: None,
            fired_for: None,
        })
        .collect();
    // Warm, as a processor is after its first batch: one request per host
    // opens its connection first (over HTTP/2 the rest become its streams;
    // fired cold and all at once, each would open a connection of its own).
    for (host, first) in requests.iter().take(target.hosts()).enumerate() {
        let warm_up = FireRequest {
            url: target.url_on(host, "/ok"),
            ..first.clone()
        };
        firer.fire(&warm_up).await;
    }
    let baseline = idle_rss_kib().await;
    let mut progress = Progress::new(format!("memory {n} (HTTP only)"));
    let give_up = Instant::now() + Duration::from_millis(hold_ms * 3 / 4);
    let firing = futures::stream::iter(&requests)
        .map(|r| firer.fire(r))
        .buffer_unordered(n as usize)
        .count();
    let (_, (plateau, reached)) =
        tokio::join!(firing, plateau_kib(target, n, give_up, &mut progress));
    let per_request_kib = plateau.saturating_sub(baseline) as f64 / n as f64;
    progress.done(&format!(
        "{reached} in flight: {per_request_kib:.1} KiB per request (HTTP client alone)"
    ));
    Ok(HttpOnly {
        reached,
        baseline_rss_mib: mib(baseline),
        plateau_rss_mib: mib(plateau),
        per_request_kib: round2(per_request_kib),
        target_connections: target.counters().await.unwrap_or_default().connections,
    })
}

pub fn table(r: &MemoryResults) -> Table {
    let mut t = Table::new([
        "in flight",
        "reached",
        "baseline MiB",
        "plateau MiB",
        "KiB/request",
        "HTTP client alone KiB/request",
        "peak RSS MiB",
        "recorded",
        "connections",
    ]);
    for run in &r.runs {
        t.row([
            run.in_flight.to_string(),
            run.reached.to_string(),
            num(run.baseline_rss_mib),
            num(run.plateau_rss_mib),
            num(run.per_request_kib),
            run.http_only
                .as_ref()
                .map_or("—".into(), |h| num(h.per_request_kib)),
            num(run.peak_rss_mib),
            run.recorded.to_string(),
            run.target_connections.to_string(),
        ]);
    }
    t
}
