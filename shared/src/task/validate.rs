//! The rules of each field of a [`TaskSpec`]: what it may hold, the
//! normalised form that is stored (trimmed text, an upper-case method, the
//! canonical URL), and otherwise an [`InvalidField`] naming it. The URL's
//! spelling has its own file (`url`), as do tags (`tags`); the window is
//! [`crate::window`]'s, alerting [`crate::pause`]'s.

use std::collections::BTreeMap;

use super::{
    validate_tags, validate_url, InvalidField, TaskSpec, ATTEMPTS_RANGE, BACKOFF_MS_RANGE,
    CATCH_UP_AGE_RANGE, JITTER_SECS_RANGE, MAX_BODY_BYTES, MAX_HEADER_NAME_BYTES,
    MAX_HEADER_VALUE_CHARS, MAX_NAME_CHARS, MAX_SCHEDULE_CHARS, METHODS, RESERVED_HEADERS,
    TIMEOUT_MS_RANGE,
};
use crate::schedule::{parse_zone, Schedule, Tz};

impl TaskSpec {
    /// Checks every field and normalises the method; returns the parsed
    /// schedule and zone. The target address guard (which resolves DNS) is
    /// separate: see [`crate::fire::guard`].
    pub fn validate(&mut self) -> Result<(Schedule, Tz), InvalidField> {
        self.name = checked_name(&self.name)?;
        // What is stored is what was parsed: the trimmed text.
        self.schedule = checked_schedule_text(&self.schedule)?;
        let schedule = Schedule::parse(&self.schedule)?;
        let zone = checked_zone(&self.timezone)?;
        self.timezone = self.timezone.trim().to_string();
        self.method = self.method.trim().to_ascii_uppercase();
        check_method(&self.method)?;
        // Parse once: the canonical form is stored, checked by the target
        // guard, and fired, so no second parser reads the text differently.
        self.url = validate_url(&self.url)?.into();
        for (name, value) in &self.headers {
            validate_header(name, value)?;
        }
        if let Some(body) = &self.body {
            validate_body(body)?;
        }
        self.check_ranges()?;
        if let Some(key) = &self.flow_key {
            self.flow_key = Some(validate_flow_key("flow_key", key)?);
        }
        crate::pause::validate_alerting(self)?;
        self.tags = validate_tags(&self.tags)?;
        crate::window::validate_window(self)?;
        Ok((schedule, zone))
    }

    /// The numeric fields, each within its bounds.
    fn check_ranges(&self) -> Result<(), InvalidField> {
        in_range("timeout_ms", self.timeout_ms, TIMEOUT_MS_RANGE)?;
        in_range("max_attempts", self.max_attempts, ATTEMPTS_RANGE)?;
        in_range("retry_backoff_ms", self.retry_backoff_ms, BACKOFF_MS_RANGE)?;
        in_range("jitter_secs", self.jitter_secs, JITTER_SECS_RANGE)?;
        in_range(
            "catch_up_max_age_secs",
            self.catch_up_max_age_secs,
            CATCH_UP_AGE_RANGE,
        )
    }
}

/// The name as stored: trimmed, 1 to [`MAX_NAME_CHARS`] characters (as
/// given), no control characters.
fn checked_name(raw: &str) -> Result<String, InvalidField> {
    let name = raw.trim();
    if name.is_empty() || raw.chars().count() > MAX_NAME_CHARS {
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
    Ok(name.to_string())
}

/// The schedule text as stored and parsed: trimmed, at most
/// [`MAX_SCHEDULE_CHARS`] characters, no control characters.
fn checked_schedule_text(raw: &str) -> Result<String, InvalidField> {
    let schedule_text = raw.trim();
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
    Ok(schedule_text.to_string())
}

/// The zone a name denotes; a name with control characters or longer than
/// any IANA name is refused before it is looked up.
fn checked_zone(raw: &str) -> Result<Tz, InvalidField> {
    if raw.chars().any(is_unsafe_char) || raw.len() > 64 {
        return Err(InvalidField::new(
            "timezone",
            "is not an IANA time zone name",
        ));
    }
    Ok(parse_zone(raw)?)
}

/// A normalised method must be one of [`METHODS`].
fn check_method(method: &str) -> Result<(), InvalidField> {
    if METHODS.contains(&method) {
        return Ok(());
    }
    let shown: String = method
        .chars()
        .filter(|c| !c.is_control())
        .take(20)
        .collect();
    Err(InvalidField::new(
        "method",
        format!("`{shown}` is not one of {}", METHODS.join(", ")),
    ))
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

fn in_range(field: &'static str, value: i32, (min, max): (i32, i32)) -> Result<(), InvalidField> {
    if value < min || value > max {
        return Err(InvalidField::new(
            field,
            format!("{value} is out of range {min}..={max}"),
        ));
    }
    Ok(())
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
