//! The notification outbox. Events are inserted by the statement whose
//! change raises them (the write-back, the scanner's tick), so a crash
//! loses none; deliverers claim due rows with `FOR UPDATE SKIP LOCKED`
//! and a lease (`next_attempt_at` moved ahead), so several processors and
//! scanners can deliver at once and a crashed deliverer's rows come back.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::Result;

/// A claimed event, to deliver.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PendingNotification {
    pub id: i64,
    pub kind: String,
    pub task_id: Option<i64>,
    /// The task's notify URL when the event was raised.
    pub notify_url: Option<String>,
    pub payload: sqlx::types::Json<serde_json::Value>,
    /// Attempts started, this one included.
    pub attempts: i32,
    /// Destinations that took it already.
    pub delivered: Vec<String>,
}

/// Claims up to `limit` due events, oldest due first, holding each until
/// `lease_until` (a deliverer that dies lets them come back then).
pub async fn claim_notifications(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    limit: i64,
    lease_until: DateTime<Utc>,
) -> Result<Vec<PendingNotification>> {
    Ok(sqlx::query_as(
        "WITH due AS ( \
             SELECT id FROM notifications \
             WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at LIMIT $2 \
             FOR UPDATE SKIP LOCKED) \
         UPDATE notifications n SET attempts = n.attempts + 1, next_attempt_at = $3 \
         FROM due WHERE n.id = due.id \
         RETURNING n.id, n.kind, n.task_id, n.notify_url, n.payload, n.attempts, n.delivered",
    )
    .bind(now)
    .bind(limit)
    .bind(lease_until)
    .fetch_all(db)
    .await?)
}

/// What one delivery attempt of an event came to.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryOutcome {
    pub id: i64,
    /// Destinations that took it in this attempt.
    pub delivered: Vec<String>,
    /// Every destination has it now.
    pub complete: bool,
    /// Not complete and no attempt left: give up.
    pub give_up: bool,
    /// When to try again (if neither complete nor given up).
    pub retry_at: DateTime<Utc>,
    /// Why the attempt did not complete.
    pub error: Option<String>,
}

/// Records the attempts of a delivery round in one statement.
pub async fn settle_notifications(
    db: impl PgExecutor<'_>,
    outcomes: &[DeliveryOutcome],
) -> Result<u64> {
    if outcomes.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = outcomes.iter().map(|o| o.id).collect();
    // Text arrays of arrays must be rectangular: joined, split in SQL.
    let done: Vec<String> = outcomes.iter().map(|o| o.delivered.join(",")).collect();
    let complete: Vec<bool> = outcomes.iter().map(|o| o.complete).collect();
    let give_up: Vec<bool> = outcomes.iter().map(|o| o.give_up).collect();
    let retry_at: Vec<DateTime<Utc>> = outcomes.iter().map(|o| o.retry_at).collect();
    let errors: Vec<Option<String>> = outcomes
        .iter()
        .map(|o| {
            o.error
                .as_deref()
                .map(|e| crate::sanitise::clean_text(e, 2000))
        })
        .collect();
    let done = sqlx::query(
        "UPDATE notifications n SET \
             delivered = n.delivered || array_remove(string_to_array(u.done, ','), ''), \
             delivered_at = CASE WHEN u.complete THEN now() END, \
             failed_at = CASE WHEN NOT u.complete AND u.give_up THEN now() END, \
             next_attempt_at = CASE WHEN u.complete OR u.give_up THEN n.next_attempt_at \
                                    ELSE u.retry_at END, \
             last_error = u.error \
         FROM UNNEST($1::bigint[], $2::text[], $3::boolean[], $4::boolean[], \
                     $5::timestamptz[], $6::text[]) \
              AS u(id, done, complete, give_up, retry_at, error) \
         WHERE n.id = u.id",
    )
    .bind(&ids)
    .bind(&done)
    .bind(&complete)
    .bind(&give_up)
    .bind(&retry_at)
    .bind(&errors)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes up to `limit` settled events older than `before`.
pub async fn purge_notifications(
    db: impl PgExecutor<'_>,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM notifications WHERE id IN ( \
             SELECT id FROM notifications \
             WHERE created_at < $1 AND (delivered_at IS NOT NULL OR failed_at IS NOT NULL) \
             ORDER BY created_at LIMIT $2)",
    )
    .bind(before)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Raises one `task.missed` event per stuck occurrence: due more than
/// `grace` ago, not leased, not held by its flow on purpose (the
/// `MissedOccurrences` rule of [`super::backlog`]), and not notified yet.
/// The mark and the event are one statement. Returns the events raised.
pub async fn raise_missed(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    grace: chrono::Duration,
) -> Result<u64> {
    let done = sqlx::query(
        "WITH stuck AS ( \
             SELECT id FROM tasks \
             WHERE enabled AND next_run_at < $1 - make_interval(secs => $2) \
               AND (lease_until IS NULL OR lease_until < $1) \
               AND missed_notified_for IS DISTINCT FROM next_run_at \
               AND NOT EXISTS (SELECT 1 FROM flow_state s WHERE s.key = tasks.flow \
                   AND ((s.breaker = 'open' AND s.probe_at > $1) OR s.not_before > $1)) \
             ORDER BY next_run_at LIMIT 1000 \
             FOR UPDATE SKIP LOCKED), \
         marked AS ( \
             UPDATE tasks t SET missed_notified_for = t.next_run_at \
             FROM stuck WHERE t.id = stuck.id \
             RETURNING t.id, t.name, t.url, t.notify_url, t.next_run_at) \
         INSERT INTO notifications (kind, task_id, notify_url, payload) \
         SELECT 'task.missed', m.id, m.notify_url, jsonb_build_object( \
             'type', 'task.missed', 'created_at', $1, \
             'task', jsonb_build_object('id', m.id, 'name', m.name, 'url', m.url), \
             'occurrence', m.next_run_at, \
             'overdue_secs', floor(EXTRACT(EPOCH FROM $1 - m.next_run_at))) \
         FROM marked m",
    )
    .bind(now)
    .bind(grace.num_milliseconds() as f64 / 1000.0)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Raises one `flow.opened` event per opening of a flow's circuit
/// breaker (seen in `flow_state`), marking the opening in the same
/// statement. Returns the events raised.
pub async fn raise_flow_opened(db: impl PgExecutor<'_>, now: DateTime<Utc>) -> Result<u64> {
    let done = sqlx::query(
        "WITH opened AS ( \
             SELECT key FROM flow_state \
             WHERE breaker = 'open' AND opened_at IS NOT NULL \
               AND opened_notified_at IS DISTINCT FROM opened_at \
             LIMIT 1000 FOR UPDATE SKIP LOCKED), \
         marked AS ( \
             UPDATE flow_state s SET opened_notified_at = s.opened_at \
             FROM opened WHERE s.key = opened.key \
             RETURNING s.key, s.opened_at, s.probe_at, s.failures, s.opened_total) \
         INSERT INTO notifications (kind, payload) \
         SELECT 'flow.opened', jsonb_build_object( \
             'type', 'flow.opened', 'created_at', $1, \
             'flow', jsonb_build_object('key', m.key, 'opened_at', m.opened_at, \
                 'next_probe_at', m.probe_at, 'failures', m.failures, \
                 'opened_total', m.opened_total)) \
         FROM marked m",
    )
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
