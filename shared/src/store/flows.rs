//! The shared state of flows (`flow_state`): the scanner's pacing slots,
//! the processors' periodic sync (backoff, breaker, retry budget) and the
//! probe of an open flow. See [`crate::flow`] for the rules.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

use super::{OnOpen, Result};
use crate::flow::learn;
use crate::flow::pace::{self, Rate};

/// What one processor saw of a flow since its last sync, with the
/// breaker parameters in force for it.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowDelta {
    pub key: String,
    pub requests: i64,
    pub retries: i64,
    pub successes: i64,
    pub failures: i64,
    /// Failures after the last success.
    pub trailing: i64,
    pub throttled: i64,
    /// Requests the target answered (not 429): what it admits, for the
    /// learned rate.
    pub admitted: i64,
    /// A backoff this processor set (429/503).
    pub not_before: Option<DateTime<Utc>>,
    pub threshold: i32,
    pub window_secs: f64,
    pub cooldown_secs: f64,
}

/// A flow's shared state and limits, as a processor pulls them.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct FlowRow {
    pub key: String,
    /// The row exists in `flow_state`.
    pub stored: bool,
    /// The breaker before this sync's update (`None` when not updated).
    pub was_breaker: Option<String>,
    pub breaker: String,
    pub failures: i32,
    pub not_before: Option<DateTime<Utc>>,
    pub opened_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub probe_at: Option<DateTime<Utc>>,
    pub window_start: Option<DateTime<Utc>>,
    pub window_requests: i64,
    pub window_retries: i64,
    /// The rate learned from 429s (used while `rate_per_sec` is unset).
    pub learned_rate: Option<f64>,
    pub rate_per_sec: Option<f64>,
    pub burst: Option<i32>,
    pub max_in_flight: Option<i32>,
    pub retry_budget: Option<f64>,
    pub breaker_failures: Option<i32>,
    pub breaker_window_secs: Option<i32>,
    pub breaker_cooldown_secs: Option<i32>,
    pub on_open: Option<OnOpen>,
}

/// The columns of [`FlowRow`] over `w` (the keys), `r` (state) and `f`
/// (limits).
macro_rules! flow_row_columns {
    () => {
        "w.key, (r.key IS NOT NULL) AS stored, r.was_breaker, \
         COALESCE(r.breaker, 'closed') AS breaker, COALESCE(r.failures, 0) AS failures, \
         r.not_before, r.opened_at, r.closed_at, r.probe_at, r.window_start, \
         COALESCE(r.window_requests, 0)::bigint AS window_requests, \
         COALESCE(r.window_retries, 0)::bigint AS window_retries, r.learned_rate, \
         f.rate_per_sec, f.burst, f.max_in_flight, f.retry_budget, f.breaker_failures, \
         f.breaker_window_secs, f.breaker_cooldown_secs, f.on_open"
    };
}

/// State and limits of the given flows, one row per key.
pub async fn load_flows(db: impl PgExecutor<'_>, keys: &[String]) -> Result<Vec<FlowRow>> {
    let sql = concat!(
        "SELECT ",
        flow_row_columns!(),
        " FROM UNNEST($1::text[]) AS w(key) \
         LEFT JOIN (SELECT s.*, NULL::text AS was_breaker FROM flow_state s) r ON r.key = w.key \
         LEFT JOIN flows f ON f.key = w.key"
    );
    Ok(sqlx::query_as::<_, FlowRow>(sql)
        .bind(keys)
        .fetch_all(db)
        .await?)
}

/// Creates the state rows of flows new to `flow_state`.
pub async fn ensure_flow_states(db: impl PgExecutor<'_>, keys: &[String]) -> Result<()> {
    sqlx::query(
        "INSERT INTO flow_state (key) SELECT UNNEST($1::text[]) ON CONFLICT (key) DO NOTHING",
    )
    .bind(keys)
    .execute(db)
    .await?;
    Ok(())
}

/// The statement of [`sync_flows`]: `d` the deltas, `cur` their rows
/// locked in key order, `calc`/`moves` the breaker's and the budget
/// window's moves, `learn`/`rated` the learned rate, `upd` the write, `r`
/// every watched row (written or not); then state and limits per watched key.
const SYNC_FLOWS_SQL: &str = concat!(
    "WITH d AS ( \
         SELECT * FROM UNNEST($2::text[], $3::bigint[], $4::bigint[], $5::bigint[], \
                              $6::bigint[], $7::bigint[], $8::bigint[], $9::timestamptz[], \
                              $10::int[], $11::float8[], $12::float8[], $15::bigint[]) \
             AS d(key, requests, retries, successes, failures, tail_failures, throttled, \
                  not_before, threshold, window_secs, cooldown_secs, admitted) \
     ), cur AS ( \
         SELECT s.* FROM flow_state s WHERE s.key IN (SELECT key FROM d) \
         ORDER BY s.key FOR UPDATE \
     ), calc AS ( \
         SELECT d.*, c.breaker AS was, c.failures_since AS since_old, \
                (c.window_start IS NULL \
                 OR c.window_start + make_interval(secs => $13) <= $1) AS roll, \
                (c.second_start IS NULL OR c.second_start < date_trunc('second', $1)) \
                    AS sec_roll, \
                CASE WHEN c.second_start = date_trunc('second', $1) - interval '1 second' \
                     THEN c.second_admitted ELSE 0 END AS last_second, \
                c.learned_rate AS learned_old, c.learned_at AS learned_at_old, \
                c.throttled_at AS throttled_at_old, \
                c.second_admitted AS sec_admitted_old, c.previous_admitted AS prev_old, \
                CASE WHEN d.successes > 0 THEN d.tail_failures \
                     WHEN c.failures_since IS NULL \
                          OR c.failures_since + make_interval(secs => d.window_secs) < $1 \
                     THEN d.failures \
                     ELSE c.failures + d.failures END AS fails \
         FROM d JOIN cur c ON c.key = d.key \
     ), moves AS ( \
         SELECT x.*, \
                (x.was = 'closed' AND x.fails >= x.threshold) AS to_open, \
                (x.was = 'open' AND x.successes > 0) AS to_close, \
                CASE WHEN x.sec_roll THEN x.admitted ELSE x.sec_admitted_old + x.admitted END \
                    AS sec_admitted, \
                CASE WHEN x.sec_roll THEN x.last_second ELSE x.prev_old END AS prev_admitted, \
                (x.learned_at_old IS NOT NULL \
                 AND x.learned_at_old + make_interval(secs => $17) > $1) AS episode \
         FROM calc x \
     ), learn AS ( \
         SELECT m.*, GREATEST(m.sec_admitted, m.prev_admitted) AS observed FROM moves m \
     ), rated AS ( \
         SELECT l.*, \
                CASE WHEN l.episode AND l.observed > 0 \
                         THEN GREATEST(l.learned_old, $16 * l.observed) \
                     WHEN l.throttled > 0 AND l.observed >= $22 \
                         THEN GREATEST(1.0, $16 * l.observed) \
                     WHEN l.throttled > 0 OR l.episode THEN l.learned_old \
                     WHEN l.throttled_at_old + make_interval(secs => $19) < $1 THEN NULL \
                     WHEN l.sec_roll AND l.throttled_at_old + make_interval(secs => $18) <= $1 \
                          AND l.last_second >= $20 * l.learned_old \
                         THEN l.learned_old + GREATEST(1.0, $21 * l.learned_old) \
                     ELSE l.learned_old END AS learned, \
                (l.throttled > 0 AND NOT l.episode AND l.observed >= $22) AS starts \
         FROM learn l \
     ), upd AS ( \
         UPDATE flow_state s SET \
             failures = LEAST(m.fails, 1000000000)::int, \
             failures_since = CASE WHEN m.fails = 0 THEN NULL \
                 WHEN m.successes > 0 OR m.since_old IS NULL \
                      OR m.since_old + make_interval(secs => m.window_secs) < $1 THEN $1 \
                 ELSE m.since_old END, \
             breaker = CASE WHEN m.to_open THEN 'open' WHEN m.to_close THEN 'closed' \
                            ELSE s.breaker END, \
             opened_at = CASE WHEN m.to_open THEN $1 ELSE s.opened_at END, \
             closed_at = CASE WHEN m.to_close THEN $1 ELSE s.closed_at END, \
             probe_at = CASE WHEN m.to_open THEN $1 + make_interval(secs => m.cooldown_secs) \
                             WHEN m.to_close THEN NULL ELSE s.probe_at END, \
             opened_total = s.opened_total + m.to_open::int, \
             not_before = GREATEST(s.not_before, m.not_before), \
             throttled_total = s.throttled_total + m.throttled, \
             window_start = CASE WHEN m.roll THEN $1 ELSE s.window_start END, \
             window_requests = CASE WHEN m.roll THEN m.requests \
                                    ELSE s.window_requests + m.requests END, \
             window_retries = CASE WHEN m.roll THEN m.retries \
                                   ELSE s.window_retries + m.retries END, \
             learned_rate = m.learned, \
             learned_at = CASE WHEN m.learned IS NULL THEN NULL \
                               WHEN m.starts THEN $1 ELSE s.learned_at END, \
             throttled_at = CASE WHEN m.throttled > 0 THEN $1 ELSE s.throttled_at END, \
             second_start = date_trunc('second', $1), \
             second_admitted = m.sec_admitted, \
             previous_admitted = m.prev_admitted, \
             updated_at = now() \
         FROM rated m WHERE s.key = m.key \
         RETURNING s.*, m.was AS was_breaker \
     ), r AS ( \
         SELECT * FROM upd \
         UNION ALL \
         SELECT s.*, NULL::text AS was_breaker FROM flow_state s \
         WHERE s.key = ANY($14) AND s.key NOT IN (SELECT key FROM d) \
     ) \
     SELECT ",
    flow_row_columns!(),
    " FROM UNNEST($14::text[]) AS w(key) \
     LEFT JOIN r ON r.key = w.key \
     LEFT JOIN flows f ON f.key = w.key"
);

/// A processor's sync, one statement: adds its deltas to the flows'
/// shared state and moves the breakers (a success closes an open flow;
/// `threshold` consecutive failures within the window open a closed one,
/// with the first probe a cooldown away), rolls the retry-budget window,
/// learns the rate of flows that answer 429 ([`crate::flow::learn`]),
/// and returns the state and limits of every `watched` flow. The rows of
/// the deltas' flows are locked in key order, so concurrent syncs of
/// several processors serialise instead of deadlocking.
pub async fn sync_flows(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    budget_window_secs: f64,
    deltas: &[FlowDelta],
    watched: &[String],
) -> Result<Vec<FlowRow>> {
    let col = |f: fn(&FlowDelta) -> i64| deltas.iter().map(f).collect::<Vec<i64>>();
    let keys: Vec<&str> = deltas.iter().map(|d| d.key.as_str()).collect();
    let not_before: Vec<Option<DateTime<Utc>>> = deltas.iter().map(|d| d.not_before).collect();
    let threshold: Vec<i32> = deltas.iter().map(|d| d.threshold).collect();
    let window: Vec<f64> = deltas.iter().map(|d| d.window_secs).collect();
    let cooldown: Vec<f64> = deltas.iter().map(|d| d.cooldown_secs).collect();
    Ok(sqlx::query_as::<_, FlowRow>(SYNC_FLOWS_SQL)
        .bind(now)
        .bind(&keys)
        .bind(col(|d| d.requests))
        .bind(col(|d| d.retries))
        .bind(col(|d| d.successes))
        .bind(col(|d| d.failures))
        .bind(col(|d| d.trailing))
        .bind(col(|d| d.throttled))
        .bind(&not_before)
        .bind(&threshold)
        .bind(&window)
        .bind(&cooldown)
        .bind(budget_window_secs)
        .bind(watched)
        .bind(col(|d| d.admitted))
        .bind(learn::SHARE)
        .bind(learn::EPISODE.as_secs_f64())
        .bind(learn::GROW_AFTER.as_secs_f64())
        .bind(learn::FORGET_AFTER.as_secs_f64())
        .bind(learn::DEMAND)
        .bind(learn::GROWTH)
        .bind(learn::MIN_ADMITTED)
        .fetch_all(db)
        .await?)
}

/// Takes an open flow's probe: moves `probe_at` a cooldown on if it is
/// due. True when this call took it (exactly one caller per cooldown).
pub async fn claim_probe(
    db: impl PgExecutor<'_>,
    key: &str,
    now: DateTime<Utc>,
    cooldown_secs: f64,
) -> Result<bool> {
    let taken: Option<(String,)> = sqlx::query_as(
        "UPDATE flow_state SET probe_at = $2 + make_interval(secs => $3), updated_at = now() \
         WHERE key = $1 AND breaker = 'open' AND (probe_at IS NULL OR probe_at <= $2) \
         RETURNING key",
    )
    .bind(key)
    .bind(now)
    .bind(cooldown_secs)
    .fetch_optional(db)
    .await?;
    Ok(taken.is_some())
}

/// Fire times for requests about to be dispatched, in the caller's
/// transaction: each goes out at its wanted instant, or later if its flow
/// backs off (`not_before`) or is rate-limited, by an operator or by a
/// learned rate (paced by [`pace::slot`] under the flow's row lock,
/// earliest wanted first). Returns one instant
/// per want, in order.
pub async fn pace_dispatch(
    tx: &mut PgConnection,
    now: DateTime<Utc>,
    wants: &[(&str, DateTime<Utc>)],
) -> Result<Vec<DateTime<Utc>>> {
    let unmoved = || wants.iter().map(|(_, at)| *at).collect();
    if wants.is_empty() {
        return Ok(unmoved());
    }
    let mut keys: Vec<String> = wants.iter().map(|(k, _)| k.to_string()).collect();
    keys.sort();
    keys.dedup();
    let rated = lock_rated(tx, &keys).await?;
    let backoff: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT key, not_before FROM flow_state WHERE key = ANY($1) AND not_before > $2",
    )
    .bind(&keys)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    if rated.is_empty() && backoff.is_empty() {
        return Ok(unmoved());
    }
    let floors: HashMap<&str, DateTime<Utc>> =
        backoff.iter().map(|(k, at)| (k.as_str(), *at)).collect();
    let mut slots: HashMap<&str, (Rate, Option<DateTime<Utc>>)> = rated
        .iter()
        .map(|(k, tat, per_sec, burst)| {
            let rate = Rate {
                per_sec: *per_sec,
                burst: (*burst).max(1) as u32,
            };
            (k.as_str(), (rate, *tat))
        })
        .collect();
    let out = assign_slots(wants, &floors, &mut slots);
    let (flows, tats): (Vec<&str>, Vec<Option<DateTime<Utc>>>) =
        slots.iter().map(|(k, (_, tat))| (*k, *tat)).unzip();
    if !flows.is_empty() {
        sqlx::query(
            "UPDATE flow_state s SET next_slot = u.tat, updated_at = now() \
             FROM UNNEST($1::text[], $2::timestamptz[]) AS u(key, tat) WHERE s.key = u.key",
        )
        .bind(&flows)
        .bind(&tats)
        .execute(&mut *tx)
        .await?;
    }
    Ok(out)
}

/// The pacing of `keys` that have a rate (an operator's or a learned one),
/// their `flow_state` rows locked in key order: key, TAT, rate, burst.
async fn lock_rated(
    tx: &mut PgConnection,
    keys: &[String],
) -> Result<Vec<(String, Option<DateTime<Utc>>, f64, i32)>> {
    // Rate-limited flows need a row to lock and hold the slot.
    sqlx::query(
        "INSERT INTO flow_state (key) \
         SELECT key FROM flows WHERE key = ANY($1) AND rate_per_sec IS NOT NULL \
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(keys)
    .execute(&mut *tx)
    .await?;
    Ok(sqlx::query_as(
        "SELECT s.key, s.next_slot, COALESCE(f.rate_per_sec, s.learned_rate), \
                CASE WHEN f.rate_per_sec IS NULL THEN 1 ELSE COALESCE(f.burst, 1) END \
         FROM flow_state s LEFT JOIN flows f ON f.key = s.key \
         WHERE s.key = ANY($1) AND COALESCE(f.rate_per_sec, s.learned_rate) > 0 \
         ORDER BY s.key FOR UPDATE OF s",
    )
    .bind(keys)
    .fetch_all(&mut *tx)
    .await?)
}

/// The instant each want goes out, in order: not before its flow's
/// backoff (`floors`), and on a slot of its flow's rate (`slots`, whose
/// TATs move), earliest wanted first.
fn assign_slots(
    wants: &[(&str, DateTime<Utc>)],
    floors: &HashMap<&str, DateTime<Utc>>,
    slots: &mut HashMap<&str, (Rate, Option<DateTime<Utc>>)>,
) -> Vec<DateTime<Utc>> {
    let mut out: Vec<DateTime<Utc>> = wants.iter().map(|(_, at)| *at).collect();
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_by_key(|&i| wants[i].1);
    for i in order {
        let (flow, wanted) = wants[i];
        let mut at = wanted;
        if let Some(floor) = floors.get(flow) {
            at = at.max(*floor);
        }
        if let Some((rate, tat)) = slots.get_mut(flow) {
            at = pace::slot(*rate, tat, at);
        }
        out[i] = at;
    }
    out
}

/// [`pace_dispatch`] in a transaction of its own (messages a processor
/// re-paces: late arrivals, retries, held messages).
pub async fn pace_dispatch_alone(
    pool: &sqlx::PgPool,
    now: DateTime<Utc>,
    wants: &[(&str, DateTime<Utc>)],
) -> Result<Vec<DateTime<Utc>>> {
    let mut tx = pool.begin().await?;
    let at = pace_dispatch(&mut tx, now, wants).await?;
    tx.commit().await?;
    Ok(at)
}

/// Keeps the leases of dispatched occurrences at least until `until`
/// (pacing moved their fire time past the lease the claim gave them).
pub async fn extend_leases(
    db: impl PgExecutor<'_>,
    leases: &[(i64, DateTime<Utc>)],
) -> Result<u64> {
    if leases.is_empty() {
        return Ok(0);
    }
    let (ids, untils): (Vec<i64>, Vec<DateTime<Utc>>) = leases.iter().copied().unzip();
    let done = sqlx::query(
        "UPDATE tasks t SET lease_until = GREATEST(t.lease_until, u.until) \
         FROM UNNEST($1::bigint[], $2::timestamptz[]) AS u(id, until) WHERE t.id = u.id",
    )
    .bind(&ids)
    .bind(&untils)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
