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

mod common;
use common::get;

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

#[tokio::test]
async fn https_target_offering_only_http1_is_fired_over_http1() {
    let ca = TestCa::generate().unwrap();
    let target = https_target(&ca, Alpn::Http1Only).await;
    assert!(target.url("/").starts_with("https://127.0.0.1:"));

    let firer = firer(&options_trusting(&ca));
    let result = firer.fire(&get(target.url("/ok"))).await;

    assert_eq!(result.verdict, Verdict::Succeeded, "{result:?}");
    assert_eq!(result.http_status, Some(200));
    let records = target.stats.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].version, Version::HTTP_11);
    // One handshake learnt (by ALPN) that the origin speaks HTTP/1.1 only,
    // and its connection carried the request.
    assert_eq!(target.stats.tls_handshakes(), 1);
    // A warm HTTP/1.1 origin is not probed again: the kept-alive
    // connection carries the next requests.
    for _ in 0..2 {
        let result = firer.fire(&get(target.url("/ok"))).await;
        assert_eq!(result.verdict, Verdict::Succeeded, "{result:?}");
    }
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
    // Held only until the first handshake had shown the origin speaks
    // HTTP/1.1 only (the first request goes on that connection), then one
    // each: no handshake wasted.
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
    // and never more connections than requests in flight (plus the one
    // handshake that learnt the origin speaks HTTP/1.1 only).
    assert!(
        target.stats.tls_handshakes() <= 11,
        "{}",
        target.stats.tls_handshakes()
    );
    assert_eq!(target.stats.requests(), 30);
}

/// What one call came back with, in the terms both firing paths share.
fn outcome(result: &sundial::fire::FireResult) -> (Verdict, Option<u16>, Option<String>) {
    (
        result.verdict.clone(),
        result.http_status,
        result.response_excerpt.clone(),
    )
}

#[tokio::test]
async fn the_direct_http2_path_sends_and_reads_what_the_reqwest_path_does() {
    let handshakes = direct_and_reqwest_agree(Alpn::Http2, Version::HTTP_2).await;
    // One connection per pass: the direct one, then reqwest's.
    assert_eq!(handshakes, [1, 1]);
}

#[tokio::test]
async fn the_direct_http1_path_sends_and_reads_what_the_reqwest_path_does() {
    let handshakes = direct_and_reqwest_agree(Alpn::Http1Only, Version::HTTP_11).await;
    // 8 requests a pass (2 of them redirect hops): one connection carries
    // all but the hung request, which needs a new one (as through reqwest).
    assert_eq!(handshakes, [2, 2]);
}

/// Fire the same calls through the direct path and through reqwest at a
/// target offering `alpn`: the outcomes agree and the requests arrive alike
/// over `version`. Returns the TLS handshakes of each pass.
async fn direct_and_reqwest_agree(alpn: Alpn, version: Version) -> [u64; 2] {
    let ca = TestCa::generate().unwrap();
    let target = target_server::spawn(TargetConfig {
        tls: Some(ca.server_config(alpn).unwrap()),
        secrets: vec!["s3cret".into()],
        ..TargetConfig::default()
    })
    .await
    .unwrap();
    let post = |path: &str| FireRequest {
        method: "POST".into(),
        body: Some(r#"{"hello":"world"}"#.into()),
        headers: vec![("X-Api-Key".into(), "k-1".into())],
        ..get(target.url(path))
    };
    let calls = [
        post("/echo"),
        post("/redirect-chain/2"),
        get(target.url("/retry-after/7")),
        get(target.url("/status/404")),
        get(target.url("/bytes/200000")),
        FireRequest {
            timeout: Duration::from_millis(300),
            ..get(target.url("/hang"))
        },
    ];
    let mut seen = Vec::new();
    let mut handshakes = [0; 2];
    for (pass, direct_https) in [true, false].into_iter().enumerate() {
        let opts = ClientOptions {
            direct_https,
            ..options_trusting(&ca)
        };
        let guard = Arc::new(TargetGuard::from_env_value(LOCAL).unwrap());
        let signer = Signer::new(vec!["s3cret".into()]).unwrap();
        let firer = Firer::build(guard, signer, &opts).unwrap();
        let mut outcomes = Vec::new();
        for call in &calls {
            let result = firer.fire(call).await;
            outcomes.push(outcome(&result));
        }
        seen.push(outcomes);
        handshakes[pass] = target.stats.tls_handshakes() - handshakes.iter().sum::<u64>();
    }
    assert_eq!(
        seen[0], seen[1],
        "direct (left) and through reqwest (right)"
    );
    let direct = &seen[0];
    let echo: serde_json::Value = serde_json::from_str(direct[0].2.as_deref().unwrap()).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body"], r#"{"hello":"world"}"#);
    assert_eq!(echo["signature_valid"], true);
    assert_eq!(echo["content_type"], "application/json");
    assert_eq!(direct[1].0, Verdict::Succeeded, "redirects followed");
    assert_eq!(
        direct[2].0,
        Verdict::Retryable {
            retry_after: Some(Duration::from_secs(7)),
            timed_out: false
        }
    );
    assert_eq!(direct[3].0, Verdict::Failed);
    assert_eq!(
        direct[4].1,
        Some(200),
        "a long body is cut, the status kept"
    );
    assert_eq!(
        direct[5].0,
        Verdict::Retryable {
            retry_after: None,
            timed_out: true
        }
    );

    // Every request of both passes came over `version`, signed, with the
    // task's header and the same framing.
    let records = target.stats.records();
    assert!(records.iter().all(|r| r.version == version));
    let posts: Vec<_> = records.iter().filter(|r| r.path == "/echo").collect();
    assert_eq!(posts.len(), 2);
    for r in &posts {
        assert_eq!(r.signature_valid, Some(true));
        assert_eq!(r.header("x-api-key"), Some("k-1"));
        assert_eq!(r.header("content-length"), Some("17"));
        assert_eq!(
            r.header("user-agent"),
            Some(sundial::fire::client::USER_AGENT)
        );
        assert_eq!(r.header("accept"), Some("*/*"));
        if version == Version::HTTP_11 {
            let authority = target.url("").split('/').nth(2).map(str::to_owned);
            assert_eq!(r.header("host").map(str::to_owned), authority);
        }
    }
    handshakes
}
