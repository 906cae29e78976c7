//! The operator console: `/ui`, server-rendered HTML served by the admin
//! router, so `sundial dev`, the admin Lambda (token mode) and a container
//! all have it. No front-end build and no JavaScript: pages are maud
//! templates (escaped at compile time), charts are inline SVG drawn here,
//! and every control is a plain `POST` form.
//!
//! * [`auth`]: the login page (the admin token), the signed session
//!   cookie, the CSRF token of every form, the same-origin check, and the
//!   security headers of every answer;
//! * [`overview`], [`tasks`], [`task`] (with [`history`]), [`flows`]: the
//!   pages; [`actions`]:
//!   pause, resume, trigger and delete, through the admin API's handlers;
//! * [`layout`]: the page shell and the formatting shared by the pages;
//!   [`chart`]: the lag chart; [`assets`]: the stylesheet.
//!
//! With `SUNDIAL_ADMIN_AUTH=iam` (no token to log in with) every console
//! path answers a page saying how to reach the console instead.

use axum::middleware;
use axum::routing::{get, post};
use axum::Router;

use super::AdminState;

pub mod actions;
pub mod assets;
pub mod auth;
pub mod chart;
pub mod flows;
pub mod history;
pub mod layout;
pub mod overview;
pub mod page;
pub mod snapshot;
pub mod task;
pub mod tasks;

pub use auth::{issue_session, SESSION_COOKIE, SESSION_TTL};
pub use page::UiError;
pub use snapshot::SnapshotCache;

/// The console's routes, to be merged into the admin router. They sit
/// outside the bearer-token layer: the console authenticates with its
/// session cookie ([`auth::gate`]).
pub fn routes(state: AdminState) -> Router<AdminState> {
    Router::new()
        .route("/ui", get(overview::page))
        .route("/ui/", get(overview::page))
        .route("/ui/login", get(auth::login_page).post(auth::login))
        .route("/ui/logout", post(auth::logout))
        .route("/ui/tasks", get(tasks::page))
        .route("/ui/tasks/{id}", get(task::page))
        .route("/ui/tasks/{id}/pause", post(actions::pause))
        .route("/ui/tasks/{id}/resume", post(actions::resume))
        .route("/ui/tasks/{id}/trigger", post(actions::trigger))
        .route(
            "/ui/tasks/{id}/delete",
            get(actions::confirm_delete).post(actions::delete),
        )
        .route("/ui/flows", get(flows::page))
        .route(assets::STYLESHEET_ROUTE, get(assets::stylesheet))
        .route("/ui/{*rest}", get(page::not_found).post(page::not_found))
        .layer(middleware::from_fn_with_state(state, auth::gate))
        .layer(middleware::from_fn(auth::security_headers))
}
