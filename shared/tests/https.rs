//! HTTPS in the firing engine against a local TLS target with a throw-away
//! CA: HTTP/1.1 and HTTP/2 chosen by ALPN, the CA trusted through
//! `SUNDIAL_EXTRA_CA_FILE`, untrusted certificates refused without retry,
//! and HTTP/2 connection reuse. Traffic goes to 127.0.0.1 only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Version;
use futures::{stream, StreamExt};
use sundial::config::Settings;
use sundial::fire::{
    fire_stream, ClientOptions, FireRequest, Fired, Firer, Limits, Signer, TargetGuard, Verdict,
};
use sundial_target::tls::{Alpn, TestCa};
use sundial_target::{self as target_server, TargetConfig, TargetServer};

const LOCAL: &str = "127.0.0.1/32,::1/128";

/// The client options a process gets when `SUNDIAL_EXTRA_CA_FILE` names
/// the PEM of `ca`: through the real setting, file and all.
fn options_trusting(ca: &TestCa) -> ClientOptions {
    let dir = std::env::temp_dir().join(format!("sundial-https-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("ca-{:p}.pem", ca));
    ca.write_pem(&path).unwrap();
    let env = HashMap::from([(
        "SUNDIAL_EXTRA_CA_FILE".to_string(),
        path.display().to_string(),
    )]);
    let settings = Settings::from_map(&env).unwrap();
    ClientOptions {
        concurrency: 64,
        extra_roots: settings.extra_ca.unwrap().certs,
        ..ClientOptions::default()
    }
}

fn firer(opts: &ClientOptions) -> Arc<Firer> {
    let guard = Arc::new(TargetGuard::from_env_value(LOCAL).unwrap());
    Arc::new(Firer::build(guard, Signer::default(), opts).unwrap())
}

async fn https_target(ca: &TestCa, alpn: Alpn) -> TargetServer {
    target_server::spawn(TargetConfig {
        tls: Some(ca.server_config(alpn).unwrap()),
        ..TargetConfig::default()
    })
    .await
    .unwrap()
}

/// `n` GETs of `path` at `target`, fired together through the pool.
async fn burst(
    firer: &Arc<Firer>,
    target: &TargetServer,
    n: usize,
    path: &str,
    limits: Limits,
) -> Vec<(usize, Fired)> {
    let jobs = (0..n).map(|i| (i, get(target.url(path))));
    fire_stream(Arc::clone(firer), stream::iter(jobs), limits)
        .collect()
        .await
}

fn get(url: String) -> FireRequest {
    FireRequest {
        method: "GET".into(),
        url,
        headers: Vec::new(),
        body: None,
        timeout: Duration::from_secs(5),
        idempotency_key: "task-1:2024-01-01T00:00:00Z".into(),
        flow: None,
        fired_for: None,
    }
}

#[tokio::test]
async fn https_target_offering_only_http1_is_fired_over_http1() {
    let ca = TestCa::generate().unwrap();
    let target = https_target(&ca, Alpn::Http1Only).await;
    assert!(target.url("/").starts_with("https://127.0.0.1:"));

    let result = firer(&options_trusting(&ca))
        .fire(&get(target.url("/ok")))
        .await;

    assert_eq!(result.verdict, Verdict::Succeeded, "{result:?}");
    assert_eq!(result.http_status, Some(200));
    let records = target.stats.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].version, Version::HTTP_11);
    assert_eq!(target.stats.tls_handshakes(), 1);
}

#[tokio::test]
async fn https_target_offering_h2_is_fired_over_http2() {
    let ca = TestCa::generate().unwrap();
    let target = https_target(&ca, Alpn::Http2).await;
    let firer = firer(&options_trusting(&ca));

    let result = firer.fire(&get(target.url("/echo"))).await;
    assert_eq!(result.verdict, Verdict::Succeeded, "{result:?}");
    // The body and Sundial's headers make it across HTTP/2 as well.
    let echo: serde_json::Value =
        serde_json::from_str(result.response_excerpt.as_deref().unwrap()).unwrap();
    assert_eq!(echo["idempotency_key"], "task-1:2024-01-01T00:00:00Z");

    let records = target.stats.records();
    assert_eq!(records[0].version, Version::HTTP_2);
    assert_eq!(
        records[0].header("idempotency-key"),
        Some("task-1:2024-01-01T00:00:00Z")
    );
    assert_eq!(
        records[0].header("user-agent"),
        Some(sundial::fire::client::USER_AGENT)
    );
}

#[tokio::test]
async fn plain_http_targets_stay_on_http1() {
    let target = target_server::spawn(TargetConfig::default()).await.unwrap();
    let result = firer(&ClientOptions::default())
        .fire(&get(target.url("/ok")))
        .await;
    assert_eq!(result.verdict, Verdict::Succeeded, "{result:?}");
    assert_eq!(target.stats.records()[0].version, Version::HTTP_11);
    assert_eq!(target.stats.tls_handshakes(), 0);
}

#[tokio::test]
async fn untrusted_certificate_fails_with_a_clear_error_and_no_retry() {
    let ca = TestCa::generate().unwrap();
    let other_ca = TestCa::generate().unwrap();
    let target = https_target(&ca, Alpn::Http2).await;

    // Trusting another private CA, and trusting only the platform's roots.
    for opts in [options_trusting(&other_ca), ClientOptions::default()] {
        let result = firer(&opts).fire(&get(target.url("/ok"))).await;
        assert_eq!(result.verdict, Verdict::Failed, "{result:?}");
        assert!(!result.verdict.is_retryable());
        assert_eq!(result.http_status, None);
        let error = result.error.unwrap();
        assert!(error.contains("certificate"), "{error}");
    }
    // The handshake failed at the target too (it learns so a moment after
    // the client) and no request got through.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while target.stats.tls_failures() < 2 && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(target.stats.tls_failures(), 2);
    assert_eq!(target.stats.requests(), 0);
}

#[tokio::test]
async fn plain_http_to_a_tls_port_is_an_ordinary_retryable_error() {
    // A protocol mix-up is not a certificate problem: it stays retryable.
    let ca = TestCa::generate().unwrap();
    let target = https_target(&ca, Alpn::Http2).await;
    let url = target.url("/ok").replacen("https://", "http://", 1);
    let result = firer(&ClientOptions::default()).fire(&get(url)).await;
    assert!(result.verdict.is_retryable(), "{result:?}");
}

#[tokio::test]
async fn http2_carries_many_concurrent_requests_on_one_connection() {
    let ca = TestCa::generate().unwrap();
    let target = https_target(&ca, Alpn::Http2).await;
    let firer = firer(&options_trusting(&ca));
    // Warm: one request opens the connection, as the first of a batch would.
    assert_eq!(
        firer.fire(&get(target.url("/ok"))).await.verdict,
        Verdict::Succeeded
    );

    let results = burst(&firer, &target, 50, "/delay/300", Limits::new(100, 50)).await;

    assert_eq!(results.len(), 50);
    for (i, fired) in &results {
        match fired {
            Fired::Done(r) => assert_eq!(r.verdict, Verdict::Succeeded, "job {i}: {r:?}"),
            Fired::NotStarted | Fired::Held { .. } => panic!("job {i} not started"),
        }
    }
    // All 50 were in flight together, as streams of one connection.
    assert_eq!(target.stats.max_in_flight(), 50);
    assert_eq!(target.stats.connections(), 1);
    assert_eq!(target.stats.tls_handshakes(), 1);
    assert!(target
        .stats
        .records()
        .iter()
        .all(|r| r.version == Version::HTTP_2));
}

#[tokio::test]
async fn a_cold_burst_to_an_http2_host_opens_one_connection() {
    let ca = TestCa::generate().unwrap();
    let target = https_target(&ca, Alpn::Http2).await;
    let firer = firer(&options_trusting(&ca));

    // No warm-up request: all 100 are ready at once, before anyone knows
    // the host speaks HTTP/2. Without the warm-up gate each opened its own
    // TLS connection (100 handshakes, 99 connections dropped).
    let started = std::time::Instant::now();
    let results = burst(&firer, &target, 100, "/delay/200", Limits::new(100, 100)).await;

    assert_eq!(results.len(), 100);
    assert!(results
        .iter()
        .all(|(_, f)| matches!(f, Fired::Done(r) if r.verdict == Verdict::Succeeded)));
    assert_eq!(target.stats.tls_handshakes(), 1);
    assert_eq!(target.stats.connections(), 1);
    // The rest waited for one handshake, not for the first response.
    assert_eq!(target.stats.max_in_flight(), 100);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn a_cold_burst_to_an_http1_host_still_runs_in_parallel() {
    let ca = TestCa::generate().unwrap();
    let target = https_target(&ca, Alpn::Http1Only).await;
    let firer = firer(&options_trusting(&ca));

    let results = burst(&firer, &target, 20, "/delay/300", Limits::new(20, 20)).await;

    assert_eq!(results.len(), 20);
    // Held only until the first connection was up, then one each.
    assert_eq!(target.stats.max_in_flight(), 20);
    assert_eq!(target.stats.tls_handshakes(), 20);
}

#[tokio::test]
async fn http2_streams_count_against_the_per_host_cap() {
    let ca = TestCa::generate().unwrap();
    let target = https_target(&ca, Alpn::Http2).await;
    let firer = firer(&options_trusting(&ca));

    let results = burst(&firer, &target, 30, "/delay/100", Limits::new(100, 5)).await;

    assert_eq!(results.len(), 30);
    assert_eq!(target.stats.max_in_flight(), 5);
}

#[tokio::test]
async fn http1_over_tls_reuses_kept_alive_connections() {
    let ca = TestCa::generate().unwrap();
    let target = https_target(&ca, Alpn::Http1Only).await;
    let firer = firer(&options_trusting(&ca));

    for round in 0..3 {
        let results = burst(&firer, &target, 10, "/delay/100", Limits::new(10, 10)).await;
        assert_eq!(results.len(), 10, "round {round}");
    }
    // 30 requests, at most 10 at a time: each connection carries several,
    // and never more connections than requests in flight.
    assert!(
        target.stats.tls_handshakes() <= 10,
        "{}",
        target.stats.tls_handshakes()
    );
    assert_eq!(target.stats.requests(), 30);
}
