//! The `/v1/tasks` routes: create, list, show, edit, delete, fire by hand,
//! run history, and the occurrence ledger (pause and resume: [`super::pause`]).
//!
//! One file per route group: `create`, `list` (and show), `update` (and
//! delete), `fire` (trigger), `history` (runs and the ledger). The checks
//! they share (the spec and its target, the page size) are here.

use super::error::{AdminError, Result};
use super::AdminState;
use crate::task::{TaskSpec, ValidTask};

mod create;
mod fire;
mod history;
mod list;
mod update;

pub use create::*;
pub use fire::*;
pub use history::*;
pub use list::*;
pub use update::*;

/// Page size when `limit` is not given.
pub const DEFAULT_PAGE: i64 = 50;
/// Largest `limit` accepted.
pub const MAX_PAGE: i64 = 200;
/// What the admin API records as the actor of the changes it makes.
pub const ACTOR: &str = "admin API";
/// The range `GET /v1/tasks/{id}/occurrences` covers when `from` is not given.
pub const DEFAULT_LEDGER_RANGE: chrono::Duration = chrono::Duration::hours(24);
/// How many occurrences `GET /v1/tasks/{id}` shows.
pub const SHOWN_OCCURRENCES: usize = 5;

/// Checks a spec and its target address, everything short of the
/// database, and returns the checked definition the store takes.
async fn check_spec(state: &AdminState, spec: &TaskSpec) -> Result<ValidTask> {
    let valid = spec.clone().into_valid()?;
    state
        .targets
        .check(valid.spec().url.trim())
        .await
        .map_err(|reason| AdminError::invalid("url", reason))?;
    if let Some(url) = &valid.spec().notify_url {
        check_notify_url(state, url).await?;
    }
    Ok(valid)
}

/// A notify URL must pass the target guard as a target URL does.
async fn check_notify_url(state: &AdminState, url: &str) -> Result<()> {
    state
        .targets
        .check(url)
        .await
        .map_err(|reason| AdminError::invalid("notify_url", reason))
}

fn page_limit(limit: Option<i64>) -> Result<i64> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(AdminError::invalid(
            "limit",
            format!("{n} is out of range 1..={MAX_PAGE}"),
        )),
    }
}
