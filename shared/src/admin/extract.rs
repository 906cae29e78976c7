//! Request extractors whose every rejection is an [`AdminError`]: axum's own
//! `Json`, `Path` and `Query` answer in plain text and cannot name the
//! field at fault, so the admin API reads bodies, ids and query strings
//! through these instead.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use super::error::AdminError;

/// Largest request body the API reads: a task body of
/// [`crate::task::MAX_BODY_BYTES`] plus room for the JSON around it.
pub const MAX_REQUEST_BYTES: usize = crate::task::MAX_BODY_BYTES + 32 * 1024;

/// A JSON request body parsed into `T`.
///
/// A missing Content-Type is accepted (curl users forget it); any other
/// than JSON is a 415. Type errors name the field they happened in.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AdminError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(content_type) = req.headers().get(CONTENT_TYPE) {
            if !is_json(content_type.to_str().unwrap_or("")) {
                return Err(AdminError::UnsupportedMediaType);
            }
        }
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A request body as bytes, for routes whose body is optional (an empty
/// one means the defaults): a body past [`MAX_REQUEST_BYTES`] is a JSON
/// 413, one that cannot be read a JSON 400, not axum's plain text.
#[derive(Debug, Clone)]
pub struct RawBody(pub Bytes);

impl<S> FromRequest<S> for RawBody
where
    S: Send + Sync,
{
    type Rejection = AdminError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => AdminError::PayloadTooLarge(MAX_REQUEST_BYTES),
                _ => AdminError::BodyUnreadable,
            }
        })?;
        Ok(RawBody(bytes))
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a JSON document, naming the field of a type error.
///
/// Two passes: syntax first (any failure is `malformed_json`), then the
/// shape, where every failure belongs to a field. serde_json alone reports
/// some type errors (a boolean where an enum goes) as syntax errors.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AdminError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(AdminError::MalformedJson)?;
    integral_floats_as_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|err| {
        let field = top_field(err.path()).or_else(|| field_in_message(&err.inner().to_string()));
        let inner = err.into_inner();
        match field {
            Some(field) => AdminError::invalid(field, without_position(&inner.to_string())),
            None => AdminError::MalformedJson(inner),
        }
    })
}

/// JSON (and JSON Schema) has one number type: `81.0` is the integer 81,
/// as a client generating from the OpenAPI document may well write it.
/// serde's integer fields refuse floats, so integral ones are rewritten.
fn integral_floats_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let Some(f) = n.as_f64() else { return };
            // Both bounds are exact powers of two, so the casts are exact.
            if f.fract() == 0.0 && f >= -(2f64.powi(63)) && f < 2f64.powi(63) {
                *value = Value::from(f as i64);
            } else if f.fract() == 0.0 && f >= 0.0 && f < 2f64.powi(64) {
                *value = Value::from(f as u64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

/// The first segment of an error path: `headers` for `headers.X-Env`.
fn top_field(path: &serde_path_to_error::Path) -> Option<String> {
    use serde_path_to_error::Segment;
    match path.iter().next()? {
        Segment::Map { key } => Some(key.clone()),
        Segment::Seq { .. } | Segment::Enum { .. } | Segment::Unknown => None,
    }
}

/// serde reports unknown and missing fields at the level of the object,
/// with the name in backticks: "unknown field `colour`, expected one of ...".
fn field_in_message(message: &str) -> Option<String> {
    ["unknown field `", "missing field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| {
            let start = message.find(prefix)? + prefix.len();
            let rest = &message[start..];
            Some(rest[..rest.find('`')?].to_string())
        })
}

/// serde_json appends " at line 1 column 42", which means little to a
/// client that sent one line.
fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

/// The `{id}` of a task route: a positive integer, else a 400 naming `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for TaskId {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        positive_id(parts, state, "task").await.map(TaskId)
    }
}

/// The `{id}` path parameter of a route about a `what` (`task`,
/// `backfill`): a positive integer, else a 400 naming `id`.
pub(crate) async fn positive_id<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    what: &str,
) -> Result<i64, AdminError> {
    let Path(raw) = Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|_| AdminError::invalid("id", "is not valid UTF-8 text"))?;
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        let shown: String = raw.chars().take(40).collect();
        AdminError::invalid(
            "id",
            format!("`{shown}` is not a {what} id (a positive integer)"),
        )
    })
}

/// Earliest instant a request may name: the earliest RFC 3339 timestamp
/// (`0000-01-01T00:00:00+23:59`), in UTC.
pub const EARLIEST_INSTANT: &str = "-0001-12-31T00:01:00Z";
/// Latest instant a request may name: the latest RFC 3339 timestamp
/// (`9999-12-31T23:59:59.999999999-23:59`), in UTC.
pub const LATEST_INSTANT: &str = "+10000-01-01T23:58:59.999999999Z";

/// `t` if some RFC 3339 timestamp (a four-digit year, any offset) names
/// it; else a 400 naming `field`. Postgres' range (4713 BC to 294276 AD)
/// is wider, chrono's too; RFC 3339 is what the API promises.
pub fn instant_in_range(
    field: &'static str,
    t: DateTime<Utc>,
) -> Result<DateTime<Utc>, AdminError> {
    let earliest = DateTime::parse_from_rfc3339("0000-01-01T00:00:00+23:59");
    let latest = DateTime::parse_from_rfc3339("9999-12-31T23:59:59.999999999-23:59");
    match (earliest, latest) {
        (Ok(earliest), Ok(latest)) if t >= earliest && t <= latest => Ok(t),
        _ => Err(AdminError::invalid(
            field,
            "must be an RFC 3339 timestamp with a four-digit year",
        )),
    }
}

/// Latest instant an answer shows: later ones have no RFC 3339 form in UTC.
pub fn last_showable_instant() -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339("9999-12-31T23:59:59.999999999Z")
        .ok()
        .map(|t| t.to_utc())
}

/// A query string parsed into `T`; errors name the parameter.
#[derive(Debug, Clone)]
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(QueryParams)
            .map_err(|err| {
                let message = err.inner().to_string();
                let field = top_field(err.path())
                    .or_else(|| field_in_message(&message))
                    .unwrap_or_else(|| "query".to_string());
                AdminError::invalid(field, message)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskSpec;

    fn field_of(json: &str) -> Option<String> {
        match parse_json::<TaskSpec>(json.as_bytes()) {
            Err(AdminError::InvalidField { field, .. }) => Some(field.into_owned()),
            _ => None,
        }
    }

    #[test]
    fn names_the_field_of_each_serde_error() {
        let base = r#""name":"a","schedule":"rate(1 minute)","url":"https://x.io""#;
        assert_eq!(
            field_of(&format!("{{{base},\"colour\":1}}")).as_deref(),
            Some("colour")
        );
        assert_eq!(
            field_of(r#"{"name":"a","url":"https://x.io"}"#).as_deref(),
            Some("schedule")
        );
        assert_eq!(
            field_of(&format!("{{{base},\"timeout_ms\":\"soon\"}}")).as_deref(),
            Some("timeout_ms")
        );
        assert_eq!(
            field_of(&format!("{{{base},\"headers\":{{\"X\":1}}}}")).as_deref(),
            Some("headers")
        );
        assert_eq!(
            field_of(&format!("{{{base},\"catch_up\":\"sometimes\"}}")).as_deref(),
            Some("catch_up")
        );
    }

    #[test]
    fn integral_floats_are_integers() {
        let base = r#""name":"a","schedule":"rate(1 minute)","url":"https://x.io""#;
        let spec: TaskSpec =
            parse_json(format!("{{{base},\"timeout_ms\":1000.0,\"jitter_secs\":1e1}}").as_bytes())
                .unwrap();
        assert_eq!((spec.timeout_ms, spec.jitter_secs), (1000, 10));
        assert_eq!(
            field_of(&format!("{{{base},\"timeout_ms\":1000.5}}")).as_deref(),
            Some("timeout_ms")
        );
        assert_eq!(
            field_of(&format!("{{{base},\"timeout_ms\":1e300}}")).as_deref(),
            Some("timeout_ms")
        );
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        let trailing = r#"{"name":"a","schedule":"rate(1 minute)","url":"https://x.io"} x"#;
        for body in ["", "{", "nul", trailing, "[1,2]", "\"text\""] {
            let err = parse_json::<TaskSpec>(body.as_bytes()).unwrap_err();
            assert!(
                matches!(err, AdminError::MalformedJson(_)),
                "{body:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
    }
}
