//! `Idempotency-Key` for `POST /v1/tasks`: a client that retries a create
//! (timeout, dropped connection) gets the task of its first request back.
//!
//! The key is claimed in the transaction that creates the task, so two
//! concurrent requests with one key serialise on its primary key: the
//! second waits, then finds the first one's task. A failed create rolls
//! the claim back, so the retry is evaluated afresh.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use sqlx::{Postgres, Transaction};

use super::error::{AdminError, Result};
use crate::task::TaskSpec;

/// The request header.
pub const HEADER: &str = "idempotency-key";

/// How long a key is remembered.
pub const RETENTION_HOURS: i32 = 24;

/// The `Idempotency-Key` of a request, if it sent one.
pub fn key_from(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            AdminError::invalid(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )
        })?;
    Ok(Some(key.to_string()))
}

/// Fingerprint of a create request: the spec as parsed, so that spacing
/// and field order do not matter.
pub fn fingerprint(spec: &TaskSpec) -> Vec<u8> {
    let canonical = serde_json::to_vec(spec).unwrap_or_default();
    Sha256::digest(&canonical).to_vec()
}

/// What a key says about a create request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First use: create the task, then [`complete`].
    New,
    /// Used before with the same request, which created this task.
    Replay(i64),
}

/// Claims `key` for a request with `fingerprint`, inside the create's
/// transaction.
pub async fn claim(
    tx: &mut Transaction<'_, Postgres>,
    key: &str,
    fingerprint: &[u8],
) -> Result<Claim> {
    // Forget expired keys first, so an old key is free to use again.
    sqlx::query(
        "DELETE FROM admin_idempotency_keys \
         WHERE created_at < now() - make_interval(hours => $1)",
    )
    .bind(RETENTION_HOURS)
    .execute(&mut **tx)
    .await?;
    // Waits here while another transaction holds the same key.
    let inserted = sqlx::query(
        "INSERT INTO admin_idempotency_keys (key, request_hash) VALUES ($1, $2) \
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(fingerprint)
    .execute(&mut **tx)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::New);
    }
    let (hash, task_id): (Vec<u8>, Option<i64>) =
        sqlx::query_as("SELECT request_hash, task_id FROM admin_idempotency_keys WHERE key = $1")
            .bind(key)
            .fetch_one(&mut **tx)
            .await?;
    if hash != fingerprint {
        return Err(AdminError::IdempotencyKeyReused);
    }
    task_id
        .map(Claim::Replay)
        .ok_or(AdminError::IdempotentTaskGone)
}

/// Records the task created under a [`Claim::New`] key.
pub async fn complete(tx: &mut Transaction<'_, Postgres>, key: &str, task_id: i64) -> Result<()> {
    sqlx::query("UPDATE admin_idempotency_keys SET task_id = $2 WHERE key = $1")
        .bind(key)
        .bind(task_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
