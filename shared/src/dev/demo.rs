//! `sundial dev --demo`: the echo endpoint's address opened in the
//! allow-list, and the demo task registered (or reset) by name.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use chrono::Utc;
use sqlx::PgPool;

use super::{defaults, DevError};
use crate::config::Settings;
use crate::fire::TargetGuard;
use crate::store::{self, StoreError};
use crate::task::{Task, TaskSpec};

/// Opens the demo endpoint's address in the allow-list if it is not open
/// already. The guard matches addresses, not ports, so this opens
/// `127.0.0.1` on every port for this process: the narrowest entry it can
/// express. Local endpoints on other loopback addresses stay refused.
pub(super) fn open_for_demo(
    settings: &mut Settings,
    ip: IpAddr,
    notes: &mut Vec<String>,
) -> Result<(), DevError> {
    if TargetGuard::new(&settings.allow_targets)?.is_ip_allowed(ip) {
        return Ok(());
    }
    let entry = match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    };
    notes.push(format!(
        "demo: allowing {entry} for the echo endpoint (the guard has no per-port entries, \
         so every port on {ip} is open for this process)"
    ));
    settings.allow_targets.push(entry);
    Ok(())
}

/// Registers the demo task, or resets it to its definition (the echo
/// endpoint's port changes on every start), by name: idempotent.
pub(super) async fn ensure_demo_task(pool: &PgPool, url: &str) -> Result<Task, DevError> {
    let mut spec = TaskSpec::new(defaults::DEMO_TASK, defaults::DEMO_SCHEDULE, url);
    spec.body = Some(r#"{"hello":"from sundial dev"}"#.to_string());
    spec.headers
        .insert("content-type".into(), "application/json".into());
    spec.timeout_ms = 5_000;
    let valid = spec.into_valid().map_err(StoreError::from)?;
    let now = Utc::now();
    let existing = match store::get_task_by_name(pool, defaults::DEMO_TASK).await? {
        Some(task) => task,
        None => match store::create_task(pool, &valid, now).await {
            Ok(task) => return Ok(task),
            // Created meanwhile by another dev process: use theirs.
            Err(StoreError::DuplicateName(_)) => store::get_task_by_name(pool, defaults::DEMO_TASK)
                .await?
                .ok_or(StoreError::DuplicateName(defaults::DEMO_TASK.into()))?,
            Err(err) => return Err(err.into()),
        },
    };
    if TaskSpec::of(&existing).ok().as_ref() == Some(valid.spec()) {
        return Ok(existing);
    }
    let mut tx = pool.begin().await.map_err(StoreError::from)?;
    let task = store::update_task(&mut tx, existing.id, &valid, now).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(task)
}

/// The demo's echo endpoint on 127.0.0.1: `/echo` answers 200 with what
/// it received (method, path, the `Idempotency-Key` and `Sundial-*`
/// headers, the body's size), so a newcomer sees what a target gets.
pub struct DemoServer {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl DemoServer {
    /// Starts it on a free port.
    async fn start() -> std::io::Result<DemoServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(echo);
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::warn!(error = %err, "demo echo endpoint stopped");
            }
        });
        Ok(DemoServer { addr, task })
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Echoes a request: method, path, the headers Sundial sets, body size.
async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Json<Value> {
    let sundial: serde_json::Map<String, Value> = headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            name.starts_with("sundial-") || name == "idempotency-key"
        })
        .map(|(name, value)| {
            let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_string(), Value::String(text))
        })
        .collect();
    Json(json!({
        "method": method.as_str(),
        "path": uri.path(),
        "headers": sundial,
        "body_bytes": body.len(),
    }))
}

/// With `--demo`, the echo endpoint, its address opened in the
/// allow-list; without, a hint when local targets would be refused.
pub(super) async fn demo_server(
    demo: bool,
    settings: &mut Settings,
    notes: &mut Vec<String>,
) -> Result<Option<DemoServer>, DevError> {
    if !demo {
        if settings.allow_targets.is_empty() {
            notes.push(
                "hint: targets on this machine are refused by the private-address guard; \
                 set SUNDIAL_ALLOW_TARGETS=127.0.0.1/32 to fire local endpoints"
                    .to_string(),
            );
        }
        return Ok(None);
    }
    let server = DemoServer::start().await.map_err(DevError::Demo)?;
    open_for_demo(settings, server.addr.ip(), notes)?;
    Ok(Some(server))
}
