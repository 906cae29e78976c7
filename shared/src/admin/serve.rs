//! Serving the admin router on a socket (`sundial dev`; in AWS the Lambda
//! runtime does it) with the limits a server facing slow or hostile
//! clients needs, which `axum::serve` does not set:
//!
//! * the request headers must arrive within
//!   [`ServeLimits::header_read_timeout`] (hyper closes the connection
//!   otherwise; the same timer bounds an idle keep-alive connection);
//! * the whole body must arrive within [`ServeLimits::body_read_timeout`]
//!   after the headers, else `408` and the connection is closed (a total
//!   deadline, not an idle one: a body trickled a byte at a time is cut
//!   off too);
//! * at most [`ServeLimits::max_connections`] connections are served at
//!   once; further ones wait in the listen backlog until one closes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::error::AdminError;
use super::extract::MAX_REQUEST_BYTES;

/// Default of [`ServeLimits::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ServeLimits::body_read_timeout`].
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Default of [`ServeLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// How long clients may take and how many may be connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// From the first byte of a request (or from the end of the previous
    /// one on a kept-alive connection) to the end of its headers.
    pub header_read_timeout: Duration,
    /// From the end of the headers to the end of the body.
    pub body_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting, lets each connection finish its request in flight, and
/// returns once all are closed. Bound that wait from outside if needed.
///
/// Accept errors (out of file descriptors, a connection reset before it
/// was accepted) are logged and retried after a short pause; they do not
/// stop the server.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send,
    limits: ServeLimits,
) -> std::io::Result<()> {
    // Within what a semaphore (and `acquire_many`) can count.
    let max_connections = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let slots = Arc::new(Semaphore::new(max_connections));
    let service = router.layer(middleware::from_fn_with_state(limits, read_body_within));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // A free slot first: beyond the cap, clients wait in the backlog.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "admin API: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let hyper_service = TowerToHyperService::new(service.clone());
        tokio::spawn(connection(
            stream,
            peer,
            hyper_service,
            slot,
            stop_rx.clone(),
            limits,
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every slot back means every connection closed.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

/// Serves one connection until the client closes it, or, once the server
/// stops, until its request in flight is answered; then frees its slot.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    service: TowerToHyperService<Router>,
    slot: OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
    limits: ServeLimits,
) {
    let _slot = slot;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopping(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        // Timeouts and clients that hang up land here; not ours.
        tracing::debug!(%peer, error = %err, "admin API connection ended");
    }
}

/// Resolves once the server is asked to stop (or is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Reads the whole body within the limit before the handler runs, so a
/// stalled upload costs a 408 instead of a connection held open.
async fn read_body_within(State(limits): State<ServeLimits>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return closing(AdminError::PayloadTooLarge(MAX_REQUEST_BYTES).into_response());
    }
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, MAX_REQUEST_BYTES);
    match tokio::time::timeout(limits.body_read_timeout, read).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(err)) => {
            let too_large = std::error::Error::source(&err)
                .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
            if too_large {
                closing(AdminError::PayloadTooLarge(MAX_REQUEST_BYTES).into_response())
            } else {
                closing(AdminError::BodyUnreadable.into_response())
            }
        }
        Err(_) => closing(AdminError::BodyTimeout(limits.body_read_timeout).into_response()),
    }
}

/// The rest of the body will not be read: the connection cannot be reused.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
