//! A local implementation of the AWS Lambda Runtime API (the HTTP protocol
//! between Lambda and a `provided.al2023` bootstrap), so tests can run the
//! real function binaries as Lambda would: the binary long-polls
//! `/invocation/next`, gets an event with its deadline, and posts the
//! response or error.
//!
//! <https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html>

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{mpsc, oneshot};

/// What the function answered.
#[derive(Debug)]
pub enum Answer {
    /// `POST /invocation/{id}/response`.
    Response(serde_json::Value),
    /// `POST /invocation/{id}/error`.
    Error(serde_json::Value),
}

struct Pending {
    request_id: String,
    event: serde_json::Value,
    deadline_ms: u64,
}

#[derive(Clone)]
struct Shared {
    events: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Pending>>>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Answer>>>>,
    init_errors: Arc<Mutex<Vec<serde_json::Value>>>,
}

/// A running Runtime API endpoint.
pub struct RuntimeApi {
    pub addr: SocketAddr,
    queue: mpsc::UnboundedSender<Pending>,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
    next_id: std::sync::atomic::AtomicU64,
}

impl RuntimeApi {
    /// Serves the API on 127.0.0.1 (an ephemeral port).
    pub async fn start() -> std::io::Result<Self> {
        let (queue, events) = mpsc::unbounded_channel();
        let shared = Shared {
            events: Arc::new(tokio::sync::Mutex::new(events)),
            waiting: Arc::new(Mutex::new(HashMap::new())),
            init_errors: Arc::new(Mutex::new(Vec::new())),
        };
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(RuntimeApi {
            addr,
            queue,
            shared,
            task,
            next_id: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Environment a bootstrap needs to find this API, as Lambda sets it.
    pub fn env(&self, function_name: &str) -> Vec<(String, String)> {
        [
            ("AWS_LAMBDA_RUNTIME_API", self.addr.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", function_name.to_string()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_string()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_string()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{function_name}"),
            ),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME",
                "2026/11/22/[$LATEST]test".to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Hands `event` to the function with `timeout` to run, and waits (up
    /// to `timeout` + 5 s) for its answer.
    pub async fn invoke(&self, event: serde_json::Value, timeout: Duration) -> Option<Answer> {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request_id = format!("8476a536-e9f4-11e8-9739-{n:012}");
        let deadline_ms = (std::time::SystemTime::now() + timeout)
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let (tx, rx) = oneshot::channel();
        self.shared
            .waiting
            .lock()
            .ok()?
            .insert(request_id.clone(), tx);
        self.queue
            .send(Pending {
                request_id,
                event,
                deadline_ms,
            })
            .ok()?;
        tokio::time::timeout(timeout + Duration::from_secs(5), rx)
            .await
            .ok()?
            .ok()
    }

    /// Errors the function reported while initialising.
    pub fn init_errors(&self) -> Vec<serde_json::Value> {
        self.shared
            .init_errors
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn next(State(shared): State<Shared>) -> impl IntoResponse {
    let pending = shared.events.lock().await.recv().await;
    let Some(p) = pending else {
        return (StatusCode::GONE, HeaderMap::new(), String::new());
    };
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    put("lambda-runtime-aws-request-id", p.request_id);
    put("lambda-runtime-deadline-ms", p.deadline_ms.to_string());
    put(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:sundial-test".to_string(),
    );
    put(
        "lambda-runtime-trace-id",
        "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1".to_string(),
    );
    put("content-type", "application/json".to_string());
    (StatusCode::OK, headers, p.event.to_string())
}

fn answer(shared: &Shared, id: &str, answer: Answer) -> StatusCode {
    let waiter = shared.waiting.lock().ok().and_then(|mut w| w.remove(id));
    match waiter {
        Some(tx) => {
            let _ = tx.send(answer);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn response(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    let value = json_or_text(&body);
    answer(&shared, &id, Answer::Response(value))
}

async fn error(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    let value = json_or_text(&body);
    answer(&shared, &id, Answer::Error(value))
}

async fn init_error(State(shared): State<Shared>, body: axum::body::Bytes) -> StatusCode {
    let value = json_or_text(&body);
    if let Ok(mut e) = shared.init_errors.lock() {
        e.push(value);
    }
    StatusCode::ACCEPTED
}

/// A body as JSON, or as a JSON string when it is not JSON.
fn json_or_text(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into()))
}
