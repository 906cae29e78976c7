//! The operator's view of a flow: its limits (`flows`), the engine's
//! shared state (`flow_state`) and how many tasks it holds; pages of them,
//! and the counts `GET /v1/status` shows.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

use super::flow_config::{FlowConfig, OnOpen};
use super::Result;

/// Position of a flow's circuit breaker.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum FlowBreaker {
    /// Requests go out.
    Closed,
    /// Occurrences are held; one probe per cooldown.
    Open,
}

/// What the engine knows of a flow (one row of `flow_state`), for operators.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FlowStateView {
    pub breaker: FlowBreaker,
    /// Shared backoff (429/503): nothing new is fired before this.
    pub not_before: Option<DateTime<Utc>>,
    /// Consecutive failures counted towards opening the breaker.
    pub failures: i32,
    /// When the breaker last opened.
    pub opened_at: Option<DateTime<Utc>>,
    /// While open: when the next probe may go out.
    pub probe_at: Option<DateTime<Utc>>,
    /// Requests per second learned from the target's 429s, in force while
    /// no `rate_per_sec` is set; `null`: none (docs/DESIGN.md, adaptive rate).
    pub learned_rate: Option<f64>,
    /// Requests held back by the flow's limits or backoff, in all.
    pub throttled_total: i64,
    /// Times the breaker opened, in all.
    pub opened_total: i64,
    pub updated_at: DateTime<Utc>,
}

/// A flow as operators see it. Any of the three parts may be missing: a
/// flow can have limits before any task uses it, state once the engine
/// has seen it, and tasks without either (no limit beyond the global ones).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FlowView {
    pub key: String,
    /// The limits set for this flow; `null`: the defaults from the settings.
    pub config: Option<FlowConfig>,
    /// The engine's shared state; `null`: not seen by the engine yet.
    pub state: Option<FlowStateView>,
    /// Tasks whose flow this is.
    pub tasks: i64,
}

/// One row of the view queries: `flows` and `flow_state` left-joined on
/// the key, so every column of either may be NULL.
#[derive(Debug, sqlx::FromRow)]
struct FlowViewRow {
    key: String,
    config_key: Option<String>,
    rate_per_sec: Option<f64>,
    burst: Option<i32>,
    max_in_flight: Option<i32>,
    retry_budget: Option<f64>,
    breaker_failures: Option<i32>,
    breaker_window_secs: Option<i32>,
    breaker_cooldown_secs: Option<i32>,
    on_open: Option<OnOpen>,
    created_at: Option<DateTime<Utc>>,
    config_updated_at: Option<DateTime<Utc>>,
    breaker: Option<FlowBreaker>,
    not_before: Option<DateTime<Utc>>,
    failures: Option<i32>,
    opened_at: Option<DateTime<Utc>>,
    probe_at: Option<DateTime<Utc>>,
    learned_rate: Option<f64>,
    throttled_total: Option<i64>,
    opened_total: Option<i64>,
    state_updated_at: Option<DateTime<Utc>>,
    tasks: i64,
}

impl FlowViewRow {
    fn into_view(self) -> FlowView {
        // The NOT NULL columns of each table tell whether its row joined.
        let config = match (
            self.config_key,
            self.burst,
            self.on_open,
            self.created_at,
            self.config_updated_at,
        ) {
            (Some(key), Some(burst), Some(on_open), Some(created_at), Some(updated_at)) => {
                Some(FlowConfig {
                    key,
                    rate_per_sec: self.rate_per_sec,
                    burst,
                    max_in_flight: self.max_in_flight,
                    retry_budget: self.retry_budget,
                    breaker_failures: self.breaker_failures,
                    breaker_window_secs: self.breaker_window_secs,
                    breaker_cooldown_secs: self.breaker_cooldown_secs,
                    on_open,
                    created_at,
                    updated_at,
                })
            }
            _ => None,
        };
        let state = match (
            self.breaker,
            self.failures,
            self.throttled_total,
            self.opened_total,
            self.state_updated_at,
        ) {
            (
                Some(breaker),
                Some(failures),
                Some(throttled_total),
                Some(opened_total),
                Some(updated_at),
            ) => Some(FlowStateView {
                breaker,
                not_before: self.not_before,
                failures,
                opened_at: self.opened_at,
                probe_at: self.probe_at,
                learned_rate: self.learned_rate,
                throttled_total,
                opened_total,
                updated_at,
            }),
            _ => None,
        };
        FlowView {
            key: self.key,
            config,
            state,
            tasks: self.tasks,
        }
    }
}

/// The columns of [`FlowViewRow`] over `k` (the keys), `f` (`flows`) and
/// `s` (`flow_state`). The task count is a correlated subquery on
/// `tasks_flow_idx`: one index range per listed flow, inside the one
/// statement.
macro_rules! flow_view_columns {
    () => {
        "k.key, f.key AS config_key, f.rate_per_sec, f.burst, f.max_in_flight, \
         f.retry_budget, f.breaker_failures, f.breaker_window_secs, f.breaker_cooldown_secs, \
         f.on_open, f.created_at, f.updated_at AS config_updated_at, \
         s.breaker, s.not_before, s.failures, s.opened_at, s.probe_at, s.learned_rate, \
         s.throttled_total, \
         s.opened_total, s.updated_at AS state_updated_at, \
         (SELECT count(*) FROM tasks t WHERE t.flow = k.key) AS tasks"
    };
}

/// Largest page [`list_flows`] returns.
pub const MAX_FLOW_PAGE: i64 = 500;

/// A page of flows, ordered by key.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FlowPage {
    pub flows: Vec<FlowView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// The flows with limits or state (tasks alone do not list a flow: see
/// [`get_flow_view`] for those), ordered by key, `limit` (1 to
/// [`MAX_FLOW_PAGE`]) at a time after the key `after`, in one query.
pub async fn list_flows(
    db: impl PgExecutor<'_>,
    after: Option<&str>,
    limit: i64,
) -> Result<FlowPage> {
    let limit = limit.clamp(1, MAX_FLOW_PAGE);
    let sql = concat!(
        "WITH k AS ( \
             SELECT key FROM flows WHERE $1::text IS NULL OR key > $1 \
             UNION \
             SELECT key FROM flow_state WHERE $1::text IS NULL OR key > $1 \
             ORDER BY key LIMIT $2 \
         ) \
         SELECT ",
        flow_view_columns!(),
        " FROM k \
         LEFT JOIN flows f ON f.key = k.key \
         LEFT JOIN flow_state s ON s.key = k.key \
         ORDER BY k.key"
    );
    // One row more than asked tells whether another page follows.
    let rows = sqlx::query_as::<_, FlowViewRow>(sql)
        .bind(after)
        .bind(limit + 1)
        .fetch_all(db)
        .await?;
    let mut flows: Vec<FlowView> = rows.into_iter().map(FlowViewRow::into_view).collect();
    let next_after = if flows.len() as i64 > limit {
        flows.truncate(limit as usize);
        flows.last().map(|f| f.key.clone())
    } else {
        None
    };
    Ok(FlowPage { flows, next_after })
}

/// Flow `key` as operators see it, in one query: `None` when nothing
/// knows the key (no limits, no state, no task). A key with tasks only
/// answers with `config` and `state` both `None`: it is a flow, limited
/// by the defaults alone.
pub async fn get_flow_view(db: impl PgExecutor<'_>, key: &str) -> Result<Option<FlowView>> {
    let sql = concat!(
        "SELECT ",
        flow_view_columns!(),
        " FROM (SELECT $1::text AS key) k \
         LEFT JOIN flows f ON f.key = k.key \
         LEFT JOIN flow_state s ON s.key = k.key"
    );
    let row = sqlx::query_as::<_, FlowViewRow>(sql)
        .bind(key)
        .fetch_one(db)
        .await?;
    let view = row.into_view();
    let known = view.config.is_some() || view.state.is_some() || view.tasks > 0;
    Ok(known.then_some(view))
}

/// Open flows and backoff, for `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FlowCounts {
    /// Flows whose breaker is open.
    pub open: i64,
    /// Flows in shared backoff (`not_before` later than now).
    pub backing_off: i64,
    /// The open flows, longest open first (at most 50).
    #[schema(value_type = Vec<OpenFlow>)]
    pub open_flows: sqlx::types::Json<Vec<OpenFlow>>,
}

/// A flow whose breaker is open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OpenFlow {
    pub key: String,
    pub opened_at: Option<DateTime<Utc>>,
    /// When the next probe may go out.
    pub probe_at: Option<DateTime<Utc>>,
}

/// Most open flows [`flow_counts`] lists.
pub const MAX_OPEN_FLOWS_SHOWN: i64 = 50;

/// Open and backing-off flows at `now`, in one query.
pub async fn flow_counts(db: impl PgExecutor<'_>, now: DateTime<Utc>) -> Result<FlowCounts> {
    Ok(sqlx::query_as::<_, FlowCounts>(
        "SELECT count(*) FILTER (WHERE breaker = 'open') AS open, \
                count(*) FILTER (WHERE not_before > $1) AS backing_off, \
                COALESCE(( \
                    SELECT jsonb_agg(jsonb_build_object( \
                               'key', o.key, 'opened_at', o.opened_at, 'probe_at', o.probe_at) \
                           ORDER BY o.opened_at NULLS LAST, o.key) \
                    FROM ( \
                        SELECT key, opened_at, probe_at FROM flow_state \
                        WHERE breaker = 'open' \
                        ORDER BY opened_at NULLS LAST, key LIMIT $2 \
                    ) o \
                ), '[]'::jsonb) AS open_flows \
         FROM flow_state",
    )
    .bind(now)
    .bind(MAX_OPEN_FLOWS_SHOWN)
    .fetch_one(db)
    .await?)
}
