//! What a task is: its stored row, the input that creates or edits one, the
//! validation of that input, and the rule that picks its next occurrence.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::schedule::{parse_zone, Bounds, Next, Schedule, ScheduleError, Tz};

mod tags;
pub use tags::{validate_tag, validate_tags, MAX_TAGS, MAX_TAG_CHARS};

/// HTTP methods a task may use (mirrors the `tasks_method_known` CHECK).
pub const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
/// Bounds of `timeout_ms` (mirrors the `tasks_timeout_range` CHECK).
pub const TIMEOUT_MS_RANGE: (i32, i32) = (100, 900_000);
/// Bounds of `max_attempts`.
pub const ATTEMPTS_RANGE: (i32, i32) = (1, 20);
/// Bounds of `retry_backoff_ms`.
pub const BACKOFF_MS_RANGE: (i32, i32) = (100, 3_600_000);
/// Bounds of `jitter_secs`.
pub const JITTER_SECS_RANGE: (i32, i32) = (0, 900);
/// Bounds of `catch_up_max_age_secs`.
pub const CATCH_UP_AGE_RANGE: (i32, i32) = (0, 604_800);
/// Largest request body a task may carry (mirrors `tasks_body_size`).
pub const MAX_BODY_BYTES: usize = 65_536;
/// Longest task name, in characters (mirrors `tasks_name_length`).
pub const MAX_NAME_CHARS: usize = 200;
/// Longest schedule text, in characters (mirrors `tasks_schedule_length`).
pub const MAX_SCHEDULE_CHARS: usize = 200;
/// Longest target URL, as given and as normalised (mirrors `tasks_url_http`).
pub const MAX_URL_CHARS: usize = 2048;
/// Longest header name, in bytes.
pub const MAX_HEADER_NAME_BYTES: usize = 256;
/// Longest header value, in characters.
pub const MAX_HEADER_VALUE_CHARS: usize = 8192;
/// Headers Sundial sets itself; a task cannot override them.
pub const RESERVED_HEADERS: &[&str] = &[
    "idempotency-key",
    "sundial-signature",
    "sundial-trigger",
    "sundial-attempt",
    "sundial-scheduled-for",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
];

/// What to do with occurrences missed while nothing was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, Default)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum CatchUp {
    /// Fire the most overdue occurrence once, then continue from now.
    #[default]
    Skip,
    /// Fire every missed occurrence no older than `catch_up_max_age_secs`.
    All,
    /// Fire none of them: an occurrence later than the misfire grace is
    /// recorded as skipped.
    None,
}

/// Whether an occurrence may start while the previous one still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, Default)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Overlap {
    /// Dispatch every occurrence on time; runs may overlap.
    Allow,
    /// Hold the next occurrence until the previous run is recorded.
    #[default]
    Forbid,
    /// Like `forbid`, but an occurrence that comes due while the previous
    /// run is in flight is recorded as skipped (reason overlap) instead of
    /// waiting; manual triggers are refused while a run is in flight
    /// unless forced.
    Skip,
}

impl Overlap {
    /// One occurrence at a time (`forbid` and `skip`): the lease holds the
    /// row while its run is in flight.
    pub fn one_at_a_time(self) -> bool {
        self != Overlap::Allow
    }
}

/// A stored task (one row of `tasks`).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Task {
    pub id: i64,
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub method: String,
    pub url: String,
    #[schema(value_type = Object)]
    pub headers: sqlx::types::Json<serde_json::Value>,
    pub body: Option<String>,
    pub timeout_ms: i32,
    pub max_attempts: i32,
    pub retry_backoff_ms: i32,
    #[schema(value_type = String)]
    pub catch_up: CatchUp,
    pub catch_up_max_age_secs: i32,
    #[schema(value_type = String)]
    pub overlap: Overlap,
    pub jitter_secs: i32,
    pub enabled: bool,
    pub next_run_at: Option<DateTime<Utc>>,
    pub lease_until: Option<DateTime<Utc>>,
    pub version: i64,
    pub schedule_error: Option<String>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_status: Option<String>,
    pub last_error: Option<String>,
    pub consecutive_failures: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The flow key as set on the task (`None`: the URL's host and port).
    pub flow_key: Option<String>,
    /// The flow in force: `flow_key`, else the URL's `host:port`.
    pub flow: String,
    /// Labels to group tasks by; each one is a `Tag` metric dimension.
    pub tags: Vec<String>,
    /// Auto-pause, the pause in force, the failure incident, notify URL.
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub alerting: crate::pause::TaskAlerting,
    /// The active window and the exclusion.
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub window: crate::window::TaskWindow,
}

/// An input field that does not hold a usable value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    /// The request field, as named in the API (`schedule`, `url`, ...).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl InvalidField {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

impl From<ScheduleError> for InvalidField {
    fn from(err: ScheduleError) -> Self {
        InvalidField::new(err.field(), err.to_string())
    }
}

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

    /// Checks every field and normalises the method; returns the parsed
    /// schedule and zone. The target address guard (which resolves DNS) is
    /// separate: see [`crate::fire::guard`].
    pub fn validate(&mut self) -> Result<(Schedule, Tz), InvalidField> {
        let name = self.name.trim();
        if name.is_empty() || self.name.chars().count() > MAX_NAME_CHARS {
            return Err(InvalidField::new(
                "name",
                format!("must be 1 to {MAX_NAME_CHARS} characters"),
            ));
        }
        if name.chars().any(is_unsafe_char) {
            return Err(InvalidField::new(
                "name",
                "must not contain control characters",
            ));
        }
        self.name = name.to_string();
        // What is stored is what was parsed: the trimmed text.
        let schedule_text = self.schedule.trim();
        if schedule_text.chars().count() > MAX_SCHEDULE_CHARS {
            return Err(InvalidField::new(
                "schedule",
                format!("longer than {MAX_SCHEDULE_CHARS} characters"),
            ));
        }
        if schedule_text.chars().any(is_unsafe_char) {
            return Err(InvalidField::new(
                "schedule",
                "must not contain control characters",
            ));
        }
        self.schedule = schedule_text.to_string();
        let schedule = Schedule::parse(&self.schedule)?;
        if self.timezone.chars().any(is_unsafe_char) || self.timezone.len() > 64 {
            return Err(InvalidField::new(
                "timezone",
                "is not an IANA time zone name",
            ));
        }
        let zone = parse_zone(&self.timezone)?;
        self.timezone = self.timezone.trim().to_string();
        self.method = self.method.trim().to_ascii_uppercase();
        if !METHODS.contains(&self.method.as_str()) {
            let shown: String = self
                .method
                .chars()
                .filter(|c| !c.is_control())
                .take(20)
                .collect();
            return Err(InvalidField::new(
                "method",
                format!("`{shown}` is not one of {}", METHODS.join(", ")),
            ));
        }
        // Parse once: the canonical form is stored, checked by the target
        // guard, and fired, so no second parser reads the text differently.
        self.url = validate_url(&self.url)?.into();
        for (name, value) in &self.headers {
            validate_header(name, value)?;
        }
        if let Some(body) = &self.body {
            validate_body(body)?;
        }
        in_range("timeout_ms", self.timeout_ms, TIMEOUT_MS_RANGE)?;
        in_range("max_attempts", self.max_attempts, ATTEMPTS_RANGE)?;
        in_range("retry_backoff_ms", self.retry_backoff_ms, BACKOFF_MS_RANGE)?;
        in_range("jitter_secs", self.jitter_secs, JITTER_SECS_RANGE)?;
        in_range(
            "catch_up_max_age_secs",
            self.catch_up_max_age_secs,
            CATCH_UP_AGE_RANGE,
        )?;
        if let Some(key) = &self.flow_key {
            self.flow_key = Some(validate_flow_key("flow_key", key)?);
        }
        crate::pause::validate_alerting(self)?;
        self.tags = validate_tags(&self.tags)?;
        crate::window::validate_window(self)?;
        Ok((schedule, zone))
    }
}

/// Longest flow key.
pub const MAX_FLOW_KEY_CHARS: usize = 200;

/// A flow key as given (task field or admin route): trimmed, 1 to
/// [`MAX_FLOW_KEY_CHARS`] characters, no control characters.
pub fn validate_flow_key(field: &'static str, raw: &str) -> Result<String, InvalidField> {
    let key = raw.trim();
    if key.is_empty() || key.chars().count() > MAX_FLOW_KEY_CHARS {
        return Err(InvalidField::new(
            field,
            format!("must be 1 to {MAX_FLOW_KEY_CHARS} characters"),
        ));
    }
    if key.chars().any(is_unsafe_char) {
        return Err(InvalidField::new(
            field,
            "must not contain control characters",
        ));
    }
    if key.chars().all(|c| c == '.') {
        // `.` and `..` cannot travel as a path segment of /v1/flows/{key}.
        return Err(InvalidField::new(field, "must not consist of dots only"));
    }
    Ok(key.to_string())
}

/// Characters no stored text may hold: C0 and C1 controls and DEL (NUL
/// cannot be stored by Postgres at all; the others rewrite terminals and
/// logs), and the Unicode bidirectional overrides that make text display
/// in another order than it is read.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A body is text: no NUL or control characters but tab, CR and LF.
fn validate_body(body: &str) -> Result<(), InvalidField> {
    if body.len() > MAX_BODY_BYTES {
        return Err(InvalidField::new(
            "body",
            format!("larger than {MAX_BODY_BYTES} bytes"),
        ));
    }
    if let Some(at) = body
        .chars()
        .position(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(InvalidField::new(
            "body",
            format!(
                "holds a control character at character {at} (only tab, CR and LF are allowed)"
            ),
        ));
    }
    Ok(())
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

fn in_range(field: &'static str, value: i32, (min, max): (i32, i32)) -> Result<(), InvalidField> {
    if value < min || value > max {
        return Err(InvalidField::new(
            field,
            format!("{value} is out of range {min}..={max}"),
        ));
    }
    Ok(())
}

/// A target URL must be absolute http(s) with a host, spelled the way
/// every parser reads alike: `http://` or `https://` first, no backslashes,
/// no control or whitespace characters (leading and trailing whitespace
/// is trimmed). Returns the parsed URL, whose serialisation is what is stored.
///
/// The `url` crate follows the WHATWG rules, which accept `http:8.8.8.8`,
/// `http:/x`, `http:\\x\` and strip leading controls; other tools read
/// those differently, so they are refused rather than guessed at.
pub fn validate_url(raw: &str) -> Result<url::Url, InvalidField> {
    if raw.len() > MAX_URL_CHARS {
        return Err(InvalidField::new(
            "url",
            format!("longer than {MAX_URL_CHARS} characters"),
        ));
    }
    let text = raw.trim();
    if text.chars().any(|c| is_unsafe_char(c) || c.is_whitespace()) {
        return Err(InvalidField::new(
            "url",
            "must not contain control or whitespace characters (percent-encode them)",
        ));
    }
    if text.contains('\\') {
        return Err(InvalidField::new(
            "url",
            "must not contain backslashes (percent-encode them as %5C)",
        ));
    }
    let scheme_ok = text
        .get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
        || text
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("http://"));
    if !scheme_ok {
        let scheme = text.split(':').next().unwrap_or("");
        let reason = if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
        {
            "must start with `http://` or `https://`".to_string()
        } else {
            let shown: String = scheme.chars().take(20).collect();
            format!("scheme `{shown}` is not http or https")
        };
        return Err(InvalidField::new("url", reason));
    }
    let url = url::Url::parse(text)
        .map_err(|e| InvalidField::new("url", format!("not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(InvalidField::new(
            "url",
            format!("scheme `{}` is not http or https", url.scheme()),
        ));
    }
    if url.host().is_none() {
        return Err(InvalidField::new("url", "has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(InvalidField::new(
            "url",
            "must not carry credentials; use an Authorization header",
        ));
    }
    // Percent-encoding can make the canonical form longer than the input.
    if url.as_str().len() > MAX_URL_CHARS {
        return Err(InvalidField::new(
            "url",
            format!("longer than {MAX_URL_CHARS} characters once normalised"),
        ));
    }
    // What is stored is parsed again when fired: it must read the same.
    match url::Url::parse(url.as_str()) {
        Ok(again) if again == url => Ok(url),
        _ => Err(InvalidField::new(
            "url",
            "does not have a stable normalised form",
        )),
    }
}

fn validate_header(name: &str, value: &str) -> Result<(), InvalidField> {
    let valid_name = !name.is_empty()
        && name.len() <= MAX_HEADER_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid_name {
        return Err(InvalidField::new(
            "headers",
            format!("`{name}` is not a valid header name"),
        ));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(InvalidField::new(
            "headers",
            format!("`{name}` is set by Sundial and cannot be overridden"),
        ));
    }
    if value.chars().count() > MAX_HEADER_VALUE_CHARS
        || value.chars().any(|c| c != '\t' && is_unsafe_char(c))
    {
        return Err(InvalidField::new(
            "headers",
            format!("value of `{name}` is too long or holds control characters"),
        ));
    }
    Ok(())
}

/// Reads a stored `headers` column (which plain SQL may have filled with
/// anything JSON) as name → value strings.
pub fn header_map(
    headers: &sqlx::types::Json<serde_json::Value>,
) -> Result<BTreeMap<String, String>, InvalidField> {
    let serde_json::Value::Object(map) = &headers.0 else {
        return Err(InvalidField::new("headers", "must be a JSON object"));
    };
    let mut out = BTreeMap::new();
    for (name, value) in map {
        let value = match value {
            serde_json::Value::String(s) => s.clone(),
            other => {
                return Err(InvalidField::new(
                    "headers",
                    format!("value of `{name}` must be a string, found {other}"),
                ))
            }
        };
        validate_header(name, &value)?;
        out.insert(name.clone(), value);
    }
    Ok(out)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TaskSpec {
        TaskSpec::new("t", "rate(1 minute)", "https://example.com/hook")
    }

    #[test]
    fn defaults_validate() {
        let mut s = spec();
        s.method = "post".into();
        s.validate().unwrap();
        assert_eq!(s.method, "POST");
    }

    #[test]
    fn each_bad_field_is_named() {
        type Mutation = Box<dyn Fn(&mut TaskSpec)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("name", Box::new(|s| s.name = " ".into())),
            ("schedule", Box::new(|s| s.schedule = "every day".into())),
            ("timezone", Box::new(|s| s.timezone = "Mars/Base".into())),
            ("method", Box::new(|s| s.method = "FETCH".into())),
            ("url", Box::new(|s| s.url = "ftp://example.com".into())),
            ("url", Box::new(|s| s.url = "not a url".into())),
            ("url", Box::new(|s| s.url = "http://u:p@example.com".into())),
            ("timeout_ms", Box::new(|s| s.timeout_ms = 10)),
            ("timeout_ms", Box::new(|s| s.timeout_ms = 1_000_000)),
            ("max_attempts", Box::new(|s| s.max_attempts = 0)),
            ("jitter_secs", Box::new(|s| s.jitter_secs = -1)),
            (
                "headers",
                Box::new(|s| {
                    s.headers.insert("Bad Name".into(), "x".into());
                }),
            ),
            (
                "headers",
                Box::new(|s| {
                    s.headers.insert("Idempotency-Key".into(), "x".into());
                }),
            ),
            ("body", Box::new(|s| s.body = Some("x".repeat(70_000)))),
        ];
        for (field, mutate) in cases {
            let mut s = spec();
            mutate(&mut s);
            let err = s.validate().unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn ambiguous_url_spellings_are_refused() {
        for raw in [
            "http:8.8.8.8",
            "http:/8.8.8.8/",
            "http:\\\\8.8.8.8\\",
            "http://8.8.8.8\\x",
            "\u{1}http://8.8.8.8/",
            "http://8.8.8.8/\u{0}",
            "http://example.com/\u{1b}[2J",
            "http://exa mple.com/",
            "http://example.com/a\tb",
            "http://example.com/\u{202e}",
            "javascript:alert(1)",
            "//example.com/",
        ] {
            let err = validate_url(raw).unwrap_err();
            assert_eq!(err.field, "url", "{raw:?}");
        }
    }

    #[test]
    fn the_stored_url_is_the_canonical_one() {
        let mut s = spec();
        s.url = "  HTTPS://Example.COM:443/a/../b?q=é  ".into();
        s.validate().unwrap();
        assert_eq!(s.url, "https://example.com/b?q=%C3%A9");
        // Long once percent-encoded: refused, not cut.
        let long = format!("https://example.com/{}", "é".repeat(700));
        assert!(long.len() <= MAX_URL_CHARS);
        assert_eq!(validate_url(&long).unwrap_err().field, "url");
    }

    #[test]
    fn text_fields_refuse_control_characters() {
        type Mutation = Box<dyn Fn(&mut TaskSpec)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("name", Box::new(|s| s.name = "a\u{0}b".into())),
            ("name", Box::new(|s| s.name = "a\u{1b}[2Jb".into())),
            ("name", Box::new(|s| s.name = "a\u{9b}b".into())),
            (
                "schedule",
                Box::new(|s| s.schedule = "rate(1 minute)\u{0}".into()),
            ),
            ("timezone", Box::new(|s| s.timezone = "UTC\u{0}".into())),
            ("body", Box::new(|s| s.body = Some("a\u{0}b".into()))),
            ("body", Box::new(|s| s.body = Some("\u{1b}[2J".into()))),
            (
                "headers",
                Box::new(|s| {
                    s.headers.insert("X-A".into(), "a\u{0}".into());
                }),
            ),
            (
                "headers",
                Box::new(|s| {
                    s.headers.insert("X-A".into(), "a\u{85}".into());
                }),
            ),
        ];
        for (field, mutate) in cases {
            let mut s = spec();
            mutate(&mut s);
            let err = s.validate().unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
        let mut s = spec();
        s.body = Some("line 1\r\n\tline 2\n".into());
        s.headers.insert("X-A".into(), "a\tb".into());
        s.validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<TaskSpec>(
            r#"{"name":"a","schedule":"rate(1 minute)","url":"https://x.io","colour":"red"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn stored_headers_must_be_strings() {
        let bad = sqlx::types::Json(serde_json::json!({"X-Count": 3}));
        assert_eq!(header_map(&bad).unwrap_err().field, "headers");
        let good = sqlx::types::Json(serde_json::json!({"X-Env": "prod"}));
        assert_eq!(header_map(&good).unwrap()["X-Env"], "prod");
    }

    #[test]
    fn skip_catch_up_continues_from_now() {
        let t = Timing::parse("rate(1 minute)", "UTC", CatchUp::Skip, 3600).unwrap();
        let occ = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let now = occ + Duration::hours(3) + Duration::seconds(5);
        let next = t.next_after_run(occ, now).unwrap();
        assert!(next > now && next - now <= Duration::minutes(1));
    }

    #[test]
    fn all_catch_up_walks_missed_occurrences_within_max_age() {
        let t = Timing::parse("rate(1 minute)", "UTC", CatchUp::All, 600).unwrap();
        let occ = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        // Shortly after: the very next minute.
        let next = t.next_after_run(occ, occ + Duration::seconds(90)).unwrap();
        assert_eq!(next, occ + Duration::minutes(1));
        // After 3 hours: no older than 10 minutes.
        let now = occ + Duration::hours(3);
        let next = t.next_after_run(occ, now).unwrap();
        assert_eq!(next, now - Duration::minutes(10));
    }

    #[test]
    fn none_catch_up_skips_late_occurrences() {
        let t = Timing::parse("rate(1 minute)", "UTC", CatchUp::None, 0).unwrap();
        let occ = Utc::now();
        assert!(!t.should_skip(occ, occ + Duration::seconds(5)));
        assert!(t.should_skip(occ, occ + Duration::minutes(5)));
    }
}
