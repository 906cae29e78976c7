//! The direct HTTPS paths against bare servers written here, for what the
//! local target (a well-behaved hyper server) never does. HTTP/1.1: a
//! request on a kept-alive connection the server drops is sent again on a
//! new one, a request on a fresh connection is not, and a server's
//! `Connection: close` is honoured. HTTP/2: a connection the server is
//! shutting down (GOAWAY sent, a stream still being answered) takes no new
//! requests, and one that comes meanwhile goes on a new connection. A bare TLS server written here (the
//! local target's hyper server keeps connections open as a well-behaved one
//! does). Traffic goes to 127.0.0.1 only.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sundial::fire::{ClientOptions, Firer, Signer, TargetGuard, Verdict};
use sundial_target::tls::{Alpn, TestCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

mod common;
use common::get;

/// What the bare server does on each connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Answer the first request with this; read the next and close without
    /// answering (a server closing an idle connection as a request comes).
    AnswerOnceThenDropTheNext(&'static str),
    /// Answer the first request, then keep the socket open for a while
    /// (`Connection: close` answers: a client must not reuse it).
    AnswerOnceAndLinger(&'static str),
    /// Read the first request and close without answering.
    DropTheFirst,
}

/// Connections and requests a bare server took.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: AtomicUsize,
}

/// Serve `alpn` on loopback with the test CA's certificate: every accepted
/// TLS connection (counted) goes to `handle`. Returns the URL and the counts.
async fn serve<F, Fut>(ca: &TestCa, alpn: Alpn, handle: F) -> (String, Arc<Seen>)
where
    F: Fn(TlsStream<TcpStream>, Arc<Seen>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/", listener.local_addr().unwrap());
    let acceptor = TlsAcceptor::from(ca.server_config(alpn).unwrap().rustls());
    let seen = Arc::new(Seen::default());
    let counts = Arc::clone(&seen);
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counts.connections.fetch_add(1, Ordering::SeqCst);
            let (acceptor, counts) = (acceptor.clone(), Arc::clone(&counts));
            let handle = Arc::clone(&handle);
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    handle(tls, counts).await;
                }
            });
        }
    });
    (url, seen)
}

/// A TLS server offering only `http/1.1` that behaves as told on every
/// connection. Returns its URL and what it saw.
async fn bare_server(ca: &TestCa, behaviour: Behaviour) -> (String, Arc<Seen>) {
    serve(ca, Alpn::Http1Only, move |mut tls, counts| async move {
        if !read_head(&mut tls).await {
            return;
        }
        counts.requests.fetch_add(1, Ordering::SeqCst);
        match behaviour {
            Behaviour::DropTheFirst => {}
            Behaviour::AnswerOnceThenDropTheNext(answer) => {
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.flush().await;
                if read_head(&mut tls).await {
                    counts.requests.fetch_add(1, Ordering::SeqCst);
                }
            }
            Behaviour::AnswerOnceAndLinger(answer) => {
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.flush().await;
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
        let _ = tls.shutdown().await;
    })
    .await
}

/// Read up to the end of a request head (these tests send no bodies).
async fn read_head(tls: &mut TlsStream<TcpStream>) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// Answers every request after `first_delay` for the first stream of a
/// connection (none for the others), and starts a graceful shutdown of the
/// connection as soon as its first request arrives.
async fn shutting_down_server(ca: &TestCa, first_delay: Duration) -> (String, Arc<Seen>) {
    serve(ca, Alpn::Http2, move |tls, counts| async move {
        let Ok(mut conn) = h2::server::handshake(tls).await else {
            return;
        };
        let mut first = true;
        while let Some(Ok((_request, mut respond))) = conn.accept().await {
            counts.requests.fetch_add(1, Ordering::SeqCst);
            let delay = if first { first_delay } else { Duration::ZERO };
            if first {
                conn.graceful_shutdown();
                first = false;
            }
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let response = hyper::http::Response::builder()
                    .status(200)
                    .body(())
                    .unwrap();
                if let Ok(mut body) = respond.send_response(response, false) {
                    let _ = body.send_data(Bytes::from_static(b"ok"), true);
                }
            });
        }
    })
    .await
}

fn firer(ca: &TestCa) -> Firer {
    let guard = Arc::new(TargetGuard::from_env_value("127.0.0.1/32").unwrap());
    let opts = ClientOptions {
        extra_roots: vec![ca.cert_der()],
        ..ClientOptions::default()
    };
    Firer::build(guard, Signer::default(), &opts).unwrap()
}

#[tokio::test]
async fn a_request_on_a_kept_alive_connection_the_server_drops_goes_again_on_a_new_one() {
    let ca = TestCa::generate().unwrap();
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let (url, seen) = bare_server(&ca, Behaviour::AnswerOnceThenDropTheNext(ok)).await;
    let firer = firer(&ca);
    for _ in 0..2 {
        let fired = firer.fire(&get(&url)).await;
        assert_eq!(fired.verdict, Verdict::Succeeded, "{:?}", fired.error);
        assert_eq!(fired.http_status, Some(200));
    }
    // The second request went on the first connection (reused), which the
    // server closed unanswered: sent again on a second connection.
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_request_a_fresh_connection_drops_is_not_sent_again() {
    let ca = TestCa::generate().unwrap();
    let (url, seen) = bare_server(&ca, Behaviour::DropTheFirst).await;
    let firer = firer(&ca);
    let fired = firer.fire(&get(&url)).await;
    // A retryable failure for Sundial's own retries (with their backoff),
    // not an immediate resend.
    assert!(
        matches!(fired.verdict, Verdict::Retryable { .. }),
        "{:?}",
        fired.verdict
    );
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_close_answer_is_not_reused() {
    let ca = TestCa::generate().unwrap();
    let close = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
    // The server keeps the socket open a while after saying it will close:
    // a client that pooled it would send the next request into the void.
    let (url, seen) = bare_server(&ca, Behaviour::AnswerOnceAndLinger(close)).await;
    let firer = firer(&ca);
    for _ in 0..3 {
        let fired = tokio::time::timeout(Duration::from_secs(3), firer.fire(&get(&url)))
            .await
            .expect("a request on a connection the server closes hangs");
        assert_eq!(fired.verdict, Verdict::Succeeded, "{:?}", fired.error);
    }
    assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_request_to_a_connection_under_goaway_goes_on_a_new_one() {
    let ca = TestCa::generate().unwrap();
    let (url, seen) = shutting_down_server(&ca, Duration::from_millis(1500)).await;
    let firer = Arc::new(firer(&ca));

    // The first request holds the first connection open while the server
    // drains it; the second comes after the GOAWAY has arrived.
    let slow = tokio::spawn({
        let (firer, url) = (Arc::clone(&firer), url.clone());
        async move { firer.fire(&get(&url)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = firer.fire(&get(&url)).await;
    assert_eq!(second.verdict, Verdict::Succeeded, "{:?}", second.error);
    let first = slow.await.unwrap();
    assert_eq!(first.verdict, Verdict::Succeeded, "{:?}", first.error);

    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 2);
}
