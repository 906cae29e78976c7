//! Idempotency keys of the admin API's create: what was asked under a key
//! and which task it created.

use sqlx::{Postgres, Transaction};

use super::Result;

/// Forgets keys older than `retention_hours`, so an old key is free again.
pub async fn forget_expired_keys(
    tx: &mut Transaction<'_, Postgres>,
    retention_hours: i32,
) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM admin_idempotency_keys \
         WHERE created_at < now() - make_interval(hours => $1)",
    )
    .bind(retention_hours)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Takes `key` for a request with this fingerprint; false when the key is
/// already taken. Waits while another transaction holds the same key.
pub async fn take_key(
    tx: &mut Transaction<'_, Postgres>,
    key: &str,
    fingerprint: &[u8],
) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO admin_idempotency_keys (key, request_hash) VALUES ($1, $2) \
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(fingerprint)
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The fingerprint a key was taken with, and the task it created (if the
/// task still exists).
pub async fn key_entry(
    tx: &mut Transaction<'_, Postgres>,
    key: &str,
) -> Result<(Vec<u8>, Option<i64>)> {
    Ok(
        sqlx::query_as("SELECT request_hash, task_id FROM admin_idempotency_keys WHERE key = $1")
            .bind(key)
            .fetch_one(&mut **tx)
            .await?,
    )
}

/// Records the task created under `key`.
pub async fn complete_key(
    tx: &mut Transaction<'_, Postgres>,
    key: &str,
    task_id: i64,
) -> Result<()> {
    sqlx::query("UPDATE admin_idempotency_keys SET task_id = $2 WHERE key = $1")
        .bind(key)
        .bind(task_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
