//! When a task's occurrences fall: the parsed schedule, zone and bounds
//! of a task ([`Timing`]), and the catch-up rules that pick the occurrence
//! after a finished one or skip a late one.

use chrono::{DateTime, Duration, Utc};

use super::{CatchUp, InvalidField, Task};
use crate::schedule::{parse_zone, Bounds, Next, Schedule, Tz};

/// How an occurrence is timed: the parsed schedule and zone of a task.
#[derive(Debug, Clone)]
pub struct Timing {
    pub schedule: Schedule,
    pub zone: Tz,
    pub catch_up: CatchUp,
    pub catch_up_max_age: Duration,
    /// The active window and the exclusion.
    pub bounds: Bounds,
}

impl Timing {
    /// Parses the timing fields of a stored task.
    pub fn of(task: &Task) -> Result<Self, InvalidField> {
        Ok(Self::parse(
            &task.schedule,
            &task.timezone,
            task.catch_up,
            task.catch_up_max_age_secs,
        )?
        .within(task.window.bounds()?))
    }

    /// The same timing, bounded by a window and exclusion.
    pub fn within(mut self, bounds: Bounds) -> Self {
        self.bounds = bounds;
        self
    }

    pub fn parse(
        schedule: &str,
        zone: &str,
        catch_up: CatchUp,
        catch_up_max_age_secs: i32,
    ) -> Result<Self, InvalidField> {
        Ok(Timing {
            schedule: Schedule::parse(schedule)?,
            zone: parse_zone(zone)?,
            catch_up,
            catch_up_max_age: Duration::seconds(i64::from(catch_up_max_age_secs.max(0))),
            bounds: Bounds::default(),
        })
    }

    /// The first occurrence of a new (or resumed, or re-timed) task.
    pub fn first_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_after(now).at()
    }

    /// The next occurrence strictly after `after` within the bounds, or
    /// why there is none.
    pub fn next_after(&self, after: DateTime<Utc>) -> Next {
        self.bounds.next_after(&self.schedule, after, self.zone)
    }

    /// The occurrence that follows `occurrence` once it is done, at `now`.
    ///
    /// `all` continues right after the occurrence (so each missed one
    /// fires), but never further back than `catch_up_max_age`; `skip` and
    /// `none` continue from now, so a 3-hour outage of a per-minute task
    /// costs one late firing, not 180.
    pub fn next_after_run(
        &self,
        occurrence: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match self.catch_up {
            CatchUp::All => {
                let oldest = now - self.catch_up_max_age;
                let from = occurrence.max(oldest - Duration::seconds(1));
                self.next_after(from).at()
            }
            CatchUp::Skip | CatchUp::None => self.next_after(occurrence.max(now)).at(),
        }
    }

    /// Should an occurrence this late be skipped rather than fired?
    pub fn should_skip(&self, occurrence: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.catch_up == CatchUp::None && now - occurrence > MISFIRE_GRACE
    }
}

/// How late an occurrence may still fire under catch-up `none`.
pub const MISFIRE_GRACE: Duration = Duration::seconds(60);
