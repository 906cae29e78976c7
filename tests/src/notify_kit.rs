//! The notification tests' kit: one local server that is both the task's
//! target and the notification receiver (each programmable to fail), the
//! admin API served locally, the deployed-shape drivers, and the README's
//! signature check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use serde_json::Value;
use sqlx::PgPool;
use sundial_testkit::database_url_for;

use crate::{driver_env, workspace_bin, Child};

pub const SECRET: &str = "notify-secret";
pub const ADMIN_TOKEN: &str = "notify-test-admin-token";

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: DateTime<Utc>,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn kind(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_string()
    }
}

/// The target and the notification receiver, on one local server.
#[derive(Default)]
pub struct Receiver {
    /// `/target` answers 500 while this is positive (counting down)...
    pub target_failures_left: AtomicI64,
    /// ... or always, while this is set.
    pub target_down: AtomicBool,
    pub targets: Mutex<Vec<Received>>,
    /// `/notify` answers 500 while this is positive (counting down).
    pub notify_failures_left: AtomicI64,
    pub notifications: Mutex<Vec<Received>>,
}

impl Receiver {
    pub fn target_hits(&self) -> usize {
        self.targets.lock().unwrap().len()
    }
    pub fn notifications(&self) -> Vec<Received> {
        self.notifications.lock().unwrap().clone()
    }
    pub fn of_kind(&self, kind: &str) -> Vec<Received> {
        self.notifications()
            .into_iter()
            .filter(|r| r.kind() == kind)
            .collect()
    }
}

pub fn record(headers: &HeaderMap, body: &[u8]) -> Received {
    Received {
        at: Utc::now(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.to_vec(),
    }
}

pub async fn target(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    r.targets.lock().unwrap().push(record(&headers, &body));
    let counting = r.target_failures_left.fetch_sub(1, Ordering::SeqCst) > 0;
    if r.target_down.load(Ordering::SeqCst) || counting {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

pub async fn notify(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    r.notifications
        .lock()
        .unwrap()
        .push(record(&headers, &body));
    if r.notify_failures_left.fetch_sub(1, Ordering::SeqCst) > 0 {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

/// A receiver that is down for good: accepts, never answers.
pub async fn hang() -> StatusCode {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    StatusCode::OK
}

pub async fn spawn_receiver() -> (Arc<Receiver>, String) {
    let state = Arc::new(Receiver::default());
    let app = Router::new()
        .route("/target", post(target))
        .route("/notify", post(notify))
        .route("/hang", post(hang))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (state, base)
}

/// The admin API, served locally (the same router the admin Lambda serves).
pub async fn spawn_admin(pool: &PgPool, queue: sundial::queue::sqs::SqsQueue) -> String {
    let guard = sundial::fire::TargetGuard::new(&["127.0.0.1/32".to_string()]).unwrap();
    let state = sundial::admin::AdminState::new(
        pool.clone(),
        Arc::new(queue),
        Arc::new(guard),
        ADMIN_TOKEN,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = sundial::admin::router(state);
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

pub async fn admin_post(base: &str, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let response = req.send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// The README's verification snippet, line for line in Rust: split the
/// signature header into `t` and `v1`, check the timestamp is digits
/// within the tolerance, build the signed string (`t`, then the values of
/// the four signed headers, absent ones empty, each followed by a line
/// feed, then the body) and compare HMAC-SHA256 in hex. `headers` has
/// lower-case names. [`crate::readme`] runs the snippet itself.
pub fn verify_like_the_readme(
    headers: &HashMap<String, String>,
    body: &[u8],
    secrets: &[&str],
    tolerance: i64,
) -> bool {
    let get = |name: &str| {
        headers
            .get(&name.to_ascii_lowercase())
            .map_or("", String::as_str)
    };
    let parts: HashMap<&str, &str> = get("Sundial-Signature")
        .split(',')
        .filter_map(|p| p.split_once('='))
        .collect();
    let (t, sig) = (
        parts.get("t").copied().unwrap_or(""),
        parts.get("v1").copied().unwrap_or(""),
    );
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(t_secs) = t.parse::<i64>() else {
        return false;
    };
    if (Utc::now().timestamp() - t_secs).abs() > tolerance {
        return false;
    }
    let mut lines = vec![t];
    lines.extend(sundial::fire::SIGNED_HEADERS.iter().map(|h| get(h)));
    let mut signed: Vec<u8> = lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect();
    signed.extend_from_slice(body);
    secrets.iter().any(|s| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(s.as_bytes()).unwrap();
        mac.update(&signed);
        // Constant time like hmac.compare_digest: verify_slice.
        hex::decode(sig).is_ok_and(|sig| mac.verify_slice(&sig).is_ok())
    })
}

/// The drivers of the deployed shape, with notifications to `notify_url`.
pub struct Drivers {
    pub scanner: Child,
    pub process: Child,
}

pub fn start_drivers(pool: &PgPool, queue_url: &str, extra: &[(&str, &str)]) -> Drivers {
    let mut env = driver_env(&database_url_for(pool), queue_url);
    env.push(("RUST_LOG".into(), "info".into()));
    env.push(("SUNDIAL_SIGNING_SECRETS".into(), SECRET.into()));
    env.push(("SUNDIAL_LOOKAHEAD_SECS".into(), "5".into()));
    for (k, v) in extra {
        env.push((k.to_string(), v.to_string()));
    }
    let sundial = workspace_bin("sundial");
    Drivers {
        process: Child::spawn(&sundial, &["process", "--wait", "20", "--emf"], &env),
        scanner: Child::spawn(&sundial, &["scan", "--loop", "--every", "2", "--emf"], &env),
    }
}

impl Drivers {
    /// SIGTERM both (a graceful stop) and wait for them to exit.
    pub async fn stop(mut self) -> (Vec<String>, Vec<String>) {
        for child in [&self.scanner, &self.process] {
            if let Some(pid) = child.child.id() {
                let _ = std::process::Command::new("kill")
                    .arg(pid.to_string())
                    .status();
            }
        }
        for child in [&mut self.scanner, &mut self.process] {
            let _ = tokio::time::timeout(Duration::from_secs(30), child.child.wait()).await;
        }
        // Let the output readers drain.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let lines = |c: &Child| [c.stdout_lines(), c.stderr_lines()].concat();
        (lines(&self.scanner), lines(&self.process))
    }
}

pub use crate::deployment::wait_until;

pub async fn task_row(pool: &PgPool, id: i64) -> sundial::task::Task {
    sundial::store::get_task(pool, id).await.unwrap()
}

/// Sum of an EMF metric over every record in `lines`.
pub fn emf_sum(lines: &[String], name: &str) -> f64 {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .filter_map(|v| v.get(name).and_then(Value::as_f64))
        .sum()
}

/// An event carries what a fired request carries: a signature that the
/// README's check accepts with the secret (and refuses with another), a
/// JSON body, `Idempotency-Key: notification:<id>` and its type in
/// `Sundial-Event`.
pub fn assert_signed_like_fired_requests(event: &Received) {
    assert!(event.headers.contains_key("sundial-signature"), "{event:?}");
    assert!(
        verify_like_the_readme(&event.headers, &event.body, &[SECRET], 300),
        "{event:?}"
    );
    assert!(!verify_like_the_readme(
        &event.headers,
        &event.body,
        &["other"],
        300
    ));
    assert!(
        crate::readme::python_verify(&event.headers, &event.body, &[SECRET]),
        "the README's Python snippet refused {event:?}"
    );
    let content_type = event.headers.get("content-type").map(String::as_str);
    assert_eq!(content_type, Some("application/json"));
    let json = event.json();
    let id = json["id"].as_str().expect("an event id");
    assert_eq!(
        event.headers.get("idempotency-key"),
        Some(&format!("notification:{}", id.trim_start_matches("evt_")))
    );
    assert_eq!(event.headers.get("sundial-event"), Some(&event.kind()));
}
