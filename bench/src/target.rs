//! The HTTP target the benchmarks fire at: [`sundial_target`] on
//! 127.0.0.1, by default in a child process (`sundial bench target`) so the
//! CPU time and memory of the measured side are not mixed with the
//! target's. Both still share the machine's cores.
//!
//! [`TargetShape`] chooses the protocol (plain HTTP/1.1, or HTTPS offering
//! only HTTP/1.1 or HTTP/2 as well, with a throw-away CA whose certificate
//! the bench trusts through `SUNDIAL_EXTRA_CA_FILE`) and the number of
//! hosts (targets on that many local ports; tasks are spread over them).
//!
//! The child prints one line on stdout, `target <addr>[,<addr>...] stats
//! <addr> ca <path or ->`, then serves until killed or until its stdin
//! closes (the parent died). The stats address answers every connection
//! with one line, summed over the hosts: `<requests> <in_flight>
//! <max_in_flight> <connections> <tls_handshakes>`.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use sundial::config::Settings;
use sundial_target::tls::{Alpn, TestCa};
use sundial_target::{self as target_server, TargetConfig, TargetServer, TargetStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::env;

/// How the target speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// Plain HTTP/1.1.
    #[default]
    Http1,
    /// HTTPS, the target offers only `http/1.1` by ALPN.
    Https1,
    /// HTTPS, the target offers `h2` (then `http/1.1`) by ALPN.
    Https2,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Http1 => "http1",
            Proto::Https1 => "https1",
            Proto::Https2 => "https2",
        }
    }

    fn alpn(self) -> Option<Alpn> {
        match self {
            Proto::Http1 => None,
            Proto::Https1 => Some(Alpn::Http1Only),
            Proto::Https2 => Some(Alpn::Http2),
        }
    }
}

/// Protocol and number of hosts of the bench target.
#[derive(Debug, Clone, Args)]
pub struct TargetShape {
    /// Protocol: plain HTTP/1.1, HTTPS with HTTP/1.1 only, HTTPS with HTTP/2 by ALPN.
    #[arg(long, value_enum, default_value_t = Proto::Http1)]
    pub proto: Proto,
    /// Targets on this many local ports; tasks are spread over them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub hosts: u16,
}

/// What the flags default to: plain HTTP/1.1 on one host (a derived
/// `Default` gave 0 hosts, which the child target refuses).
impl Default for TargetShape {
    fn default() -> Self {
        TargetShape {
            proto: Proto::Http1,
            hosts: 1,
        }
    }
}

impl TargetShape {
    /// The name a result file gets: `memory`, `memory-https2`, `burst-https1-4hosts`.
    pub fn scenario_name(&self, scenario: &str) -> String {
        let mut name = scenario.to_string();
        if self.proto != Proto::Http1 {
            name.push('-');
            name.push_str(self.proto.name());
        }
        if self.hosts > 1 {
            name.push_str(&format!("-{}hosts", self.hosts));
        }
        name
    }

    /// The command-line arguments that give a child process this shape.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--proto".into(),
            self.proto.name().into(),
            "--hosts".into(),
            self.hosts.to_string(),
        ]
    }
}

/// Counters of the target server (summed over its hosts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetCounters {
    pub requests: u64,
    pub in_flight: u64,
    pub max_in_flight: u64,
    /// TCP connections accepted.
    pub connections: u64,
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
}

/// A running target, here or in a child process.
pub struct Target {
    kind: Kind,
    addrs: Vec<SocketAddr>,
    https: bool,
    /// PEM of the target's CA, when it speaks HTTPS.
    ca_file: Option<PathBuf>,
}

enum Kind {
    InProcess(Vec<TargetServer>),
    Child { child: Child, stats: SocketAddr },
}

fn config(tls: Option<sundial_target::tls::TlsConfig>) -> TargetConfig {
    // No per-request records: the target stays O(1) in memory.
    TargetConfig {
        record: false,
        tls,
        ..Default::default()
    }
}

/// Start `shape.hosts` servers; with TLS, write the CA's PEM to a fresh file.
async fn spawn_servers(shape: &TargetShape) -> Result<(Vec<TargetServer>, Option<PathBuf>)> {
    let (tls, ca_file) = match shape.proto.alpn() {
        None => (None, None),
        Some(alpn) => {
            let ca = TestCa::generate()?;
            let path =
                std::env::temp_dir().join(format!("sundial-bench-ca-{}.pem", std::process::id()));
            ca.write_pem(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            (Some(ca.server_config(alpn)?), Some(path))
        }
    };
    let mut servers = Vec::new();
    for _ in 0..shape.hosts.max(1) {
        servers.push(
            target_server::spawn(config(tls.clone()))
                .await
                .context("cannot start the target server")?,
        );
    }
    Ok((servers, ca_file))
}

impl Target {
    /// Starts a target; `in_process` keeps it in this process.
    pub async fn start(in_process: bool, shape: &TargetShape) -> Result<Target> {
        let https = shape.proto != Proto::Http1;
        if in_process {
            let (servers, ca_file) = spawn_servers(shape).await?;
            return Ok(Target {
                addrs: servers.iter().map(|s| s.addr).collect(),
                kind: Kind::InProcess(servers),
                https,
                ca_file,
            });
        }
        let exe = std::env::current_exe().context("cannot find the sundial binary")?;
        let mut child = Command::new(exe)
            .args(["bench", "target"])
            .args(shape.args())
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
            ["target", addrs, "stats", stats, "ca", ca] => {
                let addrs: Option<Vec<SocketAddr>> =
                    addrs.split(',').map(|a| a.parse().ok()).collect();
                let ca = (*ca != "-").then(|| PathBuf::from(ca));
                addrs.zip(stats.parse().ok()).map(|(a, s)| (a, s, ca))
            }
            _ => None,
        };
        let Some((addrs, stats, ca_file)) = parsed else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("unexpected first line from the target process: {line:?}");
        };
        Ok(Target {
            kind: Kind::Child { child, stats },
            addrs,
            https,
            ca_file,
        })
    }

    /// `http(s)://127.0.0.1:<port><path>` of the first host.
    pub fn url(&self, path: &str) -> String {
        self.url_on(0, path)
    }

    /// The URL of `path` on host `i` (modulo the number of hosts).
    pub fn url_on(&self, i: usize, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let addr = self.addrs[i % self.addrs.len()];
        format!("{scheme}://{addr}{path}")
    }

    /// Number of hosts (ports) the target listens on.
    pub fn hosts(&self) -> usize {
        self.addrs.len()
    }

    /// Processor settings for firing at this target: [`env::settings`],
    /// plus `SUNDIAL_EXTRA_CA_FILE` naming the target's CA for HTTPS.
    pub fn settings(&self, concurrency: usize, lookahead_secs: u64) -> Result<Settings> {
        let mut settings = env::settings(concurrency, lookahead_secs)?;
        if let Some(path) = &self.ca_file {
            settings.extra_ca = Some(sundial::config::ExtraCa::from_pem_file(path)?);
        }
        Ok(settings)
    }

    /// The child's process id (CPU time is read from `/proc`).
    pub fn pid(&self) -> Option<u32> {
        match &self.kind {
            Kind::InProcess(_) => None,
            Kind::Child { child, .. } => Some(child.id()),
        }
    }

    /// Where the target runs, for the reports.
    pub fn placement(&self) -> &'static str {
        match self.kind {
            Kind::InProcess(_) => "in-process",
            Kind::Child { .. } => "child process",
        }
    }

    /// The target's counters now.
    pub async fn counters(&self) -> Result<TargetCounters> {
        match &self.kind {
            Kind::InProcess(servers) => Ok(sum(servers.iter().map(|s| &*s.stats))),
            Kind::Child { stats, .. } => {
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
                    [requests, in_flight, max_in_flight, connections, tls_handshakes] => {
                        Ok(TargetCounters {
                            requests: *requests,
                            in_flight: *in_flight,
                            max_in_flight: *max_in_flight,
                            connections: *connections,
                            tls_handshakes: *tls_handshakes,
                        })
                    }
                    _ => bail!("unexpected stats line from the target: {line:?}"),
                }
            }
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Kind::Child { child, .. } = &mut self.kind {
            let _ = child.kill();
            let _ = child.wait();
        }
        if matches!(self.kind, Kind::InProcess(_)) {
            if let Some(path) = &self.ca_file {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Counters summed over hosts (`max_in_flight` summed too: an upper bound
/// of what was in flight at once across hosts, exact for one host).
fn sum<'a>(stats: impl Iterator<Item = &'a TargetStats>) -> TargetCounters {
    let mut c = TargetCounters::default();
    for s in stats {
        c.requests += s.requests();
        c.in_flight += s.in_flight() as u64;
        c.max_in_flight += s.max_in_flight() as u64;
        c.connections += s.connections();
        c.tls_handshakes += s.tls_handshakes();
    }
    c
}

/// `sundial bench target`: serve until killed or until stdin closes.
pub async fn serve(shape: TargetShape) -> Result<()> {
    let (servers, ca_file) = spawn_servers(&shape).await?;
    let stats_listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
    println!(
        "target {} stats {} ca {}",
        addrs.join(","),
        stats_listener.local_addr()?,
        ca_file
            .as_ref()
            .map_or("-".to_string(), |p| p.display().to_string()),
    );
    let stats: Vec<Arc<TargetStats>> = servers.iter().map(|s| s.stats.clone()).collect();
    tokio::spawn(serve_stats(stats_listener, stats));
    // The parent holds our stdin: EOF means it is gone, so are we.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        if let Some(path) = ca_file {
            let _ = std::fs::remove_file(path);
        }
        std::process::exit(0);
    });
    let _servers = servers;
    std::future::pending::<()>().await;
    Ok(())
}

async fn serve_stats(listener: TcpListener, stats: Vec<Arc<TargetStats>>) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let c = sum(stats.iter().map(|s| &**s));
        let line = format!(
            "{} {} {} {} {}\n",
            c.requests, c.in_flight, c.max_in_flight, c.connections, c.tls_handshakes
        );
        let _ = stream.write_all(line.as_bytes()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        shape: TargetShape,
    }

    #[test]
    fn the_default_shape_is_the_flags_default() {
        // `bench phases` starts its target with `TargetShape::default()`:
        // it must be what the flags give, one plain host (0 hosts made the
        // child target refuse to start).
        let parsed = Cli::parse_from(["bench"]).shape;
        let default = TargetShape::default();
        assert_eq!(default.args(), parsed.args());
        assert_eq!(default.args(), ["--proto", "http1", "--hosts", "1"]);
    }
}
