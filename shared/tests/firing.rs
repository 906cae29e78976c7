//! Firing engine against real local HTTP servers: real sockets, real
//! reqwest, no mocks. Traffic goes to 127.0.0.1 only; forbidden addresses
//! (169.254.169.254, 10.x, 127.0.0.2) are refused by the guard before any
//! connection is attempted.

use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use futures::{stream, StreamExt};
use sundial::fire::{
    fire_stream, ClientOptions, FireRequest, FireResult, Fired, Firer, GuardError, Limits, Signer,
    TargetGuard, Verdict,
};
use sundial_target::{self as target_server, TargetConfig, TargetServer};
use tokio::time::Instant;

const LOCAL: &str = "127.0.0.1/32,::1/128";

fn guard(allow: &str) -> Arc<TargetGuard> {
    Arc::new(TargetGuard::from_env_value(allow).unwrap())
}

fn firer_with(allow: &str, secrets: &[&str]) -> Arc<Firer> {
    let signer = Signer::new(secrets.iter().map(|s| s.to_string()).collect()).unwrap();
    let opts = ClientOptions {
        concurrency: 64,
        ..ClientOptions::default()
    };
    Arc::new(Firer::build(guard(allow), signer, &opts).unwrap())
}

fn local_firer() -> Arc<Firer> {
    firer_with(LOCAL, &[])
}

fn get(url: impl Into<String>, timeout: Duration) -> FireRequest {
    FireRequest {
        method: "GET".into(),
        url: url.into(),
        headers: Vec::new(),
        body: None,
        timeout,
        idempotency_key: "task-1:2024-01-01T00:00:00Z".into(),
        flow: None,
    }
}

async fn server() -> TargetServer {
    target_server::spawn(TargetConfig::default()).await.unwrap()
}

async fn fire(firer: &Firer, url: impl Into<String>) -> FireResult {
    firer.fire(&get(url, Duration::from_secs(5))).await
}

const NOT_TIMED_OUT: Verdict = Verdict::Retryable {
    retry_after: None,
    timed_out: false,
};

// ---------------------------------------------------------------- outcomes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_are_classified_by_status() {
    let srv = server().await;
    let firer = local_firer();

    let ok = fire(&firer, srv.url("/ok")).await;
    assert_eq!(ok.verdict, Verdict::Succeeded);
    assert_eq!(ok.http_status, Some(200));
    assert_eq!(ok.response_excerpt.as_deref(), Some("ok"));
    assert_eq!(ok.error, None);

    let err = fire(&firer, srv.url("/status/500")).await;
    assert_eq!(err.verdict, NOT_TIMED_OUT);
    assert_eq!(err.http_status, Some(500));

    let limited = fire(&firer, srv.url("/retry-after/2")).await;
    assert_eq!(
        limited.verdict,
        Verdict::Retryable {
            retry_after: Some(Duration::from_secs(2)),
            timed_out: false
        }
    );
    assert_eq!(limited.http_status, Some(429));

    let capped = fire(&firer, srv.url("/retry-after/86400")).await;
    assert_eq!(
        capped.verdict,
        Verdict::Retryable {
            retry_after: Some(Duration::from_secs(900)),
            timed_out: false
        }
    );

    let missing = fire(&firer, srv.url("/status/404")).await;
    assert_eq!(missing.verdict, Verdict::Failed);
    assert_eq!(missing.http_status, Some(404));

    let moved = fire(&firer, srv.url("/status/302")).await;
    assert_eq!(moved.verdict, Verdict::Failed, "3xx without Location");
    srv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_past_timeout_is_retryable_timeout() {
    let srv = server().await;
    let firer = local_firer();
    let started = StdInstant::now();
    let result = firer
        .fire(&get(srv.url("/hang"), Duration::from_millis(300)))
        .await;
    assert_eq!(
        result.verdict,
        Verdict::Retryable {
            retry_after: None,
            timed_out: true
        }
    );
    assert_eq!(result.http_status, None);
    assert!(result.latency >= Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(result.error.unwrap().contains("timed out"));
    srv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_retryable() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }; // listener dropped: nothing listens on addr now
    let result = fire(&local_firer(), format!("http://{addr}/ok")).await;
    assert_eq!(result.verdict, NOT_TIMED_OUT);
    assert_eq!(result.http_status, None);
    assert!(result.error.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_body_is_read_up_to_the_cap_only() {
    let srv = server().await;
    let firer = Arc::new(
        Firer::build(guard(LOCAL), Signer::default(), &ClientOptions::default())
            .unwrap()
            .with_max_body_bytes(64 * 1024),
    );
    // 256 MiB would take a while to transfer in full; the cap stops early.
    let result = fire(&firer, srv.url("/bytes/268435456")).await;
    assert_eq!(result.verdict, Verdict::Succeeded);
    assert_eq!(result.response_excerpt.unwrap().len(), 1024);
    assert!(result.latency < Duration::from_secs(3));
    srv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_method_and_header_fail_without_echoing_values() {
    let srv = server().await;
    let firer = local_firer();
    let mut req = get(srv.url("/ok"), Duration::from_secs(5));
    req.method = "NOT A METHOD".into();
    assert_eq!(firer.fire(&req).await.verdict, Verdict::Failed);

    let mut req = get(srv.url("/ok"), Duration::from_secs(5));
    req.headers = vec![("Authorization".into(), "Bearer s3cret\n".into())];
    let result = firer.fire(&req).await;
    assert_eq!(result.verdict, Verdict::Failed);
    let error = result.error.unwrap();
    assert!(error.contains("Authorization"), "{error}");
    assert!(!error.contains("s3cret"), "{error}");
    assert_eq!(srv.stats.requests(), 0);
    srv.shutdown().await.unwrap();
}

// ---------------------------------------------------------------- guard

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_needs_the_allow_list() {
    let srv = server().await;
    let refused = fire(&firer_with("", &[]), srv.url("/ok")).await;
    assert_eq!(refused.verdict, Verdict::Refused);
    assert!(refused
        .error
        .unwrap()
        .contains("forbidden address 127.0.0.1"));
    assert_eq!(srv.stats.requests(), 0, "refused before connecting");

    let allowed = fire(&firer_with("127.0.0.1/32", &[]), srv.url("/ok")).await;
    assert_eq!(allowed.verdict, Verdict::Succeeded);
    assert_eq!(srv.stats.requests(), 1);

    assert!(matches!(
        TargetGuard::default().check_url(&srv.url("/ok")).await,
        Err(GuardError::ForbiddenAddress { .. })
    ));
    assert!(guard("127.0.0.1/32")
        .check_url(&srv.url("/ok"))
        .await
        .is_ok());
    srv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_address_is_refused_even_under_broad_allow_entries() {
    for allow in ["0.0.0.0/0", "169.254.0.0/16", "0.0.0.0/0,::/0"] {
        let firer = firer_with(allow, &[]);
        for url in [
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "http://[::ffff:169.254.169.254]/latest/meta-data/",
            "http://[fd00:ec2::254]/latest/meta-data/",
            // The same address inside IPv6 forms that carry IPv4.
            "http://[::ffff:0:a9fe:a9fe]/latest/meta-data/",
            "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
            "http://[64:ff9b:1::a9fe:a9fe]/latest/meta-data/",
            "http://[2002:a9fe:a9fe::]/latest/meta-data/",
            "http://[2001:0:808:808::5601:5601]/latest/meta-data/",
        ] {
            // A 200 ms timeout: had a connection been attempted the verdict
            // would be a timeout or connect error, not Refused.
            let result = firer.fire(&get(url, Duration::from_millis(200))).await;
            assert_eq!(result.verdict, Verdict::Refused, "{allow} {url}");
            assert!(result.latency < Duration::from_millis(100), "{allow} {url}");
            assert!(matches!(
                firer.guard().check_url(url).await,
                Err(GuardError::ForbiddenAddress { .. })
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_resolving_to_loopback_is_refused_at_connect_time() {
    let srv = server().await;
    let url = format!("http://localhost:{}/ok", srv.addr.port());

    // No literal to check: only the resolver can catch it.
    let refused = fire(&firer_with("", &[]), url.as_str()).await;
    assert_eq!(refused.verdict, Verdict::Refused);
    assert!(refused.error.unwrap().contains("localhost"));
    assert_eq!(srv.stats.requests(), 0);
    assert!(matches!(
        TargetGuard::default().check_url(&url).await,
        Err(GuardError::ForbiddenAddress { .. })
    ));

    // Allowed by address: the resolver keeps 127.0.0.1.
    let by_ip = fire(&firer_with("127.0.0.1/32", &[]), url.as_str()).await;
    assert_eq!(by_ip.verdict, Verdict::Succeeded);

    // Allowed by name, while the bare IP stays refused.
    let by_name = firer_with("LOCALHOST", &[]);
    assert_eq!(
        fire(&by_name, url.as_str()).await.verdict,
        Verdict::Succeeded
    );
    assert_eq!(
        fire(&by_name, srv.url("/ok")).await.verdict,
        Verdict::Refused
    );
    assert_eq!(srv.stats.requests(), 2);
    srv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_guarded_and_limited() {
    let srv = server().await;
    let firer = firer_with("127.0.0.1/32", &[]);
    let port = srv.addr.port();
    for target in [
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/".to_string(),
        format!("http://127.0.0.2:{port}/ok"),
    ] {
        let url = format!("{}?to={}", srv.url("/redirect"), urlencode(&target));
        let result = fire(&firer, url).await;
        assert_eq!(result.verdict, Verdict::Refused, "{target}");
    }
    // Each refused redirect reached the server once (the /redirect hop) only.
    assert_eq!(srv.stats.requests(), 3);

    // A host-name hop goes through the guarded resolver.
    let to_localhost = format!("http://localhost:{port}/ok");
    let url = format!("{}?to={}", srv.url("/redirect"), urlencode(&to_localhost));
    assert_eq!(fire(&firer, url).await.verdict, Verdict::Succeeded);

    assert_eq!(
        fire(&firer, srv.url("/redirect-chain/3")).await.verdict,
        Verdict::Succeeded
    );
    let too_long = fire(&firer, srv.url("/redirect-chain/4")).await;
    assert_eq!(too_long.verdict, Verdict::Failed);
    assert!(too_long.error.unwrap().contains("more than 3 redirects"));
    srv.shutdown().await.unwrap();
}

/// A request carrying credentials of its own, as tasks do.
fn with_credentials(url: impl Into<String>) -> FireRequest {
    let mut req = get(url, Duration::from_secs(5));
    req.headers = vec![
        ("X-Api-Key".into(), "task-secret".into()),
        ("Authorization".into(), "Bearer task-token".into()),
        ("Cookie".into(), "session=1".into()),
    ];
    req
}

const CREDENTIALS: [&str; 5] = [
    "x-api-key",
    "authorization",
    "cookie",
    "idempotency-key",
    "sundial-signature",
];

fn redirect_to(from: &TargetServer, to: &str) -> String {
    format!("{}?to={}", from.url("/redirect"), urlencode(to))
}

async fn signed_server() -> TargetServer {
    target_server::spawn(TargetConfig {
        secrets: vec!["redirect-secret".into()],
        ..TargetConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_redirects_carry_no_task_headers() {
    // Two servers on 127.0.0.1: different ports are different origins.
    let a = signed_server().await;
    let b = signed_server().await;
    let firer = firer_with("127.0.0.1/32", &["redirect-secret"]);

    let result = firer
        .fire(&with_credentials(redirect_to(&a, &b.url("/echo"))))
        .await;
    assert_eq!(result.verdict, Verdict::Succeeded);
    let at_a = &a.stats.records()[0];
    for name in CREDENTIALS {
        assert!(at_a.header(name).is_some(), "A should get {name}");
    }
    assert_eq!(at_a.signature_valid, Some(true));
    let at_b = b.stats.records();
    assert_eq!(at_b.len(), 1);
    for name in CREDENTIALS {
        assert_eq!(at_b[0].header(name), None, "B must not get {name}");
    }

    // Back to the first origin after leaving it: still nothing (the
    // other origin chose that hop).
    let back = redirect_to(&b, &a.url("/echo"));
    let result = firer.fire(&with_credentials(redirect_to(&a, &back))).await;
    assert_eq!(result.verdict, Verdict::Succeeded);
    let last = a.stats.records().pop().unwrap();
    assert_eq!(last.path, "/echo");
    for name in CREDENTIALS {
        assert_eq!(last.header(name), None, "A via B must not get {name}");
    }

    // A 307 repeats the request, body included, but still without the
    // task's headers.
    let mut post = with_credentials(format!("{}&status=307", redirect_to(&a, &b.url("/echo"))));
    post.method = "POST".into();
    post.body = Some("{\"n\":1}".into());
    let result = firer.fire(&post).await;
    assert_eq!(result.verdict, Verdict::Succeeded);
    let echo: serde_json::Value =
        serde_json::from_str(result.response_excerpt.as_deref().unwrap()).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body"], "{\"n\":1}");
    assert_eq!(echo["content_type"], "application/json");
    let at_b = b.stats.records().pop().unwrap();
    for name in CREDENTIALS {
        assert_eq!(at_b.header(name), None, "B must not get {name} on a 307");
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_origin_redirects_keep_task_headers() {
    let a = signed_server().await;
    let firer = firer_with("127.0.0.1/32", &["redirect-secret"]);

    for to in [a.url("/echo"), "/echo".to_string()] {
        let result = firer.fire(&with_credentials(redirect_to(&a, &to))).await;
        assert_eq!(result.verdict, Verdict::Succeeded, "{to}");
        let last = a.stats.records().pop().unwrap();
        assert_eq!(last.path, "/echo");
        assert_eq!(last.header("x-api-key"), Some("task-secret"), "{to}");
        assert_eq!(last.header("authorization"), Some("Bearer task-token"));
        assert_eq!(
            last.header("idempotency-key"),
            Some("task-1:2024-01-01T00:00:00Z")
        );
        assert_eq!(last.signature_valid, Some(true));
    }

    // A 303 turns a POST into a GET without a body; the signature is
    // made again over the empty body, so it still verifies.
    let mut post = with_credentials(format!("{}&status=303", redirect_to(&a, "/echo")));
    post.method = "POST".into();
    post.body = Some("{\"n\":1}".into());
    let result = firer.fire(&post).await;
    assert_eq!(result.verdict, Verdict::Succeeded);
    let last = a.stats.records().pop().unwrap();
    assert_eq!((last.method.as_str(), last.body_len), ("GET", 0));
    assert_eq!(last.header("x-api-key"), Some("task-secret"));
    assert_eq!(last.header("content-type"), None);
    assert_eq!(last.signature_valid, Some(true));
    assert_eq!(a.stats.bad_signatures(), 0);
    a.shutdown().await.unwrap();
}

// ---------------------------------------------------------------- bodies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_text_are_described() {
    let srv = server().await;
    let firer = local_firer();
    for (kind, excerpt) in [
        ("nul", "<binary, 3 B, text/plain; charset=utf-8>"),
        ("invalid-utf8", "<binary, 5 B, text/plain; charset=utf-8>"),
        ("gzip", "<binary, 11 B, application/json, gzip>"),
        ("png", "<binary, 12 B, image/png>"),
    ] {
        let result = fire(&firer, srv.url(&format!("/binary/{kind}"))).await;
        assert_eq!(result.verdict, Verdict::Succeeded, "{kind}");
        assert_eq!(result.response_excerpt.as_deref(), Some(excerpt), "{kind}");
    }
    srv.shutdown().await.unwrap();
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_check_rejects_bad_urls() {
    let g = TargetGuard::default();
    assert!(matches!(
        g.check_url("ftp://example.com/").await,
        Err(GuardError::UnsupportedScheme { .. })
    ));
    assert!(matches!(
        g.check_url("not a url").await,
        Err(GuardError::InvalidUrl(_))
    ));
    assert!(matches!(
        g.check_url("http://10.1.2.3/").await,
        Err(GuardError::ForbiddenAddress { .. })
    ));
}

// ---------------------------------------------------------------- signing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_signed_and_rotation_verifies() {
    let srv = target_server::spawn(TargetConfig {
        secrets: vec!["new-secret".into(), "old-secret".into()],
        ..TargetConfig::default()
    })
    .await
    .unwrap();
    // The firer still signs with the old secret (rotation in progress).
    let firer = firer_with(LOCAL, &["old-secret", "new-secret"]);

    for i in 0..10 {
        let mut req = get(srv.url("/echo"), Duration::from_secs(5));
        req.idempotency_key = format!("task-{i}:occurrence");
        if i % 2 == 0 {
            req.method = "post".into();
            req.body = Some(format!("{{\"n\":{i}}}"));
        }
        // Users cannot override Sundial's own headers.
        req.headers = vec![
            ("Idempotency-Key".into(), "forged".into()),
            ("sundial-signature".into(), "t=0,v1=00".into()),
            ("X-Custom".into(), "yes".into()),
        ];
        let result = firer.fire(&req).await;
        assert_eq!(result.verdict, Verdict::Succeeded);
        let echo: serde_json::Value =
            serde_json::from_str(result.response_excerpt.as_deref().unwrap()).unwrap();
        assert_eq!(echo["signature_valid"], true);
        assert_eq!(echo["idempotency_key"], format!("task-{i}:occurrence"));
        if i % 2 == 0 {
            assert_eq!(echo["method"], "POST");
            assert_eq!(echo["content_type"], "application/json");
        }
    }
    let records = srv.stats.records();
    assert_eq!(records.len(), 10);
    assert!(records.iter().all(|r| r.signature_valid == Some(true)));
    assert_eq!(srv.stats.bad_signatures(), 0);

    // A sender with an unknown secret is caught.
    let stranger = firer_with(LOCAL, &["someone-else"]);
    fire(&stranger, srv.url("/ok")).await;
    let unsigned = firer_with(LOCAL, &[]);
    fire(&unsigned, srv.url("/ok")).await;
    assert_eq!(srv.stats.bad_signatures(), 2);
    srv.shutdown().await.unwrap();
}

// ---------------------------------------------------------------- pool

fn collect_tags(results: &[(usize, Fired)]) -> Vec<usize> {
    results.iter().map(|(t, _)| *t).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_endpoints_do_not_hold_back_fast_ones() {
    let srv = server().await;
    let firer = local_firer();
    let timeout = Duration::from_secs(2);
    // Every 20th job hangs: 10 hanging, 190 fast, spread through the input.
    let jobs = (0..200).map(|i| {
        let path = if i % 20 == 7 { "/hang" } else { "/delay/20" };
        (i, get(srv.url(path), timeout))
    });
    let started = StdInstant::now();
    let results: Vec<(usize, Fired)> = fire_stream(firer, stream::iter(jobs), Limits::new(50, 50))
        .collect()
        .await;
    let elapsed = started.elapsed();

    assert_eq!(results.len(), 200);
    let is_hang = |i: usize| i % 20 == 7;
    let first_hang = results.iter().position(|(i, _)| is_hang(*i)).unwrap();
    assert_eq!(
        first_hang, 190,
        "every fast job finished before the first timeout"
    );
    for (i, fired) in &results {
        let Fired::Done(result) = fired else {
            panic!("job {i} not started")
        };
        if is_hang(*i) {
            assert!(matches!(
                result.verdict,
                Verdict::Retryable {
                    timed_out: true,
                    ..
                }
            ));
        } else {
            assert_eq!(result.verdict, Verdict::Succeeded, "job {i}");
        }
    }
    assert!(elapsed < timeout * 2, "took {elapsed:?}");
    assert!(srv.stats.max_in_flight() <= 50);
    srv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_host_cap_holds_while_other_hosts_proceed() {
    let slow = server().await;
    let fast = server().await;
    let firer = local_firer();
    // Interleaved: A B B A B B ... 20 jobs for the slow host, 40 for the fast.
    let jobs = (0..60).map(|i| {
        let url = if i % 3 == 0 {
            slow.url("/delay/500")
        } else {
            fast.url("/delay/10")
        };
        (i, get(url, Duration::from_secs(10)))
    });
    let results: Vec<(usize, Fired)> = fire_stream(firer, stream::iter(jobs), Limits::new(50, 5))
        .collect()
        .await;

    assert_eq!(results.len(), 60);
    assert_eq!(slow.stats.max_in_flight(), 5);
    assert!(fast.stats.max_in_flight() <= 5);
    let tags = collect_tags(&results);
    let first_slow = tags.iter().position(|i| i % 3 == 0).unwrap();
    let last_fast = tags.iter().rposition(|i| i % 3 != 0).unwrap();
    assert!(
        last_fast < first_slow,
        "the fast host finished before the slow one answered once: {tags:?}"
    );
    slow.shutdown().await.unwrap();
    fast.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_waiting_for_its_host_holds_no_global_slot() {
    let slow = server().await;
    let fast = server().await;
    let firer = local_firer();
    // All slow jobs first. With 6 global slots and 5 per host, a design where
    // waiting jobs hold slots would start the fast jobs only after the slow
    // ones drained; here the sixth slot serves the fast host at once.
    let jobs = (0..20)
        .map(|i| (i, get(slow.url("/delay/800"), Duration::from_secs(10))))
        .chain((20..30).map(|i| (i, get(fast.url("/delay/10"), Duration::from_secs(10)))));
    let results: Vec<(usize, Fired)> = fire_stream(firer, stream::iter(jobs), Limits::new(6, 5))
        .collect()
        .await;

    let tags = collect_tags(&results);
    assert_eq!(
        &tags[..10].iter().filter(|i| **i >= 20).count(),
        &10,
        "{tags:?}"
    );
    assert_eq!(slow.stats.max_in_flight(), 5);
    assert_eq!(fast.stats.max_in_flight(), 1);
    slow.shutdown().await.unwrap();
    fast.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_guard_stops_starting_requests() {
    let srv = server().await;
    let firer = local_firer();
    // 1.5 s to the deadline, 0.2 s margin: the first two start (1.3 s usable),
    // after one 400 ms round less than MIN_USEFUL_TIME is left.
    let limits = Limits::new(2, 2).with_deadline(
        Instant::now() + Duration::from_millis(1500),
        Duration::from_millis(200),
    );
    let jobs = (0..10).map(|i| (i, get(srv.url("/delay/400"), Duration::from_secs(5))));
    let results: Vec<(usize, Fired)> = fire_stream(firer, stream::iter(jobs), limits)
        .collect()
        .await;

    assert_eq!(results.len(), 10);
    let mut done: Vec<usize> = Vec::new();
    let mut not_started: Vec<usize> = Vec::new();
    for (i, fired) in &results {
        match fired {
            Fired::Done(r) => {
                assert_eq!(r.verdict, Verdict::Succeeded);
                done.push(*i);
            }
            Fired::NotStarted => not_started.push(*i),
            Fired::Held { .. } => panic!("no flow control here, nothing is held"),
        }
    }
    done.sort_unstable();
    not_started.sort_unstable();
    assert!(
        !done.is_empty() && !not_started.is_empty(),
        "{done:?} {not_started:?}"
    );
    // Jobs start in input order, and nothing starts after the guard trips.
    assert_eq!(done, (0..done.len()).collect::<Vec<_>>());
    assert_eq!(not_started, (done.len()..10).collect::<Vec<_>>());
    assert_eq!(srv.stats.requests(), done.len() as u64);
    srv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_clamps_request_timeouts_and_skips_when_too_close() {
    let srv = server().await;
    let firer = local_firer();
    let started = StdInstant::now();
    let limits = Limits::new(4, 4).with_deadline(
        Instant::now() + Duration::from_millis(2500),
        Duration::from_millis(500),
    );
    let jobs = (0..2).map(|i| (i, get(srv.url("/hang"), Duration::from_secs(60))));
    let results: Vec<(usize, Fired)> = fire_stream(Arc::clone(&firer), stream::iter(jobs), limits)
        .collect()
        .await;
    for (_, fired) in &results {
        let Fired::Done(r) = fired else {
            panic!("should start")
        };
        assert!(matches!(
            r.verdict,
            Verdict::Retryable {
                timed_out: true,
                ..
            }
        ));
    }
    // Cut at deadline - margin (~2 s), not after the task's 60 s.
    assert!(started.elapsed() < Duration::from_secs(4));

    // Too close already: nothing starts.
    let limits = Limits::new(4, 4)
        .with_deadline(Instant::now() + Duration::from_millis(900), Duration::ZERO);
    let jobs = (0..5).map(|i| (i, get(srv.url("/ok"), Duration::from_secs(5))));
    let results: Vec<(usize, Fired)> = fire_stream(firer, stream::iter(jobs), limits)
        .collect()
        .await;
    assert_eq!(results.len(), 5);
    assert!(results.iter().all(|(_, f)| matches!(f, Fired::NotStarted)));
    assert_eq!(srv.stats.requests(), 2);
    srv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_stream_is_consumed_lazily() {
    let srv = server().await;
    let firer = local_firer();
    let url = srv.url("/ok");
    // An endless input: collecting it would never finish.
    let jobs = stream::iter(0usize..).map(move |i| (i, get(url.clone(), Duration::from_secs(5))));
    let fired = fire_stream(firer, jobs, Limits::new(4, 4));
    // The processor drives this inside a Lambda handler, which must be Send.
    fn assert_send<T: Send>(_: &T) {}
    assert_send(&fired);
    let results: Vec<(usize, Fired)> = fired.take(40).collect().await;
    assert_eq!(results.len(), 40);
    assert!(results
        .iter()
        .all(|(_, f)| matches!(f, Fired::Done(r) if r.verdict == Verdict::Succeeded)));
    srv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counting_mode_stores_no_records() {
    let srv = target_server::spawn(TargetConfig {
        record: false,
        ..TargetConfig::default()
    })
    .await
    .unwrap();
    let firer = local_firer();
    for _ in 0..5 {
        fire(&firer, srv.url("/ok")).await;
    }
    assert_eq!(srv.stats.requests(), 5);
    assert!(srv.stats.records().is_empty());
    srv.shutdown().await.unwrap();
}

// ---------------------------------------------------------------- target server

/// Sleeps until `ms` milliseconds into the next wall-clock second.
async fn into_next_second(ms: u32) {
    let into = chrono::Utc::now().timestamp_subsec_millis();
    tokio::time::sleep(Duration::from_millis(u64::from(1000 - into + ms))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admit_route_admits_r_per_second_per_path_and_throttles_the_rest() {
    let srv = server().await;
    let firer = local_firer();
    // A burst straddling a second boundary would count in two windows:
    // try again in the next second (a loaded machine), with fresh paths.
    for round in 0..3 {
        into_next_second(20).await;
        let second = chrono::Utc::now().timestamp();
        let a = srv.url(&format!("/admit/3/a{round}"));
        let b = srv.url(&format!("/admit/3/b{round}"));
        let mut verdicts = Vec::new();
        for url in [&a, &a, &a, &a, &a, &b] {
            verdicts.push(fire(&firer, url.clone()).await);
        }
        if chrono::Utc::now().timestamp() != second {
            continue;
        }
        let statuses: Vec<_> = verdicts.iter().map(|r| r.http_status).collect();
        let [ok, limited] = [Some(200), Some(429)];
        assert_eq!(statuses, [ok, ok, ok, limited, limited, ok]);
        assert_eq!(
            verdicts[3].verdict,
            Verdict::Retryable {
                retry_after: Some(Duration::from_secs(1)),
                timed_out: false
            }
        );
        // The target records what it answered.
        let recorded: Vec<_> = srv
            .stats
            .records()
            .iter()
            .filter(|r| r.path.ends_with(&format!("{round}")))
            .map(|r| r.status)
            .collect();
        assert_eq!(recorded, statuses);

        // The next second admits again.
        into_next_second(20).await;
        assert_eq!(fire(&firer, a.clone()).await.http_status, Some(200));
        assert_eq!(srv.stats.admitted(), 5);
        assert_eq!(srv.stats.throttled(), 2);

        let bad = fire(&firer, srv.url("/admit/many")).await;
        assert_eq!(bad.http_status, Some(400));
        srv.shutdown().await.unwrap();
        return;
    }
    panic!("no burst of six requests fit in one second");
}

/// Waits until connecting to `addr` succeeds (`true`) or is refused.
async fn wait_until_listening(addr: std::net::SocketAddr, listening: bool) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() == listening {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{addr} did not become {}",
        if listening {
            "reachable"
        } else {
            "unreachable"
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_down_refuses_connections_then_serves_again_on_its_port() {
    let srv = server().await;
    let firer = local_firer();
    // A pooled keep-alive connection is open when the host goes down.
    assert_eq!(
        fire(&firer, srv.url("/ok")).await.verdict,
        Verdict::Succeeded
    );

    srv.set_down(Some(target_server::Down::Refuse));
    assert_eq!(srv.down(), Some(target_server::Down::Refuse));
    wait_until_listening(srv.addr, false).await;
    let refused = fire(&firer, srv.url("/ok")).await;
    assert_eq!(refused.verdict, NOT_TIMED_OUT);
    assert_eq!(refused.http_status, None);
    assert!(refused.error.is_some());
    assert_eq!(
        srv.stats.requests(),
        1,
        "nothing reaches a host that is down"
    );

    srv.set_down(None);
    wait_until_listening(srv.addr, true).await;
    let back = fire(&firer, srv.url("/ok")).await;
    assert_eq!(back.verdict, Verdict::Succeeded);
    assert_eq!(srv.stats.requests(), 2);
    srv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_down_in_reset_mode_counts_every_attempt() {
    let srv = server().await;
    // The served request goes through its own client: a kept-alive
    // connection in the pool of the client under test could be the one the
    // server closes on going down, and that attempt would open no new
    // connection to reset.
    assert_eq!(
        fire(&local_firer(), srv.url("/ok")).await.verdict,
        Verdict::Succeeded
    );
    let firer = local_firer();

    srv.set_down(Some(target_server::Down::Reset));
    for _ in 0..3 {
        let reset = fire(&firer, srv.url("/ok")).await;
        assert_eq!(reset.verdict, NOT_TIMED_OUT);
        assert_eq!(reset.http_status, None);
    }
    assert_eq!(srv.stats.refused(), 3, "one reset connection per attempt");
    assert_eq!(srv.stats.requests(), 1);
    assert_eq!(
        srv.stats.connections(),
        1,
        "reset connections are not served ones"
    );

    srv.set_down(None);
    assert_eq!(
        fire(&firer, srv.url("/ok")).await.verdict,
        Verdict::Succeeded
    );
    assert_eq!(srv.stats.refused(), 3);
    srv.shutdown().await.unwrap();
}
