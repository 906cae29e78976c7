//! The `/v1/flows` routes: list flows, show one, set or remove its limits.
//!
//! A flow key names a target (by default a task URL's `host:port`), so it
//! arrives percent-encoded in the path: `127.0.0.1%3A8080`,
//! `%5B%3A%3A1%5D%3A9` for `[::1]:9`.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::error::{AdminError, ErrorBody, Result};
use super::extract::{JsonBody, QueryParams};
use super::AdminState;
use crate::store::{self, FlowLimits, FlowPage, FlowView, MAX_FLOW_PAGE};
use crate::task::validate_flow_key;

/// Page size of `GET /v1/flows` when `limit` is not given.
pub const DEFAULT_FLOW_PAGE: i64 = 100;

/// The `{key}` of a flow route, percent-decoded and checked like a task's
/// `flow_key`; else a 400 naming `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for FlowKey {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| AdminError::invalid("key", "is not valid UTF-8 text once decoded"))?;
        Ok(FlowKey(validate_flow_key("key", &raw)?))
    }
}

/// Query of `GET /v1/flows`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListFlowsQuery {
    /// Page size, 1 to 500 (default 100).
    pub limit: Option<i64>,
    /// List the flows after this key: `next_after` of the previous page.
    pub after: Option<String>,
}

/// List the flows that have limits or engine state, ordered by key.
#[utoipa::path(
    get, path = "/v1/flows", tag = "flows",
    params(ListFlowsQuery),
    responses(
        (status = 200, body = FlowPage),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_flows(
    State(state): State<AdminState>,
    QueryParams(query): QueryParams<ListFlowsQuery>,
) -> Result<Json<FlowPage>> {
    let limit = match query.limit {
        None => DEFAULT_FLOW_PAGE,
        Some(n) if (1..=MAX_FLOW_PAGE).contains(&n) => n,
        Some(n) => {
            return Err(AdminError::invalid(
                "limit",
                format!("{n} is out of range 1..={MAX_FLOW_PAGE}"),
            ))
        }
    };
    let after = query
        .after
        .as_deref()
        .map(|after| validate_flow_key("after", after))
        .transpose()?;
    let page = store::list_flows(&state.pool, after.as_deref(), limit).await?;
    Ok(Json(page))
}

/// Show a flow: its limits, the engine's state and its number of tasks.
#[utoipa::path(
    get, path = "/v1/flows/{key}", tag = "flows",
    params(("key" = String, Path, description = "Flow key, percent-encoded (`api.internal%3A443`)")),
    responses(
        (status = 200, body = FlowView),
        (status = 404, description = "No limits, state or task has this key", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn show_flow(
    State(state): State<AdminState>,
    FlowKey(key): FlowKey,
) -> Result<Json<FlowView>> {
    store::get_flow_view(&state.pool, &key)
        .await?
        .map(Json)
        .ok_or(AdminError::FlowNotFound(key))
}

/// Set the limits of a flow, replacing any it had (fields left out go
/// back to their defaults).
#[utoipa::path(
    put, path = "/v1/flows/{key}", tag = "flows",
    params(("key" = String, Path, description = "Flow key, percent-encoded (`api.internal%3A443`)")),
    request_body = FlowLimits,
    responses(
        (status = 200, description = "The flow with its new limits", body = FlowView),
        (status = 400, description = "Invalid key or limit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn put_flow(
    State(state): State<AdminState>,
    FlowKey(key): FlowKey,
    JsonBody(limits): JsonBody<FlowLimits>,
) -> Result<Json<FlowView>> {
    limits.validate()?;
    let mut tx = state.pool.begin().await?;
    store::put_flow(&mut *tx, &key, &limits).await?;
    let view = store::get_flow_view(&mut *tx, &key)
        .await?
        .ok_or_else(|| AdminError::FlowNotFound(key.clone()))?;
    tx.commit().await?;
    Ok(Json(view))
}

/// Remove the limits of a flow (the engine's state and the tasks stay;
/// the flow is limited by the defaults again).
#[utoipa::path(
    delete, path = "/v1/flows/{key}", tag = "flows",
    params(("key" = String, Path, description = "Flow key, percent-encoded (`api.internal%3A443`)")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "The flow has no limits", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_flow(
    State(state): State<AdminState>,
    FlowKey(key): FlowKey,
) -> Result<StatusCode> {
    if store::delete_flow(&state.pool, &key).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AdminError::FlowNotFound(key))
    }
}
