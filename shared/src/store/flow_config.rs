//! The limits operators set per flow (the `flows` table): read by the
//! engine, written by the admin API, the CLI and plain SQL.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

use super::Result;

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
