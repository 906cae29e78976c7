//! HTTPS over HTTP/1.1 on the direct path: kept-alive connections that the
//! server closes while they are idle never fail a request, and a server's
//! `Connection: close` is honoured. A bare TLS server written here (the
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

/// A TLS server offering only `http/1.1` that answers one request per
/// connection with `answer`, then closes it after `linger` without saying
/// so (unless `answer` does). Returns its URL and the connections it took.
async fn one_request_per_connection(
    ca: &TestCa,
    answer: &'static str,
    linger: Duration,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/", listener.local_addr().unwrap());
    let acceptor = TlsAcceptor::from(ca.server_config(Alpn::Http1Only).unwrap().rustls());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.flush().await;
                tokio::time::sleep(linger).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (url, accepted)
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
async fn idle_connections_the_server_closed_are_replaced_without_failing_a_request() {
    let ca = TestCa::generate().unwrap();
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    // Closed 100 ms after answering: the client has pooled the connection
    // by then and finds it gone (or about to go) on the next request.
    let (url, accepted) = one_request_per_connection(&ca, ok, Duration::from_millis(100)).await;
    let firer = firer(&ca);
    for gap_ms in [150, 100, 120, 101, 99, 200] {
        let fired = firer.fire(&get(&url)).await;
        assert_eq!(fired.verdict, Verdict::Succeeded, "{:?}", fired.error);
        assert_eq!(fired.http_status, Some(200));
        tokio::time::sleep(Duration::from_millis(gap_ms)).await;
    }
    let fired = firer.fire(&get(&url)).await;
    assert_eq!(fired.verdict, Verdict::Succeeded, "{:?}", fired.error);
    // Every request needed its own connection.
    assert_eq!(accepted.load(Ordering::SeqCst), 7);
}

#[tokio::test]
async fn a_connection_close_answer_is_not_reused() {
    let ca = TestCa::generate().unwrap();
    let close = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
    // The server keeps the socket open a while after saying it will close:
    // a client that pooled it would send the next request into the void.
    let (url, accepted) = one_request_per_connection(&ca, close, Duration::from_secs(10)).await;
    let firer = firer(&ca);
    for _ in 0..3 {
        let fired = tokio::time::timeout(Duration::from_secs(3), firer.fire(&get(&url)))
            .await
            .expect("a request on a connection the server closes hangs");
        assert_eq!(fired.verdict, Verdict::Succeeded, "{:?}", fired.error);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}
