//! The HTTP target the benchmarks fire at: [`sundial::target_server`] on
//! 127.0.0.1, by default in a child process (`sundial bench target`) so the
//! CPU time and memory of the measured side are not mixed with the
//! target's. Both still share the machine's cores.
//!
//! The child prints one line on stdout, `target <addr> stats <addr>`, then
//! serves until killed or until its stdin closes (the parent died). The
//! stats address answers every connection with one line:
//! `<requests> <in_flight> <max_in_flight>`.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use sundial::target_server::{self, TargetConfig, TargetServer, TargetStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Counters of the target server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetCounters {
    pub requests: u64,
    pub in_flight: u64,
    pub max_in_flight: u64,
}

/// A running target, here or in a child process.
pub enum Target {
    InProcess(TargetServer),
    Child {
        child: Child,
        addr: SocketAddr,
        stats: SocketAddr,
    },
}

fn config() -> TargetConfig {
    // No per-request records: the target stays O(1) in memory.
    TargetConfig {
        record: false,
        ..Default::default()
    }
}

impl Target {
    /// Starts a target; `in_process` keeps it in this process.
    pub async fn start(in_process: bool) -> Result<Target> {
        if in_process {
            let server = target_server::spawn(config())
                .await
                .context("cannot start the target server")?;
            return Ok(Target::InProcess(server));
        }
        let exe = std::env::current_exe().context("cannot find the sundial binary")?;
        let mut child = Command::new(exe)
            .args(["bench", "target"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start `sundial bench target`")?;
        let line = {
            let Some(stdout) = child.stdout.take() else {
                bail!("target process has no stdout");
            };
            let mut line = String::new();
            BufReader::new(stdout)
                .read_line(&mut line)
                .context("cannot read the target's address")?;
            line
        };
        let parsed = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["target", addr, "stats", stats] => addr.parse().ok().zip(stats.parse().ok()),
            _ => None,
        };
        let Some((addr, stats)) = parsed else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("unexpected first line from the target process: {line:?}");
        };
        Ok(Target::Child { child, addr, stats })
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        match self {
            Target::InProcess(server) => server.url(path),
            Target::Child { addr, .. } => format!("http://{addr}{path}"),
        }
    }

    /// The child's process id (CPU time is read from `/proc`).
    pub fn pid(&self) -> Option<u32> {
        match self {
            Target::InProcess(_) => None,
            Target::Child { child, .. } => Some(child.id()),
        }
    }

    /// Where the target runs, for the reports.
    pub fn placement(&self) -> &'static str {
        match self {
            Target::InProcess(_) => "in-process",
            Target::Child { .. } => "child process",
        }
    }

    /// The target's counters now.
    pub async fn counters(&self) -> Result<TargetCounters> {
        match self {
            Target::InProcess(server) => Ok(counters_of(&server.stats)),
            Target::Child { stats, .. } => {
                let mut stream = TcpStream::connect(stats)
                    .await
                    .context("cannot reach the target's stats port")?;
                let mut line = String::new();
                stream.read_to_string(&mut line).await?;
                let numbers: Vec<u64> = line
                    .split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect();
                match numbers.as_slice() {
                    [requests, in_flight, max_in_flight] => Ok(TargetCounters {
                        requests: *requests,
                        in_flight: *in_flight,
                        max_in_flight: *max_in_flight,
                    }),
                    _ => bail!("unexpected stats line from the target: {line:?}"),
                }
            }
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Target::Child { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn counters_of(stats: &TargetStats) -> TargetCounters {
    TargetCounters {
        requests: stats.requests(),
        in_flight: stats.in_flight() as u64,
        max_in_flight: stats.max_in_flight() as u64,
    }
}

/// `sundial bench target`: serve until killed or until stdin closes.
pub async fn serve() -> Result<()> {
    let server = target_server::spawn(config())
        .await
        .context("cannot start the target server")?;
    let stats_listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    println!(
        "target {} stats {}",
        server.addr,
        stats_listener.local_addr()?
    );
    let stats = server.stats.clone();
    tokio::spawn(serve_stats(stats_listener, stats));
    // The parent holds our stdin: EOF means it is gone, so are we.
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    std::future::pending::<()>().await;
    Ok(())
}

async fn serve_stats(listener: TcpListener, stats: Arc<TargetStats>) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let c = counters_of(&stats);
        let line = format!("{} {} {}\n", c.requests, c.in_flight, c.max_in_flight);
        let _ = stream.write_all(line.as_bytes()).await;
    }
}
