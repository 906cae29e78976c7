//! Step 2b of the pipeline: claim a chunk's messages across processors
//! (`store::claim_fires`) before they fire, so a copy SQS handed to two
//! processors fires once (see docs/DESIGN.md, the dispatch steps).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::prepare::CLAIM_MARGIN;
use super::{Disposition, InFlight, ProcessReport, Processor, Settled};
use crate::fire::FireRequest;
use crate::store;

/// A copy handed back for another processor's claim waits at least this…
const MIN_HAND_BACK: Duration = Duration::from_secs(1);
/// …and at most this.
const MAX_HAND_BACK: Duration = Duration::from_secs(15 * 60);

impl Processor {
    /// Claims the chunk's messages in `fire_claims` (one statement), so a
    /// copy another processor is firing (SQS handed it to both) is handed
    /// back until that claim expires instead of firing twice. Copies within
    /// the chunk share a claim ([`Self::claim_in_flight`] keeps them
    /// apart). If the claims cannot be reached, everything fires.
    pub(super) async fn claim_across<Id>(
        &self,
        jobs: Vec<(InFlight<Id>, FireRequest)>,
        settled: &mut Vec<Settled<Id>>,
    ) -> Vec<(InFlight<Id>, FireRequest)> {
        if jobs.is_empty() {
            return jobs;
        }
        let (now, wall) = (Instant::now(), Utc::now());
        let mut wanted: HashMap<String, DateTime<Utc>> = HashMap::new();
        let keys: Vec<String> = jobs
            .iter()
            .map(|(job, request)| {
                let key = job.message.claim_key();
                let hold = job.hold_until.map(|t| t - now).unwrap_or_default();
                let lasts = hold + request.timeout + CLAIM_MARGIN;
                let expires = wall + chrono::Duration::from_std(lasts).unwrap_or_default();
                let e = wanted.entry(key.clone()).or_insert(expires);
                *e = (*e).max(expires);
                key
            })
            .collect();
        let claims: Vec<(String, DateTime<Utc>)> = wanted.into_iter().collect();
        let won: HashSet<String> = match store::claim_fires(&self.pool, &claims).await {
            Ok(won) => won.into_iter().collect(),
            Err(err) => {
                tracing::warn!(error = %err, "cannot claim messages across processors; firing them");
                return jobs;
            }
        };
        if won.len() == claims.len() {
            return jobs;
        }
        let lost: Vec<String> = claims
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !won.contains(k))
            .collect();
        let live: HashMap<String, DateTime<Utc>> = store::live_fire_claims(&self.pool, &lost)
            .await
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut out = Vec::with_capacity(jobs.len());
        for ((job, request), key) in jobs.into_iter().zip(keys) {
            if won.contains(&key) {
                out.push((job, request));
            } else {
                let until = live.get(&key).copied();
                settled.push(hand_back_copy(job, until, wall));
            }
        }
        out
    }
}

/// A copy of a message another processor has claimed: handed back until
/// the claim expires (`until`; at least [`MIN_HAND_BACK`]).
fn hand_back_copy<Id>(
    job: InFlight<Id>,
    until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Settled<Id> {
    let wait = until
        .and_then(|until| (until - now).to_std().ok())
        .unwrap_or_default()
        .clamp(MIN_HAND_BACK, MAX_HAND_BACK);
    copy_handed_back(
        job,
        wait,
        "another processor is firing a copy of this message; handing it back",
    )
}

/// A copy of a message being fired (here or by another processor), handed
/// back for `wait` and counted as a duplicate; `why` is logged in its span.
pub(super) fn copy_handed_back<Id>(job: InFlight<Id>, wait: Duration, why: &str) -> Settled<Id> {
    let _entered = job.span.enter();
    tracing::info!(wait_ms = wait.as_millis() as u64, "{why}");
    let report = ProcessReport {
        received: 1,
        duplicates: 1,
        ..Default::default()
    };
    Settled::new(job.id, Disposition::Retry { after: wait }, report)
}
