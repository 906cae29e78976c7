//! What the admin API tests share: a queue that captures what the API
//! sends (and can be told to refuse), a target check that accepts every
//! URL, and the router called as a tower service with the test token; for
//! the firing tests, a plain GET to fire ([`get`]). Each test file
//! includes it with `mod common;` and uses what it needs.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use sqlx::PgPool;
use sundial::admin::{self, AdminState, TargetCheck};
use sundial::queue::{DispatchQueue, Outgoing, SendReport};
use tower::ServiceExt;

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// Captures what the API sends; can be told to refuse.
#[derive(Default)]
pub struct CaptureQueue {
    pub sent: Mutex<Vec<Outgoing>>,
    pub refuse: AtomicBool,
}

#[async_trait]
impl DispatchQueue for CaptureQueue {
    async fn send(&self, messages: &[Outgoing]) -> SendReport {
        if self.refuse.load(Ordering::SeqCst) {
            return SendReport {
                failed: (0..messages.len()).collect(),
                first_error: Some("queue is down".into()),
                calls: 1,
            };
        }
        self.sent.lock().unwrap().extend_from_slice(messages);
        SendReport {
            calls: 1,
            ..SendReport::default()
        }
    }
}

/// Accepts every target: these tests are about the API, and a real guard
/// would refuse the loopback targets they use (or resolve random names).
pub struct AnyTarget;

#[async_trait]
impl TargetCheck for AnyTarget {
    async fn check(&self, _url: &str) -> Result<(), String> {
        Ok(())
    }
}

/// The admin router with a [`CaptureQueue`] behind it.
pub struct Api {
    pub router: Router,
    pub queue: Arc<CaptureQueue>,
}

impl Api {
    /// With [`AnyTarget`].
    pub fn new(pool: PgPool) -> Self {
        Api::with_guard(pool, Arc::new(AnyTarget))
    }

    pub fn with_guard(pool: PgPool, guard: Arc<dyn TargetCheck>) -> Self {
        let queue = Arc::new(CaptureQueue::default());
        let state = AdminState::new(pool, queue.clone(), guard, TOKEN);
        Api {
            router: admin::router(state),
            queue,
        }
    }

    /// The status and the JSON body (`null` when empty; a body that is not
    /// JSON fails the test).
    pub async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let response = self.router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!("not JSON ({status}): {}", String::from_utf8_lossy(&bytes))
            })
        };
        (status, value)
    }

    /// An authorised request with a raw body.
    pub async fn raw(&self, method: &str, path: &str, body: &str) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        if !body.is_empty() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        self.send(req.body(Body::from(body.to_string())).unwrap())
            .await
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.raw(method, path, &body).await
    }
}

/// A GET of `url` with a 5 s timeout and a fixed idempotency key.
pub fn get(url: impl Into<String>) -> sundial::fire::FireRequest {
    sundial::fire::FireRequest {
        method: "GET".into(),
        url: url.into(),
        headers: Vec::new(),
        body: None,
        timeout: std::time::Duration::from_secs(5),
        idempotency_key: "task-1:2024-01-01T00:00:00Z".into(),
        flow: None,
        fired_for: None,
    }
}
