//! The limits operators set per flow (the `flows` table): read by the
//! engine, written by the admin API, the CLI and plain SQL. The operator's
//! view of a flow is in [`super::flow_views`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

use super::Result;
use crate::task::{validate_flow_key, InvalidField};

/// What becomes of occurrences missed while a flow's breaker is open.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum OnOpen {
    /// Held occurrences fire once when the flow closes.
    #[default]
    FireLatest,
    /// Held occurrences are recorded as skipped ("flow open").
    Skip,
}

/// One row of `flows`. `None` limits fall back to the settings' defaults.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FlowConfig {
    pub key: String,
    /// Requests per second at most (paced at dispatch).
    pub rate_per_sec: Option<f64>,
    /// Requests that may go out back to back before pacing applies.
    pub burst: i32,
    /// Requests in flight per processor at most.
    pub max_in_flight: Option<i32>,
    /// Retries as a share of requests per 10-second window.
    pub retry_budget: Option<f64>,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: Option<i32>,
    /// Window the failures must fall in, in seconds.
    pub breaker_window_secs: Option<i32>,
    /// Seconds between probes while open.
    pub breaker_cooldown_secs: Option<i32>,
    pub on_open: OnOpen,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns of [`FlowConfig`].
macro_rules! flow_columns {
    () => {
        "key, rate_per_sec, burst, max_in_flight, retry_budget, breaker_failures, \
         breaker_window_secs, breaker_cooldown_secs, on_open, created_at, updated_at"
    };
}

/// The configured flows among `keys`, in one query.
pub async fn load_flow_configs(
    db: impl PgExecutor<'_>,
    keys: &[String],
) -> Result<Vec<FlowConfig>> {
    let sql = concat!(
        "SELECT ",
        flow_columns!(),
        " FROM flows WHERE key = ANY($1)"
    );
    Ok(sqlx::query_as::<_, FlowConfig>(sql)
        .bind(keys)
        .fetch_all(db)
        .await?)
}

/// Range of `rate_per_sec`: above the lower bound, up to the upper one.
pub const RATE_PER_SEC_RANGE: (f64, f64) = (0.0, 100_000.0);
/// Range of `burst`.
pub const BURST_RANGE: (i32, i32) = (1, 100_000);
/// Range of `max_in_flight`.
pub const MAX_IN_FLIGHT_RANGE: (i32, i32) = (1, 10_000);
/// Range of `retry_budget` (both ends included).
pub const RETRY_BUDGET_RANGE: (f64, f64) = (0.0, 10.0);
/// Range of `breaker_failures`.
pub const BREAKER_FAILURES_RANGE: (i32, i32) = (1, 10_000);
/// Range of `breaker_window_secs` and `breaker_cooldown_secs`.
pub const BREAKER_SECS_RANGE: (i32, i32) = (1, 86_400);
/// Burst of a flow whose limits do not give one (the column default).
pub const DEFAULT_BURST: i32 = 1;

/// The limits of a flow as an operator writes them (body of
/// `PUT /v1/flows/{key}`, flags of `sundial flows set`). They replace the
/// flow's limits whole: a field left out (or `null`) is the default (no
/// rate limit, burst 1, `fire_latest`, the settings for the others: see
/// `flow::FlowSettings`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowLimits {
    /// Requests per second at most, paced at dispatch across all
    /// processors; above 0, up to 100000.
    pub rate_per_sec: Option<f64>,
    /// Requests that may go out back to back before pacing applies, 1 to
    /// 100000 (default 1).
    pub burst: Option<i32>,
    /// Requests in flight per processor at most, 1 to 10000 (default
    /// `SUNDIAL_PER_HOST_CONCURRENCY`).
    pub max_in_flight: Option<i32>,
    /// Retries as a share of requests per 10-second window, 0 to 10.
    pub retry_budget: Option<f64>,
    /// Consecutive failures that open the breaker, 1 to 10000.
    pub breaker_failures: Option<i32>,
    /// Window the failures must fall in, 1 to 86400 seconds.
    pub breaker_window_secs: Option<i32>,
    /// Seconds between probes while open, 1 to 86400.
    pub breaker_cooldown_secs: Option<i32>,
    /// What becomes of occurrences missed while open (default `fire_latest`).
    #[serde(default)]
    pub on_open: OnOpen,
}

impl FlowLimits {
    /// Checks every limit against the ranges the `flows` table enforces,
    /// naming the first field out of range.
    pub fn validate(&self) -> Result<(), InvalidField> {
        if let Some(rate) = self.rate_per_sec {
            let (above, max) = RATE_PER_SEC_RANGE;
            if !rate.is_finite() || rate <= above || rate > max {
                return Err(InvalidField::new(
                    "rate_per_sec",
                    format!("{rate} is out of range: above {above}, up to {max}"),
                ));
            }
        }
        optional_in_range("burst", self.burst, BURST_RANGE)?;
        optional_in_range("max_in_flight", self.max_in_flight, MAX_IN_FLIGHT_RANGE)?;
        if let Some(budget) = self.retry_budget {
            let (min, max) = RETRY_BUDGET_RANGE;
            if !budget.is_finite() || budget < min || budget > max {
                return Err(InvalidField::new(
                    "retry_budget",
                    format!("{budget} is out of range {min}..={max}"),
                ));
            }
        }
        optional_in_range(
            "breaker_failures",
            self.breaker_failures,
            BREAKER_FAILURES_RANGE,
        )?;
        optional_in_range(
            "breaker_window_secs",
            self.breaker_window_secs,
            BREAKER_SECS_RANGE,
        )?;
        optional_in_range(
            "breaker_cooldown_secs",
            self.breaker_cooldown_secs,
            BREAKER_SECS_RANGE,
        )?;
        Ok(())
    }
}

fn optional_in_range(
    field: &'static str,
    value: Option<i32>,
    (min, max): (i32, i32),
) -> Result<(), InvalidField> {
    match value {
        Some(v) if v < min || v > max => Err(InvalidField::new(
            field,
            format!("{v} is out of range {min}..={max}"),
        )),
        _ => Ok(()),
    }
}

/// Creates or replaces the limits of flow `key` (validated here too, so
/// no caller can store what the API would refuse); fields not given go
/// back to their defaults.
pub async fn put_flow(
    db: impl PgExecutor<'_>,
    key: &str,
    limits: &FlowLimits,
) -> Result<FlowConfig> {
    let key = validate_flow_key("key", key)?;
    limits.validate()?;
    let sql = concat!(
        "INSERT INTO flows (key, rate_per_sec, burst, max_in_flight, retry_budget, \
             breaker_failures, breaker_window_secs, breaker_cooldown_secs, on_open) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (key) DO UPDATE SET \
             rate_per_sec = EXCLUDED.rate_per_sec, burst = EXCLUDED.burst, \
             max_in_flight = EXCLUDED.max_in_flight, retry_budget = EXCLUDED.retry_budget, \
             breaker_failures = EXCLUDED.breaker_failures, \
             breaker_window_secs = EXCLUDED.breaker_window_secs, \
             breaker_cooldown_secs = EXCLUDED.breaker_cooldown_secs, \
             on_open = EXCLUDED.on_open, updated_at = now() \
         RETURNING ",
        flow_columns!()
    );
    Ok(sqlx::query_as::<_, FlowConfig>(sql)
        .bind(&key)
        .bind(limits.rate_per_sec)
        .bind(limits.burst.unwrap_or(DEFAULT_BURST))
        .bind(limits.max_in_flight)
        .bind(limits.retry_budget)
        .bind(limits.breaker_failures)
        .bind(limits.breaker_window_secs)
        .bind(limits.breaker_cooldown_secs)
        .bind(limits.on_open)
        .fetch_one(db)
        .await?)
}

/// The limits of flow `key`, if any were set.
pub async fn get_flow(db: impl PgExecutor<'_>, key: &str) -> Result<Option<FlowConfig>> {
    let sql = concat!("SELECT ", flow_columns!(), " FROM flows WHERE key = $1");
    Ok(sqlx::query_as::<_, FlowConfig>(sql)
        .bind(key)
        .fetch_optional(db)
        .await?)
}

/// Removes the limits of flow `key` (its shared state stays: the engine
/// owns it). Were there any?
pub async fn delete_flow(db: impl PgExecutor<'_>, key: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM flows WHERE key = $1")
        .bind(key)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}
