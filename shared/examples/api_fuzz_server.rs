//! The real admin router served on 127.0.0.1 against a throw-away database,
//! for `scripts/api-fuzz.sh` (schemathesis).
//!
//! Creates the database `sundial_api_fuzz_<pid>` next to `DATABASE_URL`'s,
//! migrates it, serves with `admin::serve` and its default limits, prints
//! `listening on http://127.0.0.1:<port>` once ready, and drops the
//! database on SIGTERM / Ctrl-C. The bearer token is `SUNDIAL_ADMIN_TOKEN`.
//!
//! Nothing is ever fired: trigger messages are discarded, no scanner runs,
//! and the target check accepts every URL the validation lets through
//! without resolving it (so fuzzed host names cause no DNS traffic).

use std::sync::Arc;

use anyhow::{Context as _, Result};
use async_trait::async_trait;
use sundial::admin::{self, serve, AdminState, TargetCheck};
use sundial::queue::{DispatchQueue, Outgoing, SendReport};

/// Accepts every message and drops it.
struct DiscardQueue;

#[async_trait]
impl DispatchQueue for DiscardQueue {
    async fn send(&self, _messages: &[Outgoing]) -> SendReport {
        SendReport {
            calls: 1,
            ..SendReport::default()
        }
    }
}

/// Accepts every URL (see the module docs).
struct NoLookup;

#[async_trait]
impl TargetCheck for NoLookup {
    async fn check(&self, _url: &str) -> Result<(), String> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let base = std::env::var("DATABASE_URL").context("DATABASE_URL is not set")?;
    let token = std::env::var("SUNDIAL_ADMIN_TOKEN").context("SUNDIAL_ADMIN_TOKEN is not set")?;
    let name = format!("sundial_api_fuzz_{}", std::process::id());
    let admin_pool = sundial::store::connect(&base, 1).await?;
    // `name` is ours: a fixed prefix and a number.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin_pool)
        .await
        .with_context(|| format!("creating database {name}"))?;
    let mut url = url::Url::parse(&base).context("DATABASE_URL is not a URL")?;
    url.set_path(&name);
    let pool = sundial::store::connect(url.as_str(), 8).await?;
    sundial::store::migrate(&pool).await?;

    let state = AdminState::new(
        pool.clone(),
        Arc::new(DiscardQueue),
        Arc::new(NoLookup),
        &token,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on http://{}", listener.local_addr()?);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let served = serve::serve(
        listener,
        admin::router(state),
        stop,
        serve::ServeLimits::default(),
    )
    .await;
    pool.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin_pool)
    .await?;
    served?;
    Ok(())
}
