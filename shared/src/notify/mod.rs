//! Notifications: tell someone when a task starts failing, recovers,
//! pauses itself, misses occurrences, or when a flow's breaker opens.
//!
//! Events are written to the `notifications` outbox by the statement that
//! makes the change (see [`crate::store::notifications`]), so they are as
//! durable as the change. This module delivers them: a signed JSON POST
//! (the same `Sundial-Signature` scheme and `Idempotency-Key` header as
//! fired requests, with the same secrets) to `SUNDIAL_NOTIFY_URL` and the
//! task's `notify_url`, and a publish to the SNS topic
//! `SUNDIAL_NOTIFY_TOPIC_ARN`. Each destination that takes an event is
//! remembered, so a retry only goes where it failed; failed attempts are
//! retried with exponential backoff up to `SUNDIAL_NOTIFY_MAX_ATTEMPTS`,
//! and a final failure is logged and counted (`NotificationsFailed`).
//!
//! Delivery never stands in the firing path: the processor delivers next
//! to its work, after the write that raised the events
//! ([`Notifier::run_alongside`]), with a short timeout and bounded
//! concurrency, and every scanner tick delivers whatever is still due
//! ([`Notifier::deliver_due`]), so nothing waits forever.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use sqlx::PgPool;
use tokio::time::Instant;

use crate::config::{number, ConfigError};
use crate::fire::Signer;
use crate::store::{self, DeliveryOutcome};

mod deliver;

/// Documented defaults (the README's settings table mirrors them).
pub mod defaults {
    /// Timeout of one delivery (`SUNDIAL_NOTIFY_TIMEOUT_MS`).
    pub const TIMEOUT_MS: u64 = 5_000;
    /// Attempts per event before it is given up (`SUNDIAL_NOTIFY_MAX_ATTEMPTS`).
    pub const MAX_ATTEMPTS: i32 = 8;
    /// First retry delay; doubled per attempt, at most 15 minutes.
    pub const BACKOFF_MS: u64 = 2_000;
    /// Deliveries in flight per process.
    pub const CONCURRENCY: usize = 8;
    /// Delivered events kept in the outbox, in days.
    pub const RETENTION_DAYS: i64 = 7;
}

/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(900);
/// Events claimed per delivery round.
const ROUND: i64 = 100;
/// Time kept free before a deadline.
const MARGIN: Duration = Duration::from_millis(500);
/// A round is not started with less time than this.
const MIN_BUDGET: Duration = Duration::from_millis(300);

/// Where and how events are delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifySettings {
    /// `SUNDIAL_NOTIFY_URL`: every event is POSTed here.
    pub url: Option<String>,
    /// `SUNDIAL_NOTIFY_TOPIC_ARN`: every event is published here.
    pub topic_arn: Option<String>,
    /// `SUNDIAL_NOTIFY_TIMEOUT_MS`.
    pub timeout: Duration,
    /// `SUNDIAL_NOTIFY_MAX_ATTEMPTS`.
    pub max_attempts: i32,
    /// `SUNDIAL_NOTIFY_BACKOFF_MS`.
    pub backoff: Duration,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            url: None,
            topic_arn: None,
            timeout: Duration::from_millis(defaults::TIMEOUT_MS),
            max_attempts: defaults::MAX_ATTEMPTS,
            backoff: Duration::from_millis(defaults::BACKOFF_MS),
        }
    }
}

impl NotifySettings {
    /// Reads the `SUNDIAL_NOTIFY_*` variables of `env`.
    pub fn from_map(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let text = |name: &str| {
            env.get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let url = text("SUNDIAL_NOTIFY_URL")
            .map(|raw| {
                crate::task::validate_url(&raw)
                    .map(String::from)
                    .map_err(|e| ConfigError::Invalid {
                        name: "SUNDIAL_NOTIFY_URL",
                        value: raw.clone(),
                        reason: e.reason,
                    })
            })
            .transpose()?;
        let topic_arn = text("SUNDIAL_NOTIFY_TOPIC_ARN");
        if let Some(arn) = &topic_arn {
            if !arn.starts_with("arn:") || arn.split(':').count() < 6 {
                return Err(ConfigError::Invalid {
                    name: "SUNDIAL_NOTIFY_TOPIC_ARN",
                    value: arn.clone(),
                    reason: "not an SNS topic ARN (arn:aws:sns:region:account:name)".into(),
                });
            }
        }
        let ms = |name, default, min, max| number(env, name, default, min, max);
        Ok(NotifySettings {
            url,
            topic_arn,
            timeout: Duration::from_millis(ms(
                "SUNDIAL_NOTIFY_TIMEOUT_MS",
                defaults::TIMEOUT_MS,
                100,
                60_000,
            )?),
            max_attempts: number(
                env,
                "SUNDIAL_NOTIFY_MAX_ATTEMPTS",
                defaults::MAX_ATTEMPTS,
                1,
                50,
            )?,
            backoff: Duration::from_millis(ms(
                "SUNDIAL_NOTIFY_BACKOFF_MS",
                defaults::BACKOFF_MS,
                10,
                600_000,
            )?),
        })
    }
}

/// What delivery rounds did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    /// Events every destination took.
    pub sent: u64,
    /// Events given up after their last attempt.
    pub failed: u64,
    /// Events that failed an attempt and will be retried.
    pub retrying: u64,
}

impl DeliveryReport {
    fn add(&mut self, other: DeliveryReport) {
        self.sent += other.sent;
        self.failed += other.failed;
        self.retrying += other.retrying;
    }
}

/// Delivers the outbox: one per process, sharing the process's HTTP
/// client and signer with the firer.
pub struct Notifier {
    pool: PgPool,
    client: reqwest::Client,
    signer: Signer,
    sns: Option<aws_sdk_sns::Client>,
    settings: NotifySettings,
    /// Events were raised since the last round.
    kicked: AtomicBool,
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("settings", &self.settings)
            .field("sns", &self.sns.is_some())
            .finish()
    }
}

impl Notifier {
    /// A notifier over the process's pool, HTTP client and signer; `sns`
    /// is used when a topic is configured.
    pub fn new(
        pool: PgPool,
        client: reqwest::Client,
        signer: Signer,
        sns: Option<aws_sdk_sns::Client>,
        settings: NotifySettings,
    ) -> Self {
        Notifier {
            pool,
            client,
            signer,
            sns: sns.filter(|_| settings.topic_arn.is_some()),
            settings,
            kicked: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// The settings it delivers with.
    pub fn settings(&self) -> &NotifySettings {
        &self.settings
    }

    /// Events were raised: deliver them soon (see [`Self::run_alongside`]).
    pub fn kick(&self) {
        self.kicked.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Delivers what [`Self::kick`] announces until `stop` completes, then
    /// once more if events were raised meanwhile, all before `deadline`.
    /// Runs next to the processor's work, never in its way.
    pub async fn run_alongside(
        &self,
        stop: impl Future<Output = ()>,
        deadline: Option<Instant>,
    ) -> DeliveryReport {
        let mut report = DeliveryReport::default();
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = self.wake.notified() => {
                    if self.kicked.swap(false, Ordering::SeqCst) {
                        report.add(self.deliver_due(deadline).await);
                    }
                }
            }
        }
        if self.kicked.swap(false, Ordering::SeqCst) {
            report.add(self.deliver_due(deadline).await);
        }
        report
    }

    /// Delivers the due events, round after round, until none is due or
    /// the time before `deadline` is spent. Database errors are logged:
    /// the events stay in the outbox for the next round.
    pub async fn deliver_due(&self, deadline: Option<Instant>) -> DeliveryReport {
        let mut report = DeliveryReport::default();
        while let Some(timeout) = self.budget(deadline) {
            match self.round(timeout).await {
                Ok((claimed, round)) => {
                    report.add(round);
                    if claimed < ROUND as usize {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot deliver notifications; they stay in the outbox");
                    break;
                }
            }
        }
        report
    }

    /// The timeout a delivery may have now, or `None` if too little time
    /// is left.
    fn budget(&self, deadline: Option<Instant>) -> Option<Duration> {
        let left = match deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .saturating_sub(MARGIN),
            None => self.settings.timeout,
        };
        let timeout = self.settings.timeout.min(left);
        (timeout >= MIN_BUDGET).then_some(timeout)
    }

    /// One round: claim, deliver with bounded concurrency, settle in one
    /// statement. Returns how many were claimed.
    async fn round(&self, timeout: Duration) -> store::Result<(usize, DeliveryReport)> {
        let now = chrono::Utc::now();
        // The lease outlasts every attempt of the round.
        let lease = now
            + chrono::Duration::from_std(timeout * 4 + Duration::from_secs(30)).unwrap_or_default();
        let claimed = store::claim_notifications(&self.pool, now, ROUND, lease).await?;
        let n = claimed.len();
        let outcomes: Vec<DeliveryOutcome> = futures::stream::iter(claimed)
            .map(|event| self.deliver(event, timeout))
            .buffer_unordered(defaults::CONCURRENCY)
            .collect()
            .await;
        store::settle_notifications(&self.pool, &outcomes).await?;
        let mut report = DeliveryReport::default();
        for o in &outcomes {
            if o.complete {
                // An event with no destination configured is settled, not sent.
                report.sent += u64::from(!o.delivered.is_empty());
            } else if o.give_up {
                report.failed += 1;
            } else {
                report.retrying += 1;
            }
        }
        Ok((n, report))
    }

    /// When attempt `attempts` (1-based) failed, the next is due after this.
    fn backoff(&self, attempts: i32) -> Duration {
        let doublings = attempts.saturating_sub(1).clamp(0, 20) as u32;
        self.settings
            .backoff
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(MAX_BACKOFF)
    }
}

/// Events the outbox holds that nobody has delivered yet, for tests and
/// status: (id, kind, attempts, delivered_at is set, failed_at is set).
pub async fn outbox(pool: &PgPool) -> store::Result<Vec<(i64, String, i32, bool, bool)>> {
    Ok(sqlx::query_as(
        "SELECT id, kind, attempts, delivered_at IS NOT NULL, failed_at IS NOT NULL \
         FROM notifications ORDER BY id",
    )
    .fetch_all(pool)
    .await?)
}

/// Raises the events the scanner detects: occurrences missed (stuck past
/// the ledger's grace) and flows whose breaker opened, one per incident.
/// A failure is logged; the next tick tries again.
pub async fn raise_scanner_events(pool: &PgPool) {
    let now = chrono::Utc::now();
    if let Err(err) = store::raise_missed(pool, now, crate::ledger::MISSED_GRACE).await {
        tracing::warn!(error = %err, "cannot raise task.missed events; trying again next tick");
    }
    if let Err(err) = store::raise_flow_opened(pool, now).await {
        tracing::warn!(error = %err, "cannot raise flow.opened events; trying again next tick");
    }
}

/// The SNS client from the standard AWS environment (`AWS_ENDPOINT_URL_SNS`
/// points it at an emulator), with short timeouts: a publish must not hold
/// a delivery round for long.
pub async fn sns_client_from_env() -> aws_sdk_sns::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(10))
                .build(),
        )
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
        .load()
        .await;
    aws_sdk_sns::Client::new(&config)
}

impl Notifier {
    /// The scanner tick's share: purge old settled events (bounded), then
    /// deliver whatever is due, before `deadline`.
    pub async fn scanner_round(&self, deadline: Instant) -> DeliveryReport {
        raise_scanner_events(&self.pool).await;
        let before = chrono::Utc::now() - chrono::Duration::days(defaults::RETENTION_DAYS);
        if let Err(err) = store::purge_notifications(&self.pool, before, 10_000).await {
            tracing::warn!(error = %err, "cannot purge old notifications; trying again next tick");
        }
        self.deliver_due(Some(deadline)).await
    }
}
