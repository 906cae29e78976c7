//! `sundial bench`: measures speed, fire lag, memory and scan scale of the
//! real pipeline, and compares it with the naive batch-by-batch design.
//!
//! Every scenario runs against its own scratch database (dropped and
//! recreated, `--bench-db`) on the `DATABASE_URL` server and fires only at a
//! target server on 127.0.0.1, by default in a child process so the bench
//! process's CPU and memory figures are its own. Each prints a table and
//! writes `<out>/<scenario>.json`; `all` runs every scenario in a fresh
//! process and rewrites `docs/BENCHMARKS.md`.
//!
//! Performance targets are checked in the reports, never in tests.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::Serialize;

mod all;
mod burst;
mod console;
mod env;
mod https;
mod lambda_path;
mod measure;
mod memory;
mod outage;
mod phases;
mod report;
mod scan;
mod slow;
mod sqs_path;
mod target;
mod throttled;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// N tasks due at the same instant: throughput against the
    /// Little's-law limit, fire lag, drain time.
    Burst(burst::BurstArgs),
    /// 10 % of the targets hang until the timeout: Sundial against the
    /// naive batch-by-batch design.
    SlowEndpoints(slow::SlowArgs),
    /// RSS per request in flight (1,000 and 2,000 held open).
    Memory(memory::MemoryArgs),
    /// Claim and enqueue the due rows of a large table.
    Scan(scan::ScanArgs),
    /// Arrival phases like a load test; lag per phase.
    Phases(phases::PhasesArgs),
    /// The deployed shape: scanner once a minute, SQS (emulator), the
    /// long-polling consumer; early firings, lag, sub-minute schedules.
    LambdaPath(lambda_path::LambdaPathArgs),
    /// Flow control: N tasks due at once against a target admitting R/s
    /// (429 beyond), with a flow limit and without.
    Throttled(throttled::ThrottledArgs),
    /// Flow control: one host down among ten healthy ones; requests to it
    /// against the breaker's bound, healthy lag against a run without.
    Outage(outage::OutageArgs),
    /// The operator console's pages at 10,000 tasks and 1,000,000 runs.
    Console(console::ConsoleArgs),
    /// Every scenario (`--quick`: in a few minutes), then docs/BENCHMARKS.md.
    All(all::AllArgs),
    /// Serve the bench target (started by the other scenarios).
    #[command(hide = true)]
    Target(target::TargetShape),
}

/// Options every scenario takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Postgres server to benchmark against; the bench works in its own
    /// scratch database there (see --bench-db).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Scratch database, dropped and recreated per run.
    #[arg(long, default_value = "sundial_bench")]
    pub bench_db: String,
    /// Directory for the JSON results.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// Smaller settings that finish in about a minute per scenario.
    #[arg(long)]
    pub quick: bool,
    /// Run the target server in this process instead of a child process
    /// (its CPU and memory then count as the bench's).
    #[arg(long)]
    pub in_process_target: bool,
}

/// What a scenario needs from the common options.
pub struct Ctx {
    pub db: env::DbTarget,
    pub out: PathBuf,
    pub quick: bool,
    pub in_process_target: bool,
}

impl Ctx {
    pub fn new(common: &Common) -> Result<Ctx> {
        raise_fd_limit();
        Ok(Ctx {
            db: env::DbTarget::new(common.database_url.as_deref(), &common.bench_db)?,
            out: common.out.clone(),
            quick: common.quick,
            in_process_target: common.in_process_target,
        })
    }

    /// Writes the scenario's JSON file.
    pub fn finish<T: Serialize>(
        &self,
        scenario: &str,
        target: &str,
        resources: measure::Resources,
        results: &T,
    ) -> Result<()> {
        let file = report::ResultFile {
            format: report::FORMAT_VERSION,
            scenario: scenario.to_string(),
            generated_at: chrono::Utc::now(),
            command: report::command_line(),
            quick: self.quick,
            machine: report::Machine::detect(),
            target: target.to_string(),
            resources,
            results,
        };
        let path = report::write(&self.out, &file)?;
        eprintln!("wrote {}", path.display());
        Ok(())
    }
}

/// Thousands of sockets are held open at once: lift the soft limit on
/// open files to the hard one.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls only read or write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

pub async fn run(args: BenchArgs) -> Result<()> {
    // The processors' and scanners' logs are off unless asked for (they
    // would drown the progress lines): `RUST_LOG=info sundial bench ...`.
    if std::env::var_os("RUST_LOG").is_some() {
        sundial::logging::init(sundial::logging::LogFormat::Text);
    }
    match args.scenario {
        Scenario::Burst(a) => burst::run(a).await,
        Scenario::SlowEndpoints(a) => slow::run(a).await,
        Scenario::Memory(a) => memory::run(a).await,
        Scenario::Scan(a) => scan::run(a).await,
        Scenario::Phases(a) => phases::run(a).await,
        Scenario::LambdaPath(a) => lambda_path::run(a).await,
        Scenario::Throttled(a) => throttled::run(a).await,
        Scenario::Outage(a) => outage::run(a).await,
        Scenario::Console(a) => console::run(a).await,
        Scenario::All(a) => all::run(a).await,
        Scenario::Target(shape) => target::serve(shape).await,
    }
}
