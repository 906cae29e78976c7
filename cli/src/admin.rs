//! `sundial admin`: the admin API and the operator console alone (no
//! scanner, no processor), with bearer-token auth, against `DATABASE_URL`
//! and the dispatch queue at `SUNDIAL_QUEUE_URL` (where manual triggers
//! go). What a container runs to offer the console where the admin Lambda
//! uses IAM auth; the same router as the Lambda and `sundial dev`.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Args;
use sundial::admin::{self, AdminState};
use sundial::app::{App, QueueNeed};
use sundial::config::Settings;
use sundial::logging;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Address to listen on (port 0: any free port; the address is printed).
    /// In a container, e.g. `0.0.0.0:8080` behind your own TLS proxy.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

pub async fn run(args: AdminArgs) -> Result<()> {
    logging::init(logging::LogFormat::Text);
    let settings = Settings::from_env()?;
    let token = settings.require_admin_token()?.to_string();
    let app = App::start(settings, QueueNeed::Sqs)
        .await
        .context("starting the admin API")?;
    let state = AdminState::new(
        app.pool.clone(),
        app.queue.dispatch(),
        app.guard.clone(),
        &token,
    )
    .with_pipeline(sundial::health::PipelineCheck::from_app(&app));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("admin API listening on http://{addr}");
    println!("console: http://{addr}/ui (log in with the admin token)");
    let mut stop = crate::runtime::shutdown_signal();
    let shutdown = async move {
        let _ = stop.wait_for(|stopping| *stopping).await;
    };
    admin::serve::serve(listener, admin::router(state), shutdown, Default::default()).await?;
    Ok(())
}
