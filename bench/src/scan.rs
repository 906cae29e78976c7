//! `sundial bench scan`: a table of `--rows` tasks of which `--due` are
//! due, spread through the table. Measures the real `scan::scan` claiming
//! and enqueueing them into the in-process queue, the time of each page
//! inside that scan, and the bare claim query page by page (in a
//! transaction that is rolled back). The SQS emulator is too slow to time
//! SQS itself, so the `SendMessageBatch` calls the SQS adapter would make
//! are counted instead: ceil(n / 10) per page.

use std::sync::Mutex;
use std::time::Instant;

use anyhow::Result;
use async_trait::async_trait;
use chrono::Utc;
use clap::Args;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sundial::queue::memory::MemoryQueue;
use sundial::queue::{DispatchQueue, Outgoing, SendReport};
use sundial::store::{self, ClaimOptions};

use super::env;
use super::measure::{round2, round3, Dist, Meter, Progress, Resources};
use super::report::{num, Table};
use super::{Common, Ctx};

/// Entries per `SendMessageBatch` call.
const SQS_BATCH: u64 = 10;

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Rows in the table [default: 1000000, --quick: 200000].
    #[arg(long)]
    pub rows: Option<u64>,
    /// Of which due now.
    #[arg(long, default_value_t = 10_000)]
    pub due: u64,
    /// Rows claimed per page [default: SUNDIAL_PAGE_SIZE's default].
    #[arg(long)]
    pub page_size: Option<i64>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScanResults {
    pub rows: u64,
    pub due: u64,
    pub page_size: i64,
    /// The one `INSERT ... SELECT generate_series`, seconds.
    pub insert_s: f64,
    pub analyze_s: f64,
    /// `scan::scan` into the in-process queue, ms.
    pub scan_ms: f64,
    pub claimed: u64,
    pub enqueued: u64,
    pub pages: u64,
    /// Calls the SQS adapter would make (ceil(n / 10) per page).
    pub sqs_send_batch_calls: u64,
    /// Claimed and enqueued per second.
    pub per_second: f64,
    /// Time of each page inside the scan (claim + enqueue), ms.
    pub page_ms: Dist,
    /// The claim query alone, per page, ms.
    pub claim_ms: Dist,
    /// Due and unclaimed after the scan.
    pub backlog_after: i64,
    pub resources: Resources,
}

pub async fn run(args: ScanArgs) -> Result<()> {
    let ctx = Ctx::new(&args.common)?;
    let rows = args
        .rows
        .unwrap_or(if ctx.quick { 200_000 } else { 1_000_000 })
        .max(1);
    let due = args.due.clamp(1, rows);
    let mut settings = env::settings(100, 75)?;
    if let Some(page) = args.page_size {
        settings.page_size = page.clamp(1, 10_000);
    }
    let pool = ctx.db.fresh(settings.db_pool_size).await?;
    let mut progress = Progress::new("scan");

    progress.update(|| format!("inserting {rows} rows"));
    let started = Instant::now();
    insert_rows(&pool, rows, due).await?;
    let insert_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    sqlx::query("ANALYZE tasks").execute(&pool).await?;
    let analyze_s = started.elapsed().as_secs_f64();
    progress.done(&format!("{rows} rows inserted in {insert_s:.1} s"));

    let opts = sundial::scan::ScanOptions::from_settings(&settings, "sundial-bench");
    let mut claim_ms = claim_pages(&pool, &opts).await?;

    let queue = TimedQueue::default();
    let meter = Meter::start(None);
    let started = Instant::now();
    let summary = sundial::scan::scan(&pool, &queue, &opts).await?;
    let scan_ms = started.elapsed().as_secs_f64() * 1000.0;
    let resources = meter.finish();

    let sends = queue.sends();
    let mut page_ms: Vec<f64> = sends
        .iter()
        .scan(started, |prev, (at, _)| {
            let gap = at.saturating_duration_since(*prev).as_secs_f64() * 1000.0;
            *prev = *at;
            Some(gap)
        })
        .collect();
    let results = ScanResults {
        rows,
        due,
        page_size: settings.page_size,
        insert_s: round3(insert_s),
        analyze_s: round3(analyze_s),
        scan_ms: round2(scan_ms),
        claimed: summary.claimed,
        enqueued: queue.inner.len() as u64,
        pages: summary.pages,
        sqs_send_batch_calls: sends.iter().map(|(_, n)| n.div_ceil(SQS_BATCH)).sum(),
        per_second: round2(summary.enqueued as f64 / (scan_ms / 1000.0).max(1e-9)),
        page_ms: Dist::of(&mut page_ms),
        claim_ms: Dist::of(&mut claim_ms),
        backlog_after: summary.backlog,
        resources: resources.clone(),
    };
    println!("{}", table(&results).text());
    pool.close().await;
    ctx.db.drop_database().await?;
    ctx.finish("scan", "none (nothing is fired)", resources, &results)
}

/// `rows` tasks; every (rows / due)-th one is due a little in the past, the
/// others are due from an hour on (beyond any lookahead).
async fn insert_rows(pool: &PgPool, rows: u64, due: u64) -> Result<()> {
    let step = (rows / due).max(1) as i64;
    let now = Utc::now();
    sqlx::query(
        "INSERT INTO tasks (name, schedule, url, next_run_at) \
         SELECT 'scan-' || g, 'rate(1 day)', 'http://127.0.0.1:9/never', \
                CASE WHEN g % $2 = 0 AND g / $2 <= $3 \
                     THEN $4::timestamptz - interval '1 second' - g * interval '1 microsecond' \
                     ELSE $4::timestamptz + interval '1 hour' + g * interval '1 second' END \
         FROM generate_series(1, $1::bigint) g",
    )
    .bind(rows as i64)
    .bind(step)
    .bind(due as i64)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// The claim query alone, page after page, timed; rolled back so the real
/// scan finds the same rows.
async fn claim_pages(pool: &PgPool, opts: &sundial::scan::ScanOptions) -> Result<Vec<f64>> {
    let claim = ClaimOptions {
        lookahead: chrono::Duration::from_std(opts.lookahead).unwrap_or_default(),
        limit: opts.page_size,
        lease: chrono::Duration::from_std(opts.lease).unwrap_or_default(),
        owner: opts.owner.clone(),
    };
    let mut tx = pool.begin().await?;
    let mut times = Vec::new();
    loop {
        let started = Instant::now();
        let page = store::claim_due(&mut *tx, Utc::now(), &claim).await?;
        if page.is_empty() {
            break;
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if times.len() > 100_000 {
            break;
        }
    }
    tx.rollback().await?;
    Ok(times)
}

/// The in-process queue, noting when each page arrives and its size.
#[derive(Default)]
struct TimedQueue {
    inner: MemoryQueue,
    sends: Mutex<Vec<(Instant, u64)>>,
}

impl TimedQueue {
    fn sends(&self) -> Vec<(Instant, u64)> {
        self.sends.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl DispatchQueue for TimedQueue {
    async fn send(&self, messages: &[Outgoing]) -> SendReport {
        if let Ok(mut sends) = self.sends.lock() {
            sends.push((Instant::now(), messages.len() as u64));
        }
        self.inner.send(messages).await
    }
}

pub fn table(r: &ScanResults) -> Table {
    let mut t = Table::new([
        "rows",
        "due",
        "scan ms",
        "claimed",
        "enqueued",
        "pages",
        "SendMessageBatch calls",
        "per s",
        "page p50 ms",
        "page max",
        "claim p50 ms",
        "claim p95",
        "claim max",
        "insert s",
    ]);
    t.row([
        r.rows.to_string(),
        r.due.to_string(),
        num(r.scan_ms),
        r.claimed.to_string(),
        r.enqueued.to_string(),
        r.pages.to_string(),
        r.sqs_send_batch_calls.to_string(),
        num(r.per_second),
        num(r.page_ms.p50),
        num(r.page_ms.max),
        num(r.claim_ms.p50),
        num(r.claim_ms.p95),
        num(r.claim_ms.max),
        num(r.insert_s),
    ]);
    t
}
