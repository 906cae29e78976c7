//! What the CLI tests that run the built `sundial` binary against the
//! admin router share: a queue and a target check that accept anything, the
//! router on a loopback socket, and the binary run off the runtime thread.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::PgPool;
use sundial::admin::{self, AdminState, TargetCheck};
use sundial::queue::{DispatchQueue, Outgoing, SendReport};

/// A dispatch queue that accepts and drops every message.
pub struct NoQueue;

#[async_trait]
impl DispatchQueue for NoQueue {
    async fn send(&self, _messages: &[Outgoing]) -> SendReport {
        SendReport::default()
    }
}

/// A dispatch queue that keeps every message it is given.
#[derive(Default)]
pub struct CaptureQueue(pub std::sync::Mutex<Vec<Outgoing>>);

#[async_trait]
impl DispatchQueue for CaptureQueue {
    async fn send(&self, messages: &[Outgoing]) -> SendReport {
        if let Ok(mut sent) = self.0.lock() {
            sent.extend_from_slice(messages);
        }
        SendReport::default()
    }
}

impl CaptureQueue {
    /// How many messages it holds.
    pub fn len(&self) -> usize {
        self.0.lock().map(|sent| sent.len()).unwrap_or_default()
    }

    /// The messages sent since the last call.
    pub fn take(&self) -> Vec<Outgoing> {
        self.0
            .lock()
            .map(|mut sent| std::mem::take(&mut *sent))
            .unwrap_or_default()
    }
}

/// A target check that allows every URL.
pub struct AnyTarget;

#[async_trait]
impl TargetCheck for AnyTarget {
    async fn check(&self, _url: &str) -> Result<(), String> {
        Ok(())
    }
}

/// What one run of the binary printed.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", self.stdout, self.stderr))
    }
}

/// Runs the `sundial` binary off the runtime thread, so the server task
/// keeps answering while the child waits.
pub async fn run_sundial<I, S>(api: &str, token: &str, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_sundial_as(api, Some(token), args).await
}

/// [`run_sundial`] with any token, or none (`SUNDIAL_ADMIN_TOKEN` unset).
pub async fn run_sundial_as<I, S>(api: &str, token: Option<&str>, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sundial"));
    cmd.args(args)
        .env("SUNDIAL_API", api)
        .env_remove("SUNDIAL_ADMIN_TOKEN");
    if let Some(token) = token {
        cmd.env("SUNDIAL_ADMIN_TOKEN", token);
    }
    let output = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The admin router on 127.0.0.1 with a queue that drops and a check that
/// allows everything; its base URL and server task.
pub async fn serve(
    pool: &PgPool,
    token: &str,
) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    serve_with(pool, token, Arc::new(NoQueue), Arc::new(AnyTarget)).await
}

/// [`serve`] with the given queue and target check.
pub async fn serve_with(
    pool: &PgPool,
    token: &str,
    queue: Arc<dyn DispatchQueue>,
    targets: Arc<dyn TargetCheck>,
) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    let state = AdminState::new(pool.clone(), queue, targets, token);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let router = admin::router(state);
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    (api, server)
}
