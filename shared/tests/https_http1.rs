//! HTTPS over HTTP/1.1 on the direct path: a request on a kept-alive
//! connection the server drops is sent again on a new one, a request on a
//! fresh connection is not, and a server's `Connection: close` is
//! honoured. A bare TLS server written here (the
//! local target's hyper server keeps connections open as a well-behaved one
//! does). Traffic goes to 127.0.0.1 only.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sundial::fire::{ClientOptions, FireRequest, Firer, Signer, TargetGuard, Verdict};
use sundial_target::tls::{Alpn, TestCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

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

/// A TLS server offering only `http/1.1` that behaves as told on every
/// connection. Returns its URL and what it saw.
async fn bare_server(ca: &TestCa, behaviour: Behaviour) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/", listener.local_addr().unwrap());
    let acceptor = TlsAcceptor::from(ca.server_config(Alpn::Http1Only).unwrap().rustls());
    let seen = Arc::new(Seen::default());
    let counts = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counts.connections.fetch_add(1, Ordering::SeqCst);
            let (acceptor, counts) = (acceptor.clone(), Arc::clone(&counts));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
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
            });
        }
    });
    (url, seen)
}

/// Read up to the end of a request head (these tests send no bodies).
async fn read_head(tls: &mut tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> bool {
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

fn firer(ca: &TestCa) -> Firer {
    let guard = Arc::new(TargetGuard::from_env_value("127.0.0.1/32").unwrap());
    let opts = ClientOptions {
        extra_roots: vec![ca.cert_der()],
        ..ClientOptions::default()
    };
    Firer::build(guard, Signer::default(), &opts).unwrap()
}

fn get(url: &str) -> FireRequest {
    FireRequest {
        method: "GET".into(),
        url: url.to_owned(),
        headers: Vec::new(),
        body: None,
        timeout: Duration::from_secs(5),
        idempotency_key: "task-1:2024-01-01T00:00:00Z".into(),
        flow: None,
        fired_for: None,
    }
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
