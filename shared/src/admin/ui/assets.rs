//! The console's one stylesheet, served from a path that carries a hash
//! of its content, so it can be cached for a year and a new build is never
//! served an old copy.

use std::sync::LazyLock;

use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::page;

/// The stylesheet's text.
pub const STYLESHEET: &str = include_str!("console.css");
/// The route that serves it (`/ui/assets/console-<hash>.css`).
pub const STYLESHEET_ROUTE: &str = "/ui/assets/{file}";

static FILE_NAME: LazyLock<String> = LazyLock::new(|| {
    let digest = Sha256::digest(STYLESHEET.as_bytes());
    format!("console-{}.css", &hex::encode(digest)[..12])
});

static PATH: LazyLock<String> = LazyLock::new(|| format!("/ui/assets/{}", *FILE_NAME));

/// Where pages link the stylesheet.
pub fn stylesheet_path() -> &'static str {
    &PATH
}

/// `GET /ui/assets/{file}`: the stylesheet under its current name.
pub async fn stylesheet(uri: axum::http::Uri) -> Response {
    if uri.path() != *PATH {
        return page::not_found().await.into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        STYLESHEET,
    )
        .into_response()
}
