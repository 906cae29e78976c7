//! The admin API as `sundial dev` serves it: what the dev process shares
//! with it ([`AdminContext`]) and the plug ([`admin_router`]).
//!
//! MERGE POINT: until the admin branch lands, [`admin_router`] serves only
//! `GET /healthz` and a minimal `POST /v1/tasks`; everything below
//! `admin_router` is that stand-in and goes away with it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::fire::TargetGuard;
use crate::queue::DispatchQueue;
use crate::store::{self, StoreError};
use crate::task::TaskSpec;

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
}

impl std::fmt::Debug for AdminContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("AdminContext").finish_non_exhaustive()
    }
}

/// MERGE POINT: the admin API served by `sundial dev`.
///
/// Until the admin branch lands this serves only `GET /healthz` and a
/// minimal `POST /v1/tasks` (bearer token, `TaskSpec` JSON body, target
/// guard, [`store::create_task`]). With the real router it becomes:
///
/// ```ignore
/// pub fn admin_router(ctx: AdminContext) -> Router {
///     // `TargetGuard` implements `admin::TargetCheck` on main.
///     crate::admin::router(crate::admin::AdminState::new(
///         ctx.pool, ctx.queue, ctx.guard, &ctx.token,
///     ))
/// }
/// ```
/// (and delete `LocalAdmin`, `api_error`, `create_task` and the test
/// below, which the admin API's own tests cover).
pub fn admin_router(ctx: AdminContext) -> Router {
    let state = LocalAdmin {
        token_digest: Sha256::digest(ctx.token.as_bytes()).into(),
        ctx: Arc::new(ctx),
    };
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"ok": true})) }),
        )
        .route("/v1/tasks", post(create_task))
        .with_state(state)
}

#[derive(Clone)]
struct LocalAdmin {
    ctx: Arc<AdminContext>,
    token_digest: [u8; 32],
}

impl LocalAdmin {
    /// Constant-time token check (digests have equal lengths).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
        else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        digest.ct_eq(&self.token_digest).into()
    }
}

fn api_error(status: StatusCode, field: Option<&str>, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"error": {"field": field, "message": message.into()}});
    (status, Json(body)).into_response()
}

async fn create_task(State(admin): State<LocalAdmin>, headers: HeaderMap, body: Bytes) -> Response {
    if !admin.authorized(&headers) {
        return api_error(
            StatusCode::UNAUTHORIZED,
            None,
            "missing or wrong bearer token",
        );
    }
    let spec: TaskSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(err) => return api_error(StatusCode::BAD_REQUEST, None, err.to_string()),
    };
    if let Err(err) = admin.ctx.guard.check_url(spec.url.trim()).await {
        return api_error(StatusCode::BAD_REQUEST, Some("url"), err.to_string());
    }
    match store::create_task(&admin.ctx.pool, &spec, Utc::now()).await {
        Ok(task) => (StatusCode::CREATED, Json(task)).into_response(),
        Err(StoreError::Invalid(bad)) => {
            api_error(StatusCode::BAD_REQUEST, Some(bad.field), bad.reason)
        }
        Err(StoreError::DuplicateName(name)) => api_error(
            StatusCode::CONFLICT,
            Some("name"),
            format!("a task named `{name}` already exists"),
        ),
        Err(err) => {
            tracing::error!(error = %err, "cannot create task");
            api_error(StatusCode::INTERNAL_SERVER_ERROR, None, "internal error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::memory::MemoryQueue;
    use tower::ServiceExt;

    #[tokio::test]
    async fn the_local_admin_api_requires_the_token() {
        // A lazy pool never connects: these requests stop before the store.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let router = admin_router(AdminContext {
            pool,
            queue: Arc::new(MemoryQueue::new(1)),
            guard: Arc::new(TargetGuard::default()),
            token: "a-token-of-sixteen-chars".into(),
        });
        let request = |auth: Option<&str>, body: &str| {
            let mut r = axum::http::Request::post("/v1/tasks");
            if let Some(auth) = auth {
                r = r.header(header::AUTHORIZATION, auth);
            }
            r.body(axum::body::Body::from(body.to_string())).unwrap()
        };
        let health = axum::http::Request::get("/healthz")
            .body(axum::body::Body::empty())
            .unwrap();
        let res = router.clone().oneshot(health).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let res = router.clone().oneshot(request(None, "{}")).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let res = router
            .clone()
            .oneshot(request(Some("Bearer wrong-token-xxxxxxxx"), "{}"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let res = router
            .clone()
            .oneshot(request(Some("Bearer a-token-of-sixteen-chars"), "not json"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        // Loopback is refused by the guard, and the error names the field.
        let body = r#"{"name":"x","schedule":"rate(1 minute)","url":"http://127.0.0.1:9/"}"#;
        let res = router
            .oneshot(request(Some("bearer a-token-of-sixteen-chars"), body))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let bytes = axum::body::to_bytes(res.into_body(), 10_000).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["error"]["field"], "url");
    }
}
