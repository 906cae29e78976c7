//! HTTP/2 on the `h2` crate: a connection's handle and one request as a
//! stream on it, for [`super::direct`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::RecvStream;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, TE, UPGRADE};
use reqwest::Method;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use url::Url;

use super::direct::{add_client_headers, DirectError};

/// An HTTP/2 connection's handle: cloned for each request.
#[derive(Clone)]
pub(super) struct Sender {
    send: SendRequest<Bytes>,
    /// Set when the connection's task ends (GOAWAY, the server's close, an
    /// error): the next request dials again.
    closed: Arc<AtomicBool>,
}

impl Sender {
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The connection takes no new streams (a GOAWAY it is draining under,
    /// an error): the next request dials, without waiting for its task to
    /// end.
    fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// Sets the flag however the connection's task ends: finished, or dropped
/// with its runtime.
struct Ended(Arc<AtomicBool>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Why a request got no answer on an HTTP/2 connection.
pub(super) enum Failure {
    /// No stream was opened (the connection takes no new ones), or the
    /// server refused it unprocessed (`REFUSED_STREAM`, RFC 9113 §8.7):
    /// the request may go on another connection.
    Unopened(h2::Error),
    /// Anything else.
    Failed(DirectError),
}

/// Settings of the connections, as hyper's client has them.
const CONN_WINDOW: u32 = 5 * 1024 * 1024;
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;
/// Streams opened before the server's SETTINGS say how many it takes.
const INITIAL_MAX_SEND_STREAMS: usize = 100;

/// Start HTTP/2 on a TLS connection (ALPN `h2`) with hyper's client
/// settings; its task runs until the connection closes.
pub(super) async fn handshake(tls: TlsStream<TcpStream>) -> Result<Sender, h2::Error> {
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
        .enable_push(false)
        .handshake::<_, Bytes>(tls)
        .await?;
    let closed = Arc::new(AtomicBool::new(false));
    let ended = Ended(Arc::clone(&closed));
    tokio::spawn(async move {
        let _ended = ended;
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "HTTP/2 connection ended");
        }
    });
    Ok(Sender { send, closed })
}

/// Send one request as a stream on `conn`. Adds the `User-Agent` and
/// `Accept` reqwest would add and, as hyper does, `Content-Length` (also 0
/// for a method with payload semantics); drops what HTTP/2 forbids.
pub(super) async fn send(
    conn: Sender,
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
    body: Option<&str>,
) -> Result<hyper::Response<RecvStream>, Failure> {
    let mut send = match conn.send.clone().ready().await {
        Ok(send) => send,
        Err(e) => {
            conn.mark_closed();
            return Err(Failure::Unopened(e));
        }
    };
    let mut headers = headers.clone();
    add_client_headers(&mut headers);
    strip_connection_headers(&mut headers);
    let body = body
        .filter(|b| !b.is_empty())
        .map(|b| Bytes::copy_from_slice(b.as_bytes()));
    let len = body.as_ref().map_or(0, Bytes::len);
    if len != 0 || !matches!(*method, Method::GET | Method::HEAD | Method::DELETE) {
        headers
            .entry(CONTENT_LENGTH)
            .or_insert(HeaderValue::from(len));
    }
    // The fragment is the client's, never sent.
    let uri = url.as_str().split('#').next().unwrap_or_default();
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .map_err(|e| Failure::Failed(DirectError::Request(e)))?;
    *request.headers_mut() = headers;
    let (response, mut stream) = send
        .send_request(request, body.is_none())
        .map_err(|e| unopened_or_failed(&conn, e))?;
    if let Some(body) = body {
        // Buffered by h2 until the stream's window lets it go.
        stream
            .send_data(body, true)
            .map_err(|e| unopened_or_failed(&conn, e))?;
    }
    response.await.map_err(|e| unopened_or_failed(&conn, e))
}

/// A refused stream was never processed; a GOAWAY also means the
/// connection takes no more.
fn unopened_or_failed(conn: &Sender, e: h2::Error) -> Failure {
    if e.is_go_away() {
        conn.mark_closed();
    }
    if e.reason() == Some(h2::Reason::REFUSED_STREAM) {
        Failure::Unopened(e)
    } else {
        Failure::Failed(DirectError::Http2(e))
    }
}

/// HTTP/2 has no connection-specific headers (RFC 9113 §8.2.2); `h2`
/// refuses a request carrying one. `Connection`, `Transfer-Encoding` and
/// `Host` never get here (the firer drops them).
fn strip_connection_headers(headers: &mut HeaderMap) {
    for name in ["keep-alive", "proxy-connection"] {
        headers.remove(HeaderName::from_static(name));
    }
    headers.remove(UPGRADE);
    if headers.get(TE).is_some_and(|te| te != "trailers") {
        headers.remove(TE);
    }
}
