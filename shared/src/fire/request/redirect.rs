//! Redirects, followed by hand (the client follows none): every hop's
//! address passes the guard, a 303 (or a 301/302 after a POST) continues
//! as a GET without a body, and a hop to another origin carries none of
//! the task's headers, no `Idempotency-Key` and no signature.

use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;
use url::Url;

use super::{Firer, Prepared, SendError};
use crate::fire::direct::Route;
use crate::fire::guard::GuardError;
use crate::fire::reply::Reply;

impl Firer {
    /// Send `prepared`, following redirects by hand (the client follows
    /// none) so that each hop's headers can be chosen; see
    /// [`Self::with_max_redirects`].
    pub(super) async fn send_following(
        &self,
        prepared: Prepared,
        deadline: Instant,
    ) -> Result<Reply, SendError> {
        let origin = prepared.url.origin();
        let mut hop = prepared;
        let mut left_origin = false;
        let mut hops = 0;
        loop {
            let response = self.send_once(&hop, deadline).await?;
            let Some(next) = redirect_location(&response, &hop.url) else {
                return Ok(response);
            };
            if hops == self.max_redirects {
                return Err(SendError::Guard(GuardError::TooManyRedirects {
                    max: self.max_redirects,
                }));
            }
            hops += 1;
            // Host names are checked by the resolver when the hop connects.
            self.guard.check_literal(&next).map_err(SendError::Guard)?;
            if becomes_get(response.status(), &hop.method) {
                self.drop_body(&mut hop, left_origin);
            }
            if !left_origin && next.origin() != origin {
                left_origin = true;
                strip_for_another_origin(&mut hop);
            }
            hop.url = next;
        }
    }

    /// One request of the chain, within the deadline: over HTTPS on the
    /// direct path ([`crate::fire::direct`]: a stream on the origin's HTTP/2
    /// connection, or an HTTP/1.1 connection of its own), through reqwest
    /// otherwise.
    async fn send_once(&self, hop: &Prepared, deadline: Instant) -> Result<Reply, SendError> {
        tokio::time::timeout_at(deadline, self.send_hop(hop))
            .await
            .map_err(|_| SendError::TimedOut)?
    }

    async fn send_hop(&self, hop: &Prepared) -> Result<Reply, SendError> {
        if let Some(direct) = &self.direct {
            let route = direct.route(&hop.url).await.map_err(SendError::Direct)?;
            let (method, url, headers) = (&hop.method, &hop.url, &hop.headers);
            let body = hop.body.as_deref();
            match route {
                Route::Http2(conn) => {
                    return direct
                        .send_http2(conn, method, url, headers, body)
                        .await
                        .map_err(SendError::Direct)
                }
                Route::Http1(lease) => {
                    // Boxed: inline, this future's state (the request, the
                    // connection's readiness, a possible redial) would be
                    // carried by every HTTP/2 request's future as well.
                    let send = direct.send_http1(lease, method, url, headers, body);
                    return Box::pin(send).await.map_err(SendError::Direct);
                }
                Route::Pooled => {}
            }
        }
        let mut builder = self
            .client
            .request(hop.method.clone(), hop.url.clone())
            .headers(hop.headers.clone());
        if let Some(body) = &hop.body {
            builder = builder.body(body.clone());
        }
        builder
            .send()
            .await
            .map(Reply::Pooled)
            .map_err(SendError::Http)
    }

    /// The hop continues as a GET without a body, signed again over the
    /// empty body while the request is still on the task's origin.
    fn drop_body(&self, hop: &mut Prepared, left_origin: bool) {
        hop.method = Method::GET;
        hop.body = None;
        hop.headers.remove(CONTENT_TYPE);
        if !left_origin {
            self.sign(&mut hop.headers, &hop.covered, b"", hop.signed_at);
        }
    }
}

/// 303, and 301/302 after a POST, continue as a GET without a body, as
/// browsers do; 307 and 308 repeat the request.
fn becomes_get(status: StatusCode, method: &Method) -> bool {
    (status == StatusCode::SEE_OTHER && *method != Method::HEAD)
        || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
            && *method == Method::POST)
}

/// The task's headers (credentials, API keys), the signature and the
/// idempotency key are meant for the task's origin: a hop to another one
/// keeps only the content type of a body it still carries.
fn strip_for_another_origin(hop: &mut Prepared) {
    let content_type = hop.headers.remove(CONTENT_TYPE);
    hop.headers.clear();
    if let (Some(value), Some(_)) = (content_type, &hop.body) {
        hop.headers.insert(CONTENT_TYPE, value);
    }
}

/// Where a redirect answer points, if it is one to follow: 301, 302, 303,
/// 307 or 308 with a `Location` that resolves against `current`. Other
/// 3xx (304, 300) and unusable locations are answers, not hops.
fn redirect_location(response: &Reply, current: &Url) -> Option<Url> {
    if !matches!(
        response.status(),
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    ) {
        return None;
    }
    let location = response.headers().get(LOCATION)?.to_str().ok()?;
    current.join(location).ok()
}
