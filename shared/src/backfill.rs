//! Backfill: fire the occurrences a schedule defined over a past range,
//! through the same queue, pacing and processor as scheduled ones.
//!
//! A request (`POST /v1/tasks/{id}/backfill`) is checked ([`plan`]: the
//! range is in the past, in order, and holds at most [`MAX_OCCURRENCES`]
//! occurrences) and stored as a `backfills` row with the schedule as it is
//! then. Dispatch ([`dispatch`]) then walks the range in chunks of
//! [`CHUNK`] occurrences, each in short statements of its own (never one
//! long transaction the scanner would wait on): it passes over what is
//! recorded (mode `missing`), asks the flow for pacing slots as the
//! scanner does ([`store::pace_dispatch_alone`]), sends the chunk, then
//! moves the row's cursor past it. A dispatcher holds the row by a lease;
//! the admin request dispatches for a few seconds, and each scanner tick
//! continues unfinished backfills ([`continue_backfills`]), so a crash
//! anywhere loses nothing: what was sent but not noted is sent again, and
//! the processor records each run once (the run key is `(task,
//! occurrence, rerun)`).
//!
//! A backfill paces itself behind the flow: while the flow's pacing is
//! booked more than [`AHEAD`] into the future, it waits for the next
//! round, so scheduled occurrences of the same flow keep their turn.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::firetime;
use crate::message::{BackfillRef, DispatchMessage};
use crate::queue::{DispatchQueue, Outgoing};
use crate::schedule::Schedule;
use crate::store::{self, BackfillMode, BackfillRow, Progress, StoreError};

/// Most occurrences one backfill may cover.
pub const MAX_OCCURRENCES: usize = 10_000;
/// Occurrences dispatched per step.
pub const CHUNK: usize = 100;
/// A backfill waits while its flow's pacing is booked further ahead.
pub const AHEAD: chrono::Duration = chrono::Duration::seconds(60);
/// How long a dispatcher holds a backfill between steps.
pub const LEASE: Duration = Duration::from_secs(30);

/// Why a backfill cannot be planned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// `from` is not before `to`.
    #[error("must be after `from`")]
    Empty,
    /// The range reaches into the future.
    #[error("must not be in the future (now is {now}): the schedule fires what is ahead")]
    Future {
        /// The clock reading the range was judged by.
        now: String,
    },
    /// Too many occurrences.
    #[error(
        "the range [{from}, {to}) holds more than {MAX_OCCURRENCES} occurrences of the \
         schedule; split it into ranges of at most {MAX_OCCURRENCES}"
    )]
    TooMany {
        /// The range's start as given.
        from: String,
        /// The range's end as given.
        to: String,
    },
}

/// The occurrences of `[from, to)` after `cursor` (exclusive; `None`: from
/// `from` on), at most `limit`.
pub fn occurrences(
    schedule: &Schedule,
    zone: chrono_tz::Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    cursor: Option<DateTime<Utc>>,
    limit: usize,
) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    // `next_after` is strictly after (whole seconds): a second before
    // `from` lets an occurrence at `from` itself in.
    let mut next = match cursor {
        Some(c) => schedule.next_after(c, zone),
        None => schedule.next_after(from - chrono::Duration::seconds(1), zone),
    };
    while let Some(at) = next {
        if at >= to || out.len() >= limit {
            break;
        }
        if at >= from {
            out.push(at);
        }
        next = schedule.next_after(at, zone);
    }
    out
}

/// Checks a range at `now` and counts its occurrences.
pub fn plan(
    schedule: &Schedule,
    zone: chrono_tz::Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<usize, PlanError> {
    if from >= to {
        return Err(PlanError::Empty);
    }
    if to > now {
        return Err(PlanError::Future {
            now: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
    }
    let n = occurrences(schedule, zone, from, to, None, MAX_OCCURRENCES + 1).len();
    if n > MAX_OCCURRENCES {
        return Err(PlanError::TooMany {
            from: from.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            to: to.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        });
    }
    Ok(n)
}

/// How a dispatch round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Round {
    /// Messages sent.
    pub dispatched: u64,
    /// Occurrences passed over (recorded already).
    pub skipped_existing: u64,
    /// The whole range is dispatched (for the scanner's round: of one of
    /// the backfills it continued).
    pub finished: bool,
}

/// Dispatches backfill `row` (whose lease, `row.lease_until`, this caller
/// holds) step by step until it is finished, the flow is booked
/// [`AHEAD`], the queue refuses, or `budget` is spent. The lease is
/// dropped at the end, so the next scanner tick continues what is left.
pub async fn dispatch(
    pool: &sqlx::PgPool,
    queue: &dyn DispatchQueue,
    row: BackfillRow,
    budget: Duration,
) -> Result<Round, StoreError> {
    let started = Instant::now();
    let mut round = Round::default();
    let Some(mut held) = row.lease_until else {
        return Ok(round);
    };
    let timing = crate::task::Timing::parse(&row.schedule, &row.timezone, Default::default(), 0);
    let Ok(timing) = timing else {
        // Checked when the backfill was asked for; only SQL can break it.
        store::pause_backfill(pool, row.id, held, Some("the schedule cannot be read")).await?;
        return Ok(round);
    };
    let mut cursor = row.cursor;
    loop {
        let Some(task) = store::backfill_task(pool, row.task_id).await? else {
            return Ok(round);
        };
        if !task.enabled {
            let why = "the task is paused; the backfill continues when it is resumed";
            store::pause_backfill(pool, row.id, held, Some(why)).await?;
            return Ok(round);
        }
        let now = Utc::now();
        if let Some(booked) = store::flow_booked_until(pool, &task.flow).await? {
            if booked > now + AHEAD {
                store::pause_backfill(pool, row.id, held, None).await?;
                return Ok(round);
            }
        }
        let chunk = occurrences(
            &timing.schedule,
            timing.zone,
            row.range_from,
            row.range_to,
            cursor,
            CHUNK,
        );
        let Some(&last) = chunk.last() else {
            let progress = Progress {
                cursor: cursor.unwrap_or(row.range_from),
                dispatched: 0,
                skipped_existing: 0,
                finished: true,
                lease_until: None,
                error: None,
            };
            store::record_progress(pool, row.id, held, &progress).await?;
            round.finished = true;
            return Ok(round);
        };
        let recorded: std::collections::HashSet<DateTime<Utc>> =
            store::occurrences_with_runs(pool, row.task_id, &chunk)
                .await?
                .into_iter()
                .collect();
        let mut sending = Vec::with_capacity(chunk.len());
        for &occurrence in &chunk {
            let has_run = recorded.contains(&occurrence);
            if has_run && row.mode == BackfillMode::Missing {
                continue;
            }
            let message = DispatchMessage {
                backfill: Some(BackfillRef {
                    id: row.id,
                    rerun: has_run,
                }),
                ..DispatchMessage::new(row.task_id, occurrence, task.version)
            };
            sending.push(message);
        }
        let skipped = (chunk.len() - sending.len()) as i32;
        let outgoing = pace(pool, &task.flow, sending).await?;
        let report = queue.send(&outgoing).await;
        // What reached the queue, up to the first refusal: the cursor moves
        // to the occurrence before it (what follows is sent again later).
        let first_failed = report.failed.iter().min().copied();
        let sent_upto = first_failed.unwrap_or(outgoing.len());
        let (new_cursor, finished) = match first_failed.and_then(|i| outgoing.get(i)) {
            Some(refused) => (
                chunk
                    .iter()
                    .rev()
                    .find(|&&o| o < refused.message.occurrence)
                    .copied()
                    .or(cursor),
                false,
            ),
            None => (Some(last), false),
        };
        let skipped_before = match first_failed.and_then(|i| outgoing.get(i)) {
            Some(refused) => chunk
                .iter()
                .filter(|&&o| o < refused.message.occurrence && recorded.contains(&o))
                .filter(|_| row.mode == BackfillMode::Missing)
                .count() as i32,
            None => skipped,
        };
        let next_lease = store::lease_from(Utc::now(), LEASE);
        let keep = first_failed.is_none() && started.elapsed() < budget;
        let progress = Progress {
            cursor: new_cursor.unwrap_or(row.range_from),
            dispatched: sent_upto as i32,
            skipped_existing: skipped_before,
            finished,
            lease_until: keep.then_some(next_lease),
            error: report
                .first_error
                .clone()
                .filter(|_| first_failed.is_some())
                .map(|e| format!("the queue refused messages: {e}")),
        };
        if new_cursor.is_none() {
            // Nothing before the refusal: leave the cursor where it was.
            store::pause_backfill(pool, row.id, held, progress.error.as_deref()).await?;
            return Ok(round);
        }
        if !store::record_progress(pool, row.id, held, &progress).await? {
            tracing::warn!(
                backfill = row.id,
                "lost the backfill's lease; another dispatcher continues"
            );
            return Ok(round);
        }
        round.dispatched += sent_upto as u64;
        round.skipped_existing += skipped_before as u64;
        if !keep {
            return Ok(round);
        }
        held = next_lease;
        cursor = new_cursor;
    }
}

/// Times each message as the scanner would: now, or the slot the flow's
/// pacing (and backoff) gives it.
async fn pace(
    pool: &sqlx::PgPool,
    flow: &str,
    messages: Vec<DispatchMessage>,
) -> Result<Vec<Outgoing>, StoreError> {
    let now = Utc::now();
    let wants: Vec<(&str, DateTime<Utc>)> = messages.iter().map(|_| (flow, now)).collect();
    let slots = store::pace_dispatch_alone(pool, now, &wants).await?;
    Ok(messages
        .into_iter()
        .zip(slots)
        .map(|(message, at)| {
            let message = message.firing_at(now);
            if at > now {
                Outgoing {
                    message: message.held_until(at),
                    delay: firetime::paced_delay(at, now),
                }
            } else {
                Outgoing {
                    message,
                    delay: Duration::ZERO,
                }
            }
        })
        .collect())
}

/// Unfinished backfills the scanner continues per tick at most.
pub const PER_TICK: i64 = 8;

/// The scanner's round: continues unfinished backfills nobody holds,
/// within `budget`. Errors are logged and left to the next tick.
pub async fn continue_backfills(
    pool: &sqlx::PgPool,
    queue: &dyn DispatchQueue,
    budget: Duration,
) -> Round {
    let started = Instant::now();
    let mut total = Round::default();
    let ids = match store::backfills_to_continue(pool, Utc::now(), PER_TICK).await {
        Ok(ids) => ids,
        Err(err) => {
            tracing::warn!(error = %err, "cannot look for unfinished backfills; trying next tick");
            return total;
        }
    };
    for id in ids {
        let left = budget.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        let now = Utc::now();
        let leased = store::lease_backfill(pool, id, now, store::lease_from(now, LEASE)).await;
        let row = match leased {
            Ok(Some(row)) => row,
            Ok(None) => continue,
            Err(err) => {
                tracing::warn!(backfill = id, error = %err, "cannot lease the backfill");
                continue;
            }
        };
        match dispatch(pool, queue, row, left).await {
            Ok(round) => {
                total.dispatched += round.dispatched;
                total.skipped_existing += round.skipped_existing;
                total.finished |= round.finished;
                if round.dispatched > 0 || round.finished {
                    tracing::info!(
                        backfill = id,
                        dispatched = round.dispatched,
                        skipped_existing = round.skipped_existing,
                        finished = round.finished,
                        "backfill continued"
                    );
                }
            }
            Err(err) => tracing::warn!(backfill = id, error = %err, "backfill step failed"),
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn occurrences_are_half_open_and_resume_after_the_cursor() {
        let s = Schedule::parse("*/10 * * * *").unwrap();
        let z = chrono_tz::UTC;
        let (from, to) = (t("2026-12-01T09:00:00Z"), t("2026-12-01T10:00:00Z"));
        let all = occurrences(&s, z, from, to, None, 100);
        assert_eq!(all.len(), 6);
        assert_eq!(all[0], from);
        assert_eq!(all[5], t("2026-12-01T09:50:00Z"));
        let rest = occurrences(&s, z, from, to, Some(all[2]), 100);
        assert_eq!(rest, all[3..]);
        assert_eq!(occurrences(&s, z, from, to, None, 2), all[..2]);
        // A start between occurrences.
        let late = occurrences(&s, z, t("2026-12-01T09:00:00.5Z"), to, None, 100);
        assert_eq!(late[0], t("2026-12-01T09:10:00Z"));
    }

    #[test]
    fn plans_are_checked() {
        let s = Schedule::parse("rate(1 minute)").unwrap();
        let z = chrono_tz::UTC;
        let now = t("2026-12-01T12:00:00Z");
        let from = t("2026-12-01T09:00:00Z");
        assert_eq!(plan(&s, z, from, from, now), Err(PlanError::Empty));
        assert!(matches!(
            plan(&s, z, from, now + chrono::Duration::seconds(1), now),
            Err(PlanError::Future { .. })
        ));
        assert_eq!(plan(&s, z, from, t("2026-12-01T10:00:00Z"), now), Ok(60));
        let every_second = Schedule::parse("rate(1 second)").unwrap();
        let err = plan(&every_second, z, from, t("2026-12-01T11:46:41Z"), now).unwrap_err();
        assert!(err.to_string().contains("more than 10000"), "{err}");
        assert!(err.to_string().contains("2026-12-01T09:00:00Z"), "{err}");
        assert_eq!(
            plan(&every_second, z, from, t("2026-12-01T11:46:40Z"), now),
            Ok(10_000)
        );
    }
}
