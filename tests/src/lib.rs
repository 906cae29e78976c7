//! Helpers shared by the end-to-end tests: the SQS emulator, test queues.
//!
//! Tests run against real services started by `make services`: Postgres
//! (`DATABASE_URL`, used by `#[sqlx::test]`) and moto's SQS server
//! (`AWS_ENDPOINT_URL_SQS`). A missing service is a test failure with a
//! message saying how to start it, never a silent skip.

use std::time::Duration;

use sundial::queue::sqs::{SqsDelivery, SqsQueue};

/// The SQS emulator's endpoint, or a panic explaining how to start it.
pub fn sqs_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL_SQS").unwrap_or_else(|_| {
        panic!("AWS_ENDPOINT_URL_SQS is not set: run `eval \"$(make -s services)\"` or `make test`")
    })
}

/// An SQS client for the emulator.
pub async fn sqs_client() -> aws_sdk_sqs::Client {
    let _ = sqs_endpoint();
    sundial::queue::sqs::client_from_env().await
}

/// Creates a fresh queue (each test its own: the emulator slows down with
/// deep queues) and returns its adapter.
pub async fn fresh_queue(prefix: &str) -> SqsQueue {
    let client = sqs_client().await;
    let name = format!("{prefix}-{}-{}", std::process::id(), rand_suffix());
    let url = client
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .expect("create_queue on the SQS emulator")
        .queue_url()
        .expect("queue url")
        .to_string();
    SqsQueue::new(client, url, 8)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    nanos * 1000 + N.fetch_add(1, Ordering::Relaxed)
}

/// Receives (and deletes) messages until `expected` arrived or `timeout`
/// passed; returns each with the instant it was received.
pub async fn drain_queue(
    queue: &SqsQueue,
    expected: usize,
    timeout: Duration,
) -> Vec<(SqsDelivery, std::time::Instant)> {
    let deadline = std::time::Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < expected && std::time::Instant::now() < deadline {
        let batch = queue
            .receive(10, Duration::from_secs(1), None)
            .await
            .expect("receive from the SQS emulator");
        let now = std::time::Instant::now();
        let receipts: Vec<String> = batch.iter().map(|d| d.receipt_handle.clone()).collect();
        queue.delete(&receipts).await.expect("delete");
        got.extend(batch.into_iter().map(|d| (d, now)));
    }
    got
}

pub mod cdp;
pub mod console_kit;
pub mod deployment;
pub mod notify_kit;
pub mod readme;
pub mod runtime_api;

/// The environment of a Sundial process a test starts: the SQS emulator's
/// settings and credentials from this process, `PATH`, the database and the
/// queue, and loopback targets allowed.
pub fn driver_env(database_url: &str, queue_url: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        "AWS_ENDPOINT_URL_SQS",
        "AWS_ENDPOINT_URL_SNS",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "PATH",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
    .collect();
    env.push(("DATABASE_URL".into(), database_url.into()));
    env.push(("SUNDIAL_QUEUE_URL".into(), queue_url.into()));
    env.push(("SUNDIAL_ALLOW_TARGETS".into(), "127.0.0.1/32".into()));
    env
}

/// Serves the admin router for `state` on 127.0.0.1 (a free port), as the
/// admin Lambda or a container would; returns its base URL. The server
/// lives as long as the test's runtime.
pub async fn serve_admin(state: sundial::admin::AdminState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let api = format!("http://{}", listener.local_addr().expect("local address"));
    tokio::spawn(async move { axum::serve(listener, sundial::admin::router(state)).await });
    api
}

/// A binary of the workspace (`sundial`, `scanner`, `processor`, `admin`),
/// next to the test executable. `cargo build --workspace --bins` (which
/// `make test` runs first) puts it there.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (make test does)",
        bin.display()
    );
    bin
}

/// A child process whose stdout and stderr lines are collected.
pub struct Child {
    pub child: tokio::process::Child,
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Child {
    /// Starts `bin` with `env` added to a clean-ish environment.
    pub fn spawn(bin: &std::path::Path, args: &[&str], env: &[(String, String)]) -> Child {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn binary");
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            let sink = stdout.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            let sink = stderr.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        Child {
            child,
            stdout,
            stderr,
        }
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }
}

/// A TCP proxy in front of Postgres that a test can cut: [`PgProxy::cut`]
/// drops every open connection and refuses new ones (as a stopped
/// Postgres does) until [`PgProxy::restore`]. Loopback only.
pub struct PgProxy {
    addr: std::net::SocketAddr,
    database_url: String,
    cut: tokio::sync::watch::Sender<bool>,
}

impl PgProxy {
    /// Proxies the server of `database_url`.
    pub async fn start(database_url: &str) -> PgProxy {
        let url = url::Url::parse(database_url).expect("database URL");
        let upstream = format!(
            "{}:{}",
            url.host_str().expect("database host"),
            url.port().unwrap_or(5432)
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if *cut_rx.borrow() {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_rx.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        let mut proxied = url.clone();
        proxied.set_host(Some("127.0.0.1")).expect("host");
        proxied.set_port(Some(addr.port())).expect("port");
        PgProxy {
            addr,
            database_url: proxied.to_string(),
            cut,
        }
    }

    /// The database URL through the proxy.
    pub fn database_url(&self) -> String {
        self.database_url.clone()
    }

    /// The proxy's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        let _ = self.cut.send(false);
    }
}

pub mod pg_cluster;
