//! Claims on the queue messages being fired, shared by every processor
//! (`process::in_flight` keeps the copies within one processor apart).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::Result;

/// Claims each `(key, expires_at)` that has no live claim (an expired one
/// is taken over); returns the keys this call won. Keys must be distinct.
pub async fn claim_fires(
    db: impl PgExecutor<'_>,
    claims: &[(String, DateTime<Utc>)],
) -> Result<Vec<String>> {
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<&str> = claims.iter().map(|(k, _)| k.as_str()).collect();
    let expires: Vec<DateTime<Utc>> = claims.iter().map(|(_, e)| *e).collect();
    Ok(sqlx::query_scalar(
        "INSERT INTO fire_claims (key, expires_at) \
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[]) \
         ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at \
           WHERE fire_claims.expires_at < now() \
         RETURNING key",
    )
    .bind(&keys)
    .bind(&expires)
    .fetch_all(db)
    .await?)
}

/// The live claims among `keys`, with when each expires.
pub async fn live_fire_claims(
    db: impl PgExecutor<'_>,
    keys: &[String],
) -> Result<Vec<(String, DateTime<Utc>)>> {
    Ok(sqlx::query_as(
        "SELECT key, expires_at FROM fire_claims \
         WHERE key = ANY($1::text[]) AND expires_at >= now()",
    )
    .bind(keys)
    .fetch_all(db)
    .await?)
}

/// Releases the claims on `keys` (their messages go back unfired, or
/// their outcome could not be written: the next delivery may fire).
pub async fn release_fire_claims(db: impl PgExecutor<'_>, keys: &[String]) -> Result<u64> {
    if keys.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query("DELETE FROM fire_claims WHERE key = ANY($1::text[])")
        .bind(keys)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// Forgets expired claims (each scanner tick); returns how many.
pub async fn forget_fire_claims(db: impl PgExecutor<'_>) -> Result<u64> {
    let done = sqlx::query("DELETE FROM fire_claims WHERE expires_at < now()")
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}
