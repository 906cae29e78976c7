//! `sundial bench all`: runs every scenario, each in a fresh process (so
//! peak RSS and CPU figures are the scenario's own), then rewrites
//! `docs/BENCHMARKS.md` from the JSON results: machine, date, command,
//! tables, where each target stands, and a cost model. Hand-written notes
//! between the `notes` markers of the existing file are kept.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use chrono::Utc;
use clap::Args;

use super::burst::{self, BurstResults};
use super::console;
use super::https;
use super::lambda_path::{self, LambdaPathResults};
use super::memory::{self, MemoryResults};
use super::outage::{self, OutageResults};
use super::phases::{self, PhasesResults};
use super::report::{self, num, ResultFile, Table};
use super::scan::{self, ScanResults};
use super::slow::{self, SlowResults};
use super::sqs_path::Check;
use super::throttled::{self, ThrottledResults};
use super::Common;

const SCENARIOS: [&str; 10] = [
    "burst",
    "slow-endpoints",
    "memory",
    "scan",
    "phases",
    "lambda-path",
    "throttled",
    "outage",
    "console",
    // Not a scenario of its own: burst and memory again over TLS (see `https`).
    "https",
];
const NOTES_BEGIN: &str = "<!-- notes:begin -->";
const NOTES_END: &str = "<!-- notes:end -->";

#[derive(Debug, Args)]
pub struct AllArgs {
    /// Run only these scenarios (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// The Markdown report to rewrite.
    #[arg(long, default_value = "docs/BENCHMARKS.md")]
    pub doc: PathBuf,
    /// Do not run anything: rewrite the report from the JSON results in --out.
    #[arg(long)]
    pub report_only: bool,
    #[command(flatten)]
    pub common: Common,
}

pub async fn run(args: AllArgs) -> Result<()> {
    for name in &args.only {
        if !SCENARIOS.contains(&name.as_str()) {
            bail!("--only {name:?}: not a scenario ({})", SCENARIOS.join(", "));
        }
    }
    let mut failed = Vec::new();
    if !args.report_only {
        for scenario in SCENARIOS {
            if !args.only.is_empty() && !args.only.iter().any(|s| s == scenario) {
                continue;
            }
            let runs: Vec<&[&str]> = if scenario == "https" {
                https::RUNS.to_vec()
            } else {
                vec![std::slice::from_ref(&scenario)]
            };
            for run in runs {
                let line = run.join(" ");
                eprintln!("== sundial bench {line}{}", quick_flag(&args.common));
                if !run_child(run, &args.common).await? {
                    eprintln!("== {line} failed");
                    failed.push(line);
                }
            }
        }
    }
    // A report-only rewrite keeps the command that produced the figures.
    let command = if args.report_only {
        previous_command(&args.doc).unwrap_or_else(report::command_line)
    } else {
        report::command_line()
    };
    let doc = render(&args.common.out, &command, &existing_notes(&args.doc));
    if let Some(dir) = args.doc.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.doc, doc)
        .with_context(|| format!("cannot write {}", args.doc.display()))?;
    eprintln!("wrote {}", args.doc.display());
    if !failed.is_empty() {
        bail!("scenarios failed: {}", failed.join(", "));
    }
    Ok(())
}

fn quick_flag(common: &Common) -> &'static str {
    if common.quick {
        " --quick"
    } else {
        ""
    }
}

/// Runs `sundial bench <args>` with the same common options.
async fn run_child(args: &[&str], common: &Common) -> Result<bool> {
    let scenario = args.join(" ");
    let exe = std::env::current_exe().context("cannot find the sundial binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("bench")
        .args(args)
        .args(["--bench-db", &common.bench_db])
        .arg("--out")
        .arg(&common.out);
    if common.quick {
        cmd.arg("--quick");
    }
    if common.in_process_target {
        cmd.arg("--in-process-target");
    }
    if let Some(url) = &common.database_url {
        // Through the environment: a URL may carry a password.
        cmd.env("DATABASE_URL", url);
    }
    let status = tokio::task::spawn_blocking(move || cmd.status())
        .await?
        .with_context(|| format!("cannot run `sundial bench {scenario}`"))?;
    Ok(status.success())
}

/// The command recorded in the current report.
fn previous_command(doc: &Path) -> Option<String> {
    let text = std::fs::read_to_string(doc).ok()?;
    let rest = text.split("- **Command:** `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

/// The notes block of the current report, or a placeholder.
fn existing_notes(doc: &Path) -> String {
    let text = std::fs::read_to_string(doc).unwrap_or_default();
    match (text.find(NOTES_BEGIN), text.find(NOTES_END)) {
        (Some(b), Some(e)) if b < e => text[b + NOTES_BEGIN.len()..e].trim().to_string(),
        _ => "_No notes yet: analysis of the figures goes here (kept when the report is regenerated)._"
            .to_string(),
    }
}

/// Whether a target is met, and by how much it is missed.
fn verdict(measured: f64, goal: f64, higher_is_better: bool) -> String {
    let met = if higher_is_better {
        measured >= goal
    } else {
        measured <= goal
    };
    if met {
        "met".into()
    } else if higher_is_better {
        format!("**missed** by {:.0} %", (1.0 - measured / goal) * 100.0)
    } else {
        format!("**missed** by {:.0} %", (measured / goal - 1.0) * 100.0)
    }
}

/// The whole report.
fn render(out: &Path, command: &str, notes: &str) -> String {
    let burst: Option<ResultFile<BurstResults>> = report::read(out, "burst").ok();
    let slow: Option<ResultFile<SlowResults>> = report::read(out, "slow-endpoints").ok();
    let memory: Option<ResultFile<MemoryResults>> = report::read(out, "memory").ok();
    let scan: Option<ResultFile<ScanResults>> = report::read(out, "scan").ok();
    let phases: Option<ResultFile<PhasesResults>> = report::read(out, "phases").ok();
    let lambda_path: Option<ResultFile<LambdaPathResults>> = report::read(out, "lambda-path").ok();
    let throttled: Option<ResultFile<ThrottledResults>> = report::read(out, "throttled").ok();
    let outage: Option<ResultFile<OutageResults>> = report::read(out, "outage").ok();

    let machine = burst
        .as_ref()
        .map(|f| f.machine.clone())
        .unwrap_or_else(report::Machine::detect);
    let quick = burst.as_ref().is_some_and(|f| f.quick);
    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    md.push_str(
        "Generated by `sundial bench all`; the figures and tables are rewritten on every run \
         (`make bench`), the notes at the end are kept. Raw results: `bench/results/*.json`.\n\n",
    );
    md.push_str(&format!(
        "- **Date:** {}\n- **Command:** `{command}`{}\n- **Machine:** {} CPUs ({}), {} MiB memory, {}\n",
        Utc::now().format("%Y-%m-%d %H:%M UTC"),
        if quick { " (quick settings)" } else { "" },
        machine.cpus,
        machine.cpu_model,
        machine.memory_mib,
        machine.os,
    ));
    md.push_str(&format!(
        "- **Setup:** Postgres on the same machine (scratch database per run); target server: {}; \
         everything shares the same cores. Only 127.0.0.1 is contacted.\n\n",
        burst
            .as_ref()
            .map_or("child process", |f| f.target.as_str())
    ));

    md.push_str("## Targets\n\n");
    let mut targets = targets_table(&burst, &slow, &memory, &scan);
    flow_targets(&mut targets, &throttled, &outage);
    console::target(&mut targets, out, verdict);
    md.push_str(&targets.markdown());
    md.push('\n');

    md.push_str("## Lambda path: scanner once a minute, SQS, the long-polling consumer\n\n");
    if let Some(f) = &lambda_path {
        let r = &f.results;
        md.push_str(&format!(
            "The deployed shape: `scan::run_ticks` every 60 s (first tick at x.55 s), the SQS \
             adapter against the emulator, the worker of `sundial process` (20 s long poll). \
             {} tasks due on whole seconds; two `rate(10 seconds)` tasks (`forbid`, `allow`) \
             over {} s. Lag = arrival at the target − occurrence; it includes the emulator's \
             own delivery (long-poll wake-up) and the hold that makes early arrivals wait.\n\n",
            r.tasks, r.seconds
        ));
        md.push_str(&lambda_path::table(r).markdown());
        md.push('\n');
    } else {
        md.push_str("_Not run._\n\n");
    }

    md.push_str(&flow_section(&throttled, &outage));

    md.push_str("## Burst: N tasks due at the same instant\n\n");
    if let Some(f) = &burst {
        let r = &f.results;
        md.push_str(&format!(
            "Scan into the in-process queue, then the real processor; target `/delay/{}`, \
             concurrency C = {} (global and per host). Limit = Little's law: \
             N / (ceil(N / C) · L) with L = {} ms. Fire window = due time → last request \
             finished; drain = due time → last outcome written back. Lag = `fired_at − \
             scheduled_for` from `task_runs`. Slow start: {} (each burst goes to a flow \
             the processor has no history of).\n\n",
            r.delay_ms,
            r.concurrency,
            r.delay_ms,
            match r.slow_start {
                Some(w) => format!(
                    "from {w} in flight, doubling every {} ms",
                    sundial::flow::aimd::SLOW_START_ROUND.as_millis()
                ),
                None => "off (`--slow-start off`), or a report from before it".to_string(),
            }
        ));
        md.push_str(&burst::table(r).markdown());
        md.push_str(&resources_line(&f.resources));
    } else {
        md.push_str("_Not run._\n\n");
    }

    md.push_str("## Slow endpoints: Sundial against the naive design\n\n");
    if let Some(f) = &slow {
        let r = &f.results;
        md.push_str(&format!(
            "{} tasks, every {}th hangs until the timeout ({} s), the others answer in {} ms.\n\n",
            r.tasks, r.hang_every, r.timeout_s, r.fast_ms
        ));
        md.push_str(&slow::table(r).markdown());
        if let Some(s) = r.speedup {
            md.push_str(&format!(
                "\nSundial finishes in {:.2} × the timeout, {s:.1} × faster than the baseline.\n",
                r.sundial_over_timeout
            ));
        }
        md.push_str(&resources_line(&f.resources));
    } else {
        md.push_str("_Not run._\n\n");
    }

    md.push_str("## Memory per request in flight\n\n");
    if let Some(f) = &memory {
        md.push_str(&format!(
            "Target holds each request {} ms; processor concurrency = requests held. RSS of the \
             bench process (scanner, queue, processor, DB pool), sampled every 20 ms; baseline \
             taken with everything built and queued, just before the due time.\n\n",
            f.results.hold_ms
        ));
        md.push_str(&memory::table(&f.results).markdown());
        md.push_str(&resources_line(&f.resources));
    } else {
        md.push_str("_Not run._\n\n");
    }

    md.push_str(&https::section(out, verdict));

    md.push_str("## Scan: claim and enqueue the due rows of a large table\n\n");
    if let Some(f) = &scan {
        let r = &f.results;
        md.push_str(&format!(
            "{} rows, {} due (spread through the table), pages of {}. `scan::scan` into the \
             in-process queue; page = time between consecutive pages reaching the queue; claim = \
             the claim query alone, page by page, in a rolled-back transaction. SendMessageBatch \
             calls are counted, not timed (ceil(n / 10) per page).\n\n",
            r.rows, r.due, r.page_size
        ));
        md.push_str(&scan::table(r).markdown());
        md.push('\n');
    } else {
        md.push_str("_Not run._\n\n");
    }

    md.push_str(&console::section(out));

    md.push_str("## Phases: arrival rates like a load test\n\n");
    if let Some(f) = &phases {
        let r = &f.results;
        md.push_str(&format!(
            "`{}`; scanner every second with a {} s lookahead, in-process queue, processor with C = {}, \
             target `/delay/{}`. {} of {} occurrences recorded; overall lag p50 {} / p99 {} / max {} ms; \
             {} scans, p50 {} ms, max {} ms.\n\n",
            r.spec,
            r.lookahead_s,
            r.concurrency,
            r.delay_ms,
            r.recorded,
            r.expected,
            num(r.lag_ms.p50),
            num(r.lag_ms.p99),
            num(r.lag_ms.max),
            r.scans,
            num(r.scan_ms.p50),
            num(r.scan_ms.max),
        ));
        md.push_str(&phases::table(r).markdown());
        md.push_str(&resources_line(&f.resources));
    } else {
        md.push_str("_Not run._\n\n");
    }

    md.push_str("## Cost model\n\n");
    md.push_str(&cost_section(&burst, &memory, &scan));

    md.push_str("\n## Notes\n\n");
    md.push_str(NOTES_BEGIN);
    md.push_str("\n\n");
    md.push_str(notes);
    md.push_str("\n\n");
    md.push_str(NOTES_END);
    md.push('\n');
    md
}

fn resources_line(r: &super::measure::Resources) -> String {
    format!(
        "\nWhole scenario: {} s wall, {} s CPU in the bench process{}, peak RSS {} MiB.\n\n",
        num(r.wall_s),
        num(r.cpu_s),
        r.target_cpu_s
            .map(|t| format!(" ({} s in the target process)", num(t)))
            .unwrap_or_default(),
        num(r.peak_rss_mib),
    )
}

fn targets_table(
    burst: &Option<ResultFile<BurstResults>>,
    slow: &Option<ResultFile<SlowResults>>,
    memory: &Option<ResultFile<MemoryResults>>,
    scan: &Option<ResultFile<ScanResults>>,
) -> Table {
    let mut t = Table::new(["target", "measured", "status"]);
    let not_run = |t: &mut Table, what: &str| {
        t.row([what.to_string(), "not run".into(), "—".into()]);
    };
    match burst {
        Some(f) => {
            let r = &f.results;
            match r.runs.iter().max_by_key(|x| x.tasks) {
                Some(big) => t.row([
                    format!(
                        "burst: ≥ 0.9 of the Little's-law limit at C = {}",
                        r.concurrency
                    ),
                    format!(
                        "{:.2} ({} tasks: {}/s of {}/s)",
                        big.limit_ratio,
                        big.tasks,
                        num(big.throughput_per_s),
                        num(big.limit_per_s)
                    ),
                    verdict(big.limit_ratio, 0.9, true),
                ]),
                None => t.row(["burst: throughput", "no runs", "—"]),
            };
            match r.runs.iter().min_by_key(|x| x.tasks.abs_diff(1000)) {
                Some(k) => t.row([
                    "burst: p99 fire lag ≤ 1 s for 1,000 tasks due at once".to_string(),
                    format!("{} ms ({} tasks)", num(k.lag_ms.p99), k.tasks),
                    verdict(k.lag_ms.p99, 1000.0, false),
                ]),
                None => t.row(["burst: p99 lag", "no runs", "—"]),
            };
        }
        None => not_run(&mut t, "burst"),
    }
    match slow {
        Some(f) => {
            let r = &f.results;
            t.row([
                "slow endpoints: total ≤ 1.15 × the timeout".to_string(),
                format!(
                    "{:.2} × ({} s, timeout {} s)",
                    r.sundial_over_timeout,
                    num(r.sundial.total_s),
                    r.timeout_s
                ),
                verdict(r.sundial_over_timeout, 1.15, false),
            ]);
            match r.speedup {
                Some(s) => t.row([
                    "slow endpoints: ≥ 10 × faster than the baseline".to_string(),
                    format!(
                        "{s:.1} × ({} s against {} s)",
                        num(r.sundial.total_s),
                        r.baseline.as_ref().map_or("?".into(), |b| num(b.total_s))
                    ),
                    verdict(s, 10.0, true),
                ]),
                None => t.row(["slow endpoints: speedup", "baseline not run", "—"]),
            };
        }
        None => not_run(&mut t, "slow endpoints"),
    }
    match memory {
        Some(f) => {
            let worst = f
                .results
                .runs
                .iter()
                .map(|r| r.per_request_kib)
                .fold(0.0, f64::max);
            t.row([
                "memory: ≤ 10 KiB RSS per request in flight".to_string(),
                format!("{} KiB (worst level)", num(worst)),
                verdict(worst, 10.0, false),
            ]);
            match f.results.runs.iter().max_by_key(|r| r.in_flight) {
                Some(big) => t.row([
                    format!("memory: {} in flight fit a 128 MB Lambda", big.in_flight),
                    format!("{} MiB RSS at the plateau", num(big.plateau_rss_mib)),
                    verdict(big.plateau_rss_mib, 128.0, false),
                ]),
                None => t.row(["memory: 128 MB", "no runs", "—"]),
            };
        }
        None => not_run(&mut t, "memory"),
    }
    match scan {
        Some(f) => {
            let r = &f.results;
            t.row([
                "scan: 10,000 due of 1,000,000 claimed and enqueued in ≤ 1 s".to_string(),
                format!(
                    "{} ms ({} due of {} rows)",
                    num(r.scan_ms),
                    r.enqueued,
                    r.rows
                ),
                verdict(r.scan_ms, 1000.0, false),
            ]);
        }
        None => not_run(&mut t, "scan"),
    }
    t
}

/// The flow-control checks in the targets table.
fn flow_targets(
    t: &mut Table,
    throttled: &Option<ResultFile<ThrottledResults>>,
    outage: &Option<ResultFile<OutageResults>>,
) {
    let row = |t: &mut Table, prefix: &str, c: &Check| {
        t.row([
            format!("{prefix}: {}", c.target),
            c.measured.clone(),
            if c.pass { "met" } else { "**missed**" }.to_string(),
        ]);
    };
    match throttled {
        Some(f) => {
            for run in &f.results.runs {
                for c in &run.checks {
                    row(t, &format!("throttled {}", run.label), c);
                }
            }
        }
        None => {
            t.row(["throttled", "not run", "—"]);
        }
    }
    match outage {
        Some(f) => {
            for c in &f.results.checks {
                row(t, "outage", c);
            }
        }
        None => {
            t.row(["outage", "not run", "—"]);
        }
    }
}

/// `## Flow control`: the throttled target and the host that is down.
fn flow_section(
    throttled: &Option<ResultFile<ThrottledResults>>,
    outage: &Option<ResultFile<OutageResults>>,
) -> String {
    let mut md = String::from("## Flow control: a throttled target, a host that is down\n\n");
    md.push_str("### Throttled target\n\n");
    if let Some(f) = throttled {
        let r = &f.results;
        md.push_str(&format!(
            "`sundial bench throttled`: N = {} tasks due at the same instant against a target \
             that admits R = {}/s (fixed one-second windows; 429 with `Retry-After: 1` beyond), \
             so N / R = {} s. The deployed shape: the scanner's tick, {}, \
             {} long-polling processors (concurrency {} each, per-flow cap \
             {}), {} attempts per task. (a) a `flows` row limits the flow to R/s, burst 1; \
             (b) no row (adaptive concurrency and shared backoff), slow start from {} in flight \
             (the default `SUNDIAL_FLOW_SLOW_START`), and for comparison with slow start off \
             (no targets). 429s are counted \
             at the target; drain = first to last admitted request; lost = occurrences without a \
             succeeded run when the variant ended; busiest second = most requests the target \
             saw in one wall-clock second.\n\n",
            r.tasks,
            r.rate,
            num(r.tasks as f64 / r.rate.max(1) as f64),
            r.queue.describe(),
            r.processors,
            r.concurrency,
            r.per_host_concurrency,
            r.max_attempts,
            r.slow_start_window
        ));
        md.push_str(&throttled::table(r).markdown());
        md.push('\n');
        md.push_str(&throttled::checks_table(r).markdown());
        md.push_str(&resources_line(&f.resources));
    } else {
        md.push_str("_Not run._\n\n");
    }
    md.push_str("### One host down among ten healthy ones\n\n");
    if let Some(f) = outage {
        let r = &f.results;
        md.push_str(&format!(
            "`sundial bench outage`: {} healthy hosts and one that goes down for {} s{} \
             (`--down {}`: {}), {} `rate(1 second)` tasks per host, {} s of running before \
             and {} s after; the same run without the outage is the baseline. The down \
             host's flow has an explicit breaker: N = {} failures within {} s, one probe per \
             {} s, so probes + N = {} + {} = {}. The scanner's tick, {}, {} processors. \
             Lag = arrival at the target − occurrence, for the healthy hosts' occurrences \
             due while the host is down (the same span in the baseline). Pending = the down \
             host's occurrences due and not yet recorded when it came back.\n\n",
            r.healthy_hosts,
            r.outage_s,
            if r.shortened {
                " (shortened by `--quick`; the issue's figure is 60 s)"
            } else {
                ""
            },
            r.down.name(),
            match r.down {
                outage::DownMode::Refuse => {
                    "nothing listens, so attempts are the processors' calls minus the requests \
                     the hosts received"
                }
                outage::DownMode::Reset => "each connection is reset and counted by the host",
            },
            r.tasks_per_host,
            r.warmup_s,
            r.recovery_s,
            r.breaker_failures,
            r.breaker_window_s,
            r.breaker_cooldown_s,
            r.probes,
            r.breaker_failures,
            r.bound,
            r.queue.describe(),
            r.processors,
        ));
        md.push_str(&outage::table(r).markdown());
        md.push('\n');
        md.push_str(&outage::checks_table(r).markdown());
        md.push_str(&resources_line(&f.resources));
    } else {
        md.push_str("_Not run._\n\n");
    }
    md
}

/// Published prices (us-east-1, arm64), USD.
const LAMBDA_GB_S: f64 = 0.000_013_333_4;
const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
const SQS_REQUEST: f64 = 0.40 / 1e6;
const EVENTBRIDGE_SCHEDULER_PER_MILLION: f64 = 1.00;
/// SQS messages per Lambda invocation (the event source's batch size).
const BATCH_SIZE: f64 = 10.0;
/// Database round trips per processor invocation (load tasks, write back)
/// in AWS, ms, added to the target's latency.
const DB_OVERHEAD_MS: f64 = 10.0;
/// Scanner invocations per month (one a minute).
const SCANS_PER_MONTH: f64 = 60.0 * 24.0 * 30.0;
/// Duration of a scanner invocation with nothing due, seconds.
const IDLE_SCAN_S: f64 = 0.1;
/// One `SendMessageBatch` round trip in AWS, ms (8 in flight per scanner).
const SQS_SEND_MS: f64 = 25.0;
const SQS_SENDS_IN_FLIGHT: f64 = 8.0;

fn cost_section(
    burst: &Option<ResultFile<BurstResults>>,
    memory: &Option<ResultFile<MemoryResults>>,
    scan: &Option<ResultFile<ScanResults>>,
) -> String {
    let big = burst
        .as_ref()
        .and_then(|f| f.results.runs.iter().max_by_key(|r| r.tasks).cloned());
    let Some(big) = big else {
        return "_Needs the burst results._\n".into();
    };
    let cpu_ms = big.cpu_ms_per_firing;
    let latency_ms = big.latency_ms.p50;
    let rss = memory
        .as_ref()
        .and_then(|f| {
            f.results
                .runs
                .iter()
                .map(|r| r.plateau_rss_mib)
                .reduce(f64::max)
        })
        .unwrap_or(big.resources.rss_max_mib);
    // Lambda sizes come in 1 MB steps from 128 MB; round up to 64 MB.
    let memory_mb = ((rss / 64.0).ceil() * 64.0).max(128.0);
    let gb = memory_mb / 1024.0;
    let claim_ms_per_firing = scan
        .as_ref()
        .map(|f| f.results.scan_ms / f.results.enqueued.max(1) as f64)
        .unwrap_or(0.1);

    let lower = cpu_ms / 1000.0 * gb * LAMBDA_GB_S * 1e6;
    let invocation_s = (latency_ms + DB_OVERHEAD_MS + BATCH_SIZE * cpu_ms) / 1000.0;
    let sparse = invocation_s / BATCH_SIZE * gb * LAMBDA_GB_S * 1e6;
    let lambda_requests = LAMBDA_REQUEST * 1e6 / BATCH_SIZE;
    let sqs_requests_per_firing = 3.0 / BATCH_SIZE;
    let sqs = sqs_requests_per_firing * SQS_REQUEST * 1e6;
    let scanner_s_per_firing =
        claim_ms_per_firing / 1000.0 + SQS_SEND_MS / 1000.0 / SQS_SENDS_IN_FLIGHT / 10.0;
    let scanner = scanner_s_per_firing * 0.125 * LAMBDA_GB_S * 1e6;
    let scanner_fixed_month =
        SCANS_PER_MONTH * (IDLE_SCAN_S * 0.125 * LAMBDA_GB_S + LAMBDA_REQUEST);
    let total_low = lower + lambda_requests + sqs + scanner;
    let total_high = sparse + lambda_requests + sqs + scanner;

    let mut t = Table::new(["item", "basis", "USD per million firings"]);
    t.row([
        "Processor compute, busy (lower bound)".to_string(),
        format!(
            "measured {cpu_ms:.3} ms CPU per firing × {memory_mb:.0} MB; billed time ≈ CPU time when invocations are full"
        ),
        format!("{lower:.4}"),
    ]);
    t.row([
        "Processor compute, sparse (upper bound)".to_string(),
        format!(
            "one batch of {BATCH_SIZE:.0} per invocation lasting target p50 {latency_ms:.0} ms + {DB_OVERHEAD_MS:.0} ms DB + CPU"
        ),
        format!("{sparse:.4}"),
    ]);
    t.row([
        "Lambda requests".to_string(),
        format!("1 processor invocation per {BATCH_SIZE:.0} firings, $0.20 per million"),
        format!("{lambda_requests:.4}"),
    ]);
    t.row([
        "SQS".to_string(),
        format!(
            "send + receive + delete in batches of 10 = {sqs_requests_per_firing:.1} requests per firing, $0.40 per million"
        ),
        format!("{sqs:.4}"),
    ]);
    t.row([
        "Scanner compute".to_string(),
        format!(
            "measured claim {claim_ms_per_firing:.4} ms per firing + SendMessageBatch {SQS_SEND_MS:.0} ms, {SQS_SENDS_IN_FLIGHT:.0} in flight, at 128 MB"
        ),
        format!("{scanner:.4}"),
    ]);
    t.row([
        "**Sundial total**".to_string(),
        "busy … sparse".to_string(),
        format!("**{total_low:.3} … {total_high:.3}**"),
    ]);
    t.row([
        "EventBridge Scheduler".to_string(),
        "published price".to_string(),
        format!("{EVENTBRIDGE_SCHEDULER_PER_MILLION:.2}"),
    ]);
    let mut s = String::new();
    s.push_str(&format!(
        "Derived from the measured CPU time per firing (burst of {} tasks: {cpu_ms:.3} ms, scanner and \
         processor together) and memory (RSS {rss:.0} MiB → a {memory_mb:.0} MB Lambda). Assumptions: \
         arm64 Lambda at $0.0000133334 per GB-s and $0.20 per million requests; SQS standard at $0.40 \
         per million requests (each under 64 KB); event-source batches of 10; no retries; free tiers \
         ignored. Not included: Postgres (a fixed instance cost, which EventBridge Scheduler does not \
         need), CloudWatch logs and metrics, and data transfer.\n\n",
        big.tasks
    ));
    s.push_str(&t.markdown());
    s.push_str(&format!(
        "\nFixed monthly costs, whatever the volume: the scanner runs {SCANS_PER_MONTH:.0} times a month \
         (≈ ${scanner_fixed_month:.2} at {IDLE_SCAN_S} s each), and Lambda's SQS pollers long-poll an \
         idle queue (≈ 650,000 empty receives a month with 5 pollers and 20 s waits ≈ $0.26).\n"
    ));
    s
}
