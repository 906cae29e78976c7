//! `sundial bench phases`: tasks become due at the rates of successive
//! phases (`30s@10/s,60s@200/s,...`), like a load test's arrival phases,
//! and the full dev-mode pipeline runs them: a scanner loop every second
//! with a lookahead, the in-process queue, the processor. Reports fire lag
//! per phase.
//!
//! The tasks are inserted up front with their due times spread according
//! to the phases (`rate(1 day)`, so each fires once during the run).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::env::{self, Completion, Pipeline, TaskBatch};
use super::measure::{round2, round3, Dist, Meter, Progress, Resources};
use super::report::{num, Table};
use super::target::Target;
use super::{Common, Ctx};

const FULL_PHASES: &str = "30s@10/s,60s@200/s,30s@1000/s,30s@10/s";
const QUICK_PHASES: &str = "10s@10/s,20s@100/s,10s@10/s";

#[derive(Debug, Args)]
pub struct PhasesArgs {
    /// Arrival phases: DURATION@RATE, comma-separated; durations in s or m,
    /// rates per s or per m [default: 30s@10/s,60s@200/s,30s@1000/s,30s@10/s;
    /// --quick: 10s@10/s,20s@100/s,10s@10/s].
    #[arg(long)]
    pub phases: Option<String>,
    /// Requests in flight at most (processor concurrency, also per host).
    #[arg(long, default_value_t = 500)]
    pub concurrency: usize,
    /// The target answers after this many milliseconds.
    #[arg(long, default_value_t = 50)]
    pub delay_ms: u64,
    /// Scanner lookahead, seconds (it runs every second, as in dev mode).
    #[arg(long, default_value_t = 5)]
    pub lookahead: u64,
    #[command(flatten)]
    pub common: Common,
}

/// One arrival phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub duration_s: f64,
    pub rate_per_s: f64,
}

impl Phase {
    fn tasks(&self) -> u64 {
        (self.duration_s * self.rate_per_s).round() as u64
    }
}

/// Parses `30s@10/s,2m@5/s,10s@600/m`.
pub fn parse_phases(spec: &str) -> Result<Vec<Phase>> {
    let mut phases = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((duration, rate)) = part.split_once('@') else {
            bail!("phase {part:?}: expected DURATION@RATE, e.g. 30s@10/s");
        };
        let duration_s = match duration.trim() {
            d if d.ends_with('m') => number(&d[..d.len() - 1], part)? * 60.0,
            d if d.ends_with('s') => number(&d[..d.len() - 1], part)?,
            d => number(d, part)?,
        };
        let rate_per_s = match rate.trim() {
            r if r.ends_with("/m") => number(&r[..r.len() - 2], part)? / 60.0,
            r if r.ends_with("/s") => number(&r[..r.len() - 2], part)?,
            r => number(r, part)?,
        };
        if duration_s <= 0.0 || rate_per_s <= 0.0 {
            bail!("phase {part:?}: duration and rate must be positive");
        }
        phases.push(Phase {
            duration_s,
            rate_per_s,
        });
    }
    if phases.is_empty() {
        bail!("--phases: no phase given");
    }
    Ok(phases)
}

fn number(text: &str, part: &str) -> Result<f64> {
    let n: f64 = text
        .trim()
        .parse()
        .with_context(|| format!("phase {part:?}: {text:?} is not a number"))?;
    if !n.is_finite() {
        bail!("phase {part:?}: {text:?} is not a finite number");
    }
    Ok(n)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhasesResults {
    pub spec: String,
    pub concurrency: usize,
    pub delay_ms: u64,
    pub lookahead_s: u64,
    pub phases: Vec<PhaseRun>,
    pub expected: u64,
    pub recorded: u64,
    pub lag_ms: Dist,
    pub scans: u64,
    pub scan_ms: Dist,
    pub cpu_ms_per_firing: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseRun {
    pub phase: Phase,
    pub expected: u64,
    pub recorded: u64,
    /// Recorded runs of the phase / its duration.
    pub achieved_per_s: f64,
    pub lag_ms: Dist,
    pub latency_ms: Dist,
}

pub async fn run(args: PhasesArgs) -> Result<()> {
    let ctx = Ctx::new(&args.common)?;
    let spec = args
        .phases
        .clone()
        .unwrap_or_else(|| (if ctx.quick { QUICK_PHASES } else { FULL_PHASES }).to_string());
    let phases = parse_phases(&spec)?;
    let target = Target::start(ctx.in_process_target, &Default::default()).await?;
    let settings = env::settings(args.concurrency, args.lookahead)?;
    let pool = ctx.db.fresh(settings.db_pool_size).await?;

    let start = env::due_in(Duration::from_secs(3));
    let url = target.url(&format!("/delay/{}", args.delay_ms));
    let mut phase_start = start;
    for (i, phase) in phases.iter().enumerate() {
        env::insert_tasks(
            &pool,
            &TaskBatch {
                prefix: &format!("phase{i}-"),
                count: phase.tasks() as i64,
                first_due: phase_start,
                spacing: Duration::from_secs_f64(1.0 / phase.rate_per_s),
                url: &url,
                every_nth: None,
                timeout_ms: 30_000,
                max_attempts: 1,
            },
        )
        .await?;
        phase_start += chrono::Duration::milliseconds((phase.duration_s * 1000.0) as i64);
    }
    let expected: u64 = phases.iter().map(Phase::tasks).sum();
    let total = Duration::from_secs_f64(phases.iter().map(|p| p.duration_s).sum());

    let pipeline = Pipeline::new(pool.clone(), &settings)?;
    let meter = Meter::start(target.pid());
    let start_instant = Instant::now() + (start - Utc::now()).to_std().unwrap_or_default();
    let completion = Completion::new(expected);
    let deadline = start_instant + total + Duration::from_secs(60);

    let scanning = async {
        let mut scan_ms = Vec::new();
        let mut errors = 0u64;
        while !completion.stopped() {
            let started = Instant::now();
            match pipeline.scan_once().await {
                Ok(_) => scan_ms.push(started.elapsed().as_secs_f64() * 1000.0),
                Err(err) => {
                    errors += 1;
                    eprintln!("scan failed: {err:#}");
                }
            }
            // Every second, as `sundial dev` does; stop promptly at the end.
            let next = started + Duration::from_secs(1);
            while Instant::now() < next && !completion.stopped() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        (scan_ms, errors)
    };
    let mut progress = Progress::new("phases");
    let watch = async {
        while !completion.stopped() {
            progress.update(|| {
                let t = Instant::now()
                    .checked_duration_since(start_instant)
                    .map_or(0.0, |d| d.as_secs_f64());
                format!(
                    "{t:.0}/{:.0} s, {}/{expected} settled",
                    total.as_secs_f64(),
                    completion.settled()
                )
            });
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let (_report, (mut scan_ms, scan_errors), ()) = tokio::join!(
        pipeline.consume(completion.clone(), deadline),
        scanning,
        watch
    );
    let resources = meter.finish();
    if scan_errors > 0 {
        eprintln!("{scan_errors} scans failed");
    }

    let rows = env::recorded_runs(&pool).await?;
    let results = summarize(
        &spec,
        &args,
        &phases,
        start,
        &rows,
        &mut scan_ms,
        &resources,
    );
    progress.done(&format!(
        "{}/{} recorded, p99 lag {:.1} ms",
        results.recorded, results.expected, results.lag_ms.p99
    ));
    pool.close().await;
    println!("{}", table(&results).text());
    ctx.db.drop_database().await?;
    ctx.finish("phases", target.placement(), resources, &results)
}

fn summarize(
    spec: &str,
    args: &PhasesArgs,
    phases: &[Phase],
    start: DateTime<Utc>,
    rows: &[env::RunRow],
    scan_ms: &mut [f64],
    resources: &Resources,
) -> PhasesResults {
    let mut per_phase: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); phases.len()];
    let ends: Vec<f64> = phases
        .iter()
        .scan(0.0, |end, p| {
            *end += p.duration_s;
            Some(*end)
        })
        .collect();
    for row in rows {
        let offset = (row.scheduled_for - start).num_microseconds().unwrap_or(0) as f64 / 1e6;
        let k = ends
            .iter()
            .position(|end| offset < *end - 1e-6)
            .unwrap_or(phases.len().saturating_sub(1));
        if let Some((lag, latency)) = per_phase.get_mut(k) {
            lag.extend(row.lag_ms);
            latency.extend(row.latency_ms);
        }
    }
    let mut all_lag: Vec<f64> = rows.iter().filter_map(|r| r.lag_ms).collect();
    let runs = phases
        .iter()
        .zip(per_phase)
        .map(|(phase, (mut lag, mut latency))| PhaseRun {
            phase: phase.clone(),
            expected: phase.tasks(),
            recorded: lag.len() as u64,
            achieved_per_s: round2(lag.len() as f64 / phase.duration_s),
            lag_ms: Dist::of(&mut lag),
            latency_ms: Dist::of(&mut latency),
        })
        .collect();
    PhasesResults {
        spec: spec.to_string(),
        concurrency: args.concurrency,
        delay_ms: args.delay_ms,
        lookahead_s: args.lookahead,
        phases: runs,
        expected: phases.iter().map(Phase::tasks).sum(),
        recorded: rows.len() as u64,
        lag_ms: Dist::of(&mut all_lag),
        scans: scan_ms.len() as u64,
        scan_ms: Dist::of(scan_ms),
        cpu_ms_per_firing: if rows.is_empty() {
            0.0
        } else {
            round3(resources.cpu_s * 1000.0 / rows.len() as f64)
        },
    }
}

pub fn table(r: &PhasesResults) -> Table {
    let mut t = Table::new([
        "phase",
        "rate/s",
        "expected",
        "recorded",
        "achieved/s",
        "lag p50 ms",
        "lag p95",
        "lag p99",
        "lag max",
        "latency p50 ms",
    ]);
    for (i, p) in r.phases.iter().enumerate() {
        t.row([
            format!("{} ({}s)", i + 1, num(p.phase.duration_s)),
            num(p.phase.rate_per_s),
            p.expected.to_string(),
            p.recorded.to_string(),
            num(p.achieved_per_s),
            num(p.lag_ms.p50),
            num(p.lag_ms.p95),
            num(p.lag_ms.p99),
            num(p.lag_ms.max),
            num(p.latency_ms.p50),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_phases() {
        let p = parse_phases("30s@10/s, 2m@120/m,5@3").unwrap();
        assert_eq!(
            p,
            vec![
                Phase {
                    duration_s: 30.0,
                    rate_per_s: 10.0
                },
                Phase {
                    duration_s: 120.0,
                    rate_per_s: 2.0
                },
                Phase {
                    duration_s: 5.0,
                    rate_per_s: 3.0
                },
            ]
        );
        assert_eq!(p[1].tasks(), 240);
        for bad in ["", "30s", "x@1/s", "10s@0/s", "10s@-1/s", "10s@inf/s"] {
            assert!(parse_phases(bad).is_err(), "{bad}");
        }
    }
}
