//! The definition of a task as a user writes it ([`TaskSpec`], with its
//! defaults), and the one checked form the store accepts ([`ValidTask`]):
//! parse, don't validate again.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{header_map, CatchUp, InvalidField, Overlap, Task};
use crate::schedule::{Bounds, Next, Schedule, Tz};

/// The definition of a task as a user writes it (API body, CLI flags).
/// Every field but `name`, `schedule` and `url` has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub name: String,
    pub schedule: String,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default = "default_method")]
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: i32,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i32,
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: i32,
    #[serde(default)]
    #[schema(value_type = String)]
    pub catch_up: CatchUp,
    #[serde(default = "default_catch_up_max_age_secs")]
    pub catch_up_max_age_secs: i32,
    #[serde(default)]
    #[schema(value_type = String)]
    pub overlap: Overlap,
    #[serde(default)]
    pub jitter_secs: i32,
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// The flow this task's requests count against (limits, backoff,
    /// circuit breaker); default: the URL's `host:port`.
    #[serde(default)]
    pub flow_key: Option<String>,
    /// Pause the task after this many consecutive failed occurrences
    /// (1 to 1000); absent or null: never.
    #[serde(default)]
    pub pause_after_failures: Option<i32>,
    /// Where this task's notification events are POSTed, besides
    /// `SUNDIAL_NOTIFY_URL`.
    #[serde(default)]
    pub notify_url: Option<String>,
    /// Labels to group tasks by (at most 10; letters, digits and
    /// `_ . : / = -`, 1 to 64 characters each). Lag and failure metrics
    /// carry one `Tag` dimension per tag.
    #[serde(default)]
    pub tags: Vec<String>,
    /// No occurrence before this instant.
    #[serde(default)]
    pub start_at: Option<DateTime<Utc>>,
    /// No occurrence at or after this instant; once none is left, the task
    /// disables itself.
    #[serde(default)]
    pub end_at: Option<DateTime<Utc>>,
    /// A schedule expression whose matches are skipped.
    #[serde(default)]
    pub exclude: Option<String>,
}

fn default_timezone() -> String {
    "UTC".into()
}
fn default_method() -> String {
    "POST".into()
}
fn default_timeout_ms() -> i32 {
    30_000
}
fn default_max_attempts() -> i32 {
    3
}
fn default_retry_backoff_ms() -> i32 {
    2_000
}
fn default_catch_up_max_age_secs() -> i32 {
    3_600
}
fn default_enabled() -> bool {
    true
}

impl TaskSpec {
    /// A spec with defaults for everything optional.
    pub fn new(
        name: impl Into<String>,
        schedule: impl Into<String>,
        url: impl Into<String>,
    ) -> Self {
        TaskSpec {
            name: name.into(),
            schedule: schedule.into(),
            timezone: default_timezone(),
            method: default_method(),
            url: url.into(),
            headers: BTreeMap::new(),
            body: None,
            timeout_ms: default_timeout_ms(),
            max_attempts: default_max_attempts(),
            retry_backoff_ms: default_retry_backoff_ms(),
            catch_up: CatchUp::default(),
            catch_up_max_age_secs: default_catch_up_max_age_secs(),
            overlap: Overlap::default(),
            jitter_secs: 0,
            enabled: true,
            flow_key: None,
            pause_after_failures: None,
            notify_url: None,
            tags: Vec::new(),
            start_at: None,
            end_at: None,
            exclude: None,
        }
    }

    /// The spec of a stored task (to apply a patch to it).
    pub fn of(task: &Task) -> Result<Self, InvalidField> {
        Ok(TaskSpec {
            name: task.name.clone(),
            schedule: task.schedule.clone(),
            timezone: task.timezone.clone(),
            method: task.method.clone(),
            url: task.url.clone(),
            headers: header_map(&task.headers)?,
            body: task.body.clone(),
            timeout_ms: task.timeout_ms,
            max_attempts: task.max_attempts,
            retry_backoff_ms: task.retry_backoff_ms,
            catch_up: task.catch_up,
            catch_up_max_age_secs: task.catch_up_max_age_secs,
            overlap: task.overlap,
            jitter_secs: task.jitter_secs,
            enabled: task.enabled,
            flow_key: task.flow_key.clone(),
            pause_after_failures: task.alerting.pause_after_failures,
            notify_url: task.alerting.notify_url.clone(),
            tags: task.tags.clone(),
            start_at: task.window.start_at,
            end_at: task.window.end_at,
            exclude: task.window.exclude.clone(),
        })
    }

    /// Checks the spec once and returns it as the checked type the store
    /// takes: parse, don't validate again.
    pub fn into_valid(mut self) -> Result<ValidTask, InvalidField> {
        let (schedule, zone) = self.validate()?;
        let bounds = crate::window::validate_window(&mut self)?;
        Ok(ValidTask {
            spec: self,
            schedule,
            zone,
            bounds,
        })
    }
}

/// A task definition that passed [`TaskSpec::validate`], with its parsed
/// schedule and zone: the only input [`crate::store::create_task`] and
/// [`crate::store::update_task`] accept, made by [`TaskSpec::into_valid`].
#[derive(Debug, Clone)]
pub struct ValidTask {
    spec: TaskSpec,
    schedule: Schedule,
    zone: Tz,
    bounds: Bounds,
}

impl ValidTask {
    /// The checked, normalised definition.
    pub fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    /// The parsed schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The parsed zone.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first occurrence after `now` (window and exclusion applied), or
    /// the error of the field that leaves none.
    pub fn first_after(&self, now: DateTime<Utc>) -> Result<DateTime<Utc>, InvalidField> {
        match self.bounds.next_after(&self.schedule, now, self.zone) {
            Next::At(t) => Ok(t),
            Next::ScheduleEnded => Err(InvalidField::new(
                "schedule",
                "has no occurrence in the future",
            )),
            Next::WindowEnded => Err(InvalidField::new(
                "end_at",
                "leaves no occurrence of the schedule in the future",
            )),
            Next::AllExcluded => Err(InvalidField::new(
                "exclude",
                format!(
                    "skips the next {} occurrences of the schedule",
                    crate::schedule::bounds::MAX_EXCLUDED_IN_A_ROW
                ),
            )),
        }
    }
}
