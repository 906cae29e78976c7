//! One deployed-shape setup for the end-to-end tests, so each test file
//! says only what is particular to it: a fresh queue, the drivers'
//! environment, the admin API as the admin Lambda builds it (from the same
//! settings), and the helpers every such test reaches for (stopping a
//! driver, reading its EMF, the occurrence behind a request, polling).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use sundial::admin::AdminState;
use sundial::config::Settings;
use sundial::health::{HealthSettings, PipelineCheck};
use sundial_target::RequestRecord;
use sundial_testkit::database_url_for;

use crate::{driver_env, fresh_queue, serve_admin, workspace_bin, Child};

/// The services of one test: a queue (and, if asked, a DLQ), the drivers'
/// environment and the admin API on loopback.
pub struct Deployment {
    pub pool: PgPool,
    pub env: Vec<(String, String)>,
    pub api: String,
    pub http: reqwest::Client,
    pub token: String,
}

/// What a test sets beyond the defaults.
#[derive(Default)]
pub struct Setup {
    /// Extra driver settings, after `driver_env` and `RUST_LOG=info`.
    pub env: Vec<(&'static str, String)>,
    /// A DLQ: `SUNDIAL_DLQ_URL` for the drivers and the admin API's
    /// pipeline check.
    pub dlq: bool,
}

impl Deployment {
    /// The defaults: no DLQ, nothing beyond `driver_env`.
    pub async fn start(pool: &PgPool, prefix: &str, token: &str) -> Deployment {
        Deployment::start_with(pool, prefix, token, Setup::default()).await
    }

    pub async fn start_with(pool: &PgPool, prefix: &str, token: &str, setup: Setup) -> Deployment {
        let queue = fresh_queue(prefix).await;
        let mut env = driver_env(&database_url_for(pool), queue.queue_url());
        env.push(("RUST_LOG".into(), "info".into()));
        let dlq = match setup.dlq {
            true => Some(fresh_queue(&format!("{prefix}-dlq")).await),
            false => None,
        };
        if let Some(dlq) = &dlq {
            env.push(("SUNDIAL_DLQ_URL".into(), dlq.queue_url().to_string()));
        }
        env.extend(setup.env.into_iter().map(|(k, v)| (k.to_string(), v)));
        let settings = Settings::from_map(&env.iter().cloned().collect()).unwrap();
        let guard = sundial::fire::TargetGuard::new(&settings.allow_targets).unwrap();
        let mut state = AdminState::new(pool.clone(), Arc::new(queue), Arc::new(guard), token);
        if let Some(dlq) = dlq {
            state = state.with_pipeline(PipelineCheck {
                settings: HealthSettings::from_settings(&settings),
                dlq: Some(Arc::new(dlq)),
            });
        }
        Deployment {
            pool: pool.clone(),
            env,
            api: serve_admin(state).await,
            http: reqwest::Client::new(),
            token: token.to_string(),
        }
    }

    /// The built `sundial` binary with the drivers' environment.
    pub fn spawn(&self, args: &[&str]) -> Child {
        Child::spawn(&workspace_bin("sundial"), args, &self.env)
    }

    /// An authorised request to the admin API: the status and the JSON body
    /// (`null` when there is none).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A GET that must succeed.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Value {
        let mut url = url::Url::parse(&format!("{}{path}", self.api)).unwrap();
        url.query_pairs_mut().extend_pairs(query);
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}: {response:?}");
        response.json().await.unwrap()
    }
}

/// SIGTERM: a graceful stop, as ECS or a terminal would send it.
pub fn sigterm(child: &Child) {
    if let Some(pid) = child.child.id() {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
}

/// SIGTERM, then the exit (which must be clean, within `limit`) and the
/// rest of the output.
pub async fn stop(mut child: Child, limit: Duration) -> Child {
    sigterm(&child);
    let status = tokio::time::timeout(limit, child.child.wait())
        .await
        .expect("the driver exits on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}: {:?}", child.stderr_lines());
    tokio::time::sleep(Duration::from_millis(300)).await;
    child
}

/// The EMF records a driver printed on stdout.
pub fn emf_records(child: &Child) -> Vec<Value> {
    child
        .stdout_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect()
}

/// The occurrence a request was fired for, from its `Idempotency-Key`.
pub fn occurrence_of(r: &RequestRecord) -> Option<(i64, DateTime<Utc>)> {
    let key = r.idempotency_key.as_deref()?;
    let (id, at) = key.split_once(':')?;
    Some((
        id.parse().ok()?,
        DateTime::parse_from_rfc3339(at).ok()?.to_utc(),
    ))
}

/// Waits until `done` holds, polling every 200 ms; panics with `what` after
/// `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
