//! HTTP/2 on the direct path: a connection the server is shutting down
//! (GOAWAY sent, a stream still being answered) takes no new requests, and
//! a request that comes meanwhile goes on a new connection instead of
//! failing. A bare `h2` server written here; traffic to 127.0.0.1 only.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sundial::fire::{ClientOptions, FireRequest, Firer, Signer, TargetGuard, Verdict};
use sundial_target::tls::{Alpn, TestCa};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Connections and requests the server took.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: AtomicUsize,
}

/// Answers every request after `first_delay` for the first stream of a
/// connection (none for the others), and starts a graceful shutdown of the
/// connection as soon as its first request arrives.
async fn shutting_down_server(ca: &TestCa, first_delay: Duration) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/", listener.local_addr().unwrap());
    let acceptor = TlsAcceptor::from(ca.server_config(Alpn::Http2).unwrap().rustls());
    let seen = Arc::new(Seen::default());
    let counts = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counts.connections.fetch_add(1, Ordering::SeqCst);
            let (acceptor, counts) = (acceptor.clone(), Arc::clone(&counts));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
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
            });
        }
    });
    (url, seen)
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
async fn a_request_to_a_connection_under_goaway_goes_on_a_new_one() {
    let ca = TestCa::generate().unwrap();
    let (url, seen) = shutting_down_server(&ca, Duration::from_millis(1500)).await;
    let guard = Arc::new(TargetGuard::from_env_value("127.0.0.1/32").unwrap());
    let opts = ClientOptions {
        extra_roots: vec![ca.cert_der()],
        ..ClientOptions::default()
    };
    let firer = Arc::new(Firer::build(guard, Signer::default(), &opts).unwrap());

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
