//! The OpenAPI document as served: utoipa's, generated from the handlers,
//! then made to say what the API really enforces, so that a client (or
//! schemathesis, see `scripts/api-fuzz.sh`) generating requests from it is
//! neither refused valid ones nor let through invalid ones.
//!
//! The constraints come from the constants the validation itself uses
//! ([`crate::task`], [`crate::store::flow_config`], [`super::tasks`],
//! [`super::flows`], [`super::status`]), so the two
//! cannot drift apart; the statuses from what the extractors, handlers and
//! [`super::serve`] can answer.

use serde_json::{json, Map, Value};

use crate::store::flow_config::{
    BREAKER_FAILURES_RANGE, BREAKER_SECS_RANGE, BURST_RANGE, DEFAULT_BURST, MAX_IN_FLIGHT_RANGE,
    RATE_PER_SEC_RANGE, RETRY_BUDGET_RANGE,
};
use crate::store::flow_views::MAX_FLOW_PAGE;
use crate::task::{
    ATTEMPTS_RANGE, BACKOFF_MS_RANGE, CATCH_UP_AGE_RANGE, JITTER_SECS_RANGE, MAX_BODY_BYTES,
    MAX_FLOW_KEY_CHARS, MAX_HEADER_NAME_BYTES, MAX_HEADER_VALUE_CHARS, MAX_NAME_CHARS,
    MAX_SCHEDULE_CHARS, MAX_TAGS, MAX_TAG_CHARS, MAX_URL_CHARS, METHODS, RESERVED_HEADERS,
    TIMEOUT_MS_RANGE,
};

/// A character stored text may hold: no C0/C1 control, DEL or bidi
/// override (see [`crate::task::is_unsafe_char`]).
const SAFE_CHAR: &str = r"[^\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]";
/// The same, and not whitespace.
const SAFE_VISIBLE_CHAR: &str = r"[^\s\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]";
/// Ends a pattern: `$` alone also matches before a final newline in some
/// regex dialects (Python's, which schemathesis uses).
const END: &str = r"(?!\n)$";

/// The schedules every client can rely on; the server accepts more (lists,
/// ranges and steps in cron fields, names, `cron(...)` and `at(...)`, see
/// docs/ARCHITECTURE.md), but each string matching this has a future
/// occurrence in every zone, so it is always accepted.
const SCHEDULE_PATTERN: &str = concat!(
    r"^(rate\([1-9][0-9]{0,3} (second|minute|hour|day)s?\)",
    r"|@(yearly|annually|monthly|weekly|daily|midnight|hourly)",
    r"|(\*|[1-5]?[0-9]) (\*|1?[0-9]|2[0-3]) (\*|[1-9]|1[0-9]|2[0-8]) (\*|[1-9]|1[0-2]) (\*|[0-6]))",
    r"(?!\n)$"
);

/// Target URLs every client can rely on: lower-case host names of letter-led
/// labels, an optional port, a path (normalisation adds `/` to a URL
/// without one, which could take it past the length limit), and path and
/// query characters that need no percent-encoding. The server accepts any `http(s)://` URL the `url`
/// crate parses (IP literals, IDN hosts, ...) that passes the target guard.
const URL_PATTERN: &str = concat!(
    r"^https?://[a-z][a-z0-9]{0,20}(\.[a-z][a-z0-9]{0,20}){0,4}(:[1-9][0-9]{0,3})?",
    r"/[A-Za-z0-9._~!$&()*+,;=:@/-]*(\?[A-Za-z0-9._~!$&()*+,;=:@/?-]*)?",
    r"(?!\n)$"
);

/// Adjusts utoipa's document (as JSON) to the rules the API enforces.
pub fn truthful(generated: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(generated).unwrap_or_else(|_| json!({}));
    tighten_schemas(&mut doc);
    tighten_parameters(&mut doc);
    document_statuses(&mut doc);
    doc
}

/// `schema` that also admits JSON `null` (fields of a patch, optional ones).
fn nullable(mut schema: Value) -> Value {
    if let Some(Value::String(t)) = schema.get("type").cloned() {
        schema["type"] = json!([t, "null"]);
    }
    if let Some(Value::Array(values)) = schema.get_mut("enum") {
        values.push(Value::Null);
    }
    schema
}

fn ranged((min, max): (i32, i32), description: &str) -> Value {
    json!({"type": "integer", "format": "int32", "minimum": min, "maximum": max,
           "description": description})
}

/// A flow key (task field, `{key}` of the flow routes, `after`): 1 to 200
/// characters with a visible one, no control characters; surrounding
/// whitespace is trimmed.
fn flow_key_schema(description: &str) -> Value {
    json!({
        "type": "string", "minLength": 1, "maxLength": MAX_FLOW_KEY_CHARS,
        "pattern": format!("^{SAFE_CHAR}*{SAFE_VISIBLE_CHAR}{SAFE_CHAR}*{END}"),
        "description": description
    })
}

const FLOW_KEY_FIELD: &str = "The flow this task's requests count against (limits, shared backoff, circuit breaker), 1 to 200 characters, no control characters; surrounding whitespace is trimmed. Default (absent or null): the URL's lower-cased `host:port`, the port made explicit.";

/// The schemas of the fields of a flow's limits (`PUT /v1/flows/{key}`).
fn flow_limit_fields() -> Map<String, Value> {
    let nullable_int = |(min, max): (i32, i32), description: &str| {
        json!({"type": ["integer", "null"], "format": "int32", "minimum": min, "maximum": max,
               "description": description})
    };
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
fn task_fields() -> Map<String, Value> {
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
fn tag_schema() -> Value {
    json!({
        "type": "string", "minLength": 1, "maxLength": MAX_TAG_CHARS,
        "pattern": format!("^[A-Za-z0-9_.:/=-]+{END}"),
    })
}

/// Replaces the property schemas of the request and answer components.
fn tighten_schemas(doc: &mut Value) {
    let fields = task_fields();
    let schemas = &mut doc["components"]["schemas"];
    for (name, value) in &fields {
        schemas["TaskSpec"]["properties"][name] = value.clone();
        // In a patch every field may be absent or null (= keep the value;
        // for `body`, null removes it).
        schemas["TaskPatch"]["properties"][name] = nullable(without_default(value.clone()));
    }
    let flow_key = flow_key_schema(FLOW_KEY_FIELD);
    schemas["TaskSpec"]["properties"]["flow_key"] = nullable(flow_key.clone());
    schemas["TaskPatch"]["properties"]["flow_key"] = nullable(flow_key);
    crate::pause::document_fields(schemas, &fields["url"]);
    crate::window::document_fields(schemas);
    for (name, value) in flow_limit_fields() {
        schemas["FlowLimits"]["properties"][name] = value;
    }
    schemas["FlowLimits"]["description"] = json!("The limits of a flow. They replace the flow's limits whole: a field left out (or null) goes back to its default (no rate limit, burst 1, `fire_latest`, the settings for the others).");
    schemas["TaskPatch"]["description"] = json!("A partial edit: any field of a TaskSpec, with the same rules; absent or null fields keep their value, except `\"body\": null`, which removes the body.");
    let preview = &mut schemas["PreviewRequest"]["properties"];
    preview["schedule"] = fields["schedule"].clone();
    preview["timezone"] = nullable(fields["timezone"].clone());
    preview["count"] = json!({
        "type": ["integer", "null"], "minimum": 1, "maximum": super::status::MAX_PREVIEW,
        "default": 10, "description": "How many occurrences, 1 to 100."
    });
    preview["from"] = json!({
        "type": ["string", "null"], "format": "date-time",
        "description": "Occurrences after this instant (RFC 3339; default now). Occurrences past 9999-12-31T23:59:59Z are not listed."
    });
    for (name, value) in crate::window::openapi_fields() {
        preview[name] = value;
    }
    // Answers: what the table's CHECK constraints guarantee.
    for component in ["Task", "TaskDetail"] {
        let Some(props) = schemas.get_mut(component).and_then(own_properties) else {
            continue;
        };
        {
            props["id"] = json!({"type": "integer", "format": "int64", "minimum": 1});
            props["method"] = json!({"type": "string", "enum": METHODS});
            props["catch_up"] = json!({"type": "string", "enum": ["skip", "all", "none"]});
            props["overlap"] = json!({"type": "string", "enum": ["allow", "forbid", "skip"]});
            props["flow"] = json!({"type": "string",
                "description": "The flow in force: `flow_key`, else the URL's `host:port`."});
        }
    }
}

/// A component's `properties` (of its inline `allOf` member if flattened).
fn own_properties(component: &mut Value) -> Option<&mut Value> {
    if component.get("properties").is_some() {
        return component.get_mut("properties");
    }
    component
        .get_mut("allOf")?
        .as_array_mut()?
        .iter_mut()
        .find_map(|member| member.get_mut("properties"))
}

fn without_default(mut schema: Value) -> Value {
    if let Some(map) = schema.as_object_mut() {
        map.remove("default");
    }
    schema
}

/// Every operation of the document, with its path.
fn operations(doc: &mut Value) -> Vec<(String, &mut Map<String, Value>)> {
    let mut out = Vec::new();
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            if let Some(item) = item.as_object_mut() {
                for (method, op) in item.iter_mut() {
                    if let Some(op) = op.as_object_mut() {
                        if op.contains_key("responses") {
                            out.push((format!("{method} {path}"), op));
                        }
                    }
                }
            }
        }
    }
    out
}

/// Range-checked path and query parameters, and the Idempotency-Key.
fn tighten_parameters(doc: &mut Value) {
    for (label, op) in operations(doc) {
        let flows = label.contains("/v1/flows");
        let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
            continue;
        };
        for param in params.iter_mut() {
            let name = param["name"].as_str().unwrap_or("").to_string();
            let schema = match (param["in"].as_str().unwrap_or(""), name.as_str()) {
                ("path", "id") => json!({"type": "integer", "format": "int64", "minimum": 1}),
                ("path", "key") => {
                    flow_key_schema("Flow key, percent-encoded (`api.internal%3A443`)")
                }
                ("query", "limit") if flows => json!({
                    "type": "integer", "format": "int64", "minimum": 1,
                    "maximum": MAX_FLOW_PAGE, "default": super::flows::DEFAULT_FLOW_PAGE
                }),
                ("query", "limit") => json!({
                    "type": "integer", "format": "int64", "minimum": 1,
                    "maximum": super::tasks::MAX_PAGE, "default": super::tasks::DEFAULT_PAGE
                }),
                ("query", "after") => flow_key_schema(
                    "List the flows after this key: `next_after` of the previous page",
                ),
                ("query", "cursor") => json!({
                    "type": "string", "pattern": format!("^[0-9]{{1,18}}{END}")
                }),
                ("query", "name") => task_fields()["name"].clone(),
                ("query", "tag") => tag_schema(),
                ("query", "before" | "from" | "to") => {
                    json!({"type": "string", "format": "date-time"})
                }
                ("header", "Idempotency-Key") => json!({
                    "type": "string", "pattern": format!("^[!-~]{{1,255}}{END}")
                }),
                _ => continue,
            };
            param["schema"] = schema;
        }
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

/// Adds every status an operation can answer that utoipa was not told of.
fn document_statuses(doc: &mut Value) {
    for (label, op) in operations(doc) {
        let secured = op
            .get("security")
            .and_then(Value::as_array)
            .is_some_and(|s| !s.is_empty());
        let has_body = op.contains_key("requestBody");
        let has_id = label.contains("{id}");
        let has_key = label.contains("{key}");
        let has_query = op
            .get("parameters")
            .and_then(Value::as_array)
            .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
        let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
            continue;
        };
        let mut add = |status: &str, description: &str| {
            responses
                .entry(status.to_string())
                .or_insert_with(|| error_response(description));
        };
        if secured {
            add("401", "Missing or wrong bearer token (`unauthorized`)");
        }
        if has_id {
            add(
                "400",
                "The `{id}` is not a task id, 1 to 2^63-1 (`invalid_field`, field `id`)",
            );
            add("404", "No such task (`task_not_found`)");
        }
        if has_key {
            add(
                "400",
                "The `{key}` is not a flow key (`invalid_field`, field `key`)",
            );
        }
        if has_query {
            add("400", "Invalid query parameter (`invalid_field` naming it)");
        }
        if has_body {
            add("400", "Invalid field or malformed JSON (`invalid_field` naming the field, `malformed_json`)");
            add(
                "415",
                "A Content-Type other than JSON (`unsupported_media_type`)",
            );
        }
        add(
            "408",
            "The request body did not arrive in time (`body_timeout`; servers with read limits, e.g. `sundial dev`)",
        );
        add(
            "413",
            "The request body is larger than 96 KiB (`payload_too_large`)",
        );
        add(
            "500",
            "A failure of Sundial itself, never of the input (`internal`; the cause is logged)",
        );
    }
}
