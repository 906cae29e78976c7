//! The scanner's heartbeat and the other facts the pipeline's health is
//! judged by: a dead-man's switch needs a trace of the thing that should
//! be alive, and CloudWatch is not the only reader (`GET /v1/status` and
//! `sundial status` answer from the database, in every deployment shape).
//!
//! Each scanner tick upserts one row of `scanner_heartbeats` in one
//! statement; status reads the latest row together with the count of
//! lapsed leases, also in one statement. [`open_breakers`] tells the
//! missed count which late claims were held on purpose.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use super::Result;

/// What one tick leaves in `scanner_heartbeats`.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat<'a> {
    /// The scanner's name (its `lease_owner`).
    pub scanner: &'a str,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The tick's summary, as in its EMF record.
    pub claimed: u64,
    pub enqueued: u64,
    pub failed: u64,
    pub backlog: i64,
    pub missed: i64,
    pub elapsed_ms: u64,
}

/// Records a tick: one upsert, the tick counter bumped in place.
pub async fn record_heartbeat(db: impl PgExecutor<'_>, beat: &Heartbeat<'_>) -> Result<()> {
    // Counts are clamped into BIGINT; they never come near it.
    let big = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO scanner_heartbeats AS h (scanner, last_started_at, last_finished_at, \
             last_claimed, last_enqueued, last_failed, last_backlog, last_missed, last_elapsed_ms) \
         VALUES ($1, $2, GREATEST($2, $3), $4, $5, $6, GREATEST($7, 0), GREATEST($8, 0), $9) \
         ON CONFLICT (scanner) DO UPDATE SET \
             last_started_at = EXCLUDED.last_started_at, \
             last_finished_at = EXCLUDED.last_finished_at, \
             ticks = h.ticks + 1, \
             last_claimed = EXCLUDED.last_claimed, \
             last_enqueued = EXCLUDED.last_enqueued, \
             last_failed = EXCLUDED.last_failed, \
             last_backlog = EXCLUDED.last_backlog, \
             last_missed = EXCLUDED.last_missed, \
             last_elapsed_ms = EXCLUDED.last_elapsed_ms",
    )
    .bind(beat.scanner)
    .bind(beat.started_at)
    .bind(beat.finished_at)
    .bind(big(beat.claimed))
    .bind(big(beat.enqueued))
    .bind(big(beat.failed))
    .bind(beat.backlog)
    .bind(beat.missed)
    .bind(big(beat.elapsed_ms))
    .execute(db)
    .await?;
    Ok(())
}

/// The most recent tick of any scanner.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ScannerSeen {
    /// The scanner's name (the Lambda's function name, `sundial-cli`, ...).
    pub scanner: String,
    pub last_started_at: DateTime<Utc>,
    pub last_finished_at: DateTime<Utc>,
    /// Ticks this scanner completed.
    pub ticks: i64,
    /// What its last tick claimed, enqueued, failed to enqueue, left due
    /// and counted missed.
    pub last_claimed: i64,
    pub last_enqueued: i64,
    pub last_failed: i64,
    pub last_backlog: i64,
    pub last_missed: i64,
    pub last_elapsed_ms: i64,
}

/// What the store knows about the pipeline's health.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineFacts {
    /// The latest heartbeat; `None`: no scanner ever ticked here.
    pub last_tick: Option<ScannerSeen>,
    /// Enabled tasks whose lease has lapsed: an occurrence was handed out
    /// and neither recorded nor handed back (a processor lost it, or its
    /// message waited in the queue past the lease). The next scanner tick
    /// dispatches them again; until then they count here.
    pub leases_overdue: i64,
}

/// One row of [`pipeline_facts`]: the heartbeat's columns are NULL when
/// no scanner ever ticked.
#[derive(sqlx::FromRow)]
struct FactsRow {
    leases_overdue: i64,
    scanner: Option<String>,
    last_started_at: Option<DateTime<Utc>>,
    last_finished_at: Option<DateTime<Utc>>,
    ticks: Option<i64>,
    last_claimed: Option<i64>,
    last_enqueued: Option<i64>,
    last_failed: Option<i64>,
    last_backlog: Option<i64>,
    last_missed: Option<i64>,
    last_elapsed_ms: Option<i64>,
}

impl FactsRow {
    fn last_tick(&self) -> Option<ScannerSeen> {
        Some(ScannerSeen {
            scanner: self.scanner.clone()?,
            last_started_at: self.last_started_at?,
            last_finished_at: self.last_finished_at?,
            ticks: self.ticks.unwrap_or(0),
            last_claimed: self.last_claimed.unwrap_or(0),
            last_enqueued: self.last_enqueued.unwrap_or(0),
            last_failed: self.last_failed.unwrap_or(0),
            last_backlog: self.last_backlog.unwrap_or(0),
            last_missed: self.last_missed.unwrap_or(0),
            last_elapsed_ms: self.last_elapsed_ms.unwrap_or(0),
        })
    }
}

/// The latest heartbeat and the lapsed leases, in one statement.
pub async fn pipeline_facts(db: impl PgExecutor<'_>, now: DateTime<Utc>) -> Result<PipelineFacts> {
    let row = sqlx::query_as::<_, FactsRow>(
        "SELECT h.scanner, h.last_started_at, h.last_finished_at, h.ticks, h.last_claimed, \
                h.last_enqueued, h.last_failed, h.last_backlog, h.last_missed, h.last_elapsed_ms, \
                (SELECT count(*) FROM tasks \
                 -- Handed out, and the holder's time is up?
                 WHERE enabled AND lease_until < $1) AS leases_overdue \
         FROM (SELECT 1) AS one \
         LEFT JOIN LATERAL (SELECT * FROM scanner_heartbeats \
                            ORDER BY last_finished_at DESC LIMIT 1) h ON true",
    )
    .bind(now)
    .fetch_one(db)
    .await?;
    Ok(PipelineFacts {
        last_tick: row.last_tick(),
        leases_overdue: row.leases_overdue,
    })
}

/// Of `flows`, those whose circuit breaker is open: their occurrences
/// wait on purpose (a probe or the open-flow policy claims them late), so
/// the scanner's missed count leaves them out, as the backlog does.
pub async fn open_breakers(db: impl PgExecutor<'_>, flows: &[&str]) -> Result<Vec<String>> {
    if flows.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(
        "SELECT key FROM flow_state WHERE breaker = 'open' AND key = ANY($1::text[])",
    )
    .bind(flows)
    .fetch_all(db)
    .await?)
}
