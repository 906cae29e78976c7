//! `sundial bench slow-endpoints`: 1,000 tasks of which every tenth hangs
//! until the timeout while the rest answer in 100 ms.
//!
//! Sundial's processor streams requests with no batch barrier, so the
//! whole set should take little more than one timeout. The baseline is
//! the naive design: batches of 50, 20 requests at a time inside a batch,
//! each batch waiting for its slowest call, 100 ms between batches. It
//! uses the same `Firer` (client, signing, guard) and does not even write
//! outcomes back, which only flatters it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sundial::fire::{ClientOptions, FireRequest, Firer, Signer, TargetGuard, Verdict};

use super::env::{self, Completion, Pipeline, TaskBatch};
use super::measure::{self, round3, Meter, Progress, Resources};
use super::report::{num, Table};
use super::target::{Target, TargetShape};
use super::{Common, Ctx};

/// One task in this many hangs.
const HANG_EVERY: u64 = 10;
/// The answer time of the others.
const FAST_MS: u64 = 100;
/// The naive design.
const BATCH: usize = 50;
const BATCH_CONCURRENCY: usize = 20;
const BATCH_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug, Args)]
pub struct SlowArgs {
    /// Tasks in total (every tenth hangs).
    #[arg(long, default_value_t = 1000)]
    pub tasks: u64,
    /// Request timeout, seconds [default: 30, --quick: 3].
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Sundial's requests in flight at most.
    #[arg(long, default_value_t = 500)]
    pub concurrency: usize,
    /// Skip the (slow) baseline.
    #[arg(long)]
    pub no_baseline: bool,
    #[command(flatten)]
    pub shape: TargetShape,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlowResults {
    pub tasks: u64,
    pub hang_every: u64,
    pub fast_ms: u64,
    pub timeout_s: f64,
    pub concurrency: usize,
    pub sundial: Side,
    pub baseline: Option<Side>,
    /// Sundial's total / the timeout.
    pub sundial_over_timeout: f64,
    /// Baseline total / Sundial's total.
    pub speedup: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Side {
    pub design: String,
    /// Due time (Sundial) or start (baseline) → last outcome, seconds.
    pub total_s: f64,
    pub succeeded: u64,
    pub timed_out: u64,
    pub other: u64,
    pub resources: Resources,
}

pub async fn run(args: SlowArgs) -> Result<()> {
    let ctx = Ctx::new(&args.common)?;
    let timeout_s = args
        .timeout
        .unwrap_or(if ctx.quick { 3.0 } else { 30.0 })
        .clamp(0.1, 900.0);
    let timeout = Duration::from_secs_f64(timeout_s);
    let target = Target::start(ctx.in_process_target, &args.shape).await?;
    let meter = Meter::start(target.pid());

    let sundial = run_sundial(&ctx, &target, &args, timeout).await?;
    let baseline = if args.no_baseline {
        None
    } else {
        Some(run_baseline(&target, args.tasks, timeout).await?)
    };
    let results = SlowResults {
        tasks: args.tasks,
        hang_every: HANG_EVERY,
        fast_ms: FAST_MS,
        timeout_s,
        concurrency: args.concurrency,
        sundial_over_timeout: round3(sundial.total_s / timeout_s),
        speedup: baseline
            .as_ref()
            .map(|b| round3(b.total_s / sundial.total_s.max(1e-9))),
        sundial,
        baseline,
    };
    println!("{}", table(&results).text());
    if let Some(s) = results.speedup {
        println!(
            "Sundial: {:.2} × the timeout; {s:.1} × faster than the baseline",
            results.sundial_over_timeout
        );
    }
    ctx.db.drop_database().await?;
    ctx.finish(
        &args.shape.scenario_name("slow-endpoints"),
        target.placement(),
        meter.finish_without_postgres(),
        &results,
    )
}

async fn run_sundial(
    ctx: &Ctx,
    target: &Target,
    args: &SlowArgs,
    timeout: Duration,
) -> Result<Side> {
    let settings = target.settings(args.concurrency, 75)?;
    let pool = ctx.db.fresh(settings.db_pool_size).await?;
    let due = env::due_in(Duration::from_secs(2));
    let hosts = target.hosts() as u64;
    for host in 0..hosts {
        let fast = target.url_on(host as usize, &format!("/delay/{FAST_MS}"));
        let hang = target.url_on(host as usize, "/hang");
        let prefix = format!("slow-{host}-");
        env::insert_tasks(
            &pool,
            &TaskBatch {
                prefix: &prefix,
                // The first hosts take the remainder.
                count: (args.tasks / hosts + u64::from(host < args.tasks % hosts)) as i64,
                first_due: due,
                spacing: Duration::ZERO,
                url: &fast,
                every_nth: Some((HANG_EVERY as i64, &hang)),
                timeout_ms: timeout.as_millis().clamp(100, 900_000) as i32,
                max_attempts: 1,
            },
        )
        .await?;
    }
    let pipeline = Pipeline::new(pool.clone(), &settings)?;
    measure::trim_heap();
    let meter = Meter::start(target.pid());
    let lead = (due - chrono::Utc::now()).to_std().unwrap_or_default();
    let due_instant = Instant::now() + lead;
    let summary = pipeline.scan_once().await?;
    let completion = Completion::new(summary.enqueued);
    let mut progress = Progress::new("slow-endpoints sundial");
    let watch = async {
        while !completion.stopped() {
            progress.update(|| {
                format!(
                    "{}/{} settled, {:.1} s after the due time",
                    completion.settled(),
                    summary.enqueued,
                    Instant::now()
                        .saturating_duration_since(due_instant)
                        .as_secs_f64()
                )
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let deadline = due_instant + timeout + Duration::from_secs(120);
    tokio::join!(pipeline.consume(completion.clone(), deadline), watch);
    let resources = meter.finish();
    let rows = env::recorded_runs(&pool).await?;
    let count = |s: &str| rows.iter().filter(|r| r.status == s).count() as u64;
    let total_s = completion
        .last_settled()
        .map(|t| t.saturating_duration_since(due_instant).as_secs_f64())
        .unwrap_or(0.0);
    progress.done(&format!("{} runs recorded in {total_s:.2} s", rows.len()));
    pipeline.pool.close().await;
    Ok(Side {
        design: format!(
            "Sundial processor, {} in flight, no batch barriers",
            args.concurrency
        ),
        total_s: round3(total_s),
        succeeded: count("succeeded"),
        timed_out: count("timed_out"),
        other: rows.len() as u64 - count("succeeded") - count("timed_out"),
        resources,
    })
}

async fn run_baseline(target: &Target, tasks: u64, timeout: Duration) -> Result<Side> {
    let guard = Arc::new(TargetGuard::new(&["127.0.0.1/32".to_string()])?);
    let signer = Signer::new(vec!["whsec_sundial_bench".to_string()])?;
    let firer = Firer::build(
        guard,
        signer,
        &ClientOptions {
            concurrency: BATCH_CONCURRENCY,
            extra_roots: target
                .settings(BATCH_CONCURRENCY, 75)?
                .extra_ca
                .map(|ca| ca.certs)
                .unwrap_or_default(),
            ..Default::default()
        },
    )?;
    let fast = target.url(&format!("/delay/{FAST_MS}"));
    let hang = target.url("/hang");
    let requests: Vec<FireRequest> = (1..=tasks)
        .map(|i| FireRequest {
            method: "POST".into(),
            url: if i % HANG_EVERY == 0 {
                hang.clone()
            } else {
                fast.clone()
            },
            headers: Vec::new(),
            body: None,
            timeout,
            idempotency_key: format!("{i}:baseline"),
            flow: None,
        })
        .collect();
    let meter = Meter::start(target.pid());
    let started = Instant::now();
    let mut progress = Progress::new("slow-endpoints baseline");
    let (mut succeeded, mut timed_out, mut other) = (0, 0, 0);
    let batches = requests.len().div_ceil(BATCH);
    for (i, batch) in requests.chunks(BATCH).enumerate() {
        progress.update(|| {
            format!(
                "batch {}/{batches}, {:.1} s",
                i + 1,
                started.elapsed().as_secs_f64()
            )
        });
        let results: Vec<_> = futures::stream::iter(batch)
            .map(|r| firer.fire(r))
            .buffer_unordered(BATCH_CONCURRENCY)
            .collect()
            .await;
        for r in results {
            match r.verdict {
                Verdict::Succeeded => succeeded += 1,
                Verdict::Retryable {
                    timed_out: true, ..
                } => timed_out += 1,
                _ => other += 1,
            }
        }
        if i + 1 < batches {
            tokio::time::sleep(BATCH_PAUSE).await;
        }
    }
    let total_s = started.elapsed().as_secs_f64();
    progress.done(&format!("{tasks} calls in {total_s:.2} s"));
    Ok(Side {
        design: format!(
            "naive: batches of {BATCH}, {BATCH_CONCURRENCY} concurrent, wait for the slowest, {} ms pause",
            BATCH_PAUSE.as_millis()
        ),
        total_s: round3(total_s),
        succeeded,
        timed_out,
        other,
        resources: meter.finish(),
    })
}

pub fn table(r: &SlowResults) -> Table {
    let mut t = Table::new([
        "design",
        "total s",
        "× timeout",
        "succeeded",
        "timed out",
        "other",
        "CPU s",
    ]);
    for side in std::iter::once(&r.sundial).chain(r.baseline.as_ref()) {
        t.row([
            side.design.clone(),
            num(side.total_s),
            format!("{:.2}", side.total_s / r.timeout_s),
            side.succeeded.to_string(),
            side.timed_out.to_string(),
            side.other.to_string(),
            num(side.resources.cpu_s),
        ]);
    }
    t
}
