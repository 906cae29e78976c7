//! The admin HTTP API: register, inspect, edit and fire tasks; set the
//! limits of flows; see the system's status; preview schedules; account
//! for every occurrence of a task. JSON under `/v1`, bearer-token auth
//! on everything but `/healthz`, and an OpenAPI document at
//! `/openapi.json` generated from the handlers below; and the operator
//! console under `/ui` ([`ui`]), HTML with a login of its own.
//!
//! One [`router`] serves the admin Lambda (through `lambda_http`), `sundial
//! dev`, and the tests (as a tower service). Bad input never reaches a
//! 500: bodies, ids and query strings go through the extractors of
//! [`extract`], which answer 400/413/415 with a JSON error naming the field.
//! See `docs/ADMIN_API.md` for the routes with examples.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use utoipa::OpenApi;

use crate::queue::DispatchQueue;

pub mod backfill;
pub mod error;
pub mod extract;
pub mod flows;
pub mod idempotency;
pub mod openapi;
pub mod pause;
pub mod serve;
pub mod status;
pub mod tasks;
pub mod trigger;
pub mod ui;

pub use error::{AdminError, ErrorBody, ErrorDetail};
pub use extract::MAX_REQUEST_BYTES;

/// Decides whether a task may call a URL (the private-address guard).
///
/// Checked when a task is created or its URL edited; the firing engine
/// checks again at connect time, against DNS rebinding.
#[async_trait]
pub trait TargetCheck: Send + Sync {
    /// `Ok` if tasks may call `url`; otherwise why not, for the client.
    async fn check(&self, url: &str) -> Result<(), String>;
}

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The process's one pool.
    pub pool: PgPool,
    /// Where `POST /v1/tasks/{id}/trigger` sends its message.
    pub queue: Arc<dyn DispatchQueue>,
    /// The target-address guard.
    pub targets: Arc<dyn TargetCheck>,
    /// SHA-256 of the bearer token: hashing both sides gives the
    /// constant-time comparison equal lengths, and keeps the token itself
    /// out of memory dumps and `Debug` output.
    /// `None`: authentication is done in front of the router (an IAM-authed
    /// Lambda function URL), so no bearer token is checked here.
    token_digest: Option<[u8; 32]>,
    openapi: Arc<serde_json::Value>,
    /// Thresholds and the dead-letter queue `GET /v1/status` judges the
    /// pipeline by; the missed grace of the occurrence ledger.
    pub pipeline: crate::health::PipelineCheck,
    /// The console overview's latest figures (see [`ui::snapshot`]).
    console: Arc<ui::SnapshotCache>,
}

impl AdminState {
    /// State for a router that accepts `Authorization: Bearer <token>`.
    pub fn new(
        pool: PgPool,
        queue: Arc<dyn DispatchQueue>,
        targets: Arc<dyn TargetCheck>,
        token: &str,
    ) -> Self {
        AdminState {
            pool,
            queue,
            targets,
            token_digest: Some(Sha256::digest(token.as_bytes()).into()),
            openapi: Arc::new(openapi()),
            pipeline: Default::default(),
            console: Default::default(),
        }
    }

    /// State for a router whose callers are authenticated before they reach
    /// it (a function URL with `AuthType: AWS_IAM`, where the
    /// `Authorization` header carries the SigV4 signature, not a token).
    /// Never use this where the router is reachable directly.
    pub fn with_delegated_auth(
        pool: PgPool,
        queue: Arc<dyn DispatchQueue>,
        targets: Arc<dyn TargetCheck>,
    ) -> Self {
        AdminState {
            pool,
            queue,
            targets,
            token_digest: None,
            openapi: Arc::new(openapi()),
            pipeline: Default::default(),
            console: Default::default(),
        }
    }

    /// The same state, judging the pipeline with `pipeline` (the process's
    /// `SUNDIAL_MISSED_GRACE_SECS`, `SUNDIAL_SCANNER_STALE_SECS` and
    /// dead-letter queue) instead of the defaults.
    pub fn with_pipeline(mut self, pipeline: crate::health::PipelineCheck) -> Self {
        self.pipeline = pipeline;
        self
    }

    /// Is this the admin token? Constant time in the candidate's content.
    fn accepts(&self, candidate: &str) -> bool {
        let Some(expected) = &self.token_digest else {
            return true;
        };
        let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        digest.ct_eq(expected).into()
    }
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState").finish_non_exhaustive()
    }
}

/// The admin API.
pub fn router(state: AdminState) -> Router {
    use tasks::*;
    let protected = Router::new()
        .route("/v1/tasks", get(list_tasks).post(create_task))
        .route(
            "/v1/tasks/{id}",
            get(show_task).patch(update_task).delete(delete_task),
        )
        .route("/v1/tasks/{id}/pause", post(pause::pause_task))
        .route("/v1/tasks/{id}/resume", post(pause::resume_task))
        .route("/v1/tasks/{id}/trigger", post(trigger_task))
        .route("/v1/tasks/{id}/backfill", post(backfill::backfill_task))
        .route("/v1/backfills/{id}", get(backfill::show_backfill))
        .route("/v1/tasks/{id}/runs", get(list_runs))
        .route("/v1/tasks/{id}/occurrences", get(list_occurrences))
        .route("/v1/flows", get(flows::list_flows))
        .route(
            "/v1/flows/{key}",
            get(flows::show_flow)
                .put(flows::put_flow)
                .delete(flows::delete_flow),
        )
        .route("/v1/status", get(status::status))
        .route("/v1/schedules/preview", post(status::preview))
        .route("/openapi.json", get(openapi_document))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(status::healthz))
        .merge(protected)
        // The console: its own auth (a session cookie), outside the bearer layer.
        .merge(ui::routes(state.clone()))
        .fallback(|| async { AdminError::RouteNotFound })
        // After every route: it applies to the routes registered so far.
        .method_not_allowed_fallback(|| async { AdminError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .with_state(state)
}

/// Refuses requests without the admin bearer token.
async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    if state.token_digest.is_none() {
        return next.run(req).await;
    }
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match token {
        Some(token) if state.accepts(token) => next.run(req).await,
        _ => AdminError::Unauthorized.into_response(),
    }
}

/// A bug must still answer JSON, and must not take the process down.
fn on_panic(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %detail, "admin handler panicked");
    let body = ErrorBody {
        error: ErrorDetail {
            code: "internal".into(),
            field: None,
            message: "internal error; the cause is in the logs".into(),
        },
    };
    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
}

/// The OpenAPI 3 document of this API.
#[utoipa::path(
    get, path = "/openapi.json", tag = "status",
    responses((status = 200, description = "This document", content_type = "application/json")),
    security(("bearer" = []))
)]
async fn openapi_document(State(state): State<AdminState>) -> Json<serde_json::Value> {
    Json(state.openapi.as_ref().clone())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sundial admin API",
        description = "Register, inspect and fire scheduled HTTP tasks."
    ),
    paths(
        tasks::create_task,
        tasks::list_tasks,
        tasks::show_task,
        tasks::update_task,
        tasks::delete_task,
        pause::pause_task,
        pause::resume_task,
        tasks::trigger_task,
        backfill::backfill_task,
        backfill::show_backfill,
        tasks::list_runs,
        tasks::list_occurrences,
        flows::list_flows,
        flows::show_flow,
        flows::put_flow,
        flows::delete_flow,
        status::status,
        status::preview,
        status::healthz,
        openapi_document,
    ),
    components(schemas(
        crate::task::Task,
        crate::task::TaskSpec,
        crate::store::Run,
        crate::store::RunStats,
        crate::store::TaskFigures,
        crate::store::TaskLateness,
        crate::store::TaskFailures,
        tasks::TaskPatch,
        crate::pause::TaskAlerting,
        crate::pause::PauseRequest,
        crate::window::TaskWindow,
        trigger::TriggerRequest,
        crate::schedule::preview::PreviewEntry,
        crate::schedule::dst::DstFlag,
        crate::schedule::dst::DstKind,
        tasks::TaskPage,
        tasks::TaskDetail,
        tasks::RunPage,
        tasks::Triggered,
        backfill::BackfillRequest,
        crate::store::BackfillProgress,
        crate::store::BackfillMode,
        crate::trigger::Trigger,
        crate::store::Ledger,
        crate::ledger::Entry,
        crate::ledger::OccurrenceState,
        crate::ledger::RunFacts,
        crate::ledger::TaskEvent,
        crate::ledger::EventKind,
        crate::ledger::Definition,
        crate::store::FlowLimits,
        crate::store::FlowConfig,
        crate::store::OnOpen,
        crate::store::FlowBreaker,
        crate::store::FlowStateView,
        crate::store::FlowView,
        crate::store::FlowPage,
        crate::store::FlowCounts,
        crate::store::OpenFlow,
        status::Status,
        status::TaskCounts,
        crate::health::ScannerStatus,
        crate::health::PipelineHealth,
        crate::health::Reason,
        crate::health::Problem,
        crate::store::ScannerSeen,
        status::PreviewRequest,
        status::Preview,
        status::Health,
        ErrorBody,
        ErrorDetail,
    )),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// Declares the `bearer` security scheme the paths refer to.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document (also served at `/openapi.json`): utoipa's,
/// made to state every rule and status the API enforces (see [`openapi`]).
pub fn openapi() -> serde_json::Value {
    let mut doc = openapi::truthful(ApiDoc::openapi());
    backfill::document_links(&mut doc);
    doc
}

#[async_trait]
impl TargetCheck for crate::fire::guard::TargetGuard {
    async fn check(&self, url: &str) -> Result<(), String> {
        self.check_url(url)
            .await
            .map(|_| ())
            .map_err(|err| err.to_string())
    }
}
