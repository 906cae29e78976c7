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
//!
//! The field tables are in `fields`, the added statuses in `statuses`.

use serde_json::{json, Map, Value};

use crate::store::flow_views::MAX_FLOW_PAGE;
use crate::task::METHODS;

mod fields;
mod statuses;

use fields::{flow_key_schema, flow_limit_fields, tag_schema, task_fields, FLOW_KEY_FIELD};
use statuses::document_statuses;

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
