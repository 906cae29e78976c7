//! A request made ready to send: the method and URL checked, the task's
//! headers kept where they are not Sundial's, the `Idempotency-Key` and
//! `Sundial-*` headers set, and the signature over them and the body.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::Method;
use url::Url;

use super::{FireRequest, Firer, Prepared, IDEMPOTENCY_HEADER};
use crate::fire::guard::GuardError;
use crate::fire::signing::Covered;
use crate::fire::FireError;

impl Firer {
    /// Checks `req` and builds what is sent, signed at `now_unix`.
    pub(super) fn prepare(&self, req: &FireRequest, now_unix: i64) -> Result<Prepared, FireError> {
        let method = Method::from_bytes(req.method.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| FireError::InvalidMethod {
                method: req.method.clone(),
            })?;
        let url = Url::parse(&req.url).map_err(GuardError::from)?;
        // reqwest connects to IP literals without asking the resolver.
        self.guard.check_literal(&url)?;

        // Room for what Sundial adds here and on the wire (idempotency key,
        // three occurrence headers, signature, content type, user agent,
        // accept): growing the map would copy it.
        let mut headers = HeaderMap::with_capacity(req.headers.len() + 8);
        for (name, value) in &req.headers {
            let header = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| FireError::InvalidHeaderName { name: name.clone() })?;
            if is_reserved(&header) {
                continue;
            }
            let value = HeaderValue::from_str(value)
                .map_err(|_| FireError::InvalidHeaderValue { name: name.clone() })?;
            headers.append(header, value);
        }
        let key = HeaderValue::from_str(&req.idempotency_key).map_err(|_| {
            FireError::InvalidHeaderValue {
                name: IDEMPOTENCY_HEADER.to_owned(),
            }
        })?;
        headers.insert(HeaderName::from_static("idempotency-key"), key);
        let covered = occurrence_headers(&mut headers, req);
        let body = req.body.as_deref().unwrap_or("");
        self.sign(&mut headers, &covered, body.as_bytes(), now_unix);
        if req.body.is_some() && !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Ok(Prepared {
            method,
            url,
            headers,
            body: req.body.clone(),
            signed_at: now_unix,
            covered,
        })
    }

    /// Set (or, with no signing secret, leave out) `Sundial-Signature` over
    /// the covered headers and `body`.
    pub(super) fn sign(
        &self,
        headers: &mut HeaderMap,
        covered: &[String; 4],
        body: &[u8],
        signed_at: i64,
    ) {
        headers.remove(SIGNATURE_HEADER_NAME);
        let covered = Covered([&covered[0], &covered[1], &covered[2], &covered[3]]);
        if let Some(signature) = self.signer.sign(&covered, body, signed_at) {
            // Hex and digits only, so always a valid header value.
            if let Ok(value) = HeaderValue::from_str(&signature) {
                headers.insert(HeaderName::from_static(SIGNATURE_HEADER_NAME), value);
            }
        }
    }
}

/// Sets `Sundial-Trigger`, `Sundial-Attempt` and `Sundial-Scheduled-For`
/// (when the request fires an occurrence) and returns the values the
/// signature covers, in [`super::signing::SIGNED_HEADERS`] order.
fn occurrence_headers(headers: &mut HeaderMap, req: &FireRequest) -> [String; 4] {
    let key = req.idempotency_key.clone();
    let Some(f) = &req.fired_for else {
        return [key, String::new(), String::new(), String::new()];
    };
    let covered = [
        key,
        f.trigger.as_str().to_owned(),
        f.attempt.to_string(),
        crate::trigger::scheduled_for_value(f.scheduled_for),
    ];
    let names = [
        "sundial-trigger",
        "sundial-attempt",
        "sundial-scheduled-for",
    ];
    for (name, value) in names.into_iter().zip(&covered[1..]) {
        // Fixed words, digits and an RFC 3339 instant: always valid.
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    covered
}

/// `Sundial-Signature`, as the lower-case name `HeaderName` requires.
const SIGNATURE_HEADER_NAME: &str = "sundial-signature";

/// Headers Sundial sets itself or that would corrupt message framing
/// (`HeaderName` is always lower-case).
fn is_reserved(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "idempotency-key"
            | "sundial-signature"
            | "sundial-trigger"
            | "sundial-attempt"
            | "sundial-scheduled-for"
            | "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
    )
}
