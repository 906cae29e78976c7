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

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::firetime;
use crate::message::{BackfillRef, DispatchMessage};
use crate::queue::{DispatchQueue, Outgoing};
use crate::schedule::{Bounds, Schedule};
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
/// `from` on) that the task defines: within its active window and not
/// excluded (`bounds`), at most `limit`.
pub fn occurrences(
    schedule: &Schedule,
    zone: chrono_tz::Tz,
    bounds: &Bounds,
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
        if at >= from && bounds.in_window(at) && !bounds.excludes(at, zone) {
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
    bounds: &Bounds,
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
    // The cap counts the expression's occurrences, excluded ones too: it
    // bounds the work of walking the range, not only what fires.
    let unbounded = Bounds::default();
    let all = occurrences(
        schedule,
        zone,
        &unbounded,
        from,
        to,
        None,
        MAX_OCCURRENCES + 1,
    );
    if all.len() > MAX_OCCURRENCES {
        return Err(PlanError::TooMany {
            from: from.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            to: to.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        });
    }
    Ok(all
        .iter()
        .filter(|t| bounds.in_window(**t) && !bounds.excludes(**t, zone))
        .count())
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
        let Some(task) = ready_task(pool, &row, held).await? else {
            return Ok(round);
        };
        let Some(bounds) = window_of(pool, &row, &task, held).await? else {
            return Ok(round);
        };
        let chunk = occurrences(
            &timing.schedule,
            timing.zone,
            &bounds,
            row.range_from,
            row.range_to,
            cursor,
            CHUNK,
        );
        if chunk.is_empty() {
            record_finished(pool, &row, held, cursor).await?;
            round.finished = true;
            return Ok(round);
        }
        let sent = send_chunk(pool, queue, &row, &task, &chunk, held, started, budget).await?;
        let Some(progress) = sent else {
            return Ok(round);
        };
        round.dispatched += progress.dispatched as u64;
        round.skipped_existing += progress.skipped_existing as u64;
        let Some(next) = progress.lease_until else {
            return Ok(round);
        };
        held = next;
        cursor = Some(progress.cursor);
    }
}

/// The task's active window and exclusion; `None` (the backfill is
/// paused with the reason) when they cannot be read, which only plain SQL
/// can cause.
async fn window_of(
    pool: &sqlx::PgPool,
    row: &BackfillRow,
    task: &store::BackfillTask,
    held: DateTime<Utc>,
) -> Result<Option<Bounds>, StoreError> {
    match task.window.bounds() {
        Ok(bounds) => Ok(Some(bounds)),
        Err(err) => {
            let why = format!("the task's {err}");
            store::pause_backfill(pool, row.id, held, Some(&why)).await?;
            Ok(None)
        }
    }
}

/// Notes the whole range dispatched (the cursor where it ended) and drops
/// the lease.
async fn record_finished(
    pool: &sqlx::PgPool,
    row: &BackfillRow,
    held: DateTime<Utc>,
    cursor: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    let progress = Progress {
        cursor: cursor.unwrap_or(row.range_from),
        dispatched: 0,
        skipped_existing: 0,
        finished: true,
        lease_until: None,
        error: None,
    };
    store::record_progress(pool, row.id, held, &progress).await?;
    Ok(())
}

/// The task, if the backfill may go on now: it exists, is not paused, and
/// its flow is not booked more than [`AHEAD`]. Otherwise the round ends
/// (the lease is dropped, with the reason).
async fn ready_task(
    pool: &sqlx::PgPool,
    row: &BackfillRow,
    held: DateTime<Utc>,
) -> Result<Option<store::BackfillTask>, StoreError> {
    let Some(task) = store::backfill_task(pool, row.task_id).await? else {
        return Ok(None);
    };
    if !task.enabled {
        let why = "the task is paused; the backfill continues when it is resumed";
        store::pause_backfill(pool, row.id, held, Some(why)).await?;
        return Ok(None);
    }
    if let Some(booked) = store::flow_booked_until(pool, &task.flow).await? {
        if booked > Utc::now() + AHEAD {
            store::pause_backfill(pool, row.id, held, None).await?;
            return Ok(None);
        }
    }
    Ok(Some(task))
}

/// Sends one chunk and moves the cursor past what the queue took: to the
/// last occurrence of the chunk, or, when the queue refused a message, to
/// the one before it (what follows goes out again later). `None` when
/// nothing could move (the lease was lost, or the first message was
/// refused); the round then ends.
#[allow(clippy::too_many_arguments)]
async fn send_chunk(
    pool: &sqlx::PgPool,
    queue: &dyn DispatchQueue,
    row: &BackfillRow,
    task: &store::BackfillTask,
    chunk: &[DateTime<Utc>],
    held: DateTime<Utc>,
    started: Instant,
    budget: Duration,
) -> Result<Option<Progress>, StoreError> {
    let recorded: HashSet<DateTime<Utc>> = store::occurrences_with_runs(pool, row.task_id, chunk)
        .await?
        .into_iter()
        .collect();
    let passed_over = |o: &DateTime<Utc>| row.mode == BackfillMode::Missing && recorded.contains(o);
    let messages = messages_of(row, task, chunk, &recorded);
    let outgoing = pace(pool, &task.flow, messages).await?;
    let report = if outgoing.is_empty() {
        Default::default()
    } else {
        queue.send(&outgoing).await
    };
    let refused = report
        .failed
        .iter()
        .min()
        .and_then(|&i| outgoing.get(i).map(|o| (i, o.message.occurrence)));
    // Everything before the first refusal is on the queue or passed over.
    let (sent, done): (usize, Vec<&DateTime<Utc>>) = match refused {
        Some((i, at)) => (i, chunk.iter().filter(|&&o| o < at).collect()),
        None => (outgoing.len(), chunk.iter().collect()),
    };
    let error = refused.map(|_| {
        let why = report.first_error.as_deref().unwrap_or("no reason given");
        format!("the queue refused messages: {why}")
    });
    let Some(&&cursor) = done.last() else {
        store::pause_backfill(pool, row.id, held, error.as_deref()).await?;
        return Ok(None);
    };
    let keep = refused.is_none() && started.elapsed() < budget;
    let progress = Progress {
        cursor,
        dispatched: sent as i32,
        skipped_existing: done.iter().filter(|o| passed_over(o)).count() as i32,
        finished: false,
        lease_until: keep.then(|| store::lease_from(Utc::now(), LEASE)),
        error,
    };
    if !store::record_progress(pool, row.id, held, &progress).await? {
        tracing::warn!(
            backfill = row.id,
            "lost the backfill's lease; another dispatcher continues"
        );
        return Ok(None);
    }
    Ok(Some(progress))
}

/// The messages of a chunk: every occurrence in mode `all` (a recorded one
/// as a re-run), the ones without a run in mode `missing`.
fn messages_of(
    row: &BackfillRow,
    task: &store::BackfillTask,
    chunk: &[DateTime<Utc>],
    recorded: &HashSet<DateTime<Utc>>,
) -> Vec<DispatchMessage> {
    chunk
        .iter()
        .filter(|o| row.mode == BackfillMode::All || !recorded.contains(o))
        .map(|&occurrence| DispatchMessage {
            backfill: Some(BackfillRef {
                id: row.id,
                rerun: recorded.contains(&occurrence),
            }),
            ..DispatchMessage::new(row.task_id, occurrence, task.version)
        })
        .collect()
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
        let all = occurrences(&s, z, &Bounds::default(), from, to, None, 100);
        assert_eq!(all.len(), 6);
        assert_eq!(all[0], from);
        assert_eq!(all[5], t("2026-12-01T09:50:00Z"));
        let rest = occurrences(&s, z, &Bounds::default(), from, to, Some(all[2]), 100);
        assert_eq!(rest, all[3..]);
        assert_eq!(
            occurrences(&s, z, &Bounds::default(), from, to, None, 2),
            all[..2]
        );
        // A start between occurrences.
        let late = occurrences(
            &s,
            z,
            &Bounds::default(),
            t("2026-12-01T09:00:00.5Z"),
            to,
            None,
            100,
        );
        assert_eq!(late[0], t("2026-12-01T09:10:00Z"));
    }

    #[test]
    fn a_backfill_fires_only_what_the_window_and_exclusion_leave() {
        let s = Schedule::parse("0 * * * *").unwrap();
        let z = chrono_tz::UTC;
        // Saturday 2026-12-05 and Sunday 12-06 excluded; the window ends on
        // Monday 12-07 at 02:00.
        let bounds = Bounds {
            start_at: Some(t("2026-12-04T22:00:00Z")),
            end_at: Some(t("2026-12-07T02:00:00Z")),
            exclude: Some(Schedule::parse("cron(* * ? * SAT,SUN *)").unwrap()),
        };
        let (from, to) = (t("2026-12-04T20:00:00Z"), t("2026-12-07T06:00:00Z"));
        let fired = occurrences(&s, z, &bounds, from, to, None, 1000);
        assert_eq!(
            fired,
            vec![
                t("2026-12-04T22:00:00Z"),
                t("2026-12-04T23:00:00Z"),
                t("2026-12-07T00:00:00Z"),
                t("2026-12-07T01:00:00Z"),
            ]
        );
        let now = t("2026-12-08T00:00:00Z");
        assert_eq!(plan(&s, z, &bounds, from, to, now), Ok(4));
        // The cap counts the expression's occurrences, excluded ones too.
        let year = (t("2025-01-01T00:00:00Z"), t("2026-12-01T00:00:00Z"));
        assert!(matches!(
            plan(&s, z, &bounds, year.0, year.1, now),
            Err(PlanError::TooMany { .. })
        ));
    }

    #[test]
    fn plans_are_checked() {
        let s = Schedule::parse("rate(1 minute)").unwrap();
        let z = chrono_tz::UTC;
        let now = t("2026-12-01T12:00:00Z");
        let from = t("2026-12-01T09:00:00Z");
        assert_eq!(
            plan(&s, z, &Bounds::default(), from, from, now),
            Err(PlanError::Empty)
        );
        assert!(matches!(
            plan(
                &s,
                z,
                &Bounds::default(),
                from,
                now + chrono::Duration::seconds(1),
                now
            ),
            Err(PlanError::Future { .. })
        ));
        assert_eq!(
            plan(
                &s,
                z,
                &Bounds::default(),
                from,
                t("2026-12-01T10:00:00Z"),
                now
            ),
            Ok(60)
        );
        let every_second = Schedule::parse("rate(1 second)").unwrap();
        let err = plan(
            &every_second,
            z,
            &Bounds::default(),
            from,
            t("2026-12-01T11:46:41Z"),
            now,
        )
        .unwrap_err();
        assert!(err.to_string().contains("more than 10000"), "{err}");
        assert!(err.to_string().contains("2026-12-01T09:00:00Z"), "{err}");
        assert_eq!(
            plan(
                &every_second,
                z,
                &Bounds::default(),
                from,
                t("2026-12-01T11:46:40Z"),
                now
            ),
            Ok(10_000)
        );
    }
}
