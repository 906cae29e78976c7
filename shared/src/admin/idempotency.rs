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
use crate::store;
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
    store::forget_expired_keys(tx, RETENTION_HOURS).await?;
    if store::take_key(tx, key, fingerprint).await? {
        return Ok(Claim::New);
    }
    let (hash, task_id) = store::key_entry(tx, key).await?;
    if hash != fingerprint {
        return Err(AdminError::IdempotencyKeyReused);
    }
    task_id
        .map(Claim::Replay)
        .ok_or(AdminError::IdempotentTaskGone)
}

/// Records the task created under a [`Claim::New`] key.
pub async fn complete(tx: &mut Transaction<'_, Postgres>, key: &str, task_id: i64) -> Result<()> {
    Ok(store::complete_key(tx, key, task_id).await?)
}
