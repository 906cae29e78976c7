//! Step 5 of the pipeline: the batched write-back. Settled messages are
//! gathered for a moment, retries and put-backs are enqueued, all outcomes
//! of the flush are written in one statement (isolating rows Postgres
//! refuses), chained next occurrences are enqueued, and only then is each
//! message reported done.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use super::{Disposition, ProcessReport, Processor, Settled, FLUSH_EVERY, FLUSH_MAX};
use crate::firetime;
use crate::message::DispatchMessage;
use crate::queue::Outgoing;
use crate::store::{self, Outcome};

impl Processor {
    /// Collects settled messages and writes them in batches: retries are
    /// enqueued first, then all outcomes in one statement, then `done`.
    pub(super) async fn write_back<Id, F>(
        &self,
        mut settled: mpsc::UnboundedReceiver<Settled<Id>>,
        done: &mut F,
    ) -> ProcessReport
    where
        F: FnMut(Id, Disposition),
    {
        let mut report = ProcessReport::default();
        let mut buffer: Vec<Settled<Id>> = Vec::new();
        let mut open = true;
        while open {
            // Wait for the first of a flush, then gather for a moment.
            match settled.recv().await {
                Some(s) => buffer.push(s),
                None => open = false,
            }
            let gather_until = Instant::now() + FLUSH_EVERY;
            while open && buffer.len() < FLUSH_MAX {
                match tokio::time::timeout_at(gather_until, settled.recv()).await {
                    Ok(Some(s)) => buffer.push(s),
                    Ok(None) => open = false,
                    Err(_) => break,
                }
            }
            if !buffer.is_empty() {
                self.flush(std::mem::take(&mut buffer), &mut report, done)
                    .instrument(tracing::debug_span!("write_back"))
                    .await;
            }
        }
        report
    }

    async fn flush<Id, F>(
        &self,
        mut batch: Vec<Settled<Id>>,
        report: &mut ProcessReport,
        done: &mut F,
    ) where
        F: FnMut(Id, Disposition),
    {
        self.release_moved(&batch).await;
        self.send_retries(&mut batch).await;
        let outcomes: Vec<Outcome> = batch.iter().filter_map(|s| s.outcome.clone()).collect();
        // A poisoned outcome is stored as a failed run, or, if it cannot be
        // stored at all, dropped (the store logs it): its message is done
        // either way, since handing it back would poison the next flush.
        match store::record_outcomes_isolating(&self.pool, &outcomes).await {
            Ok(write) => {
                count_rewritten(&mut batch, &write.rewritten);
                if !write.recorded.notifications.is_empty() {
                    if let Some(notifier) = &self.notifier {
                        notifier.kick();
                    }
                }
                self.record_skips(&batch).await;
                self.enqueue_chained(&batch, &write.recorded, report).await;
            }
            Err(err) => {
                // The calls were made but cannot be recorded: hand the
                // messages back so their outcome is recorded on redelivery
                // (the target sees the same Idempotency-Key again).
                tracing::error!(error = %err, outcomes = outcomes.len(), "cannot write outcomes; handing the messages back");
                for s in &mut batch {
                    if s.outcome.is_some() {
                        s.disposition = Disposition::HAND_BACK;
                        s.report.write_failures = 1;
                    }
                }
            }
        }
        self.release_claims(&batch, |s| {
            !moved_unfired(s) && matches!(s.disposition, Disposition::Retry { .. })
        })
        .await;
        for s in batch {
            if let Some(message) = s.releases.as_ref().filter(|_| !moved_unfired(&s)) {
                self.in_flight.release(message);
            }
            report.merge(&s.report);
            done(s.id, s.disposition);
        }
    }

    /// What is sent again unfired (its flow held it) frees its claims,
    /// here and across processors, before the flush sends its next copy:
    /// that copy is the same attempt (`DispatchMessage::claim_key`) and
    /// may come back at once.
    async fn release_moved<Id>(&self, batch: &[Settled<Id>]) {
        for message in batch
            .iter()
            .filter(|s| moved_unfired(s))
            .filter_map(|s| s.releases.as_ref())
        {
            self.in_flight.release(message);
        }
        self.release_claims(batch, moved_unfired).await;
    }

    /// Messages of `batch` that took the firing path and `release` says
    /// are not handled (sent again unfired, or handed back as they are:
    /// the deadline came first, their outcome could not be written)
    /// release their claim in `fire_claims`, so their next copy fires at
    /// once. A failure is logged: those copies then wait out the claim.
    async fn release_claims<Id>(
        &self,
        batch: &[Settled<Id>],
        release: impl Fn(&Settled<Id>) -> bool,
    ) {
        let keys: Vec<String> = batch
            .iter()
            .filter(|s| release(s))
            .filter_map(|s| s.releases.as_ref().map(DispatchMessage::claim_key))
            .collect();
        if let Err(err) = store::release_fire_claims(&self.pool, &keys).await {
            tracing::warn!(error = %err, messages = keys.len(), "cannot release fire claims");
        }
    }

    /// Records the occurrences the flush's runs skipped (overlap `skip`).
    /// A failure only costs their ledger rows (they read as passed over):
    /// logged, never handed back.
    async fn record_skips<Id>(&self, batch: &[Settled<Id>]) {
        let skips: Vec<store::SkippedOccurrence> =
            batch.iter().flat_map(|s| s.skips.iter().cloned()).collect();
        if let Err(err) = store::record_skips(&self.pool, &skips, Utc::now()).await {
            tracing::warn!(error = %err, skips = skips.len(), "cannot record skipped occurrences");
        }
    }

    /// Retries (and put-backs) go first: an occurrence whose next message
    /// could not be queued is handed back whole instead (its lease is not
    /// extended).
    async fn send_retries<Id>(&self, batch: &mut [Settled<Id>]) {
        let retry_idx: Vec<usize> = (0..batch.len())
            .filter(|&i| batch[i].retry.is_some())
            .collect();
        if retry_idx.is_empty() {
            return;
        }
        let outgoing: Vec<Outgoing> = retry_idx
            .iter()
            .filter_map(|&i| batch[i].retry.clone())
            .collect();
        let sent = self.retries.send(&outgoing).await;
        if !sent.failed.is_empty() {
            tracing::warn!(
                failed = sent.failed.len(),
                error = sent.first_error.as_deref().unwrap_or("unknown"),
                "cannot enqueue retries; handing the messages back"
            );
        }
        for k in sent.failed {
            if let Some(&i) = retry_idx.get(k) {
                let s = &mut batch[i];
                s.disposition = Disposition::HAND_BACK;
                s.outcome = None;
                s.report.retried = 0;
                s.report.put_back = 0;
                s.report.write_failures = 1;
            }
        }
    }

    /// Chained occurrences of flows that pace or back off get their fire
    /// times the way the scanner gives them ([`store::pace_dispatch`], in
    /// one transaction with the lease extension); the others keep theirs.
    /// If pacing cannot be reached, they keep theirs too (the target's own
    /// 429s and the shared backoff still apply).
    async fn pace_chained(
        &self,
        chains: &[&super::Chain],
        now: DateTime<Utc>,
    ) -> Vec<crate::message::DispatchMessage> {
        let mut messages: Vec<_> = chains.iter().map(|c| c.message.clone()).collect();
        let needs = chains
            .iter()
            .any(|c| self.flows.paces_or_backs_off(&c.flow, now));
        if !needs {
            return messages;
        }
        let wants: Vec<(&str, DateTime<Utc>)> = chains
            .iter()
            .map(|c| {
                let at = c.message.fire_at.unwrap_or(c.message.occurrence);
                (c.flow.as_str(), at)
            })
            .collect();
        let paced = async {
            let mut tx = self.pool.begin().await?;
            let at = store::pace_dispatch(&mut tx, now, &wants).await?;
            let leases: Vec<(i64, DateTime<Utc>)> = chains
                .iter()
                .zip(&at)
                .zip(&wants)
                .filter(|((_, a), (_, w))| *a > w)
                .map(|((c, a), _)| (c.message.task_id, *a + c.keep))
                .collect();
            store::extend_leases(&mut *tx, &leases).await?;
            tx.commit().await?;
            Ok::<_, store::StoreError>(at)
        }
        .await;
        match paced {
            Ok(at) => {
                for (m, a) in messages.iter_mut().zip(at) {
                    if m.fire_at.is_some_and(|w| a > w) {
                        *m = m.held_until(a);
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot pace chained occurrences; sending them unpaced")
            }
        }
        messages
    }

    /// Enqueues the next occurrences the write-back leased. One the queue
    /// refuses is released at once, so the scanner dispatches it; if this
    /// process dies first, its lease lapses and the scanner does the same.
    async fn enqueue_chained<Id>(
        &self,
        batch: &[Settled<Id>],
        recorded: &store::Recorded,
        report: &mut ProcessReport,
    ) {
        if recorded.chained.is_empty() {
            return;
        }
        let leased: HashSet<i64> = recorded.chained.iter().copied().collect();
        let chains: Vec<&super::Chain> = batch
            .iter()
            .filter_map(|s| s.chain.as_ref())
            .filter(|c| leased.contains(&c.message.task_id))
            .collect();
        let now = Utc::now();
        let messages = self.pace_chained(&chains, now).await;
        let outgoing: Vec<Outgoing> = messages
            .into_iter()
            .map(|m| Outgoing {
                delay: firetime::delay_until(m.fire_at.unwrap_or(m.occurrence), now),
                message: m,
            })
            .collect();
        let sent = self.retries.send(&outgoing).await;
        report.chained += (outgoing.len() - sent.failed.len()) as u64;
        if sent.failed.is_empty() {
            return;
        }
        let refused: Vec<(i64, DateTime<Utc>)> = sent
            .failed
            .iter()
            .filter_map(|&k| outgoing.get(k))
            .map(|o| (o.message.task_id, o.message.occurrence))
            .collect();
        tracing::warn!(
            failed = refused.len(),
            error = sent.first_error.as_deref().unwrap_or("unknown"),
            "cannot enqueue next occurrences; releasing them to the scanner"
        );
        if let Err(err) = store::release(&self.pool, &refused).await {
            tracing::warn!(error = %err, "cannot release; the leases lapse and the scanner recovers them");
        }
    }
}

/// Taken for firing and sent again without a call (its flow held it): its
/// claims are freed before the flush sends its next copy, not after.
fn moved_unfired<Id>(s: &Settled<Id>) -> bool {
    s.releases.is_some() && s.report.fired == 0 && s.retry.is_some()
}

/// The outcomes Postgres refused (`rewritten`, indexes among the batch's
/// outcomes) were stored as failed runs: count them so.
fn count_rewritten<Id>(batch: &mut [Settled<Id>], rewritten: &[usize]) {
    let owners: Vec<usize> = (0..batch.len())
        .filter(|&i| batch[i].outcome.is_some())
        .collect();
    for &k in rewritten {
        if let Some(r) = owners.get(k).map(|&i| &mut batch[i].report) {
            r.failed += r.succeeded + r.timed_out + r.skipped;
            (r.succeeded, r.timed_out, r.skipped) = (0, 0, 0);
        }
    }
}
