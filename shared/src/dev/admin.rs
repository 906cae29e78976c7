//! The admin API as `sundial dev` serves it: what the dev process shares
//! with it ([`AdminContext`]) and the plug ([`admin_router`]) — the same
//! router the admin Lambda serves.

use std::sync::Arc;

use axum::Router;
use sqlx::PgPool;

use crate::fire::TargetGuard;
use crate::queue::DispatchQueue;

/// Builds the admin API from what the dev process shares with it.
pub type AdminRouterFn = fn(AdminContext) -> Router;

/// What the admin API gets from the dev process.
#[derive(Clone)]
pub struct AdminContext {
    /// The process's one pool.
    pub pool: PgPool,
    /// The dispatch queue (for `POST /v1/tasks/{id}/trigger`).
    pub queue: Arc<dyn DispatchQueue>,
    /// The same target guard the processor uses.
    pub guard: Arc<TargetGuard>,
    /// The bearer token every route but `/healthz` requires.
    pub token: String,
    /// What `GET /v1/status` judges the pipeline by (the dev process's
    /// settings).
    pub pipeline: crate::health::PipelineCheck,
}

impl std::fmt::Debug for AdminContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("AdminContext").finish_non_exhaustive()
    }
}

/// The admin API served by `sundial dev`: the real router, with the dev
/// process's pool, queue, target guard and token.
pub fn admin_router(ctx: AdminContext) -> Router {
    // `TargetGuard` implements `admin::TargetCheck`.
    crate::admin::router(
        crate::admin::AdminState::new(ctx.pool, ctx.queue, ctx.guard, &ctx.token)
            .with_pipeline(ctx.pipeline),
    )
}
