//! Who may use the console, and how every answer is protected.
//!
//! * **Login**: the admin token, entered once on `/ui/login`, compared as
//!   the API compares it ([`AdminState::accepts`]).
//! * **Session**: a cookie `sundial_console=v1.<expiry>.<nonce>.<mac>`
//!   (`HttpOnly; Secure; SameSite=Strict; Path=/ui`), the MAC an
//!   HMAC-SHA256 over `v1.<expiry>.<nonce>` with a key derived from the
//!   admin token. Nothing is stored server-side, so every Lambda instance
//!   accepts it and rotating the token ends every session. It expires
//!   after [`SESSION_TTL`]; the MAC is checked in constant time.
//! * **CSRF**: every `POST` carries `csrf`, an HMAC of the session cookie,
//!   and must come from the console's own origin (`Origin`, else
//!   `Sec-Fetch-Site`); otherwise 403 and nothing changes.
//! * **Headers**: a strict Content-Security-Policy (no script at all),
//!   `nosniff`, no framing, no caching of pages ([`security_headers`]).

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, KeyInit, Mac};
use maud::html;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::layout;
use super::page::{self, UiError};
use crate::admin::AdminState;

type HmacSha256 = Hmac<Sha256>;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "sundial_console";
/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::hours(12);
/// Largest form body the console reads.
pub const FORM_LIMIT: usize = 16 * 1024;
/// The Content-Security-Policy of every console answer: nothing but the
/// console's own stylesheet, images inline, forms to itself.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A logged-in request: what its forms must carry.
#[derive(Debug, Clone)]
pub struct Session {
    /// The CSRF token of this session, for the `csrf` field of forms.
    pub csrf: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // [`gate`] puts it there for every page behind the login.
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or_else(|| page::see_other("/ui/login"))
    }
}

/// The fields of the form a `POST` sent (read once, by [`gate`]).
#[derive(Debug, Clone, Default)]
pub struct FormFields(pub Vec<(String, String)>);

impl FormFields {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for FormFields {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<FormFields>()
            .cloned()
            .unwrap_or_default())
    }
}

/// The key sessions are signed with: derived from the admin token's
/// digest, so it is the same in every process that has the token.
/// `None` in IAM mode (no token).
fn session_key(state: &AdminState) -> Option<[u8; 32]> {
    state.token_digest.as_ref().map(key_from_digest)
}

fn key_from_digest(digest: &[u8; 32]) -> [u8; 32] {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(digest)
        .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()));
    mac.update(b"sundial console session key v1");
    mac.finalize().into_bytes().into()
}

fn mac_hex(key: &[u8; 32], parts: &[&[u8]]) -> String {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()));
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// A session cookie value for the console of the admin token `token`,
/// valid until `expires_at` (what a login sets; tests forge expired ones
/// with it).
pub fn issue_session(token: &str, expires_at: DateTime<Utc>) -> String {
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    issue(&key_from_digest(&digest), expires_at)
}

fn issue(key: &[u8; 32], expires_at: DateTime<Utc>) -> String {
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let signed = format!("v1.{}.{nonce}", expires_at.timestamp());
    let mac = mac_hex(key, &[signed.as_bytes()]);
    format!("{signed}.{mac}")
}

/// The session of a cookie value, if it is ours and not expired.
fn verify(key: &[u8; 32], value: &str, now: DateTime<Utc>) -> Option<Session> {
    let (signed, mac) = value.rsplit_once('.')?;
    let expected = mac_hex(key, &[signed.as_bytes()]);
    if !bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
        return None;
    }
    let mut fields = signed.split('.');
    let (Some("v1"), Some(expiry), Some(_nonce), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return None;
    };
    let expiry = DateTime::from_timestamp(expiry.parse::<i64>().ok()?, 0)?;
    (now < expiry).then(|| Session {
        csrf: mac_hex(key, &[b"csrf.", value.as_bytes()]),
    })
}

/// The value of our cookie in the request's `Cookie` headers.
fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

fn set_cookie(value: &str, max_age: i64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/ui; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
    ))
    .ok()
}

/// Does the request come from a page of this origin? The `Origin` header
/// must name this host; without one, `Sec-Fetch-Site` must not say it is
/// cross-site. A client that sends neither (curl) still needs the CSRF
/// token, which only a console page has.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN) {
        let authority = origin
            .to_str()
            .ok()
            .and_then(|o| url::Url::parse(o).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .and_then(|u| {
                let host = u.host_str()?.to_string();
                Some(match u.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host,
                })
            });
        return matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h));
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(site) => matches!(site, "same-origin" | "none"),
        None => true,
    }
}

/// In front of every console route: IAM mode, the same-origin check and
/// form of `POST`s, the session, and the CSRF token.
pub async fn gate(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/ui/assets/") {
        return next.run(req).await;
    }
    let Some(key) = session_key(&state) else {
        return page::iam_mode(req.method() == Method::POST);
    };
    let post = req.method() == Method::POST;
    if post && !same_origin(req.headers()) {
        return UiError::forbidden("cross-origin request refused").into_response();
    }
    let mut req = if post {
        match read_form(req).await {
            Ok(req) => req,
            Err(err) => return err.into_response(),
        }
    } else {
        req
    };
    if path == "/ui/login" {
        return next.run(req).await;
    }
    let session = cookie_value(req.headers()).and_then(|v| verify(&key, v, Utc::now()));
    let Some(session) = session else {
        return to_login(&req);
    };
    if post {
        let form = req.extensions().get::<FormFields>();
        let sent = form.and_then(|f| f.get("csrf")).unwrap_or("");
        if !bool::from(sent.as_bytes().ct_eq(session.csrf.as_bytes())) {
            return UiError::forbidden(
                "the form's CSRF token is missing or wrong; reload the page",
            )
            .into_response();
        }
    }
    req.extensions_mut().insert(session);
    next.run(req).await
}

/// Reads a `POST`'s form into [`FormFields`] (the body stays readable).
async fn read_form(req: Request) -> Result<Request, UiError> {
    let (mut parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, FORM_LIMIT)
        .await
        .map_err(|_| UiError::new(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large"))?;
    let fields = url::form_urlencoded::parse(&bytes).into_owned().collect();
    parts.extensions.insert(FormFields(fields));
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Not logged in (or the session expired, or its cookie was altered).
fn to_login(req: &Request) -> Response {
    if req.method() != Method::GET {
        return page::see_other("/ui/login");
    }
    let here = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/ui");
    let next: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
    page::see_other(&format!("/ui/login?next={next}"))
}

/// Where a login may send the browser on: a console path, nothing else.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if (n == "/ui" || n.starts_with("/ui/") || n.starts_with("/ui?"))
                && !n.contains("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control)
                && n.len() <= 1024 =>
        {
            n
        }
        _ => "/ui",
    }
}

/// `GET /ui/login`.
pub async fn login_page(req: Request) -> Response {
    let next = req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "next")
            .map(|(_, v)| v.into_owned())
    });
    page::html(login_form(safe_next(next.as_deref()), None))
}

fn login_form(next: &str, error: Option<&str>) -> maud::Markup {
    let body = html! {
        form.login method="post" action="/ui/login" {
            h1 { "Sundial console" }
            @if let Some(error) = error { p.error role="alert" { (error) } }
            label for="token" { "Admin token" }
            input #token type="password" name="token" autocomplete="current-password" required autofocus;
            input type="hidden" name="next" value=(next);
            button type="submit" { "Log in" }
            p.hint { "The value of SUNDIAL_ADMIN_TOKEN, as for the API." }
        }
    };
    layout::bare("Log in", body)
}

/// `POST /ui/login`: the right token gets a session cookie.
pub async fn login(State(state): State<AdminState>, form: FormFields) -> Response {
    let next = safe_next(form.get("next")).to_string();
    let token = form.get("token").unwrap_or("").trim();
    let (Some(key), true) = (
        session_key(&state),
        !token.is_empty() && state.accepts(token),
    ) else {
        let markup = login_form(&next, Some("That is not the admin token."));
        return (StatusCode::UNAUTHORIZED, page::html(markup)).into_response();
    };
    let value = issue(&key, Utc::now() + SESSION_TTL);
    let mut response = page::see_other(&next);
    if let Some(cookie) = set_cookie(&value, SESSION_TTL.num_seconds()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `POST /ui/logout`: the cookie is removed (a copy kept elsewhere stays
/// valid until it expires; rotate the token to end every session).
pub async fn logout(_session: Session) -> Response {
    let mut response = page::see_other("/ui/login");
    if let Some(cookie) = set_cookie("", 0) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// The headers of every console answer.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn a_session_verifies_until_it_expires() {
        let now = Utc::now();
        let value = issue(&KEY, now + Duration::hours(1));
        assert!(verify(&KEY, &value, now).is_some());
        assert!(verify(&KEY, &value, now + Duration::hours(2)).is_none());
        assert!(verify(&[8; 32], &value, now).is_none(), "another key");
    }

    #[test]
    fn an_altered_session_is_refused() {
        let now = Utc::now();
        let value = issue(&KEY, now + Duration::hours(1));
        let (signed, mac) = value.rsplit_once('.').unwrap();
        let later = signed.replacen(
            &(now + Duration::hours(1)).timestamp().to_string(),
            &(now + Duration::days(400)).timestamp().to_string(),
            1,
        );
        assert!(verify(&KEY, &format!("{later}.{mac}"), now).is_none());
        assert!(verify(&KEY, signed, now).is_none());
        assert!(verify(&KEY, "", now).is_none());
        assert!(verify(&KEY, "v1.x.y.z", now).is_none());
    }

    #[test]
    fn the_csrf_token_belongs_to_its_session() {
        let now = Utc::now();
        let a = verify(&KEY, &issue(&KEY, now + Duration::hours(1)), now).unwrap();
        let b = verify(&KEY, &issue(&KEY, now + Duration::hours(1)), now).unwrap();
        assert_ne!(a.csrf, b.csrf);
    }

    #[test]
    fn origins_other_than_the_host_are_cross_origin() {
        let with = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_str(v).unwrap());
            }
            same_origin(&h)
        };
        let host = ("host", "127.0.0.1:8080");
        assert!(with(&[host, ("origin", "http://127.0.0.1:8080")]));
        assert!(!with(&[host, ("origin", "http://evil.example")]));
        assert!(!with(&[host, ("origin", "http://127.0.0.1:8081")]));
        assert!(!with(&[host, ("origin", "null")]));
        assert!(!with(&[host, ("sec-fetch-site", "cross-site")]));
        assert!(with(&[host, ("sec-fetch-site", "same-origin")]));
        assert!(with(&[host]));
    }

    #[test]
    fn a_login_only_sends_on_to_console_paths() {
        assert_eq!(safe_next(Some("/ui/tasks/4?x=1")), "/ui/tasks/4?x=1");
        assert_eq!(safe_next(Some("https://evil.example/ui")), "/ui");
        assert_eq!(safe_next(Some("//evil.example/ui")), "/ui");
        assert_eq!(safe_next(Some("/ui//evil.example")), "/ui");
        assert_eq!(safe_next(Some("/uix")), "/ui");
        assert_eq!(safe_next(Some("/ui\\x")), "/ui");
        assert_eq!(safe_next(None), "/ui");
    }
}
