//! One page of the scan: claim due rows and pace their messages in one
//! transaction, send them, then release what the queue refused and move
//! `allow` rows past what it took.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{ending, window, ScanError, ScanOptions, ScanSummary, Window};
use crate::firetime;
use crate::message::DispatchMessage;
use crate::queue::{DispatchQueue, Outgoing};
use crate::store::{self, Advance, ClaimOptions, Claimed, StoreError};
use crate::task::Overlap;

/// Claims, paces and sends one page; true when another may follow (this
/// one was full and the queue took all of it).
pub(super) async fn scan_page(
    pool: &PgPool,
    queue: &dyn DispatchQueue,
    opts: &ScanOptions,
    claim: &ClaimOptions,
    summary: &mut ScanSummary,
) -> Result<bool, ScanError> {
    let now = Utc::now();
    // Claim and pace in one transaction: the flows' pacing slots move
    // only for occurrences that are really claimed.
    let mut tx = pool.begin().await.map_err(StoreError::from)?;
    let mut claimed = store::claim_due(&mut *tx, now, claim).await?;
    if claimed.is_empty() {
        tx.commit().await.map_err(StoreError::from)?;
        return Ok(false);
    }
    claimed.sort_by_key(|c| (c.occurrence, c.task_id));
    let late = crate::health::late_claims(&mut tx, &claimed, now, opts.missed_grace).await?;
    summary.pages += 1;
    summary.claimed += claimed.len() as u64;
    let page_was_full = claimed.len() as i64 >= opts.page_size;
    let horizon = now + claim.lookahead;
    let windows: Vec<Window> = claimed.iter().map(|c| window(c, now, horizon)).collect();
    // Delays count from now, after the claim query, so that messages are
    // not late by the time the claim took.
    let send_now = Utc::now();
    let (mut outgoing, owner) = messages_of(&claimed, &windows, send_now);
    summary.paced += pace(
        &mut tx,
        &claimed,
        &owner,
        &mut outgoing,
        send_now,
        opts.lease,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    let sent_ok = dispatch_page(pool, queue, &claimed, &windows, outgoing, &owner, summary).await?;
    // Late occurrences of a refused page were released: the backlog
    // counts them.
    if sent_ok {
        summary.late_claimed += late;
    }
    // A queue that refuses messages is down or throttling hard: stop
    // instead of claiming (and releasing) page after page.
    Ok(sent_ok && page_was_full)
}

/// Moves the fire times of a page's messages as their flows ask (pacing,
/// backoff; see [`store::pace_dispatch`]), in the claim transaction, and
/// keeps the leases of `forbid` rows until after their new fire time.
/// Returns how many messages it moved.
async fn pace(
    tx: &mut sqlx::PgConnection,
    claimed: &[Claimed],
    owner: &[usize],
    outgoing: &mut [Outgoing],
    send_now: DateTime<Utc>,
    lease: Duration,
) -> Result<u64, ScanError> {
    let wants: Vec<(&str, DateTime<Utc>)> = outgoing
        .iter()
        .zip(owner)
        .map(|(o, &i)| {
            let at = o.message.fire_at.unwrap_or(o.message.occurrence);
            (claimed[i].flow.as_str(), at)
        })
        .collect();
    let paced = store::pace_dispatch(tx, send_now, &wants).await?;
    let mut moved = 0;
    let mut leases = Vec::new();
    for ((out, &i), at) in outgoing.iter_mut().zip(owner).zip(paced) {
        let wanted = out.message.fire_at.unwrap_or(out.message.occurrence);
        if at <= wanted {
            continue;
        }
        moved += 1;
        out.message = out.message.held_until(at);
        out.delay = firetime::paced_delay(at, send_now);
        let c = &claimed[i];
        if c.overlap != Overlap::Allow {
            let keep = Duration::from_millis(c.timeout_ms.max(0) as u64) + lease;
            leases.push((
                c.task_id,
                at + chrono::Duration::from_std(keep).unwrap_or_default(),
            ));
        }
    }
    store::extend_leases(&mut *tx, &leases).await?;
    Ok(moved)
}

/// Sends one claimed page; returns false when the queue refused messages.
async fn dispatch_page(
    pool: &PgPool,
    queue: &dyn DispatchQueue,
    claimed: &[Claimed],
    windows: &[Window],
    outgoing: Vec<Outgoing>,
    owner: &[usize],
    summary: &mut ScanSummary,
) -> Result<bool, ScanError> {
    let report = queue.send(&outgoing).await;
    summary.send_calls += report.calls as u64;
    summary.failed += report.failed.len() as u64;
    summary.enqueued += (outgoing.len() - report.failed.len()) as u64;
    // The first refused occurrence of each row.
    let mut first_failed: HashMap<usize, DateTime<Utc>> = HashMap::new();
    for &k in &report.failed {
        if let (Some(&i), Some(out)) = (owner.get(k), outgoing.get(k)) {
            first_failed.entry(i).or_insert(out.message.occurrence);
        }
    }
    if !report.failed.is_empty() {
        tracing::warn!(
            failed = report.failed.len(),
            error = report.first_error.as_deref().unwrap_or("unknown"),
            "queue refused messages; releasing their leases"
        );
        if summary.first_error.is_none() {
            summary.first_error = report.first_error.clone();
        }
        // `forbid` rows: drop the lease, the next scan sends it again.
        let released: Vec<(i64, DateTime<Utc>)> = first_failed
            .iter()
            .filter(|(i, _)| windows[**i].next.is_none())
            .map(|(i, at)| (claimed[*i].task_id, *at))
            .collect();
        store::release(pool, &released).await?;
    }
    store::advance_dispatched(pool, &advances(claimed, windows, &first_failed)).await?;
    Ok(report.failed.is_empty())
}

/// One message per occurrence of each window, timed to fire at its
/// occurrence plus jitter; with the index of the claimed row it belongs to.
fn messages_of(
    claimed: &[Claimed],
    windows: &[Window],
    send_now: DateTime<Utc>,
) -> (Vec<Outgoing>, Vec<usize>) {
    let mut outgoing = Vec::new();
    let mut owner = Vec::new();
    for (i, (c, w)) in claimed.iter().zip(windows).enumerate() {
        for &occurrence in &w.occurrences {
            let at = firetime::fire_at(c.task_id, occurrence, c.jitter_secs);
            outgoing.push(Outgoing {
                message: DispatchMessage::new(c.task_id, occurrence, c.version).firing_at(at),
                delay: firetime::delay_until(at, send_now),
            });
            owner.push(i);
        }
    }
    (outgoing, owner)
}

/// `allow` rows move on past what is safely queued: to the first refused
/// occurrence if any (it goes out again next scan), else past the window.
fn advances(
    claimed: &[Claimed],
    windows: &[Window],
    first_failed: &HashMap<usize, DateTime<Utc>>,
) -> Vec<Advance> {
    claimed
        .iter()
        .zip(windows)
        .enumerate()
        .filter_map(|(i, (c, w))| {
            let next = w.next?;
            let failed = first_failed.get(&i).copied();
            let (next_run_at, lease_until) = match (failed, ending::hold_last(c, w)) {
                (None, Some((last, lease))) => (Some(last), Some(lease)),
                _ => (failed.or(next), None),
            };
            Some(Advance {
                task_id: c.task_id,
                occurrence: c.occurrence,
                version: c.version,
                next_run_at,
                lease_until,
            })
        })
        .collect()
}
