//! The admin Lambda: serves `sundial::admin::router` behind a function URL
//! (or API Gateway HTTP API). Config, pool, queue client and guard are built
//! once per cold start; the router is the same one `sundial dev` serves.

use anyhow::Context as _;
use sundial::admin::{self, AdminState};
use sundial::app::{App, QueueNeed};
use sundial::config::Settings;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    sundial::logging::init(sundial::logging::LogFormat::Lambda);

    let state = build_state().await.map_err(|err| {
        // Fail the cold start with a message naming the setting.
        tracing::error!(error = format!("{err:#}"), "admin function cannot start");
        err
    })?;
    lambda_http::run(admin::router(state)).await
}

async fn build_state() -> anyhow::Result<AdminState> {
    let settings = Settings::from_env()?;
    // SUNDIAL_ADMIN_AUTH=iam: the function URL authenticates callers with
    // IAM (SigV4 in the Authorization header); otherwise a bearer token.
    let iam = match std::env::var("SUNDIAL_ADMIN_AUTH").as_deref() {
        Ok("iam") => true,
        Ok("token") | Err(_) => false,
        Ok(other) => {
            anyhow::bail!("invalid setting SUNDIAL_ADMIN_AUTH={other:?}: use iam or token")
        }
    };
    let token = if iam {
        None
    } else {
        Some(settings.require_admin_token()?.to_string())
    };
    let app = App::start(settings, QueueNeed::Sqs)
        .await
        .context("starting the admin function")?;
    let (pool, queue, targets) = (app.pool.clone(), app.queue.dispatch(), app.guard.clone());
    let state = match token {
        Some(token) => AdminState::new(pool, queue, targets, &token),
        None => AdminState::with_delegated_auth(pool, queue, targets),
    };
    // Missed grace, scanner staleness and the dead-letter queue of /v1/status.
    Ok(state.with_pipeline(sundial::health::PipelineCheck::from_app(&app)))
}
