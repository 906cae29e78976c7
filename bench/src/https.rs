//! The HTTPS part of `sundial bench all`: the memory and (warm) burst
//! scenarios again with the target speaking HTTPS (HTTP/1.1 only, and
//! HTTP/2 by ALPN), beside plaintext, and the section of
//! `docs/BENCHMARKS.md` that compares them.

use std::path::Path;

use super::burst::{BurstResults, BurstRun};
use super::memory::{MemoryResults, MemoryRun};
use super::report::{self, num, ResultFile, Table};

/// The runs, as `sundial bench` arguments: warm bursts (a long-running
/// processor has its connections open) in each protocol, memory in both
/// TLS protocols (plaintext memory is the `memory` scenario itself).
pub const RUNS: [&[&str]; 5] = [
    &["burst", "--warm", "--sizes", "1000,5000"],
    &[
        "burst",
        "--warm",
        "--sizes",
        "1000,5000",
        "--proto",
        "https1",
    ],
    &[
        "burst",
        "--warm",
        "--sizes",
        "1000,5000",
        "--proto",
        "https2",
    ],
    &["memory", "--proto", "https1"],
    &["memory", "--proto", "https2"],
];

/// One protocol's figures.
struct Shape {
    name: &'static str,
    memory: Option<MemoryRun>,
    burst: Option<BurstRun>,
}

fn largest_memory(out: &Path, name: &str) -> Option<MemoryRun> {
    let f: ResultFile<MemoryResults> = report::read(out, name).ok()?;
    f.results.runs.into_iter().max_by_key(|r| r.in_flight)
}

fn largest_burst(out: &Path, name: &str) -> Option<BurstRun> {
    let f: ResultFile<BurstResults> = report::read(out, name).ok()?;
    f.results.runs.into_iter().max_by_key(|r| r.tasks)
}

fn shapes(out: &Path) -> [Shape; 3] {
    [
        Shape {
            name: "plaintext HTTP/1.1",
            memory: largest_memory(out, "memory"),
            burst: largest_burst(out, "burst-warm"),
        },
        Shape {
            name: "HTTPS, HTTP/1.1 (ALPN `http/1.1` only)",
            memory: largest_memory(out, "memory-https1"),
            burst: largest_burst(out, "burst-warm-https1"),
        },
        Shape {
            name: "HTTPS, HTTP/2 (ALPN `h2`)",
            memory: largest_memory(out, "memory-https2"),
            burst: largest_burst(out, "burst-warm-https2"),
        },
    ]
}

fn or_dash<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map_or_else(|| "—".to_string(), f)
}

/// The `## HTTPS and HTTP/2` section (empty notice when nothing ran).
pub fn section(out: &Path, verdict: impl Fn(f64, f64, bool) -> String) -> String {
    let [plain, h1, h2] = shapes(out);
    let mut md = String::from("## HTTPS and HTTP/2\n\n");
    if h1.memory.is_none() && h2.memory.is_none() && h1.burst.is_none() && h2.burst.is_none() {
        md.push_str("_Not run._\n\n");
        return md;
    }
    md.push_str(
        "The same scenarios with the target on TLS (a throw-away CA made with `rcgen`, trusted \
         through `SUNDIAL_EXTRA_CA_FILE`; verification on). Memory: the largest level of \
         `sundial bench memory --proto …` (processor, and the bare HTTP client alone). Burst: \
         the largest size of `sundial bench burst --warm --proto …` (connections opened before \
         the burst, as in a long-running processor); CPU is the bench process's per recorded \
         firing; handshakes are TLS handshakes completed at the target during the burst.\n\n",
    );
    let plain_cpu = plain.burst.as_ref().map(|b| b.cpu_ms_per_firing);
    let mut t = Table::new([
        "protocol",
        "in flight",
        "KiB/request",
        "bare client KiB/request",
        "plateau MiB",
        "connections (memory)",
        "burst tasks",
        "CPU ms/firing",
        "× plaintext",
        "handshakes/1000",
    ]);
    for s in [&plain, &h1, &h2] {
        let m = s.memory.as_ref();
        let b = s.burst.as_ref();
        t.row([
            s.name.to_string(),
            or_dash(m, |m| m.in_flight.to_string()),
            or_dash(m, |m| num(m.per_request_kib)),
            or_dash(m.and_then(|m| m.http_only.as_ref()), |h| {
                num(h.per_request_kib)
            }),
            or_dash(m, |m| num(m.plateau_rss_mib)),
            or_dash(m, |m| m.target_connections.to_string()),
            or_dash(b, |b| b.tasks.to_string()),
            or_dash(b, |b| format!("{:.3}", b.cpu_ms_per_firing)),
            or_dash(b.zip(plain_cpu).filter(|(_, p)| *p > 0.0), |(b, p)| {
                format!("{:.2}", b.cpu_ms_per_firing / p)
            }),
            or_dash(b, |b| num(b.handshakes_per_1000)),
        ]);
    }
    md.push_str(&t.markdown());
    md.push('\n');

    let mut goals = Table::new(["target", "measured", "status"]);
    let mem_goal = |goals: &mut Table, s: &Shape, goal: f64| {
        match &s.memory {
            Some(m) => goals.row([
                format!(
                    "{}: ≤ {goal} KiB per request at {} in flight",
                    s.name, m.in_flight
                ),
                format!("{} KiB", num(m.per_request_kib)),
                verdict(m.per_request_kib, goal, false),
            ]),
            None => goals.row([format!("{}: memory", s.name), "not run".into(), "—".into()]),
        };
    };
    mem_goal(&mut goals, &h2, 10.0);
    mem_goal(&mut goals, &h1, 40.0);
    for s in [&h1, &h2] {
        if let Some(m) = &s.memory {
            goals.row([
                format!("{}: {} in flight fit 128 MB", s.name, m.in_flight),
                format!("{} MiB RSS at the plateau", num(m.plateau_rss_mib)),
                verdict(m.plateau_rss_mib, 128.0, false),
            ]);
        }
    }
    for s in [&h1, &h2] {
        match &s.burst {
            Some(b) => {
                goals.row([
                    format!("{}: ≤ 10 handshakes per 1,000 firings (warm)", s.name),
                    format!("{} ({} tasks)", num(b.handshakes_per_1000), b.tasks),
                    verdict(b.handshakes_per_1000, 10.0, false),
                ]);
                if let Some(p) = plain_cpu.filter(|p| *p > 0.0) {
                    let ratio = b.cpu_ms_per_firing / p;
                    goals.row([
                        format!("{}: CPU per firing ≤ 1.5 × plaintext", s.name),
                        format!(
                            "{:.2} × ({:.3} against {:.3} ms)",
                            ratio, b.cpu_ms_per_firing, p
                        ),
                        verdict(ratio, 1.5, false),
                    ]);
                }
            }
            None => {
                goals.row([format!("{}: burst", s.name), "not run".into(), "—".into()]);
            }
        }
    }
    md.push_str(&goals.markdown());
    md.push('\n');
    md
}
