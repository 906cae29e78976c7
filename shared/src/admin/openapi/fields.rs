//! The schemas of the fields the API takes, as tables built from the
//! constants the validation itself uses: a task definition's
//! ([`task_fields`]) and a flow's limits ([`flow_limit_fields`]), with the
//! shared pieces (ranges, flow keys, tags).

use serde_json::{json, Map, Value};

use crate::store::flow_config::{
    BREAKER_FAILURES_RANGE, BREAKER_SECS_RANGE, BURST_RANGE, DEFAULT_BURST, MAX_IN_FLIGHT_RANGE,
    RATE_PER_SEC_RANGE, RETRY_BUDGET_RANGE,
};
use crate::task::{
    ATTEMPTS_RANGE, BACKOFF_MS_RANGE, CATCH_UP_AGE_RANGE, JITTER_SECS_RANGE, MAX_BODY_BYTES,
    MAX_FLOW_KEY_CHARS, MAX_HEADER_NAME_BYTES, MAX_HEADER_VALUE_CHARS, MAX_NAME_CHARS,
    MAX_SCHEDULE_CHARS, MAX_TAGS, MAX_TAG_CHARS, MAX_URL_CHARS, METHODS, RESERVED_HEADERS,
    TIMEOUT_MS_RANGE,
};

use super::{END, SAFE_CHAR, SAFE_VISIBLE_CHAR, SCHEDULE_PATTERN, URL_PATTERN};

/// An int32 within `(min, max)`.
fn ranged((min, max): (i32, i32), description: &str) -> Value {
    json!({"type": "integer", "format": "int32", "minimum": min, "maximum": max,
           "description": description})
}

/// A flow key (task field, `{key}` of the flow routes, `after`): 1 to 200
/// characters with a visible one, no control characters; surrounding
/// whitespace is trimmed.
pub(super) fn flow_key_schema(description: &str) -> Value {
    json!({
        "type": "string", "minLength": 1, "maxLength": MAX_FLOW_KEY_CHARS,
        "pattern": format!("^{SAFE_CHAR}*{SAFE_VISIBLE_CHAR}{SAFE_CHAR}*{END}"),
        "description": description
    })
}

pub(super) const FLOW_KEY_FIELD: &str = "The flow this task's requests count against (limits, shared backoff, circuit breaker), 1 to 200 characters, no control characters; surrounding whitespace is trimmed. Default (absent or null): the URL's lower-cased `host:port`, the port made explicit.";

/// The schemas of the fields of a flow's limits (`PUT /v1/flows/{key}`).
pub(super) fn flow_limit_fields() -> Map<String, Value> {
    let mut fields = pacing_fields();
    fields.extend(breaker_fields());
    fields
}

/// A limit that may be null: an int32 within `(min, max)`.
fn nullable_int((min, max): (i32, i32), description: &str) -> Value {
    json!({"type": ["integer", "null"], "format": "int32", "minimum": min, "maximum": max,
           "description": description})
}

/// Pacing and concurrency: the rate, the burst, requests in flight, the
/// retry budget.
fn pacing_fields() -> Map<String, Value> {
    let mut fields = Map::new();
    let (above, max_rate) = RATE_PER_SEC_RANGE;
    fields.insert(
        "rate_per_sec".into(),
        json!({
            "type": ["number", "null"], "format": "double",
            "exclusiveMinimum": above, "maximum": max_rate,
            "description": "Requests per second at most, paced at dispatch across all processors. Null or absent: no rate limit."
        }),
    );
    fields.insert(
        "burst".into(),
        json!({
            "type": ["integer", "null"], "format": "int32",
            "minimum": BURST_RANGE.0, "maximum": BURST_RANGE.1, "default": DEFAULT_BURST,
            "description": "Requests that may go out back to back before pacing applies (null or absent: 1)."
        }),
    );
    fields.insert(
        "max_in_flight".into(),
        nullable_int(
            MAX_IN_FLIGHT_RANGE,
            "Requests in flight per processor at most (the cap of adaptive concurrency); null or absent: `SUNDIAL_PER_HOST_CONCURRENCY`.",
        ),
    );
    let (min_budget, max_budget) = RETRY_BUDGET_RANGE;
    fields.insert(
        "retry_budget".into(),
        json!({
            "type": ["number", "null"], "format": "double",
            "minimum": min_budget, "maximum": max_budget,
            "description": "Retries as a share of requests per 10-second window; null or absent: `SUNDIAL_RETRY_BUDGET`."
        }),
    );
    fields
}

/// The circuit breaker: when it opens, how often it probes, and what
/// becomes of the occurrences it holds.
fn breaker_fields() -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert(
        "breaker_failures".into(),
        nullable_int(
            BREAKER_FAILURES_RANGE,
            "Consecutive failures (connect errors, timeouts, 5xx) that open the breaker; null or absent: `SUNDIAL_BREAKER_FAILURES`.",
        ),
    );
    fields.insert(
        "breaker_window_secs".into(),
        nullable_int(
            BREAKER_SECS_RANGE,
            "Window the failures must fall in, in seconds; null or absent: `SUNDIAL_BREAKER_WINDOW_SECS`.",
        ),
    );
    fields.insert(
        "breaker_cooldown_secs".into(),
        nullable_int(
            BREAKER_SECS_RANGE,
            "Seconds between probes while the breaker is open; null or absent: `SUNDIAL_BREAKER_COOLDOWN_SECS`.",
        ),
    );
    fields.insert(
        "on_open".into(),
        json!({
            "type": "string", "enum": ["fire_latest", "skip"], "default": "fire_latest",
            "description": "Occurrences missed while the breaker is open: fired once when it closes (`fire_latest`) or recorded as skipped (`skip`)."
        }),
    );
    fields
}

fn zone_names() -> Vec<&'static str> {
    chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect()
}

/// Header names a task may not set, in the spellings a generator might
/// produce (the check itself ignores case).
fn reserved_header_spellings() -> Vec<String> {
    let mut out = Vec::new();
    for name in RESERVED_HEADERS {
        out.push(name.to_string());
        out.push(name.to_ascii_uppercase());
        let title: Vec<String> = name
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect();
        out.push(title.join("-"));
    }
    out
}

/// The schemas of the fields of a task definition (create and patch).
pub(super) fn task_fields() -> Map<String, Value> {
    let mut fields = schedule_fields();
    fields.extend(request_fields());
    fields.extend(policy_fields());
    fields
}

/// What a task is called and when it fires: name, schedule, zone.
fn schedule_fields() -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert(
        "name".into(),
        json!({
            "type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS,
            "pattern": format!("^{SAFE_CHAR}*{SAFE_VISIBLE_CHAR}{SAFE_CHAR}*{END}"),
            "description": "Unique name, 1 to 200 characters, no control characters; surrounding whitespace is trimmed."
        }),
    );
    fields.insert(
        "schedule".into(),
        json!({
            "type": "string", "minLength": 1, "maxLength": MAX_SCHEDULE_CHARS,
            "pattern": SCHEDULE_PATTERN,
            "description": "When to fire: 5- or 6-field cron, `cron(...)` (EventBridge), `rate(N unit)`, `at(ISO time)` or an `@daily`-style macro, up to 200 characters, with at least one occurrence in the future. The pattern is the portable core of that grammar; anything else is checked by the server (400 naming `schedule`)."
        }),
    );
    fields.insert(
        "timezone".into(),
        json!({
            "type": "string", "enum": zone_names(), "default": "UTC",
            "description": "IANA zone in which cron and `at` schedules are read."
        }),
    );
    fields
}

/// The request it makes: method, URL, headers, body, timeout.
fn request_fields() -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert(
        "method".into(),
        json!({"type": "string", "enum": METHODS, "default": "POST"}),
    );
    fields.insert(
        "url".into(),
        json!({
            "type": "string", "minLength": 1, "maxLength": MAX_URL_CHARS,
            "pattern": URL_PATTERN,
            "description": "Absolute `http://` or `https://` URL without credentials, no control characters, whitespace or backslashes, up to 2048 characters also once normalised. Stored and answered in its normalised form. The target must pass the address guard (no loopback, private or link-local addresses unless allow-listed): 400 naming `url` otherwise. The pattern is the portable core; the server accepts any URL meeting these rules."
        }),
    );
    fields.insert(
        "headers".into(),
        json!({
            "type": "object",
            "default": {},
            "propertyNames": {
                "type": "string", "minLength": 1, "maxLength": MAX_HEADER_NAME_BYTES,
                "pattern": format!("^[A-Za-z0-9!#$%&'*+.^_`|~-]+{END}"),
                "not": {"enum": reserved_header_spellings()}
            },
            "additionalProperties": {
                "type": "string", "maxLength": MAX_HEADER_VALUE_CHARS,
                "pattern": format!(r"^[^\u0000-\u0008\u000a-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*{END}")
            },
            "description": format!("Extra request headers: token names, values without control characters (tab allowed). {} are set by Sundial and refused, in any case.", RESERVED_HEADERS.join(", "))
        }),
    );
    fields.insert(
        "body".into(),
        json!({
            "type": ["string", "null"], "maxLength": MAX_BODY_BYTES,
            "pattern": format!(r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"),
            "description": "Request body as text, at most 65536 bytes of UTF-8 (the length limit here counts characters); no control characters but tab, CR and LF."
        }),
    );
    fields.insert(
        "timeout_ms".into(),
        ranged(
            TIMEOUT_MS_RANGE,
            "Per-attempt timeout in milliseconds (default 30000).",
        ),
    );
    fields
}

/// What becomes of its occurrences (attempts, backoff, catch-up, overlap,
/// jitter, enabled), and its tags.
fn policy_fields() -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert(
        "max_attempts".into(),
        ranged(
            ATTEMPTS_RANGE,
            "Attempts per occurrence, the first included (default 3).",
        ),
    );
    fields.insert(
        "retry_backoff_ms".into(),
        ranged(
            BACKOFF_MS_RANGE,
            "First retry delay in milliseconds; later ones double (default 2000).",
        ),
    );
    fields.insert(
        "catch_up".into(),
        json!({"type": "string", "enum": ["skip", "all", "none"], "default": "skip",
               "description": "What to do with occurrences missed while nothing ran."}),
    );
    fields.insert(
        "catch_up_max_age_secs".into(),
        ranged(
            CATCH_UP_AGE_RANGE,
            "Oldest missed occurrence `catch_up: all` still fires, in seconds (default 3600).",
        ),
    );
    fields.insert(
        "overlap".into(),
        json!({"type": "string", "enum": ["allow", "forbid", "skip"], "default": "forbid",
               "description": "Whether an occurrence may start while the previous one runs: `allow` (runs may overlap), `forbid` (the next occurrence waits for the previous run), `skip` (an occurrence that comes due while the previous run is in flight is recorded as skipped, reason overlap). Under `forbid` and `skip` a manual trigger while a run is in flight is refused unless `force` is given."}),
    );
    fields.insert(
        "jitter_secs".into(),
        ranged(
            JITTER_SECS_RANGE,
            "Fire up to this many seconds late, at random (default 0).",
        ),
    );
    fields.insert(
        "enabled".into(),
        json!({"type": "boolean", "default": true}),
    );
    fields.insert(
        "tags".into(),
        json!({
            "type": "array", "maxItems": MAX_TAGS, "default": [],
            "items": tag_schema(),
            "description": "Labels to group tasks by, at most 10 (duplicates are dropped). Lag and failure metrics carry one `Tag` dimension per tag; `GET /v1/tasks?tag=` lists a tag's tasks; `GET /v1/status` shows them beside the worst tasks."
        }),
    );
    fields
}

/// One tag: 1 to 64 ASCII letters, digits and `_ . : / = -`.
pub(super) fn tag_schema() -> Value {
    json!({
        "type": "string", "minLength": 1, "maxLength": MAX_TAG_CHARS,
        "pattern": format!("^[A-Za-z0-9_.:/=-]+{END}"),
    })
}
