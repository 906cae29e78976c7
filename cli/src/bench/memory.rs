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

use anyhow::Result;
use clap::Args;
use serde::{Deserialize, Serialize};

use super::env::{self, Completion, Pipeline, TaskBatch};
use super::measure::{self, mib, round2, Meter, Progress, Resources};
use super::report::{num, Table};
use super::target::Target;
use super::{Common, Ctx};

#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// Requests held in flight, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000")]
    pub in_flight: Vec<u64>,
    /// How long the target holds each request, ms [default: 15000, --quick: 6000].
    #[arg(long)]
    pub hold_ms: Option<u64>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryResults {
    pub hold_ms: u64,
    pub runs: Vec<MemoryRun>,
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
    pub resources: Resources,
}

pub async fn run(args: MemoryArgs) -> Result<()> {
    let ctx = Ctx::new(&args.common)?;
    let hold_ms = args
        .hold_ms
        .unwrap_or(if ctx.quick { 6000 } else { 15000 })
        .max(1000);
    let target = Target::start(ctx.in_process_target).await?;
    let meter = Meter::start(target.pid());
    let mut runs = Vec::new();
    for &n in &args.in_flight {
        runs.push(run_level(&ctx, &target, n.max(1), hold_ms).await?);
    }
    let results = MemoryResults { hold_ms, runs };
    println!("{}", table(&results).text());
    ctx.db.drop_database().await?;
    ctx.finish("memory", target.placement(), meter.finish(), &results)
}

async fn run_level(ctx: &Ctx, target: &Target, n: u64, hold_ms: u64) -> Result<MemoryRun> {
    let settings = env::settings(n as usize, 75)?;
    let pool = ctx.db.fresh(settings.db_pool_size).await?;
    let due = env::due_in(Duration::from_millis(2500 + n / 2));
    let url = target.url(&format!("/delay/{hold_ms}"));
    env::insert_tasks(
        &pool,
        &TaskBatch {
            prefix: "mem-",
            count: n as i64,
            first_due: due,
            spacing: Duration::ZERO,
            url: &url,
            every_nth: None,
            timeout_ms: (hold_ms + 30_000).min(900_000) as i32,
            max_attempts: 1,
        },
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
        measure::trim_heap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut samples: Vec<u64> = Vec::new();
        for _ in 0..5 {
            samples.push(measure::rss_kib());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        samples.sort_unstable();
        let baseline = samples[samples.len() / 2];

        // Plateau: every request in flight (or as many as got there).
        let give_up = due_instant + Duration::from_millis(hold_ms * 3 / 4);
        let mut reached = 0;
        let mut plateau = 0;
        while Instant::now() < give_up && !completion.stopped() {
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
        (baseline, plateau, reached)
    };
    let (_report, (baseline, plateau, reached)) =
        tokio::join!(pipeline.consume(completion.clone(), deadline), observe);
    let resources = meter.finish();
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
        resources,
    })
}

pub fn table(r: &MemoryResults) -> Table {
    let mut t = Table::new([
        "in flight",
        "reached",
        "baseline MiB",
        "plateau MiB",
        "KiB/request",
        "peak RSS MiB",
        "recorded",
    ]);
    for run in &r.runs {
        t.row([
            run.in_flight.to_string(),
            run.reached.to_string(),
            num(run.baseline_rss_mib),
            num(run.plateau_rss_mib),
            num(run.per_request_kib),
            num(run.peak_rss_mib),
            run.recorded.to_string(),
        ]);
    }
    t
}
