//! The target URL: one spelling every parser reads alike, parsed once,
//! stored and fired in its canonical form, so that the guard, the store
//! and the firing engine never read the text differently.

use super::{is_unsafe_char, InvalidField, MAX_URL_CHARS};

/// A target URL must be absolute http(s) with a host, spelled the way
/// every parser reads alike: `http://` or `https://` first, no backslashes,
/// no control or whitespace characters (leading and trailing whitespace
/// is trimmed). Returns the parsed URL, whose serialisation is what is stored.
///
/// The `url` crate follows the WHATWG rules, which accept `http:8.8.8.8`,
/// `http:/x`, `http:\\x\` and strip leading controls; other tools read
/// those differently, so they are refused rather than guessed at.
pub fn validate_url(raw: &str) -> Result<url::Url, InvalidField> {
    let text = plain_spelling(raw)?;
    let url = url::Url::parse(text)
        .map_err(|e| InvalidField::new("url", format!("not a valid URL: {e}")))?;
    check_parsed(&url)?;
    stable(url)
}

/// The trimmed text, if it is spelled plainly: not too long, no control
/// or whitespace characters, no backslashes, `http://` or `https://` first.
fn plain_spelling(raw: &str) -> Result<&str, InvalidField> {
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
    check_scheme_prefix(text)?;
    Ok(text)
}

/// `http://` or `https://` (any case) must open the text.
fn check_scheme_prefix(text: &str) -> Result<(), InvalidField> {
    let scheme_ok = text
        .get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
        || text
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("http://"));
    if scheme_ok {
        return Ok(());
    }
    let scheme = text.split(':').next().unwrap_or("");
    let reason = if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
        "must start with `http://` or `https://`".to_string()
    } else {
        let shown: String = scheme.chars().take(20).collect();
        format!("scheme `{shown}` is not http or https")
    };
    Err(InvalidField::new("url", reason))
}

/// What the parsed URL must be: http(s), with a host, without
/// credentials, and not too long once normalised.
fn check_parsed(url: &url::Url) -> Result<(), InvalidField> {
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
    Ok(())
}

/// What is stored is parsed again when fired: it must read the same.
fn stable(url: url::Url) -> Result<url::Url, InvalidField> {
    match url::Url::parse(url.as_str()) {
        Ok(again) if again == url => Ok(url),
        _ => Err(InvalidField::new(
            "url",
            "does not have a stable normalised form",
        )),
    }
}
