//! The statuses every operation can answer besides those its handler
//! declares: what the extractors, the token check and [`crate::admin::serve`]
//! answer (400, 401, 404, 408, 413, 415, 500), each with the error body.

use serde_json::{json, Map, Value};

use super::operations;

/// An error answer with the error body.
fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

/// Adds every status an operation can answer that utoipa was not told of.
pub(super) fn document_statuses(doc: &mut Value) {
    for (label, op) in operations(doc) {
        let added = statuses_of(&label, op);
        let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
            continue;
        };
        for (status, description) in added {
            responses
                .entry(status.to_string())
                .or_insert_with(|| error_response(description));
        }
    }
}

/// The statuses the operation `label` can answer whatever its handler
/// says, with their descriptions, in order (a status its handler declares,
/// or listed twice, keeps its first description).
fn statuses_of(label: &str, op: &Map<String, Value>) -> Vec<(&'static str, &'static str)> {
    let secured = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    let has_query = op
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
    let mut out = Vec::new();
    if secured {
        out.push(("401", "Missing or wrong bearer token (`unauthorized`)"));
    }
    if label.contains("{id}") {
        out.push((
            "400",
            "The `{id}` is not a task id, 1 to 2^63-1 (`invalid_field`, field `id`)",
        ));
        out.push(("404", "No such task (`task_not_found`)"));
    }
    if label.contains("{key}") {
        out.push((
            "400",
            "The `{key}` is not a flow key (`invalid_field`, field `key`)",
        ));
    }
    if has_query {
        out.push(("400", "Invalid query parameter (`invalid_field` naming it)"));
    }
    if op.contains_key("requestBody") {
        out.push((
            "400",
            "Invalid field or malformed JSON (`invalid_field` naming the field, `malformed_json`)",
        ));
        out.push((
            "415",
            "A Content-Type other than JSON (`unsupported_media_type`)",
        ));
    }
    out.extend([
        (
            "408",
            "The request body did not arrive in time (`body_timeout`; servers with read limits, e.g. `sundial dev`)",
        ),
        (
            "413",
            "The request body is larger than 96 KiB (`payload_too_large`)",
        ),
        (
            "500",
            "A failure of Sundial itself, never of the input (`internal`; the cause is logged)",
        ),
    ]);
    out
}
