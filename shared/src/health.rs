//! Is the pipeline healthy? The dead-man's switch as `GET /v1/status` and
//! `sundial status` answer it.
//!
//! CloudWatch alarms watch the same things from outside (the SAM template's
//! heartbeat, missed-occurrence, queue-age and dead-letter alarms), but an
//! operator asking the admin API, or a deployment without CloudWatch
//! (`sundial scan --loop` in a container), needs the answer from the
//! database too. Each tick leaves a heartbeat ([`record_tick`]); the
//! verdict's rules are pure: the store supplies the facts
//! ([`crate::store::pipeline_facts`], the backlog), an optional
//! [`QueueDepth`] port the dead-letter queue's depth, and [`assess`] turns
//! them into a verdict with its reasons.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Settings;
use crate::store::ScannerSeen;

/// The thresholds the verdict uses.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSettings {
    /// A scanner not seen for longer is stale (`SUNDIAL_SCANNER_STALE_SECS`).
    pub scanner_stale: Duration,
    /// Overdue for longer, with nothing holding it, is missed
    /// (`SUNDIAL_MISSED_GRACE_SECS`; also the ledger's grace).
    pub missed_grace: chrono::Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            scanner_stale: Duration::from_secs(crate::config::defaults::SCANNER_STALE_SECS),
            missed_grace: crate::ledger::MISSED_GRACE,
        }
    }
}

impl HealthSettings {
    /// The thresholds of the process settings.
    pub fn from_settings(settings: &Settings) -> Self {
        HealthSettings {
            scanner_stale: settings.scanner_stale,
            missed_grace: chrono::Duration::from_std(settings.missed_grace)
                .unwrap_or(crate::ledger::MISSED_GRACE),
        }
    }
}

/// Reads how many messages a queue holds (the dead-letter queue).
#[async_trait]
pub trait QueueDepth: Send + Sync {
    /// `ApproximateNumberOfMessages` on SQS; why not, for the operator.
    async fn visible_messages(&self) -> Result<i64, String>;
}

#[async_trait]
impl QueueDepth for crate::queue::sqs::SqsQueue {
    async fn visible_messages(&self) -> Result<i64, String> {
        let out = self
            .client()
            .get_queue_attributes()
            .queue_url(self.queue_url())
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "GetQueueAttributes: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                )
            })?;
        let raw = out
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            })
            .ok_or("GetQueueAttributes: no ApproximateNumberOfMessages in the answer")?;
        raw.parse::<i64>()
            .map_err(|_| format!("GetQueueAttributes: ApproximateNumberOfMessages is {raw:?}"))
    }
}

/// Records a scanner tick that started at `started_at` (the heartbeat row
/// status reads). A failure is logged, never returned: the tick's work is
/// done, and the next tick writes the heartbeat again.
pub async fn record_tick(
    pool: &sqlx::PgPool,
    owner: &str,
    started_at: DateTime<Utc>,
    summary: &crate::scan::ScanSummary,
) {
    let beat = crate::store::Heartbeat {
        scanner: owner,
        started_at,
        finished_at: Utc::now(),
        claimed: summary.claimed,
        enqueued: summary.enqueued,
        failed: summary.failed,
        backlog: summary.backlog,
        missed: summary.missed,
        elapsed_ms: summary.elapsed_ms,
    };
    if let Err(err) = crate::store::record_heartbeat(pool, &beat).await {
        tracing::warn!(error = %err, "cannot record the scanner heartbeat; trying again next tick");
    }
}

/// How many of a claimed page were already missed: due more than `grace`
/// before `now`, and not held on purpose by their flow's open breaker.
/// Costs a query only when some claim is that late.
pub async fn late_claims(
    db: &mut sqlx::PgConnection,
    claimed: &[crate::store::Claimed],
    now: DateTime<Utc>,
    grace: Duration,
) -> Result<u64, crate::store::StoreError> {
    let cutoff = now - chrono::Duration::from_std(grace).unwrap_or(crate::ledger::MISSED_GRACE);
    let late: Vec<&crate::store::Claimed> =
        claimed.iter().filter(|c| c.occurrence < cutoff).collect();
    let mut flows: Vec<&str> = late.iter().map(|c| c.flow.as_str()).collect();
    flows.sort_unstable();
    flows.dedup();
    let held = crate::store::open_breakers(db, &flows).await?;
    Ok(late.iter().filter(|c| !held.contains(&c.flow)).count() as u64)
}

/// How long the status route waits for the dead-letter queue's depth.
pub const DLQ_TIMEOUT: Duration = Duration::from_secs(3);

/// What the admin API checks the pipeline with.
#[derive(Clone, Default)]
pub struct PipelineCheck {
    pub settings: HealthSettings,
    /// The dead-letter queue, when `SUNDIAL_DLQ_URL` is set and the
    /// process talks to SQS.
    pub dlq: Option<Arc<dyn QueueDepth>>,
}

impl std::fmt::Debug for PipelineCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineCheck")
            .field("settings", &self.settings)
            .field("dlq", &self.dlq.is_some())
            .finish()
    }
}

impl PipelineCheck {
    /// From a started process: its settings, and the dead-letter queue
    /// through the process's SQS client (none with the in-process queue).
    pub fn from_app(app: &crate::app::App) -> Self {
        let dlq = match (&app.settings.dlq_url, app.sqs()) {
            (Some(url), Some(sqs)) => Some(Arc::new(crate::queue::sqs::SqsQueue::new(
                sqs.client().clone(),
                url.clone(),
                1,
            )) as Arc<dyn QueueDepth>),
            _ => None,
        };
        PipelineCheck {
            settings: HealthSettings::from_settings(&app.settings),
            dlq,
        }
    }

    /// The dead-letter queue's depth, within [`DLQ_TIMEOUT`].
    pub async fn dead_letters(&self) -> DeadLetters {
        let Some(dlq) = &self.dlq else {
            return DeadLetters::NotConfigured;
        };
        match tokio::time::timeout(DLQ_TIMEOUT, dlq.visible_messages()).await {
            Ok(Ok(n)) => DeadLetters::Depth(n),
            Ok(Err(why)) => DeadLetters::Unreadable(why),
            Err(_) => {
                DeadLetters::Unreadable(format!("no answer within {} s", DLQ_TIMEOUT.as_secs()))
            }
        }
    }
}

/// What became of the dead-letter queue check.
#[derive(Debug, Clone, PartialEq)]
pub enum DeadLetters {
    /// No `SUNDIAL_DLQ_URL` (or no SQS in this process).
    NotConfigured,
    Depth(i64),
    Unreadable(String),
}

/// Everything [`assess`] judges.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub now: DateTime<Utc>,
    pub last_tick: Option<ScannerSeen>,
    /// Occurrences overdue beyond the grace that nothing holds.
    pub missed: i64,
    /// Enabled tasks whose lease lapsed.
    pub leases_overdue: i64,
    pub dead_letters: DeadLetters,
}

/// Why the pipeline is not healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// No scanner ever ticked against this database.
    ScannerNeverSeen,
    /// No scanner tick for longer than `SUNDIAL_SCANNER_STALE_SECS`.
    ScannerStale,
    /// Occurrences are overdue beyond the grace and nothing holds them.
    MissedOccurrences,
    /// Leases lapsed without their run being recorded.
    LeasesOverdue,
    /// The dead-letter queue holds messages.
    DeadLetters,
    /// The dead-letter queue's depth cannot be read.
    DeadLettersUnknown,
}

/// One reason of the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Reason {
    pub code: Problem,
    /// What is wrong, in words, with the figures.
    pub message: String,
}

/// The verdict on the pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PipelineHealth {
    /// True when `reasons` is empty.
    pub healthy: bool,
    pub reasons: Vec<Reason>,
}

/// When a scanner last ran.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ScannerStatus {
    /// When the latest tick finished; absent when no scanner ever ticked.
    pub last_tick_at: Option<DateTime<Utc>>,
    /// Seconds from then until now (absent likewise).
    pub seconds_ago: Option<f64>,
    /// The scanner that ticked last, with its counters.
    pub last_tick: Option<ScannerSeen>,
    /// Beyond this many seconds without a tick, the scanner is stale.
    pub stale_after_secs: u64,
}

/// The scanner part of the status.
pub fn scanner_status(observed: &Observed, settings: &HealthSettings) -> ScannerStatus {
    let at = observed.last_tick.as_ref().map(|t| t.last_finished_at);
    ScannerStatus {
        last_tick_at: at,
        seconds_ago: at.map(|at| seconds_between(at, observed.now)),
        last_tick: observed.last_tick.clone(),
        stale_after_secs: settings.scanner_stale.as_secs(),
    }
}

/// Seconds from `then` to `now`, never negative (clocks of the scanner
/// and the admin host may differ a little).
fn seconds_between(then: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    ((now - then).num_milliseconds().max(0) as f64) / 1000.0
}

/// The verdict: healthy unless one of the [`Problem`]s applies.
pub fn assess(observed: &Observed, settings: &HealthSettings) -> PipelineHealth {
    let mut reasons = Vec::new();
    let mut say = |code, message: String| reasons.push(Reason { code, message });
    let stale = settings.scanner_stale.as_secs();
    match &observed.last_tick {
        None => say(
            Problem::ScannerNeverSeen,
            "no scanner has ever ticked against this database".into(),
        ),
        Some(tick) => {
            let ago = seconds_between(tick.last_finished_at, observed.now);
            if ago > settings.scanner_stale.as_secs_f64() {
                say(
                    Problem::ScannerStale,
                    format!(
                        "the last scanner tick ({}) finished {ago:.0} s ago, more than {stale} s",
                        tick.scanner
                    ),
                );
            }
        }
    }
    if observed.missed > 0 {
        say(
            Problem::MissedOccurrences,
            format!(
                "{} task(s) have an occurrence overdue by more than {} s that nothing holds",
                observed.missed,
                settings.missed_grace.num_seconds()
            ),
        );
    }
    if observed.leases_overdue > 0 {
        say(
            Problem::LeasesOverdue,
            format!(
                "{} task(s) hold a lapsed lease: their occurrence was handed out and never recorded",
                observed.leases_overdue
            ),
        );
    }
    match &observed.dead_letters {
        DeadLetters::Depth(n) if *n > 0 => say(
            Problem::DeadLetters,
            format!("the dead-letter queue holds {n} message(s)"),
        ),
        DeadLetters::Unreadable(why) => say(
            Problem::DeadLettersUnknown,
            format!("cannot read the dead-letter queue's depth: {why}"),
        ),
        _ => {}
    }
    PipelineHealth {
        healthy: reasons.is_empty(),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn tick(finished: &str) -> ScannerSeen {
        ScannerSeen {
            scanner: "sundial-scanner".into(),
            last_started_at: at(finished) - chrono::Duration::milliseconds(40),
            last_finished_at: at(finished),
            ticks: 7,
            last_claimed: 0,
            last_enqueued: 0,
            last_failed: 0,
            last_backlog: 0,
            last_missed: 0,
            last_elapsed_ms: 40,
        }
    }

    fn observed(last: Option<&str>) -> Observed {
        Observed {
            now: at("2026-12-01T09:00:00Z"),
            last_tick: last.map(tick),
            missed: 0,
            leases_overdue: 0,
            dead_letters: DeadLetters::NotConfigured,
        }
    }

    fn codes(o: &Observed) -> Vec<Problem> {
        let verdict = assess(o, &HealthSettings::default());
        assert_eq!(verdict.healthy, verdict.reasons.is_empty());
        verdict.reasons.iter().map(|r| r.code).collect()
    }

    fn env(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_have_defaults_and_ranges() {
        let s = Settings::from_map(&env(&[])).unwrap();
        assert_eq!(s.missed_grace, Duration::from_secs(120));
        assert_eq!(s.scanner_stale, Duration::from_secs(180));
        assert!(s.dlq_url.is_none());
        let s = Settings::from_map(&env(&[
            ("SUNDIAL_MISSED_GRACE_SECS", "3"),
            ("SUNDIAL_SCANNER_STALE_SECS", "30"),
            ("SUNDIAL_DLQ_URL", "http://127.0.0.1:1/q/dlq"),
        ]))
        .unwrap();
        assert_eq!(s.missed_grace, Duration::from_secs(3));
        let health = HealthSettings::from_settings(&s);
        assert_eq!(health.missed_grace, chrono::Duration::seconds(3));
        assert_eq!(health.scanner_stale, Duration::from_secs(30));
        assert_eq!(s.scanner_stale, Duration::from_secs(30));
        assert_eq!(s.dlq_url.as_deref(), Some("http://127.0.0.1:1/q/dlq"));
        let err = Settings::from_map(&env(&[("SUNDIAL_MISSED_GRACE_SECS", "0")])).unwrap_err();
        assert!(
            err.to_string().contains("SUNDIAL_MISSED_GRACE_SECS"),
            "{err}"
        );
    }

    #[test]
    fn a_recent_tick_and_nothing_else_is_healthy() {
        let o = observed(Some("2026-12-01T08:58:30Z"));
        assert_eq!(codes(&o), vec![]);
        let s = scanner_status(&o, &HealthSettings::default());
        assert_eq!(s.seconds_ago, Some(90.0));
        assert_eq!(s.last_tick_at, Some(at("2026-12-01T08:58:30Z")));
        assert_eq!(s.stale_after_secs, 180);
    }

    #[test]
    fn a_scanner_never_seen_or_not_seen_for_long_is_unhealthy() {
        assert_eq!(codes(&observed(None)), vec![Problem::ScannerNeverSeen]);
        // 180 s is still fine, 181 s is not.
        assert_eq!(codes(&observed(Some("2026-12-01T08:57:00Z"))), vec![]);
        let stale = observed(Some("2026-12-01T08:56:59Z"));
        assert_eq!(codes(&stale), vec![Problem::ScannerStale]);
        let verdict = assess(&stale, &HealthSettings::default());
        assert!(
            verdict.reasons[0].message.contains("181 s ago"),
            "{verdict:?}"
        );
    }

    #[test]
    fn missed_occurrences_lapsed_leases_and_dead_letters_are_named() {
        let mut o = observed(Some("2026-12-01T08:59:30Z"));
        o.missed = 2;
        o.leases_overdue = 1;
        o.dead_letters = DeadLetters::Depth(4);
        assert_eq!(
            codes(&o),
            vec![
                Problem::MissedOccurrences,
                Problem::LeasesOverdue,
                Problem::DeadLetters
            ]
        );
        o.missed = 0;
        o.leases_overdue = 0;
        o.dead_letters = DeadLetters::Depth(0);
        assert_eq!(codes(&o), vec![]);
        o.dead_letters = DeadLetters::Unreadable("AccessDenied".into());
        assert_eq!(codes(&o), vec![Problem::DeadLettersUnknown]);
    }

    #[test]
    fn a_clock_ahead_of_the_admin_is_not_negative() {
        let o = observed(Some("2026-12-01T09:00:02Z"));
        let s = scanner_status(&o, &HealthSettings::default());
        assert_eq!(s.seconds_ago, Some(0.0));
        assert_eq!(codes(&o), vec![]);
    }
}
