//! An answer from the direct paths or from reqwest, read the same way by
//! the firer ([`super::request`]).

use bytes::Bytes;
use h2::RecvStream;
use http_body_util::BodyExt;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use super::http1;

/// An answer from either path, read the same way.
pub(super) enum Reply {
    /// Through reqwest.
    Pooled(reqwest::Response),
    /// A stream of a [`super::direct::Direct`] HTTP/2 connection.
    Direct(hyper::Response<RecvStream>),
    /// On a [`super::direct::Direct`] HTTP/1.1 connection.
    Http1(http1::Answer),
}

impl Reply {
    pub(super) fn status(&self) -> StatusCode {
        match self {
            Reply::Pooled(r) => r.status(),
            Reply::Direct(r) => r.status(),
            Reply::Http1(a) => a.response.status(),
        }
    }

    pub(super) fn headers(&self) -> &HeaderMap {
        match self {
            Reply::Pooled(r) => r.headers(),
            Reply::Direct(r) => r.headers(),
            Reply::Http1(a) => a.response.headers(),
        }
    }

    /// The next chunk of the body; `None` at its end. The error is
    /// described (without the URL).
    pub(super) async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        match self {
            Reply::Pooled(r) => r
                .chunk()
                .await
                .map_err(super::request::describe_reqwest_error),
            Reply::Direct(r) => {
                let body = r.body_mut();
                match body.data().await {
                    None => Ok(None),
                    Some(Err(e)) => Err(super::request::describe_chain(&e)),
                    Some(Ok(data)) => {
                        // Read: the server may send as much again. An error
                        // here is the stream's, and the next read says it.
                        let _ = body.flow_control().release_capacity(data.len());
                        Ok(Some(data))
                    }
                }
            }
            Reply::Http1(answer) => loop {
                match answer.response.body_mut().frame().await {
                    None => {
                        answer.ended();
                        return Ok(None);
                    }
                    Some(Err(e)) => return Err(super::request::describe_chain(&e)),
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            return Ok(Some(data));
                        }
                        // Trailers: not part of the body.
                    }
                }
            },
        }
    }
}
